"""POSIX parity: the same call on the pool and on a native dir gives the same (ok, errno, value)."""

from __future__ import annotations

import ctypes
import mmap
import os
import shutil
import stat
import time

import pytest

from .helpers import compare, is_reference

OPTS = "cache.files=off,cache.attr=0,cache.entry=0,cache.negative_entry=0,category.create=ff"

_libc = ctypes.CDLL(None, use_errno=True)
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def utimensat(path: str, atime: tuple[int, int], mtime: tuple[int, int]) -> None:
    ts = (_Timespec * 2)(_Timespec(*atime), _Timespec(*mtime))
    if _libc.utimensat(-100, os.fsencode(path), ts, 0) != 0:  # AT_FDCWD
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)


@pytest.fixture
def roots(mount_pool, native):
    """(pool mountpoint, native dir) with options that make the comparison exact."""
    return mount_pool(options=OPTS).mnt, native


def spread(pool) -> None:
    """Redistribute what ``ff`` put on branch 0: top-level entry k moves to branch k % 3,
    and every top-level dir also gets an empty twin (same mode) on the other branches."""
    b0 = pool.branches[0]
    for k, name in enumerate(sorted(os.listdir(b0))):
        src = os.path.join(b0, name)
        is_dir = os.path.isdir(src) and not os.path.islink(src)
        mode = os.lstat(src).st_mode
        dst_i = k % len(pool.branches)
        if dst_i:
            shutil.move(src, os.path.join(pool.branches[dst_i], name))
        if is_dir:
            for i, b in enumerate(pool.branches):
                if i != dst_i:
                    os.mkdir(os.path.join(b, name))
                    os.chmod(os.path.join(b, name), stat.S_IMODE(mode))


def J(r: str, *p: str) -> str:
    return os.path.join(r, *p)


def put(path: str, data: bytes = b"") -> None:
    with open(path, "wb") as f:
        f.write(data)


