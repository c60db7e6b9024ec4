"""Passthrough opens answered by the compiled OPEN and RELEASE (mergerfs/_files.pxi):
the per-inode backing id shared by every passthrough open of the inode, the
inode first opened without passthrough staying on normal I/O, the backing
closed by the last release (whoever answers it), an adopted passthrough open,
and CREATE's open handed to C with its backing.

Each test can fail on the path taken: the request counts
(``user.mergerfs.requests``, one worker: ``threads=1``, see test_c_open.py) say
which opens and releases were answered in C, and the kernel's
``fuse_request_send`` tracepoint says whether any READ/WRITE reached the daemon
(none for a passthrough open). A backing file is the branch file reopened
read-write: while the kernel holds one, exec of the branch file fails ETXTBSY,
which tells when the last release closed it."""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
import time

import pytest

from .helpers import counts, is_llfuse, is_reference, served, wait_until, warm_caller
from .test_kernel import READ, WRITE, requests_seen

pytestmark = pytest.mark.skipif(is_reference() or is_llfuse(), reason="the kernel session's compiled OPEN")

OPTS = "threads=1,cache.files=auto-full,cache.attr=0,cache.entry=0,category.create=ff,minfreespace=0"


def _mount(mount_pool, io: str = "rw"):
    p = mount_pool(n=2, options=f"{OPTS},passthrough.io={io}")
    return p, counts(p.mnt)


def _open(p, rel: str, flags: int) -> int:
    """An open the compiled OPEN answers: the worker's record of its caller is
    fresh (it lasts a second: a loaded machine may let an older one expire)."""
    warm_caller(p.mnt)
    return os.open(p.path(rel), flags)


def _drop_caches() -> None:
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("1")


def _io(seen: list[int]) -> int:
    return sum(op in (READ, WRITE) for op in seen)


def _exec_busy(path: str) -> bool:
    """Whether something holds ``path`` open for writing (exec refused ETXTBSY)."""
    try:
        subprocess.run([path], check=True)
    except OSError as e:
        if e.errno == errno.ETXTBSY:
            return True
        raise
    return False


def _program(p, rel: str) -> tuple[str, bytes]:
    """An executable on branch 0 named ``rel`` in the pool: its branch path and bytes."""
    path = p.branch_path(0, rel)
    shutil.copy("/bin/true", path)
    os.chmod(path, 0o755)
    return path, _bytes(path)


def _bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_passthrough_opens_answered_in_c(mount_pool):
    """Reads and writes of files opened by the compiled OPEN with passthrough:
    every OPEN and RELEASE in C, no READ/WRITE reaching the daemon."""
    p, before = _mount(mount_pool)
    for i in range(10):
        with open(p.branch_path(i % 2, f"f{i}"), "wb") as f:
            f.write(b"%d" % i * 1000)
    _drop_caches()
    warm_caller(p.mnt)
    with requests_seen(p.mnt) as seen:
        got = []
        for i in range(10):
            fd = _open(p, f"f{i}", os.O_RDONLY)
            got.append(os.read(fd, 100_000))
            os.close(fd)
        for i in range(10):
            fd = _open(p, f"f{i}", os.O_WRONLY)
            os.pwrite(fd, b"new", 0)
            os.close(fd)
    assert got == [b"%d" % i * 1000 for i in range(10)]
    for i in range(10):
        with open(p.branch_path(i % 2, f"f{i}"), "rb") as f:
            assert f.read(4) == b"new" + b"%d" % i
    assert served(p.mnt, before, "OPEN", 20) == (20, 0)
    assert served(p.mnt, before, "RELEASE", 20) == (20, 0)
    assert _io(seen) == 0, seen


def test_opens_share_the_backing_and_the_last_release_closes_it(mount_pool):
    """Opens of one inode in every access mode share its backing (the kernel
    would refuse a second with EBUSY): what one fd writes the others read; the
    backing stays while any of them is open, released in any order, and is
    closed by the last release."""
    p, before = _mount(mount_pool)
    prog, data = _program(p, "prog")
    _drop_caches()
    warm_caller(p.mnt)
    modes = [os.O_RDONLY, os.O_WRONLY, os.O_RDWR] * 4
    with requests_seen(p.mnt) as seen:
        fds = [_open(p, "prog", m) for m in modes]
        assert os.pread(fds[0], 4, 0) == data[:4]
        for k, fd in enumerate(fds):
            if modes[k] != os.O_RDONLY:  # rewrite the same bytes: the program stays runnable
                os.pwrite(fd, data[k : k + 1], k)
        for k, fd in enumerate(fds):
            if modes[k] != os.O_WRONLY:
                assert os.pread(fd, len(data), 0) == data
        order = list(range(len(fds)))
        random.Random(3).shuffle(order)
        for n, k in enumerate(order):
            assert _exec_busy(prog), f"backing gone with {len(fds) - n} opens left"
            os.close(fds[k])
    assert served(p.mnt, before, "RELEASE", len(fds)) == (len(fds), 0)
    assert wait_until(lambda: not _exec_busy(prog), 5), "the last release left the backing open"
    assert served(p.mnt, before, "OPEN", len(fds)) == (len(fds), 0)
    assert _io(seen) == 0, seen
    # a new open after the last release gets a new backing
    with requests_seen(p.mnt) as seen:
        fd = _open(p, "prog", os.O_RDONLY)
        assert os.pread(fd, len(data), 0) == data
        assert _exec_busy(prog)
        os.close(fd)
    assert _io(seen) == 0, seen


