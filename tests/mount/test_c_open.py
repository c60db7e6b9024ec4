"""The compiled OPEN and RELEASE (mergerfs/_files.pxi): the plain case answered
without Python, an open adopted by Python when a request needs its handle
(fstat of an unlinked file, ftruncate, fsync, fallocate, lseek), a CREATE's
open handed to C, compared with a native directory.

One worker thread (``threads=1``): after any request Python answers, the worker
acts as that caller and the next OPEN of the same caller takes the C path.
Each test reads the request counts (``user.mergerfs.requests``): it fails if
the opens it means went through Python (or, for adoption, if the release did
not)."""

from __future__ import annotations

import os
import random
import shutil
import stat
import tempfile
import time

import pytest

from .helpers import compare, counts, is_llfuse, is_reference, mount, served, unmount, warm_caller

pytestmark = pytest.mark.skipif(is_reference() or is_llfuse(), reason="the kernel session's compiled OPEN")

OPTS = "threads=1,cache.files=partial,cache.attr=0,cache.entry=0,category.create=ff"


def _mount(mount_pool, n=2, layout=None):
    p = mount_pool(n=n, options=OPTS, layout=layout)
    return p, counts(p.mnt)


def _c_counts(mnt: str, before: dict, opens: int, releases: int) -> tuple[int, int]:
    """(OPENs, RELEASEs) answered in C since ``before``, once ``opens`` OPENs
    and ``releases`` RELEASEs were answered at all (a RELEASE comes late)."""
    return served(mnt, before, "OPEN", opens)[0], served(mnt, before, "RELEASE", releases)[0]


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_open_read_first_found(mount_pool):
    layout = [{"a": b"A0", "d/c": b"C0"}, {"a": b"A1", "b": b"B1", "d/c": b"C1", "e/f": b"F1"}]
    p, before = _mount(mount_pool, layout=layout)
    warm_caller(p.mnt)
    got = {}
    for rel in ("a", "b", "d/c", "e/f"):
        with open(p.path(rel), "rb") as f:
            got[rel] = f.read()
    assert got == {"a": b"A0", "b": b"B1", "d/c": b"C0", "e/f": b"F1"}
    assert _c_counts(p.mnt, before, 4, 4) == (4, 4)


def _flag_semantics(root: str) -> tuple:
    p = os.path.join(root, "f")
    with open(p, "wb") as f:
        f.write(b"0123456789")
    out = []
    warm_caller(root)
    fd = os.open(p, os.O_RDWR)
    out.append(os.pread(fd, 4, 3))
    os.pwrite(fd, b"ab", 1)
    out.append(os.pread(fd, 20, 0))
    os.close(fd)
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"END")
    os.close(fd)
    out.append(_read(p))
    fd = os.open(p, os.O_RDWR | os.O_TRUNC)
    out.append(os.fstat(fd).st_size)
    os.write(fd, b"xy")
    out.append(os.pread(fd, 20, 0))
    os.close(fd)
    fd = os.open(p, os.O_RDONLY)
    try:
        os.write(fd, b"no")
    except OSError as e:
        out.append(e.errno)
    os.close(fd)
    try:
        os.open(os.path.join(root, "missing"), os.O_RDONLY)
    except OSError as e:
        out.append(e.errno)
    out.append(_read(p))
    return tuple(out)


def test_open_flags_as_native(mount_pool, native):
    p, before = _mount(mount_pool)
    compare(lambda: _flag_semantics(p.mnt), lambda: _flag_semantics(native))
    opens, releases = _c_counts(p.mnt, before, 6, 7)  # and the CREATE's release
    assert opens >= 4 and releases >= 5, (opens, releases)