def get(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def st(path: str, follow: bool = True) -> tuple:
    s = os.stat(path) if follow else os.lstat(path)
    return (
        stat.filemode(s.st_mode),
        s.st_size if not stat.S_ISDIR(s.st_mode) else None,
        s.st_nlink,
        s.st_uid,
        s.st_gid,
    )


def fdo(path: str, flags: int, body, mode: int = 0o644):
    fd = os.open(path, flags, mode)
    try:
        return body(fd)
    finally:
        os.close(fd)


# -- setups ---------------------------------------------------------------


def s_none(r):
    pass


def s_file(r):
    put(J(r, "f"), b"0123456789" * 10)


def s_tree(r):
    s_file(r)
    os.mkdir(J(r, "d"))
    put(J(r, "d", "g"), b"gee")
    os.mkdir(J(r, "e"))
    os.mkdir(J(r, "d", "sub"))
    os.symlink("f", J(r, "l"))
    os.symlink("nowhere", J(r, "dangling"))
    os.symlink("loop2", J(r, "loop1"))
    os.symlink("loop1", J(r, "loop2"))


def _direct(r):
    buf = mmap.mmap(-1, 4096)
    buf.write(b"D" * 4096)
    fd = os.open(J(r, "f"), os.O_RDWR | os.O_DIRECT)
    try:
        os.pwritev(fd, [buf], 0)
        rb = mmap.mmap(-1, 4096)
        n = os.preadv(fd, [rb], 0)
        return n, rb[:8]
    finally:
        os.close(fd)


def _append(r):
    fdo(J(r, "f"), os.O_WRONLY | os.O_APPEND, lambda fd: (os.lseek(fd, 0, 0), os.write(fd, b"END")))
    return get(J(r, "f"))[-6:], os.stat(J(r, "f")).st_size


def _pwrite_hole(r):
    fdo(J(r, "n"), os.O_CREAT | os.O_WRONLY, lambda fd: os.pwrite(fd, b"xy", 10))
    return get(J(r, "n"))


def _pread(r):
    return fdo(J(r, "f"), os.O_RDONLY, lambda fd: (os.pread(fd, 5, 3), os.pread(fd, 50, 95), os.pread(fd, 5, 1000)))


def _overwrite_mid(r):
    fdo(J(r, "f"), os.O_RDWR, lambda fd: os.pwrite(fd, b"ABC", 50))
    return get(J(r, "f"))


def _ftruncate(r, n):
    fdo(J(r, "f"), os.O_RDWR, lambda fd: os.ftruncate(fd, n))
    return get(J(r, "f"))


def _utime_ns(r):
    os.utime(J(r, "f"), ns=(1_000_000_123, 2_000_000_456))
    s = os.stat(J(r, "f"))
    return s.st_atime_ns, s.st_mtime_ns


def _utime_omit(r):
    os.utime(J(r, "f"), ns=(1_000_000_000, 2_000_000_000))
    utimensat(J(r, "f"), (0, UTIME_OMIT), (5, 7))
    s = os.stat(J(r, "f"))
    return s.st_atime_ns, s.st_mtime_ns


def _utime_now(r):
    os.utime(J(r, "f"), ns=(1_000_000_000, 2_000_000_000))
    utimensat(J(r, "f"), (0, UTIME_NOW), (0, UTIME_OMIT))
    s = os.stat(J(r, "f"))
    return abs(s.st_atime - time.time()) < 10, s.st_mtime_ns


def _chown(r):
    os.chown(J(r, "f"), 1234, 5678)
    return st(J(r, "f"))


def _chdev(r):
    os.mknod(J(r, "c"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
    s = os.lstat(J(r, "c"))
    return stat.filemode(s.st_mode), os.major(s.st_rdev), os.minor(s.st_rdev)


def _rename(r, a, b):
    os.rename(J(r, a), J(r, b))
    return sorted(os.listdir(r)), sorted(os.listdir(J(r, "d"))) if os.path.isdir(J(r, "d")) else None


def _link(r, a, b):
    os.link(J(r, a), J(r, b))
    return st(J(r, a)), get(J(r, b))


def _xattr_roundtrip(r):
    p = J(r, "f")
    os.setxattr(p, "user.k", b"v1")
    os.setxattr(p, "user.k2", b"")
    a = os.getxattr(p, "user.k")
    os.setxattr(p, "user.k", b"v2", os.XATTR_REPLACE)
    lst = sorted(x for x in os.listxattr(p) if x.startswith("user."))
    os.removexattr(p, "user.k2")
    return a, os.getxattr(p, "user.k"), lst, sorted(x for x in os.listxattr(p) if x.startswith("user."))


def _deep(r):
    """Nest dirs via dir_fd so the relative path is ~3900 bytes (absolute path beyond PATH_MAX on neither)."""
    comp = "d" * 200
    fd = os.open(r, os.O_RDONLY | os.O_DIRECTORY)
    try:
        rel = ""
        for _ in range(19):
            rel = os.path.join(rel, comp) if rel else comp
            os.mkdir(rel, dir_fd=fd)
        put_fd = os.open(os.path.join(rel, "x"), os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
        os.close(put_fd)
        return len(rel), os.listdir(os.path.join(r, rel))
    finally:
        os.close(fd)


def _too_long_path(r):
    fd = os.open(r, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return os.open("a/" * 2048, os.O_RDONLY, dir_fd=fd)
    finally:
        os.close(fd)


CASES = {
    # stat
    "stat_file": (s_file, lambda r: st(J(r, "f"))),
    "stat_dir": (s_tree, lambda r: st(J(r, "d"))),
    "lstat_symlink": (s_tree, lambda r: (*st(J(r, "l"), follow=False)[0:1], os.readlink(J(r, "l")))),
    "stat_symlink_follows": (s_tree, lambda r: st(J(r, "l"))),
    "stat_dangling": (s_tree, lambda r: st(J(r, "dangling"))),
    "stat_missing": (s_none, lambda r: st(J(r, "nope"))),
    "stat_enotdir": (s_file, lambda r: st(J(r, "f", "x"))),
    # open flags
    "open_trunc": (s_file, lambda r: (fdo(J(r, "f"), os.O_WRONLY | os.O_TRUNC, lambda fd: None), get(J(r, "f")))),
    "open_append": (s_file, _append),
    "open_excl_exists": (s_file, lambda r: fdo(J(r, "f"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, lambda fd: 0)),
    "open_excl_new": (
        s_none,
        lambda r: (fdo(J(r, "n"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, lambda fd: 0, 0o640), st(J(r, "n"))),
    ),
    "open_creat_existing": (
        s_file,
        lambda r: (fdo(J(r, "f"), os.O_CREAT | os.O_WRONLY, lambda fd: 0, 0o600), st(J(r, "f"))),
    ),
    "open_missing": (s_none, lambda r: fdo(J(r, "nope"), os.O_RDONLY, lambda fd: 0)),
    "open_direct": (s_file, _direct),
    "open_noatime": (s_file, lambda r: fdo(J(r, "f"), os.O_RDONLY | os.O_NOATIME, lambda fd: os.read(fd, 4))),
    "open_rdonly_write": (s_file, lambda r: fdo(J(r, "f"), os.O_RDONLY, lambda fd: os.write(fd, b"x"))),
    "open_wronly_read": (s_file, lambda r: fdo(J(r, "f"), os.O_WRONLY, lambda fd: os.read(fd, 1))),
    "open_dir_wronly": (s_tree, lambda r: fdo(J(r, "d"), os.O_WRONLY, lambda fd: 0)),
    "open_file_odirectory": (s_file, lambda r: fdo(J(r, "f"), os.O_RDONLY | os.O_DIRECTORY, lambda fd: 0)),
    "open_eloop": (s_tree, lambda r: fdo(J(r, "loop1"), os.O_RDONLY, lambda fd: 0)),
    "open_nofollow": (s_tree, lambda r: fdo(J(r, "l"), os.O_RDONLY | os.O_NOFOLLOW, lambda fd: 0)),
    "open_enotdir": (s_file, lambda r: fdo(J(r, "f", "x"), os.O_RDONLY, lambda fd: 0)),
    "open_creat_in_missing_dir": (s_none, lambda r: fdo(J(r, "no", "x"), os.O_CREAT | os.O_WRONLY, lambda fd: 0)),
    # read/write
    "pread": (s_file, _pread),
    "pwrite_hole": (s_none, _pwrite_hole),
    "pwrite_mid": (s_file, _overwrite_mid),
    "read_dir_eisdir": (s_tree, lambda r: fdo(J(r, "d"), os.O_RDONLY, lambda fd: os.read(fd, 1))),
    # truncate
    "truncate_shrink": (s_file, lambda r: (os.truncate(J(r, "f"), 7), get(J(r, "f")))),
    "truncate_grow": (s_file, lambda r: (os.truncate(J(r, "f"), 120), get(J(r, "f")))),
    "truncate_dir": (s_tree, lambda r: os.truncate(J(r, "d"), 0)),
    "truncate_negative": (s_file, lambda r: os.truncate(J(r, "f"), -1)),
    "ftruncate_shrink": (s_file, lambda r: _ftruncate(r, 3)),
    "ftruncate_grow": (s_file, lambda r: _ftruncate(r, 200)),
    "ftruncate_rdonly": (s_file, lambda r: fdo(J(r, "f"), os.O_RDONLY, lambda fd: os.ftruncate(fd, 0))),
    # chmod / chown / utimens
    "chmod_file": (s_file, lambda r: (os.chmod(J(r, "f"), 0o7751), st(J(r, "f")))),
    "chmod_dir": (s_tree, lambda r: (os.chmod(J(r, "d"), 0o1700), st(J(r, "d")))),
    "chmod_missing": (s_none, lambda r: os.chmod(J(r, "nope"), 0o600)),
    "chown": (s_file, _chown),
    "chown_keep": (s_file, lambda r: (os.chown(J(r, "f"), -1, 99), st(J(r, "f")))),
    "lchown_symlink": (s_tree, lambda r: (os.lchown(J(r, "l"), 7, 8), os.lstat(J(r, "l")).st_uid, st(J(r, "f")))),
    "utime_ns": (s_file, _utime_ns),
    "utime_omit": (s_file, _utime_omit),
    "utime_now": (s_file, _utime_now),
    # symlink / readlink / mknod
    "readlink": (s_tree, lambda r: os.readlink(J(r, "l"))),
    "readlink_file": (s_file, lambda r: os.readlink(J(r, "f"))),
    "symlink_new": (s_none, lambda r: (os.symlink("/some/abs/target", J(r, "s")), os.readlink(J(r, "s")))),
    "symlink_exists": (s_file, lambda r: os.symlink("x", J(r, "f"))),
    "mkfifo": (s_none, lambda r: (os.mkfifo(J(r, "p"), 0o640), st(J(r, "p")))),
    "mknod_chr": (s_none, _chdev),
    "mknod_reg": (s_none, lambda r: (os.mknod(J(r, "m"), stat.S_IFREG | 0o640), st(J(r, "m")))),
    "chmod_via_symlink": (s_tree, lambda r: (os.chmod(J(r, "l"), 0o600), st(J(r, "f")))),
    "open_rdonly_trunc": (s_file, lambda r: (fdo(J(r, "f"), os.O_RDONLY | os.O_TRUNC, lambda fd: 0), get(J(r, "f")))),
    # mkdir / rmdir / unlink
    "mkdir": (s_none, lambda r: (os.mkdir(J(r, "n"), 0o750), st(J(r, "n")))),
    "mkdir_eexist": (s_tree, lambda r: os.mkdir(J(r, "d"))),
    "mkdir_eexist_file": (s_file, lambda r: os.mkdir(J(r, "f"))),
    "mkdir_enotdir": (s_file, lambda r: os.mkdir(J(r, "f", "x"))),
    "mkdir_enoent": (s_none, lambda r: os.mkdir(J(r, "a", "b"))),
    "rmdir": (s_tree, lambda r: (os.rmdir(J(r, "e")), sorted(os.listdir(r)))),
    "rmdir_enotempty": (s_tree, lambda r: os.rmdir(J(r, "d"))),
    "rmdir_file": (s_file, lambda r: os.rmdir(J(r, "f"))),
    "rmdir_missing": (s_none, lambda r: os.rmdir(J(r, "nope"))),
    "unlink": (s_file, lambda r: (os.unlink(J(r, "f")), os.listdir(r))),
    "unlink_dir": (s_tree, lambda r: os.unlink(J(r, "d"))),
    "unlink_missing": (s_none, lambda r: os.unlink(J(r, "nope"))),
    "unlink_symlink": (s_tree, lambda r: (os.unlink(J(r, "l")), os.path.exists(J(r, "f")))),
    # rename
    "rename_file": (s_tree, lambda r: _rename(r, "f", "f2")),
    "rename_across_dirs": (s_tree, lambda r: _rename(r, "f", "d/f")),
    "rename_over_file": (s_tree, lambda r: (_rename(r, "f", "d/g"), get(J(r, "d", "g")))),
    "rename_self": (s_tree, lambda r: _rename(r, "f", "f")),
    "rename_dir": (s_tree, lambda r: _rename(r, "d", "d2")),
    "rename_dir_over_empty_dir": (s_tree, lambda r: (_rename(r, "d", "e"), sorted(os.listdir(J(r, "e"))))),
    "rename_dir_over_nonempty": (s_tree, lambda r: _rename(r, "e", "d")),
    "rename_file_over_dir": (s_tree, lambda r: _rename(r, "f", "e")),
    "rename_dir_over_file": (s_tree, lambda r: _rename(r, "e", "f")),
    "rename_dir_into_itself": (s_tree, lambda r: _rename(r, "d", "d/sub/x")),
    "rename_missing": (s_tree, lambda r: _rename(r, "nope", "x")),
    "rename_into_missing_dir": (s_tree, lambda r: _rename(r, "f", "zz/f")),
    "rename_symlink": (s_tree, lambda r: (_rename(r, "l", "l2"), os.readlink(J(r, "l2")))),
    "rename_hardlink_onto_itself": (
        s_tree,
        lambda r: (os.link(J(r, "f"), J(r, "h")), _rename(r, "f", "h"), st(J(r, "h"))),
    ),
    # link
    "link": (s_tree, lambda r: _link(r, "f", "d/h")),
    "link_eexist": (s_tree, lambda r: _link(r, "f", "d/g")),
    "link_dir": (s_tree, lambda r: _link(r, "d", "d3")),
    "link_missing": (s_tree, lambda r: _link(r, "nope", "x")),
    # access
    "access_file": (s_file, lambda r: [os.access(J(r, "f"), m) for m in (os.F_OK, os.R_OK, os.W_OK, os.X_OK)]),
    "access_dir": (s_tree, lambda r: [os.access(J(r, "d"), m) for m in (os.F_OK, os.R_OK, os.W_OK, os.X_OK)]),
    "access_exec": (s_file, lambda r: (os.chmod(J(r, "f"), 0o100), os.access(J(r, "f"), os.X_OK))),
    "access_missing": (s_none, lambda r: os.access(J(r, "nope"), os.F_OK)),
    # xattr
    "xattr_roundtrip": (s_file, _xattr_roundtrip),
    "xattr_get_missing": (s_file, lambda r: os.getxattr(J(r, "f"), "user.none")),
    "xattr_remove_missing": (s_file, lambda r: os.removexattr(J(r, "f"), "user.none")),
    "xattr_create_exists": (
        s_file,
        lambda r: (os.setxattr(J(r, "f"), "user.a", b"1"), os.setxattr(J(r, "f"), "user.a", b"2", os.XATTR_CREATE)),
    ),
    "xattr_replace_missing": (s_file, lambda r: os.setxattr(J(r, "f"), "user.a", b"1", os.XATTR_REPLACE)),
    "xattr_dir": (s_tree, lambda r: (os.setxattr(J(r, "d"), "user.a", b"dv"), os.getxattr(J(r, "d"), "user.a"))),
    "xattr_list_empty": (s_file, lambda r: [x for x in os.listxattr(J(r, "f")) if x.startswith("user.")]),
    "xattr_big_value": (
        s_file,
        lambda r: (os.setxattr(J(r, "f"), "user.big", b"v" * 3000), len(os.getxattr(J(r, "f"), "user.big"))),
    ),
    # names and paths
    "name_255": (s_none, lambda r: (put(J(r, "n" * 255), b"x"), os.listdir(r))),
    "name_256": (s_none, lambda r: put(J(r, "n" * 256), b"x")),
    "name_256_stat": (s_none, lambda r: os.stat(J(r, "n" * 256))),
    "mkdir_name_256": (s_none, lambda r: os.mkdir(J(r, "n" * 256))),
    "deep_path": (s_none, _deep),
    "path_over_path_max": (s_none, _too_long_path),
    "non_utf8_name": (
        s_none,
        lambda r: (
            put(os.path.join(os.fsencode(r), b"caf\xe9\xff\x80"), b"b"),
            os.listdir(os.fsencode(r)),
            get(os.path.join(os.fsencode(r), b"caf\xe9\xff\x80")),
        ),
    ),
    "non_utf8_dir_rename": (
        s_none,
        lambda r: (
            os.mkdir(os.path.join(os.fsencode(r), b"\xfe")),
            os.rename(os.path.join(os.fsencode(r), b"\xfe"), os.path.join(os.fsencode(r), b"\xfd\xfc")),
            os.listdir(os.fsencode(r)),
        ),
    ),
    "spaces_and_newlines": (s_none, lambda r: (put(J(r, "a b\nc\td"), b"z"), os.listdir(r))),
}

# Cases where the reference deviates from native POSIX (our implementation must follow native).
REFERENCE_DEVIATIONS: dict[str, str] = {
    "open_direct": "2.33.5 passes O_DIRECT to the branch but writes from an unaligned buffer: EINVAL",
    "name_256_stat": "2.33.5 answers ENOENT for a lookup of an over-long name; native says ENAMETOOLONG",
}


def _param(name):
    marks = []
    if name in REFERENCE_DEVIATIONS:
        marks.append(pytest.mark.xfail(condition=is_reference(), reason=REFERENCE_DEVIATIONS[name], strict=True))
    return pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("case", [_param(n) for n in CASES])
def test_parity(roots, case):
    setup, op = CASES[case]
    pool_root, native_root = roots
    setup(pool_root)
    setup(native_root)
    compare(lambda: op(pool_root), lambda: op(native_root))


# Spread layout: where mergerfs semantics (not a POSIX deviation) make a case differ.
SPREAD_SKIP: dict[str, str] = {
    "rename_dir_over_nonempty": "mergerfs rename succeeds if any branch succeeds (spec 5): the target "
    "dir is empty on some branches, so no ENOTEMPTY",
}


def _sparam(name):
    marks = []
    if name in SPREAD_SKIP:
        marks.append(pytest.mark.skip(reason=SPREAD_SKIP[name]))
    elif name in REFERENCE_DEVIATIONS:
        marks.append(pytest.mark.xfail(condition=is_reference(), reason=REFERENCE_DEVIATIONS[name], strict=True))
    return pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("case", [_sparam(n) for n in CASES if CASES[n][0] is not s_none])
def test_parity_spread(mount_pool, native, case):
    """Same cases, with the setup's entries spread over all branches (dirs on every branch)."""
    setup, op = CASES[case]
    p = mount_pool(options=OPTS)
    setup(p.mnt)
    setup(native)
    spread(p)
    compare(lambda: op(p.mnt), lambda: op(native))


def test_statfs_exists(roots):
    s = os.statvfs(roots[0])
    assert s.f_bsize > 0 and s.f_blocks > 0 and s.f_namemax >= 255


def test_umask_applies(roots):
    old = os.umask(0o027)
    try:
        compare(
            lambda: (
                put(J(roots[0], "u")),
                os.mkdir(J(roots[0], "ud"), 0o777),
                st(J(roots[0], "u")),
                st(J(roots[0], "ud")),
            ),
            lambda: (
                put(J(roots[1], "u")),
                os.mkdir(J(roots[1], "ud"), 0o777),
                st(J(roots[1], "u")),
                st(J(roots[1], "ud")),
            ),
        )
    finally:
        os.umask(old)


def test_fd_ops_parity(roots):
    """lseek SEEK_END / fstat / fsync / fdatasync on an open fd."""

    def run(r):
        s_file(r)
        fd = os.open(J(r, "f"), os.O_RDWR)
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            os.write(fd, b"tail")
            os.fsync(fd)
            os.fdatasync(fd)
            s = os.fstat(fd)
            return end, s.st_size, stat.filemode(s.st_mode), os.pread(fd, 4, end)
        finally:
            os.close(fd)

    compare(lambda: run(roots[0]), lambda: run(roots[1]))
