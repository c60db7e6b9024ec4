"""O_TMPFILE on the pool (FUSE_TMPFILE), compared with a native directory: an
unnamed file opened, written, read back and fstat'ed (nlink 0), then given a
name atomically (linkat AT_EMPTY_PATH as root, or /proc/self/fd/N with
AT_SYMLINK_FOLLOW), or closed unnamed (nothing left on any branch)."""

from __future__ import annotations

import ctypes
import errno
import os
import stat

import pytest

from mergerfs import _fastpath

from .helpers import compare, is_llfuse, is_reference, unmount

pytestmark = pytest.mark.skipif(
    is_reference() or is_llfuse(), reason="the kernel session's FUSE_TMPFILE (libfuse 2 and 2.33.5 have none)"
)

OPTS = "cache.files=off,cache.attr=0,cache.entry=0,cache.negative_entry=0,category.create=ff"
_libc = ctypes.CDLL(None, use_errno=True)
_libc.linkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
AT_FDCWD, AT_EMPTY_PATH, AT_SYMLINK_FOLLOW = -100, 0x1000, 0x400
STATX_MASK, STATX_BTIME = 0xFFF, 0x800  # basic stats and the birth time (FUSE_STATX)


def _statx(target: str | int) -> tuple:
    """(nlink, size, birth time reported) by statx(2)."""
    sx = _fastpath.statx(target, 0, STATX_MASK)
    return sx[3], sx[8], bool(sx[0] & STATX_BTIME and sx[12])


def _link(fd: int, dst: str, how: str) -> None:
    """Give the unnamed file ``fd`` the name ``dst``, as tools do."""
    if how == "empty_path":  # needs CAP_DAC_READ_SEARCH: the tests run as root
        rc = _libc.linkat(fd, b"", AT_FDCWD, os.fsencode(dst), AT_EMPTY_PATH)
    else:  # os.link would call link(2), which links the /proc symlink itself
        rc = _libc.linkat(AT_FDCWD, f"/proc/self/fd/{fd}".encode(), AT_FDCWD, os.fsencode(dst), AT_SYMLINK_FOLLOW)
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _files(top: str) -> list[str]:
    """Every non-directory under ``top``."""
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(top) for f in fs)


def _tmpfile_then_link(root: str, how: str) -> tuple:
    fd = os.open(root, os.O_TMPFILE | os.O_RDWR, 0o640)
    try:
        os.write(fd, b"hello tmpfile")
        unnamed = os.fstat(fd)
        by_path = os.stat(f"/proc/self/fd/{fd}")  # no fh: GETATTR of the node alone
        sx = (_statx(fd), _statx(f"/proc/self/fd/{fd}"))  # STATX, with and without the fh
        back = os.pread(fd, 100, 0)
        listed = sorted(os.listdir(root))
        dst = os.path.join(root, "named")
        _link(fd, dst, how)
        linked = os.fstat(fd)
        st = os.stat(dst)
        with open(dst, "rb") as f:
            content = f.read()
        os.write(fd, b"!")  # still the same file
        with open(dst, "rb") as f:
            after = f.read()
        return (
            back,
            listed,
            (stat.filemode(unnamed.st_mode), unnamed.st_nlink, unnamed.st_size),
            (by_path.st_nlink, by_path.st_size),
            sx,
            (linked.st_nlink, st.st_nlink, st.st_ino == linked.st_ino, stat.filemode(st.st_mode)),
            content,
            after,
            sorted(os.listdir(root)),
        )
    finally:
        os.close(fd)


#: cache.files=off (direct I/O through the daemon) and passthrough (the kernel's
#: I/O on the branch file, the backing opened from the unnamed file's fd).
CACHES = {"direct": "", "passthrough": ",cache.files=auto-full,passthrough.io=rw"}