def _adopted_fd_ops(root: str) -> tuple:
    p = os.path.join(root, "f")
    with open(p, "wb") as f:
        f.write(b"x" * 5000)
    warm_caller(root)
    fd = os.open(p, os.O_RDWR)
    try:
        out = [os.fstat(fd).st_size]
        os.ftruncate(fd, 100_000)
        out.append(os.fstat(fd).st_size)
        os.fsync(fd)
        os.fdatasync(fd)
        os.posix_fallocate(fd, 0, 200_000)
        out.append(os.fstat(fd).st_size)
        out.append(os.lseek(fd, 0, os.SEEK_DATA))
        out.append(os.lseek(fd, 0, os.SEEK_END))
        os.pwrite(fd, b"tail", 199_996)
        out.append(os.pread(fd, 8, 199_992))
        out.append(os.pread(fd, 4, 0))
        return tuple(out)
    finally:
        os.close(fd)


def test_adopted_handle_fd_ops(mount_pool, native):
    """fstat/ftruncate/fsync/fallocate/lseek on a C-opened fd: its release is Python's."""
    p, before = _mount(mount_pool)
    compare(lambda: _adopted_fd_ops(p.mnt), lambda: _adopted_fd_ops(native))
    assert _c_counts(p.mnt, before, 1, 2) == (1, 1)  # the RELEASE in C: the CREATE's


def _unlinked(root: str) -> tuple:
    p = os.path.join(root, "f")
    with open(p, "wb") as f:
        f.write(b"hello world")
    warm_caller(root)
    fd = os.open(p, os.O_RDONLY)
    try:
        os.unlink(p)
        st = os.fstat(fd)
        return stat.filemode(st.st_mode), st.st_size, st.st_nlink, os.pread(fd, 20, 0), os.path.exists(p)
    finally:
        os.close(fd)


def test_unlinked_while_open(mount_pool, native):
    """The fstat of a C-opened, unlinked file borrows its handle (adopted): its fd is the truth."""
    p, before = _mount(mount_pool)
    compare(lambda: _unlinked(p.mnt), lambda: _unlinked(native))
    assert _c_counts(p.mnt, before, 1, 2) == (1, 1)  # the RELEASE in C: the CREATE's


def test_many_opens_of_one_file(mount_pool):
    """20 opens of one file released in random order, two of them adopted on
    the way (fsync): the rest close in C, the data stays consistent, the node
    lives until the last one."""
    p, before = _mount(mount_pool)
    path = p.path("f")
    with open(path, "wb") as f:
        f.write(b"0" * 100)
    warm_caller(p.mnt)
    fds = [os.open(path, os.O_RDWR) for _ in range(20)]
    os.fsync(fds[3])
    os.fsync(fds[11])
    order = list(range(20))
    random.Random(7).shuffle(order)
    for k, i in enumerate(order):
        os.pwrite(fds[i], b"%02d" % i, 2 * i)
        os.close(fds[i])
        if k < 19:
            left = order[k + 1]
            assert os.pread(fds[left], 2, 2 * i) == b"%02d" % i
    assert _read(path)[:40] == b"".join(b"%02d" % i for i in range(20))
    # the 21st open: the read above; one more release: the CREATE's
    assert _c_counts(p.mnt, before, 21, 22) == (21, 20)


def test_stat_answered_by_python_leaves_c_opens_alone(mount_pool, native):
    """An fstat (a GETATTR without fh) that Python answers, here because the
    worker's record of the caller is over a second old, answers by path while
    the path names the open file, as the C path does: it adopts no C open (its
    RELEASE stays C's). Once the name is gone, the open's fd is the truth."""

    def scenario(root: str) -> tuple:
        fds = []
        for name in ("named", "unlinked"):
            with open(os.path.join(root, name), "wb") as f:
                f.write(name.encode())
            warm_caller(root)
            fds.append(os.open(os.path.join(root, name), os.O_RDONLY))
        try:
            os.unlink(os.path.join(root, "unlinked"))
            time.sleep(1.1)
            return [(st.st_size, st.st_nlink) for st in map(os.fstat, fds)]
        finally:
            for fd in fds:
                os.close(fd)

    p, before = _mount(mount_pool)
    compare(lambda: scenario(p.mnt), lambda: scenario(native))
    # in C: both CREATEs' releases and the named file's; the unlinked one's open was adopted
    assert _c_counts(p.mnt, before, 2, 4) == (2, 3)


