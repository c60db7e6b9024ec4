"""Paths that fit PATH_MAX inside the pool but not once a branch root is prefixed
(issue 12): every operation must act as on a native directory, and a missing path
must be ENOENT, never the branch side's ENAMETOOLONG.

The test reaches the deep directory through a directory fd (the ``*at`` calls), as
POSIX suites do, so its own paths stay short on both sides; path-only calls
(truncate, xattrs) go through ``/proc/self/fd/N/NAME``.
"""

from __future__ import annotations

import os
import stat

import pytest

from .helpers import compare

COMP = "c" * 250
DEPTH = 16  # 16 * 251 = 4016 bytes below the root; a 70-byte name makes 4087 in the pool
NAME_LEN = 70


def name(tag: str) -> str:
    return (tag + "_").ljust(NAME_LEN, "n")


def deep_fd(root: str) -> int:
    """Create the chain below ``root`` (one level at a time) and open its deepest dir."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(DEPTH):
        try:
            os.mkdir(COMP, dir_fd=fd)
        except FileExistsError:
            pass
        nfd = os.open(COMP, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    return fd


def st(fd: int, n: str, follow: bool = False) -> tuple:
    s = os.stat(n, dir_fd=fd, follow_symlinks=follow)
    return stat.S_IFMT(s.st_mode), stat.S_IMODE(s.st_mode), s.st_size, s.st_nlink, s.st_uid, s.st_gid


def via_proc(fd: int, n: str) -> str:
    return f"/proc/self/fd/{fd}/{n}"


def _create(fd):
    f = os.open(name("create"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640, dir_fd=fd)
    os.write(f, b"created")
    os.close(f)
    return st(fd, name("create"))


def _open(fd):
    f = os.open(name("open"), os.O_CREAT | os.O_RDWR, 0o644, dir_fd=fd)
    os.write(f, b"hello")
    os.close(f)
    f = os.open(name("open"), os.O_RDONLY, dir_fd=fd)
    try:
        return os.read(f, 100)
    finally:
        os.close(f)


def _file(fd, tag):
    f = os.open(name(tag), os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
    os.write(f, b"0123456789")
    os.close(f)
    return name(tag)


def _rename(fd):
    src = _file(fd, "rsrc")
    os.rename(src, name("rdst"), src_dir_fd=fd, dst_dir_fd=fd)
    os.mkdir(name("rdir"), dir_fd=fd)
    os.rename(name("rdir"), name("rdir2"), src_dir_fd=fd, dst_dir_fd=fd)
    return sorted(n[:5] for n in os.listdir(fd) if n.startswith("r")), st(fd, name("rdst"))


def _link(fd):
    src = _file(fd, "lsrc")
    os.link(src, name("ldst"), src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
    return st(fd, src), st(fd, name("ldst"))


def _symlink(fd):
    os.symlink("some/target", name("sym"), dir_fd=fd)
    return st(fd, name("sym")), os.readlink(name("sym"), dir_fd=fd)


def _truncate(fd):
    n = _file(fd, "trunc")
    os.truncate(via_proc(fd, n), 3)
    return st(fd, n)


def _unlink(fd):
    n = _file(fd, "unlink")
    os.unlink(n, dir_fd=fd)
    return name("unlink") in os.listdir(fd)


def _rmdir(fd):
    os.mkdir(name("rmdir"), dir_fd=fd)
    os.rmdir(name("rmdir"), dir_fd=fd)
    return name("rmdir") in os.listdir(fd)


def _xattr(fd):
    p = via_proc(fd, _file(fd, "xattr"))
    os.setxattr(p, "user.k", b"v")
    return os.getxattr(p, "user.k"), [x for x in os.listxattr(p) if x.startswith("user.")]


def _utime(fd):
    n = _file(fd, "utime")
    os.utime(n, ns=(1_000_000_000, 2_000_000_000), dir_fd=fd)
    s = os.stat(n, dir_fd=fd)
    return s.st_atime_ns, s.st_mtime_ns


CASES = {
    "create": _create,
    "open": _open,
    "mkdir": lambda fd: (os.mkdir(name("mkdir"), 0o750, dir_fd=fd), st(fd, name("mkdir"))),
    "mknod": lambda fd: (os.mknod(name("mknod"), stat.S_IFREG | 0o600, dir_fd=fd), st(fd, name("mknod"))),
    "mkfifo": lambda fd: (os.mkfifo(name("fifo"), 0o620, dir_fd=fd), st(fd, name("fifo"))),
    "symlink": _symlink,
    "rename": _rename,
    "link": _link,
    "chmod": lambda fd: os.chmod(_file(fd, "chmod"), 0o604, dir_fd=fd) or st(fd, name("chmod")),
    "chown": lambda fd: os.chown(_file(fd, "chown"), 1234, 5678, dir_fd=fd) or st(fd, name("chown")),
    "truncate": _truncate,
    "unlink": _unlink,
    "rmdir": _rmdir,
    "xattr": _xattr,
    "utime": _utime,
    "readdir": lambda fd: (_file(fd, "listed"), sorted(os.listdir(fd)))[1],
    # missing: ENOENT as natively, whether the name or its parent is missing
    "stat_missing": lambda fd: st(fd, name("missing")),
    "stat_missing_parent": lambda fd: st(fd, name("nodir") + "/" + name("x")),
    "unlink_missing": lambda fd: os.unlink(name("missing"), dir_fd=fd),
    "rmdir_missing_parent": lambda fd: os.rmdir(name("nodir") + "/" + name("x"), dir_fd=fd),
    "open_missing": lambda fd: os.open(name("missing"), os.O_RDONLY, dir_fd=fd),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_long_path_like_native(mount_pool, native, case):
    p = mount_pool(n=2, options="category.create=ff")
    assert len(p.branches[0]) + DEPTH * (len(COMP) + 1) + NAME_LEN >= 4096, "branch path too short"
    pfd, nfd = deep_fd(p.mnt), deep_fd(native)
    try:
        compare(lambda: CASES[case](pfd), lambda: CASES[case](nfd))
    finally:
        os.close(pfd)
        os.close(nfd)


def test_long_path_spread_over_branches(mount_pool, native):
    """The deep directory on both branches: listing merges them, unlink acts on both."""
    p = mount_pool(n=2, options="category.create=ff")
    for b in p.branches:
        os.close(deep_fd(b))
    pfd = deep_fd(p.mnt)
    try:
        for b in p.branches:
            bfd = deep_fd(b)
            _file(bfd, "on_" + os.path.basename(b))
            _file(bfd, "both")
            os.close(bfd)
        assert sorted(os.listdir(pfd)) == sorted([name("on_p0b1"), name("on_p0b2"), name("both")])
        os.unlink(name("both"), dir_fd=pfd)
        assert name("both") not in os.listdir(pfd)
        for b in p.branches:
            bfd = deep_fd(b)
            assert name("both") not in os.listdir(bfd)
            os.close(bfd)
    finally:
        os.close(pfd)