def test_inode_open_without_passthrough_stays_normal(mount_pool):
    """passthrough.io=ro: a write open gets no passthrough; a read open of the
    same inode meanwhile cannot get one either (the kernel would refuse the
    open: ETXTBSY) and is normal I/O too; once both are closed a read open
    gets passthrough, and a write open meanwhile shares it."""
    p, before = _mount(mount_pool, "ro")
    prog, data = _program(p, "prog")
    warm_caller(p.mnt)
    with requests_seen(p.mnt) as seen:
        w = _open(p, "prog", os.O_WRONLY)
        os.pwrite(w, data[:1], 0)
        _drop_caches()
        r = _open(p, "prog", os.O_RDONLY)
        assert os.pread(r, len(data), 0) == data
        os.close(r)
        os.close(w)
    assert READ in seen and WRITE in seen, seen
    assert served(p.mnt, before, "RELEASE", 2) == (2, 0)
    _drop_caches()
    warm_caller(p.mnt)
    with requests_seen(p.mnt) as seen:
        r = _open(p, "prog", os.O_RDONLY)
        w = _open(p, "prog", os.O_WRONLY)
        os.pwrite(w, data[:1], 0)
        assert os.pread(r, len(data), 0) == data
        assert _exec_busy(prog)  # the read open's backing, reopened read-write
        os.close(w)
        os.close(r)
    assert _io(seen) == 0, seen
    assert served(p.mnt, before, "OPEN", 4) == (4, 0)
    assert served(p.mnt, before, "RELEASE", 4) == (4, 0)
    assert wait_until(lambda: not _exec_busy(prog), 5)


def test_adopted_passthrough_open(mount_pool):
    """fstat/ftruncate/fsync on a C-opened passthrough fd adopt it; it keeps its
    backing (no READ/WRITE reach the daemon) and Python's RELEASE gives it up:
    the backing closes when the last of it and a C-owned open is released."""
    p, before = _mount(mount_pool)
    prog, data = _program(p, "prog")
    with open(p.branch_path(0, "f"), "wb") as f:
        f.write(b"x" * 5000)
    _drop_caches()
    warm_caller(p.mnt)
    with requests_seen(p.mnt) as seen:
        fd = _open(p, "f", os.O_RDWR)
        assert os.fstat(fd).st_size == 5000
        os.ftruncate(fd, 100)
        os.fsync(fd)
        os.pwrite(fd, b"tail", 96)
        assert os.pread(fd, 200, 0) == b"x" * 96 + b"tail"
        os.close(fd)
        a = _open(p, "prog", os.O_RDONLY)
        b = _open(p, "prog", os.O_RDONLY)
        os.fsync(a)  # adopted: Python's from now on
        assert os.pread(a, len(data), 0) == data
        os.close(a)
        assert _exec_busy(prog)  # b still shares the backing
        os.close(b)
    assert wait_until(lambda: not _exec_busy(prog), 5), "the backing outlived its last open"
    assert _bytes(p.branch_path(0, "f")) == b"x" * 96 + b"tail"
    assert _io(seen) == 0, seen
    assert served(p.mnt, before, "OPEN", 3) == (3, 0)
    assert served(p.mnt, before, "RELEASE", 3) == (1, 2)  # the adopted ones are Python's


@pytest.mark.parametrize("policy", ["ff", "newest"])
def test_created_files_passthrough_released_in_c(mount_pool, policy):
    """A new file's open gets passthrough and is C's: its RELEASE is answered in
    C and its writes never reach the daemon, whether C answered the CREATE
    (``ff``: the compiled create policies) or Python did (``newest``) and
    handed its open over."""
    p = mount_pool(n=2, options=f"{OPTS},passthrough.io=rw,category.create={policy}")
    old = time.time() - 3600  # newest picks the first branch: the second's root is older
    os.utime(p.branches[1], (old, old))
    before = counts(p.mnt)
    warm_caller(p.mnt)
    with requests_seen(p.mnt) as seen:
        for i in range(10):
            with open(p.path(f"n{i}"), "wb") as f:
                f.write(b"data%d" % i * 1000)
    for i in range(10):
        with open(p.branch_path(0, f"n{i}"), "rb") as f:
            assert f.read() == b"data%d" % i * 1000
    compiled, python = served(p.mnt, before, "CREATE", 10)
    if policy == "ff":  # a worker not yet acting as the caller hands its first request to Python
        assert compiled >= 8 and compiled + python == 10, (compiled, python)
    else:
        assert (compiled, python) == (0, 10)
    assert served(p.mnt, before, "RELEASE", 10) == (10, 0)
    assert _io(seen) == 0, seen
