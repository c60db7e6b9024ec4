"""Faults: a branch vanishing, going read-only or filling up mid-operation, and the
daemon being SIGKILLed mid-write. Other branches keep working, errnos are the
native ones, nothing already written (or fsync'd) is lost, the daemon survives.

Oracle: native behaviour of the same call on a plain directory / tmpfs in the same
state (an unmounted or removed directory, a read-only filesystem, a full one).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import random
import shutil
import signal
import subprocess
import threading
import time

import pytest

from .branchfs import MiB, pool, remount_ro, tmpfs_branches, where
from .helpers import (
    daemon_pid,
    err_of,
    get as _get,
    is_pool_mounted,
    is_reference,
    pid_alive,
    put as _put,
    run_cmd,
    unmount,
    wait_until,
)

NOCACHE = "cache.files=off,cache.attr=0,cache.entry=0,cache.negative_entry=0"


def _alive(mnt: str) -> None:
    """The daemon still serves: stat, create, read back, remove."""
    pid = daemon_pid(mnt)
    assert pid and pid_alive(pid)
    p = os.path.join(mnt, f"alive.{time.monotonic_ns()}")
    _put(p, b"alive")
    assert _get(p) == b"alive"
    os.unlink(p)


# -- a branch directory removed -----------------------------------------------


def test_branch_dir_removed(mount_pool, native):
    p = mount_pool(n=3, options=NOCACHE, layout=[{"a": b"A", "d/x": b"X1"}, {"b": b"B", "d/y": b"Y2"}, {"c": b"C"}])
    shutil.rmtree(p.branches[1])
    shutil.rmtree(native)  # native: the files of a removed directory answer ENOENT
    assert err_of(os.stat, p.path("b")) == err_of(os.stat, os.path.join(native, "b")) == errno.ENOENT
    assert err_of(os.open, p.path("d/y"), os.O_RDONLY) == errno.ENOENT
    assert sorted(os.listdir(p.mnt)) == ["a", "c", "d"]
    assert os.listdir(p.path("d")) == ["x"]
    assert _get(p.path("a")) == b"A" and _get(p.path("d/x")) == b"X1"
    _put(p.path("new"), b"N")
    assert p.where("new") in ([0], [2])
    os.mkdir(p.path("d/sub"))
    assert p.where("d/sub") in ([0], [2])
    os.rename(p.path("c"), p.path("c2"))
    assert _get(p.path("c2")) == b"C"
    _alive(p.mnt)


@pytest.mark.xfail(
    condition=is_reference(), strict=True, reason="2.33.5 answers fstat on the open file ENOENT once its branch is gone"
)
def test_open_file_survives_branch_dir_removal(mount_pool, native):
    """An open file keeps working after its branch directory is removed, as an
    unlinked open native file does."""
    p = mount_pool(n=2, options=NOCACHE, layout=[{}, {"b": b"B"}])
    held = os.open(p.path("b"), os.O_RDWR)
    _put(os.path.join(native, "gone"), b"B")
    nfd = os.open(os.path.join(native, "gone"), os.O_RDWR)
    try:
        shutil.rmtree(p.branches[1])
        os.unlink(os.path.join(native, "gone"))
        for fd in (held, nfd):
            assert os.pread(fd, 1, 0) == b"B"
            assert os.pwrite(fd, b"b", 1) == 1
            assert os.fstat(fd).st_size == 2
            os.ftruncate(fd, 1)
            assert os.fstat(fd).st_size == 1
    finally:
        os.close(held)
        os.close(nfd)
    assert os.listdir(p.mnt) == []
    _alive(p.mnt)


# -- a tmpfs branch unmounted lazily ------------------------------------------


def _clear_dir(path: str) -> None:
    """Remove what the pool wrote into a branch's underlying dir after its umount."""
    if os.path.isdir(path):
        for name in os.listdir(path):
            q = os.path.join(path, name)
            shutil.rmtree(q) if os.path.isdir(q) and not os.path.islink(q) else os.unlink(q)