def test_created_files_released_in_c(mount_pool, native):
    """A new file's open is the C path's whoever answered the CREATE (C for ff,
    Python handing its open over otherwise: test_c_passthrough covers both):
    its RELEASE is answered in C, unless a request adopted it (fsync)."""

    def scenario(root: str) -> tuple:
        out = []
        for i in range(5):
            fd = os.open(os.path.join(root, f"n{i}"), os.O_CREAT | os.O_RDWR | os.O_EXCL, 0o640)
            os.write(fd, b"data%d" % i)
            if i == 4:
                os.fsync(fd)
            out.append((os.pread(fd, 10, 0), stat.S_IMODE(os.fstat(fd).st_mode)))
            os.close(fd)
        out.append(sorted(os.listdir(root)))
        return tuple(out)

    p, before = _mount(mount_pool)
    compare(lambda: scenario(p.mnt), lambda: scenario(native))
    assert _c_counts(p.mnt, before, 0, 5) == (0, 4)


def test_open_by_another_user():
    """A user's open is checked as that user (the worker acts as its caller; the
    kernel checks no permissions here): a 0600 root file refused, a 0644 one
    readable but not writable, the user's own file writable; as natively."""
    base = tempfile.mkdtemp(dir="/tmp", prefix="mfs-copen-")
    try:
        os.chmod(base, 0o755)
        for d in ("b1", "b2", "mnt", "native"):
            os.mkdir(os.path.join(base, d))
        p = mount(
            [os.path.join(base, "b1"), os.path.join(base, "b2")],
            os.path.join(base, "mnt"),
            f"{OPTS},allow_other,kernel-permissions-check=false",
        )
        try:
            for root in (p.mnt, os.path.join(base, "native")):
                for name, mode, uid in (("secret", 0o600, 0), ("public", 0o644, 0), ("mine", 0o644, 4242)):
                    f = os.path.join(root, name)
                    with open(f, "wb") as fh:
                        fh.write(name.encode())
                    os.chmod(f, mode)
                    os.chown(f, uid, uid)
            before = counts(p.mnt)
            pool_out = _as_user(p.mnt)
            native_out = _as_user(os.path.join(base, "native"))
            assert pool_out == native_out
            assert pool_out == [13, b"public", 13, b"mine!"], pool_out
            # the user's opens: two refused (their errno answered in C), three that succeed;
            # on a loaded machine one may find the worker's record of the caller a second
            # old (then Python answers it and switches again)
            compiled, python = served(p.mnt, before, "OPEN", 5)
            assert compiled + python == 5 and compiled >= 4, (compiled, python)
        finally:
            unmount(p.mnt)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _as_user(root: str) -> list:
    """In a child as uid/gid 4242: each open's errno or what it read."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(4242)
            os.setuid(4242)
            out = []
            for name, flags in (("secret", os.O_RDONLY), ("public", os.O_RDONLY), ("public", os.O_WRONLY)):
                # before each open: an asynchronous RELEASE of root's files, answered by
                # Python, may have made the worker act as root again meanwhile
                warm_caller(root)
                try:
                    fd = os.open(os.path.join(root, name), flags)
                    out.append(os.read(fd, 10))
                    os.close(fd)
                except OSError as e:
                    out.append(e.errno)
            warm_caller(root)
            fd = os.open(os.path.join(root, "mine"), os.O_WRONLY | os.O_APPEND)
            os.write(fd, b"!")
            os.close(fd)
            warm_caller(root)
            with open(os.path.join(root, "mine"), "rb") as f:
                out.append(f.read())
            os.write(w, repr(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    import ast

    return ast.literal_eval(data.decode())