@pytest.mark.parametrize("cache", sorted(CACHES))
@pytest.mark.parametrize("how", ["empty_path", "proc_fd"])
def test_tmpfile_written_then_linked_as_native(mount_pool, native, how, cache):
    p = mount_pool(options=OPTS + CACHES[cache])
    res = compare(lambda: _tmpfile_then_link(p.mnt, how), lambda: _tmpfile_then_link(native, how))
    assert res[0] and res[2][2][1] == 0  # worked, and the file had no name before
    assert p.where("named") == [0]  # on exactly one branch: the create policy's
    assert _files(p.branches[0]) == [p.branch_path(0, "named")] and _files(p.branches[1]) == []


def _fd_ops(root: str) -> tuple:
    """What an unnamed file's fd does: metadata calls, a reopen through
    /proc/self/fd, xattrs; closed unnamed, nothing is left."""
    fd = os.open(root, os.O_TMPFILE | os.O_WRONLY, 0o600)
    out: list = []
    try:
        os.write(fd, b"0123456789")
        os.ftruncate(fd, 4)
        os.fchmod(fd, 0o640)
        os.utime(fd, ns=(3_000_000_000, 4_000_000_000))
        os.fchown(fd, 321, 654)
        os.fsync(fd)
        s = os.fstat(fd)
        out.append((stat.filemode(s.st_mode), s.st_size, s.st_nlink, s.st_uid, s.st_gid, s.st_mtime_ns))
        with open(f"/proc/self/fd/{fd}", "rb") as f:  # a write-only fd reopened for reading: an OPEN
            out.append(f.read())
        os.setxattr(fd, "user.k", b"v")
        out.append((os.getxattr(fd, "user.k"), "user.k" in os.listxattr(fd)))
        os.removexattr(fd, "user.k")
        try:
            os.getxattr(fd, "user.k")
        except OSError as e:
            out.append(errno.errorcode[e.errno])
    finally:
        os.close(fd)
    out.append(sorted(os.listdir(root)))
    return tuple(out)


@pytest.mark.parametrize("cache", sorted(CACHES))
def test_tmpfile_fd_calls_and_close_unnamed_as_native(mount_pool, native, cache):
    p = mount_pool(options=OPTS + CACHES[cache])
    res = compare(lambda: _fd_ops(p.mnt), lambda: _fd_ops(native))
    assert res[0]
    assert [_files(b) for b in p.branches] == [[], [], []]  # nothing left anywhere


def _excl(root: str) -> tuple:
    fd = os.open(root, os.O_TMPFILE | os.O_RDWR | os.O_EXCL, 0o600)
    out = []
    try:
        os.write(fd, b"x")
        for how in ("empty_path", "proc_fd"):
            try:
                _link(fd, os.path.join(root, "never"), how)
                out.append("linked")
            except OSError as e:
                out.append(errno.errorcode[e.errno])
    finally:
        os.close(fd)
    return tuple(out), sorted(os.listdir(root))


def test_tmpfile_excl_is_never_linkable_as_native(mount_pool, native):
    p = mount_pool(options=OPTS)
    res = compare(lambda: _excl(p.mnt), lambda: _excl(native))
    assert res[2] == (("ENOENT", "ENOENT"), [])
    assert [_files(b) for b in p.branches] == [[], [], []]


@pytest.mark.parametrize(
    "target, flags",
    [("missing", os.O_RDWR), ("file", os.O_RDWR), ("file/x", os.O_RDWR), ("dir", os.O_RDONLY)],
)
def test_tmpfile_errors_as_native(mount_pool, native, target, flags):
    p = mount_pool(options=OPTS)
    for root in (p.mnt, native):
        with open(os.path.join(root, "file"), "w") as f:
            f.write("f")
        os.mkdir(os.path.join(root, "dir"))

    def run(root: str) -> None:
        os.close(os.open(os.path.join(root, target), os.O_TMPFILE | flags, 0o600))

    assert compare(lambda: run(p.mnt), lambda: run(native))[0] is False


def test_tmpfile_in_a_subdirectory_clones_it_onto_the_create_branch(mount_pool, native):
    p = mount_pool(options=OPTS, layout=[{}, {}, {"sub/deeper": None}])
    os.mkdir(os.path.join(native, "sub"))
    os.mkdir(os.path.join(native, "sub", "deeper"))
    rel = "sub/deeper"
    res = compare(
        lambda: _tmpfile_then_link(os.path.join(p.mnt, rel), "proc_fd"),
        lambda: _tmpfile_then_link(os.path.join(native, rel), "proc_fd"),
    )
    assert res[0]
    assert p.where("sub/deeper/named") == [0] and p.where("sub/deeper") == [0, 2]