def test_tmpfs_branch_lazily_unmounted():
    with tmpfs_branches([16, 16, 16]) as br:
        try:
            _put(os.path.join(br[0], "keep"), b"K")
            _put(os.path.join(br[1], "lost"), b"L" * 1000)
            os.mkdir(os.path.join(br[1], "dir"))
            _put(os.path.join(br[2], "other"), b"O")
            with pool(br, NOCACHE + ",category.create=ff,minfreespace=1M") as m:
                rd = os.open(os.path.join(m, "lost"), os.O_RDWR)
                stop = threading.Event()
                errors: list[OSError] = []
                written = [0]

                def writer():
                    """Keeps writing on an open pool file of the branch being unmounted."""
                    chunk = b"w" * 4096
                    try:
                        while not stop.is_set():
                            os.pwrite(rd, chunk, 1000 + written[0] % (4 * MiB))
                            written[0] += len(chunk)
                    except OSError as e:
                        errors.append(e)

                t = threading.Thread(target=writer)
                t.start()
                try:
                    time.sleep(0.3)
                    subprocess.run(["umount", "-l", br[1]], check=True)
                    time.sleep(0.3)
                finally:
                    stop.set()
                    t.join()
                # native lazy-umount semantics: open files keep working until closed
                assert errors == [] and written[0] > 0
                assert os.pread(rd, 1000, 0) == b"L" * 1000
                os.close(rd)
                # the branch path is now the empty directory underneath
                assert (
                    err_of(os.stat, os.path.join(m, "lost"))
                    == err_of(os.stat, os.path.join(br[1], "lost"))
                    == errno.ENOENT
                )
                assert err_of(os.listdir, os.path.join(m, "dir")) == errno.ENOENT
                assert sorted(os.listdir(m)) == ["keep", "other"]
                assert _get(os.path.join(m, "keep")) == b"K"
                assert _get(os.path.join(m, "other")) == b"O"
                _put(os.path.join(m, "keep"), b"K2")
                assert _get(os.path.join(br[0], "keep")) == b"K2"
                _alive(m)
                os.mkdir(os.path.join(m, "newdir"))
                # the bare directory left by the unmount (on /tmp's disk) receives nothing
                assert os.listdir(br[1]) == [] and where(br, "newdir") == [0]
        finally:
            _clear_dir(br[1])


# -- a tmpfs branch remounted read-only ---------------------------------------


def test_tmpfs_branch_remounted_readonly():
    with tmpfs_branches([16, 16, 16]) as br:
        nat = br[2]  # holds a native file while it is read-only, compared below
        _put(os.path.join(br[0], "ro"), b"R" * 100)
        os.mkdir(os.path.join(br[0], "rodir"))
        _put(os.path.join(br[0], "rodir", "f"), b"F")
        _put(os.path.join(br[1], "rw"), b"W")
        _put(os.path.join(nat, ".native"), b"R" * 100)
        with pool(br[:2], NOCACHE + ",category.create=ff,minfreespace=1M") as m:
            held = os.open(os.path.join(m, "ro"), os.O_RDONLY)
            try:
                remount_ro(br[0])
                remount_ro(nat)
                npath = os.path.join(nat, ".native")

                def both(fn, rel, *args):
                    a = err_of(fn, os.path.join(m, rel), *args)
                    b = err_of(fn, npath, *args)
                    assert a == b, (
                        f"{fn.__name__} {rel}: pool {errno.errorcode.get(a, a)} != native {errno.errorcode.get(b, b)}"
                    )
                    return a

                assert both(os.open, "ro", os.O_WRONLY) == errno.EROFS
                assert both(os.truncate, "ro", 0) == errno.EROFS
                assert both(os.chmod, "ro", 0o600) == errno.EROFS
                assert both(os.unlink, "ro") == errno.EROFS
                assert both(os.setxattr, "ro", "user.x", b"1") == errno.EROFS
                assert err_of(os.unlink, os.path.join(m, "rodir/f")) == errno.EROFS
                assert err_of(os.rmdir, os.path.join(m, "rodir")) in (errno.EROFS, errno.ENOTEMPTY)
                # reads still work, including through a handle opened before
                assert os.pread(held, 100, 0) == b"R" * 100
                assert _get(os.path.join(m, "rodir/f")) == b"F"
                assert sorted(os.listdir(m)) == ["ro", "rodir", "rw"]
                # ff would pick the read-only branch: creation goes to the writable one
                _put(os.path.join(m, "new"), b"N")
                assert where(br, "new") == [1]
                os.mkdir(os.path.join(m, "newdir"))
                assert where(br, "newdir") == [1]
                _put(os.path.join(m, "rw"), b"W2")
                assert _get(os.path.join(br[1], "rw")) == b"W2"
                _alive(m)
            finally:
                os.close(held)
        assert _get(os.path.join(br[0], "ro")) == b"R" * 100


# -- a branch fills up --------------------------------------------------------


def _pattern(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _write_all(fd: int, data: bytes, step: int) -> int:
    """Write ``data`` in ``step``-sized writes from the current offset; bytes
    written before an error (the error re-raised with ``.done`` set)."""
    done = 0
    while done < len(data):
        try:
            n = os.write(fd, data[done : done + step])
        except OSError as e:
            e.done = done  # type: ignore[attr-defined]
            raise
        done += n
    return done


@contextlib.contextmanager
def _filling(moveonenospc: str):
    """A 4 MiB first branch (ff creates there, with a neighbour file) and a 64 MiB one."""
    with tmpfs_branches([4, 64]) as br:
        _put(os.path.join(br[0], "neighbour"), b"n" * 5000)
        with pool(br, f"minfreespace=1M,category.create=ff,moveonenospc={moveonenospc}," + NOCACHE) as m:
            yield br, m
            _alive(m)


def test_fill_moveonenospc_keeps_every_byte():
    data = _pattern(1, 6 * MiB + 12345)
    with _filling("true") as (br, m):
        p = os.path.join(m, "big")
        fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            assert where(br, "big") == [0]
            assert _write_all(fd, data, 131071) == len(data)
            os.fsync(fd)
        finally:
            os.close(fd)
        assert where(br, "big") == [1]
        digest = hashlib.sha256(data).hexdigest()
        assert hashlib.sha256(_get(p)).hexdigest() == digest
        assert hashlib.sha256(_get(os.path.join(br[1], "big"))).hexdigest() == digest
        assert _get(os.path.join(m, "neighbour")) == b"n" * 5000


def test_fill_without_moveonenospc_loses_nothing_written():
    data = _pattern(2, 8 * MiB)
    with _filling("false") as (br, m):
        p = os.path.join(m, "big")
        fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            with pytest.raises(OSError) as exc:
                _write_all(fd, data, 65536)
            assert exc.value.errno == errno.ENOSPC
            done = exc.value.done  # type: ignore[attr-defined]
            assert 2 * MiB < done < 4 * MiB
            # the writer can keep going after making room, nothing before is lost
            os.unlink(os.path.join(m, "neighbour"))
            os.fsync(fd)
        finally:
            os.close(fd)
        assert where(br, "big") == [0]
        got = _get(p)
        assert len(got) == done and got == data[:done]
        assert _get(os.path.join(br[0], "big")) == data[:done]


# -- SIGKILL mid-write --------------------------------------------------------


@pytest.mark.xfail(
    condition=is_reference(), strict=True, reason="2.33.5 has no lazy-umount-mountpoint: it refuses the dead mountpoint"
)
def test_sigkill_mid_write_keeps_fsynced_data(mount_pool):
    p = mount_pool(n=2, options="category.create=ff")
    pid = p.pid
    assert pid and pid_alive(pid)
    data = _pattern(3, 64 * MiB)
    synced = [0]
    failure: list[OSError] = []
    fd = os.open(p.path("journal"), os.O_CREAT | os.O_WRONLY, 0o644)

    def writer():
        off = 0
        try:
            while off < len(data):
                off += os.write(fd, data[off : off + 65536 + 17])
                if off // 65536 % 4 == 0:
                    os.fsync(fd)
                    synced[0] = off
        except OSError as e:
            failure.append(e)

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert wait_until(lambda: synced[0] > 256 * 1024, 20)
        os.kill(pid, signal.SIGKILL)
    finally:
        t.join(30)
    with contextlib.suppress(OSError):
        os.close(fd)
    assert failure and failure[0].errno in (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO), failure
    assert wait_until(lambda: not pid_alive(pid), 10)
    on_branch = _get(p.branch_path(0, "journal"))
    assert len(on_branch) >= synced[0] > 0
    assert on_branch == data[: len(on_branch)], "branch holds bytes never written"
    # the stale mount answers ENOTCONN until the next start clears it
    assert err_of(os.stat, p.mnt) == errno.ENOTCONN
    # (helpers.mount would os.makedirs the dead mountpoint: run the command itself)
    r = run_cmd(["-o", "lazy-umount-mountpoint=true,category.create=ff", ":".join(p.branches), p.mnt])
    again = daemon_pid(p.mnt) if r.returncode == 0 else None
    try:
        assert r.returncode == 0, r.stderr
        assert wait_until(lambda: is_pool_mounted(p.mnt), 20)
        assert again and again != pid
        assert os.stat(p.mnt)
        got = _get(p.path("journal"))
        assert got[: synced[0]] == data[: synced[0]]
        _put(p.path("after"), b"ok")
        assert _get(p.branch_path(0, "after")) == b"ok"
        with open("/proc/self/mountinfo") as f:
            assert sum(1 for ln in f if ln.split()[4] == p.mnt) == 1
    finally:
        unmount(p.mnt)
        if again:
            wait_until(lambda: not pid_alive(again), 10)