@pytest.mark.parametrize("mode", ["RO", "NC"])
def test_tmpfile_leaves_out_what_the_create_policy_does(mount_pool, tmp_path, mode):
    branches = []
    for i in range(2):
        b = tmp_path / f"m{mode}{i}"
        b.mkdir()
        branches.append(str(b))
    p = mount_pool(options=OPTS, branches=[f"{branches[0]}={mode}", branches[1]])
    _tmpfile_then_link(p.mnt, "proc_fd")
    assert _files(branches[0]) == [] and _files(branches[1]) == [os.path.join(branches[1], "named")]


def test_tmpfile_link_across_branches_is_exdev_as_link(mount_pool):
    """Path preserving: a name whose directory is on another branch only is
    refused as link(2) of a named file there is."""
    p = mount_pool(n=2, options=OPTS + ",category.create=epff", layout=[{"a": None}, {"b": None}])
    with open(p.path("a/f"), "w") as f:
        f.write("f")
    fd = os.open(p.path("a"), os.O_TMPFILE | os.O_RDWR, 0o600)
    try:
        for dst, want in (("b/x", errno.EXDEV), ("a/x", 0)):
            try:
                _link(fd, p.path(dst), "proc_fd")
                got = 0
            except OSError as e:
                got = e.errno
            try:
                os.link(p.path("a/f"), p.path(dst + "f"))
                named = 0
            except OSError as e:
                named = e.errno
            assert got == named == want, dst
    finally:
        os.close(fd)
    assert p.where("a/x") == [0] and p.where("b/x") == []


def test_tmpfile_placeholder_never_finds_a_real_file(mount_pool):
    """The node's placeholder name ("//tmpfile/N") collapses to "/tmpfile/N" on a
    branch: a real file there must never answer for the unnamed one (the
    compiled GETATTR/GETXATTR hand it to Python, which asks the open fd)."""
    layout = [{f"tmpfile/{i}": b"impostor-" + bytes(str(i), "ascii") for i in range(1, 9)}]
    p = mount_pool(options="cache.attr=0,cache.entry=0,category.create=ff", layout=layout)
    for i in range(1, 9):
        os.setxattr(p.branch_path(0, f"tmpfile/{i}"), "user.who", b"impostor")
    fd = os.open(p.mnt, os.O_TMPFILE | os.O_RDWR, 0o600)
    try:
        os.write(fd, b"mine")
        for _ in range(20):  # on every worker, acting as this caller or not
            st = os.stat(f"/proc/self/fd/{fd}")
            assert (st.st_size, st.st_nlink) == (4, 0)
            assert _statx(f"/proc/self/fd/{fd}")[:2] == (0, 4)
            with pytest.raises(OSError) as e:
                os.getxattr(f"/proc/self/fd/{fd}", "user.who")
            assert e.value.errno == errno.ENODATA
    finally:
        os.close(fd)


def test_tmpfile_on_a_branch_without_it_answers_its_error(mount_pool, tmp_path):
    """The picked branch is a filesystem without O_TMPFILE (a pool of ours on
    llfuse, which has no tmpfile): its EOPNOTSUPP, no other branch tried."""
    inner = mount_pool(n=1, options="fuse-binding=llfuse")
    plain = tmp_path / "plain"
    plain.mkdir()
    p = mount_pool(branches=[inner.mnt, str(plain)], options=OPTS)
    try:
        with pytest.raises(OSError) as e:
            os.close(os.open(p.mnt, os.O_TMPFILE | os.O_RDWR, 0o600))
        assert e.value.errno == errno.EOPNOTSUPP
        assert _files(str(plain)) == [] and _files(inner.branches[0]) == []
    finally:
        unmount(p.mnt)  # before the pool it stands on
