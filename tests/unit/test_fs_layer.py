"""The filesystem layer (:class:`mergerfs.fs.FileSystem`) on real branch
directories, without FUSE: every public operation, checked against native
behaviour (the same call on a plain directory) or against what the branches
hold afterwards.

Where the kernel would have refused a call before it reached a FUSE daemon
(lookups of each path component, EEXIST for a create over an existing name),
the tests here do not ask the layer; tests/unit/test_fs_model.py models those
checks for its random sequences.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat as S
import struct
import tempfile
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from poolkit import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    Pool,
    as_user,
    err_of,
    fallocate,
    fd_count,
    link_fd,
    opened,
    outcome,
    renameat2,
    slurp,
    stale_copies,
    tmpfs,
    touch,
)

from mergerfs import _fastpath
from mergerfs.fs import UNNAMED, DirHandle, Handle, dirname, join, synthetic_stat

USER, GROUP = 4242, 4343  # an unprivileged caller (not in the user database)
FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_NOATIME_FL = 0x80086601, 0x40086602, 0x80


@pytest.fixture
def mkpool():
    """Factory ``mkpool(n=2, options='') -> Pool`` in a world-searchable directory
    (pytest's own tmp_path is 0700: no other user could reach the branches)."""
    roots = []

    def make(n: int = 2, options: str = "", branches: list[str] | None = None) -> Pool:
        root = tempfile.mkdtemp(prefix="mfs-unit-")
        os.chmod(root, 0o755)
        roots.append(root)
        return Pool(root, n, options, branches)

    yield make
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)


def same_kind(a: os.stat_result, b: os.stat_result) -> tuple:
    """What a pool entry and its native twin must share."""
    size = a.st_size if S.S_ISREG(a.st_mode) or S.S_ISLNK(a.st_mode) else None
    nlink = a.st_nlink if S.S_ISREG(a.st_mode) else None
    return (a.st_mode, a.st_uid, a.st_gid, size, nlink), (
        b.st_mode,
        b.st_uid,
        b.st_gid,
        b.st_size if size is not None else None,
        b.st_nlink if nlink is not None else None,
    )


def assert_alike(pool_st: os.stat_result, native_st: os.stat_result) -> None:
    mine, native = same_kind(pool_st, native_st)
    assert mine == native


# --------------------------------------------------------------- helpers
def test_join_and_dirname():
    assert join("/", "a") == "/a" and join("/a", "b") == "/a/b"
    assert dirname("/a") == "/" and dirname("/a/b") == "/a" and dirname("/") == "/"


def test_synthetic_stat():
    st = synthetic_stat(S.S_IFDIR | 0o755, nlink=2)
    assert S.S_ISDIR(st.st_mode) and S.S_IMODE(st.st_mode) == 0o755 and st.st_nlink == 2
    assert abs(st.st_mtime - time.time()) < 5


# --------------------------------------------------------------- getattr
def test_getattr_reports_the_first_branch_holding_it(mkpool):
    p = mkpool(3)
    p.put(1, "/d/f", b"one")
    p.put(2, "/d/f", b"second")
    st, there = p.fs.getattr("/d/f"), os.lstat(p.b(1, "/d/f"))
    assert (st.st_dev, st.st_ino, st.st_size) == (there.st_dev, there.st_ino, there.st_size)


def test_getattr_search_policy_newest(mkpool):
    p = mkpool(3, "func.getattr=newest")
    for i in range(3):
        p.put(i, "/f", b"x" * (i + 1))
        os.utime(p.b(i, "/f"), (1000, [1000, 3000, 2000][i]))
    assert p.fs.getattr("/f").st_size == 2


@pytest.mark.parametrize("rel", ["/missing", "/f/x", "/d/missing/x", "/d/" + "n" * 256, "/d/f/x/y"])
def test_getattr_errors_match_native(mkpool, rel):
    p = mkpool()
    p.both("/f", b"x", (1,))
    p.both("/d/f", b"y", (0, 1))
    assert err_of(p.fs.getattr, rel) == err_of(os.lstat, p.n(rel)) != 0


def test_getattr_denied_lookup_is_eacces_not_enoent(mkpool):
    p = mkpool()
    for root in (p.b(1), p.native):
        os.makedirs(root + "/priv")
        touch(root + "/priv/f")
        os.chmod(root + "/priv", 0o700)
    native = as_user(USER, GROUP, lambda: err_of(os.lstat, p.n("/priv/f")))
    assert native == errno.EACCES
    assert as_user(USER, GROUP, lambda: err_of(p.fs.getattr, "/priv/f")) == native


def test_root_without_any_branch_shows_the_error_entry(mkpool, tmp_path):
    p = mkpool(branches=[str(tmp_path / "gone1"), str(tmp_path / "gone2")])
    assert S.S_ISDIR(p.fs.getattr("/").st_mode)
    dh = p.fs.opendir("/")
    try:
        names = [e[0] for e in p.fs.readdir(dh)]
    finally:
        p.fs.releasedir(dh)
    assert len(names) == 1 and names[0].startswith(b"error: ")
    st = p.fs.getattr("/" + os.fsdecode(names[0]))
    assert S.S_ISREG(st.st_mode) and S.S_IMODE(st.st_mode) == 0o444
    assert err_of(p.fs.getattr, "/other") == errno.ENOENT


@pytest.mark.parametrize("follow", ["never", "directory", "regular", "all"])
def test_follow_symlinks(mkpool, follow):
    p = mkpool(options=f"follow-symlinks={follow}")
    p.put(0, "/d", None)
    p.put(0, "/f", b"data")
    os.symlink("d", p.b(0, "/ld"))
    os.symlink("f", p.b(0, "/lf"))
    os.symlink("nowhere", p.b(0, "/dangling"))
    kinds = {rel: S.S_IFMT(p.fs.getattr(rel).st_mode) for rel in ("/ld", "/lf", "/dangling")}
    expect_dir = S.S_IFDIR if follow in ("directory", "all") else S.S_IFLNK
    expect_reg = S.S_IFREG if follow in ("regular", "all") else S.S_IFLNK
    assert kinds == {"/ld": expect_dir, "/lf": expect_reg, "/dangling": S.S_IFLNK}
    if follow == "all":
        assert p.fs.getattr("/lf").st_ino == os.stat(p.b(0, "/f")).st_ino


def test_symlinkify_old_files_read_as_links_to_their_branch_path(mkpool):
    p = mkpool(options="symlinkify=true,symlinkify-timeout=3600")
    p.put(1, "/old", b"old data")
    p.put(1, "/new", b"new data")
    os.utime(p.b(1, "/old"), (time.time() - 7200, time.time() - 7200))
    st = p.fs.getattr("/old")
    target = p.b(1, "/old")
    assert S.S_ISLNK(st.st_mode) and st.st_size == len(os.fsencode(target))
    there = os.lstat(target)  # the rest as the file has it (the reply encoders read every field)
    assert (st.st_mtime_ns, st.st_ctime_ns, st.st_blksize, st.st_blocks) == (
        there.st_mtime_ns,
        there.st_ctime_ns,
        there.st_blksize,
        there.st_blocks,
    )
    assert p.fs.readlink("/old") == target
    assert S.S_ISREG(p.fs.getattr("/new").st_mode)
    assert err_of(p.fs.readlink, "/new") == err_of(os.readlink, p.b(1, "/new")) == errno.EINVAL


# ----------------------------------------------------------------- statx
STATX_BTIME = 0x800


def _statx_layout(p: Pool) -> None:
    """A file on both branches (the second newer and longer), a directory, a
    file old enough to be symlinkified, symlinks to each kind and a dangling one."""
    p.put(0, "/f", b"first")
    p.put(1, "/f", b"second!")
    os.utime(p.b(0, "/f"), (1000, 1000))
    p.put(1, "/d", None)
    p.put(1, "/old", b"old data")
    os.utime(p.b(1, "/old"), (time.time() - 7200, time.time() - 7200))
    os.symlink("d", p.b(1, "/ld"))
    os.symlink("f", p.b(1, "/lf"))
    os.symlink("nowhere", p.b(0, "/dangling"))


def _branch_statx(p: Pool, st: os.stat_result) -> tuple[int, ...]:
    """statx(2) of the branch file (the path itself or where it points) getattr reported as ``st``."""
    for b in p.branches:
        for rel in ("/f", "/d", "/old", "/ld", "/lf", "/dangling", "/"):
            path = b + ("" if rel == "/" else rel)
            for look, flags in ((os.lstat, 0x100), (os.stat, 0)):  # AT_SYMLINK_NOFOLLOW, or follow
                try:
                    there = look(path)
                except OSError:
                    continue
                if (there.st_dev, there.st_ino) == (st.st_dev, st.st_ino):
                    return _fastpath.statx(path, flags, 0xFFF)
    raise AssertionError("no branch file has this identity")


@pytest.mark.parametrize(
    "options", ["", "func.getattr=newest", "follow-symlinks=all", "symlinkify=true,symlinkify-timeout=3600"]
)
def test_statx_agrees_with_getattr_and_adds_the_birth_time(mkpool, options):
    """statx reports what getattr reports (same branch, follow-symlinks,
    symlinkify), plus the birth time of that very branch file."""
    p = mkpool(options=options)
    _statx_layout(p)
    for rel in ("/", "/f", "/d", "/old", "/ld", "/lf", "/dangling"):
        st, sx = p.fs.getattr(rel), p.fs.statx(rel)
        assert (sx.mode, sx.nlink, sx.uid, sx.gid, sx.size, sx.blocks, sx.ino, sx.blksize) == (
            st.st_mode,
            st.st_nlink,
            st.st_uid,
            st.st_gid,
            st.st_size,
            st.st_blocks,
            st.st_ino,
            st.st_blksize,
        ), rel
        assert (sx.atime_ns, sx.mtime_ns, sx.ctime_ns) == (st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns), rel
        assert os.makedev(sx.dev_major, sx.dev_minor) == st.st_dev, rel
        assert sx.mask & STATX_BTIME and sx.btime_ns == _branch_statx(p, st)[12], rel
    if "symlinkify" not in options:  # (f is old enough to read as a link)
        assert p.fs.statx("/f").size == (7 if "newest" in options else 5)


@pytest.mark.parametrize("rel", ["/missing", "/f/x", "/d/missing/x", "/d/" + "n" * 256])
def test_statx_errors_match_native(mkpool, rel):
    p = mkpool()
    p.both("/f", b"x", (1,))
    p.both("/d/f", b"y", (0, 1))
    assert err_of(p.fs.statx, rel) == err_of(os.lstat, p.n(rel)) != 0


def test_statx_of_synthetic_entries_claims_no_birth_time(mkpool, tmp_path):
    p = mkpool(branches=[str(tmp_path / "gone1")])
    sx = p.fs.statx("/")
    assert S.S_ISDIR(sx.mode) and not sx.mask & STATX_BTIME and sx.mask & 0x7FF == 0x7FF
    assert err_of(p.fs.statx, "/other") == errno.ENOENT


def test_fstatx_is_the_open_file_even_unlinked(mkpool):
    p = mkpool()
    p.put(1, "/f", b"data")
    born = _fastpath.statx(p.b(1, "/f"), 0, 0xFFF)[12]
    h = p.fs.open("/f", os.O_RDONLY)
    try:
        os.unlink(p.b(1, "/f"))
        sx = p.fs.fstatx(h)
        assert (sx.btime_ns, sx.nlink, sx.size, sx.mask & STATX_BTIME) == (born, 0, 4, STATX_BTIME)
        assert (sx.ino, sx.mtime_ns) == (os.fstat(h.fd).st_ino, os.fstat(h.fd).st_mtime_ns)
    finally:
        p.fs.release(h)


def test_inode_of_matches_readdir_numbers(mkpool):
    """``ls -i`` and ``stat`` agree: readdir's ino is inode_of(getattr)."""
    p = mkpool(3)
    p.put(0, "/d/a", b"")
    p.put(1, "/d/b", b"")
    p.put(2, "/d/sub", None)
    os.symlink("a", p.b(2, "/d/l"))
    dh = p.fs.opendir("/d")
    try:
        rows = p.fs.readdir(dh)
    finally:
        p.fs.releasedir(dh)
    for name, _, ino in rows:
        rel = "/d/" + os.fsdecode(name)
        assert ino == p.fs.inode_of(rel, p.fs.getattr(rel)), rel


# ---------------------------------------------------------------- access
def test_access_matches_native_for_root_and_a_user(mkpool):
    p = mkpool()
    modes = [0o000, 0o400, 0o600, 0o644, 0o755, 0o111, 0o070]
    for m in modes:
        p.both(f"/f{m:o}", b"x", (1,))
        os.chmod(p.b(1, f"/f{m:o}"), m)
        os.chmod(p.n(f"/f{m:o}"), m)
    asks = [os.F_OK, os.R_OK, os.W_OK, os.X_OK, os.R_OK | os.W_OK | os.X_OK]

    def table(fn):
        return [(m, a, err_of(fn, m, a)) for m in modes for a in asks]

    def pool_access(m, a):
        return p.fs.access(f"/f{m:o}", a)

    def native_access(m, a):
        if not os.access(p.n(f"/f{m:o}"), a, effective_ids=True):
            raise OSError(errno.EACCES, "denied")

    assert table(pool_access) == table(native_access)
    assert as_user(USER, GROUP, lambda: table(pool_access)) == as_user(USER, GROUP, lambda: table(native_access))
    assert err_of(p.fs.access, "/missing", os.F_OK) == errno.ENOENT


# -------------------------------------------------------------- readlink
def test_readlink_matches_native(mkpool):
    p = mkpool()
    for root in (p.b(1), p.native):
        os.symlink("../some/where", root + "/l")
        touch(root + "/f")
    assert p.fs.readlink("/l") == os.readlink(p.n("/l")) == "../some/where"
    for rel in ("/f", "/missing"):
        assert err_of(p.fs.readlink, rel) == err_of(os.readlink, p.n(rel))


# ------------------------------------------------------------------ open
def test_open_reads_the_branch_file_and_o_trunc_truncates(mkpool):
    p = mkpool()
    p.put(1, "/f", b"hello world")
    with opened(p.fs, "/f") as h:
        assert isinstance(h, Handle)
        assert p.fs.read(h, 6, 100) == b"world"
    with opened(p.fs, "/f", os.O_WRONLY | os.O_TRUNC) as h:
        p.fs.write(h, 0, b"new")
    assert slurp(p.b(1, "/f")) == b"new"


def test_adopt_and_disown_a_transports_own_open(mkpool):
    """A branch fd the kernel session opened itself becomes a registered Handle
    (its branch found by root; moveonenospc sees it), and disown forgets one
    without closing its fd."""
    p = mkpool()
    p.put(1, "/f", b"hello")
    fd = os.open(p.b(1, "/f"), os.O_RDWR | os.O_CLOEXEC)
    h = p.fs.adopt(fd, p.fs.snap.branches[1].path, "/f", os.O_RDWR)
    assert h.branch == p.fs.snap.branches[1] and p.fs.handles[fd] is h
    assert p.fs.read(h, 0, 10) == b"hello"
    p.fs.disown(h)
    assert fd not in p.fs.handles and os.pread(fd, 5, 0) == b"hello"
    gone = p.fs.adopt(fd, "/no/such/branch", "/f", os.O_RDWR)  # a branch the config has dropped since
    assert gone.branch.path == "/no/such/branch"
    p.fs.release(gone)
    assert fd not in p.fs.handles


@pytest.mark.parametrize(
    "rel,flags",
    [
        ("/missing", os.O_RDONLY),
        ("/d", os.O_RDWR),
        ("/d", os.O_WRONLY),
        ("/f", os.O_RDONLY | os.O_DIRECTORY),
        ("/f/x", os.O_RDONLY),
    ],
)
def test_open_errors_match_native(mkpool, rel, flags):
    p = mkpool()
    p.both("/d", None, (0, 1))
    p.both("/f", b"x", (1,))
    native = err_of(os.open, p.n(rel), flags)
    assert native != 0 and err_of(p.fs.open, rel, flags) == native


def test_open_for_writing_denied_to_a_user_as_natively(mkpool):
    p = mkpool()
    p.both("/f", b"x", (0,))
    os.chmod(p.b(0, "/f"), 0o644)

    def attempt(path_open):
        return [err_of(path_open, fl) for fl in (os.O_RDONLY, os.O_WRONLY, os.O_RDWR)]

    def pool_open(fl):
        p.fs.release(p.fs.open("/f", fl))

    def native_open(fl):
        os.close(os.open(p.n("/f"), fl))

    assert as_user(USER, GROUP, lambda: attempt(pool_open)) == as_user(USER, GROUP, lambda: attempt(native_open))
    assert as_user(USER, GROUP, lambda: attempt(pool_open)) == [0, errno.EACCES, errno.EACCES]


def test_link_cow_breaks_a_hard_link_before_writing(mkpool):
    p = mkpool(options="link-cow=true")
    p.put(0, "/a", b"shared")
    os.link(p.b(0, "/a"), p.b(0, "/b"))
    with opened(p.fs, "/a") as h:  # read-only: no copy
        assert p.fs.read(h, 0, 10) == b"shared"
    assert os.stat(p.b(0, "/a")).st_nlink == 2
    with opened(p.fs, "/a", os.O_RDWR) as h:
        p.fs.write(h, 0, b"SHARED")
    assert slurp(p.b(0, "/a")) == b"SHARED"
    assert slurp(p.b(0, "/b")) == b"shared"
    assert os.stat(p.b(0, "/a")).st_nlink == os.stat(p.b(0, "/b")).st_nlink == 1


# ---------------------------------------------------------------- create
def test_create_mode_and_content_match_native(mkpool):
    p = mkpool()
    for mode in (0o644, 0o600, 0o4755, 0o000):
        rel = f"/c{mode:o}"
        with opened(p.fs, rel, os.O_RDWR | os.O_CREAT, mode) as h:
            p.fs.write(h, 0, b"abc")
        fd = os.open(p.n(rel), os.O_RDWR | os.O_CREAT, mode)
        os.write(fd, b"abc")
        os.close(fd)
        assert_alike(p.fs.getattr(rel), os.lstat(p.n(rel)))
        assert p.content(rel) == b"abc"


def test_create_follows_the_create_policy(mkpool):
    p = mkpool(3, "category.create=ff")
    p.fs.release(p.fs.create("/a", os.O_WRONLY, 0o644))
    assert p.where("/a") == [0]
    p = mkpool(3, "category.create=epff")
    p.put(2, "/only2", None)
    p.fs.release(p.fs.create("/only2/a", os.O_WRONLY, 0o644))
    assert p.where("/only2/a") == [2]
    assert err_of(p.fs.create, "/nowhere/a", os.O_WRONLY, 0o644) == errno.ENOENT
    base = mkpool(2)
    p = mkpool(branches=[base.b(0) + "=RO", base.b(1)], options="category.create=ff")
    p.fs.release(p.fs.create("/a", os.O_WRONLY, 0o644))
    assert p.where("/a") == [1]


def test_create_errors_match_native(mkpool):
    p = mkpool(options="category.create=ff")
    p.both("/f", b"x", (0,))
    p.both("/d", None, (0,))
    for rel, flags in [("/f", os.O_WRONLY | os.O_EXCL), ("/f/x", os.O_WRONLY), ("/missing/x", os.O_WRONLY)]:
        native = err_of(os.open, p.n(rel), flags | os.O_CREAT, 0o644)
        assert native != 0 and err_of(p.fs.create, rel, flags, 0o644) == native, rel


def test_create_clones_the_parent_path_with_its_metadata(mkpool):
    p = mkpool(options="category.create=ff")
    src = p.put(1, "/a/b", None)
    for d, mode in ((p.b(1, "/a"), 0o751), (src, 0o2710)):
        os.chown(d, 1234, 2345)
        os.chmod(d, mode)
        os.setxattr(d, "user.tag", d.encode())
        os.utime(d, ns=(1_000_000_000_123, 2_000_000_000_456))
    p.fs.release(p.fs.create("/a/b/f", os.O_WRONLY, 0o644))
    assert p.where("/a/b/f") == [0]
    for rel in ("/a", "/a/b"):
        orig, clone = os.lstat(p.b(1, rel)), os.lstat(p.b(0, rel))
        assert (clone.st_mode, clone.st_uid, clone.st_gid) == (orig.st_mode, orig.st_uid, orig.st_gid)
        assert os.getxattr(p.b(0, rel), "user.tag") == p.b(1, rel).encode()
        assert clone.st_atime_ns == orig.st_atime_ns  # (the mtimes moved: entries were created in them)


def test_create_as_a_user_owns_the_file_or_is_refused_as_natively(mkpool):
    p = mkpool(options="category.create=ff")
    for root in (p.b(1), p.native):
        os.makedirs(root + "/mine")
        os.chown(root + "/mine", USER, GROUP)
        os.makedirs(root + "/roots")
    assert p.where("/mine") == [1]

    def make(create):
        return [err_of(create, rel) for rel in ("/mine/f", "/roots/f")]

    def pool_create(rel):
        p.fs.release(p.fs.create(rel, os.O_WRONLY, 0o640))

    def native_create(rel):
        os.close(os.open(p.n(rel), os.O_WRONLY | os.O_CREAT, 0o640))

    assert as_user(USER, GROUP, lambda: make(pool_create)) == as_user(USER, GROUP, lambda: make(native_create))
    assert p.where("/mine/f") == [0]
    st = os.lstat(p.b(0, "/mine/f"))
    assert (st.st_uid, st.st_gid) == (USER, GROUP)
    assert os.lstat(p.b(0, "/mine")).st_uid == USER  # the cloned parent keeps its owner


def test_nfsopenhack_creates_a_readonly_file_writable_through_its_handle(mkpool):
    p = mkpool(options="nfsopenhack=all")
    with opened(p.fs, "/ro", os.O_WRONLY, 0o444) as h:
        assert p.fs.write(h, 0, b"data") == 4
    (i,) = p.where("/ro")
    assert S.S_IMODE(os.lstat(p.b(i, "/ro")).st_mode) == 0o444
    assert p.content("/ro") == b"data"


# ---------------------------------------------------- mkdir mknod symlink
def test_mkdir_mknod_symlink_match_native(mkpool):
    p = mkpool(options="category.create=ff")  # the second attempt lands where the first did
    ops = [
        ("/dir", lambda fs, r: fs.mkdir(r, 0o750), lambda n: os.mkdir(n, 0o750)),
        ("/dir2", lambda fs, r: fs.mkdir(r, 0o1777), lambda n: os.mkdir(n, 0o1777)),
        ("/fifo", lambda fs, r: fs.mknod(r, S.S_IFIFO | 0o640, 0), lambda n: os.mknod(n, S.S_IFIFO | 0o640)),
        ("/reg", lambda fs, r: fs.mknod(r, S.S_IFREG | 0o600, 0), lambda n: os.mknod(n, S.S_IFREG | 0o600)),
        (
            "/null",
            lambda fs, r: fs.mknod(r, S.S_IFCHR | 0o666, os.makedev(1, 3)),
            lambda n: os.mknod(n, S.S_IFCHR | 0o666, os.makedev(1, 3)),
        ),
        ("/sym", lambda fs, r: fs.symlink("some/target", r), lambda n: os.symlink("some/target", n)),
    ]
    for rel, pool_op, native_op in ops:
        assert outcome(pool_op, p.fs, rel) == outcome(native_op, p.n(rel))
        pst, nst = p.fs.getattr(rel), os.lstat(p.n(rel))
        assert_alike(pst, nst)
        assert pst.st_rdev == nst.st_rdev
        # again: the name exists now
        assert outcome(pool_op, p.fs, rel) == outcome(native_op, p.n(rel)) == ("err", "EEXIST")
    assert p.fs.readlink("/sym") == "some/target"
    for rel in ("/missing/x", "/reg/x"):
        assert err_of(p.fs.mkdir, rel, 0o755) == err_of(os.mkdir, p.n(rel), 0o755) != 0
        assert err_of(p.fs.symlink, "t", rel) == err_of(os.symlink, "t", p.n(rel)) != 0
        assert err_of(p.fs.mknod, rel, S.S_IFIFO | 0o600, 0) == err_of(os.mknod, p.n(rel), S.S_IFIFO | 0o600) != 0


def test_mkdir_epall_creates_on_every_branch_holding_the_parent(mkpool):
    p = mkpool(3, "func.mkdir=epall")
    p.put(0, "/d", None)
    p.put(2, "/d", None)
    p.fs.mkdir("/d/sub", 0o755)
    assert p.where("/d/sub") == [0, 2]


@pytest.fixture(scope="module")
def placement_pool():
    """Four branch directories and one FileSystem, reconfigured per example."""
    root = tempfile.mkdtemp(prefix="mfs-unit-place-")
    try:
        yield Pool(root, 4)
    finally:
        shutil.rmtree(root)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    layout=st.lists(st.tuples(st.sampled_from(["RW", "RO", "NC"]), st.booleans()), min_size=1, max_size=4),
    policy=st.sampled_from(["ff", "epff", "all", "epall"]),
    func=st.sampled_from(["mkdir", "create", "symlink"]),
)
def test_create_placement_follows_the_policy_rules(placement_pool, layout, policy, func):
    """Where a new entry lands, from the spec's words: RO and NC branches take no
    new entries (EROFS); ``ep`` policies only branches already holding the parent
    (the others clone it there); ``ff``/``epff`` the first candidate, ``all``/
    ``epall`` every one, except for a file, which is created once."""
    holders = [i for i, (_, has) in enumerate(layout) if has]
    assume(holders)  # the kernel looked the parent up: it exists somewhere
    p = placement_pool
    p.wipe()
    for i in holders:
        p.put(i, "/parent", None)
    cfg = p.cfg.copy()
    cfg.apply("branches", ":".join(f"{p.b(i)}={mode}" for i, (mode, _) in enumerate(layout)))
    cfg.apply(f"func.{func}", policy)
    p.fs.reconfigure(cfg)
    candidates = [i for i, (mode, has) in enumerate(layout) if mode == "RW" and (has or not policy.startswith("ep"))]
    if policy in ("ff", "epff") or func == "create":
        candidates = candidates[:1]

    def make():
        if func == "mkdir":
            p.fs.mkdir("/parent/new", 0o755)
        elif func == "symlink":
            p.fs.symlink("t", "/parent/new")
        else:
            p.fs.release(p.fs.create("/parent/new", os.O_WRONLY, 0o644))

    assert err_of(make) == (0 if candidates else errno.EROFS)
    assert p.where("/parent/new") == candidates
    assert p.where("/parent") == sorted(set(holders) | set(candidates))


# --------------------------------------------------------- unlink rmdir
def test_unlink_removes_every_copy(mkpool):
    p = mkpool(3)
    for i in range(3):
        p.put(i, "/d/f", b"x")
    p.fs.unlink("/d/f")
    assert p.where("/d/f") == [] and p.where("/d") == [0, 1, 2]
    assert err_of(p.fs.getattr, "/d/f") == errno.ENOENT


# (a path under a file, "/f/x", never reaches the layer: the kernel's walk stops at /f)
@pytest.mark.parametrize("rel", ["/missing", "/d", "/d/missing"])
def test_unlink_errors_match_native(mkpool, rel):
    p = mkpool()
    p.both("/d", None, (0, 1))
    p.both("/f", b"x", (1,))
    assert err_of(p.fs.unlink, rel) == err_of(os.unlink, p.n(rel)) != 0


def test_unlink_on_a_readonly_branch_is_erofs(mkpool):
    base = mkpool()
    p = mkpool(branches=[base.b(0), base.b(1) + "=RO"])
    p.put(1, "/f", b"x")
    assert err_of(p.fs.unlink, "/f") == errno.EROFS
    assert p.where("/f") == [1]


def test_unlink_as_a_user_in_a_sticky_directory_as_natively(mkpool):
    p = mkpool()
    for root in (p.b(0), p.native):
        os.makedirs(root + "/tmp")
        os.chmod(root + "/tmp", 0o1777)
        touch(root + "/tmp/roots")
    assert as_user(USER, GROUP, lambda: err_of(p.fs.unlink, "/tmp/roots")) == as_user(
        USER, GROUP, lambda: err_of(os.unlink, p.n("/tmp/roots"))
    )
    assert p.where("/tmp/roots") == [0]


def test_rmdir_removes_every_copy(mkpool):
    p = mkpool(3)
    for i in (0, 2):
        p.put(i, "/d/e", None)
    p.fs.rmdir("/d/e")
    assert p.where("/d/e") == [] and p.where("/d") == [0, 2]


def test_rmdir_refuses_if_any_copy_has_entries_and_removes_nothing(mkpool):
    p = mkpool(3)
    p.both("/d", None, (0, 1))
    p.both("/d/x", b"", (2,))
    p.put(2, "/d", None)
    assert err_of(p.fs.rmdir, "/d") == err_of(os.rmdir, p.n("/d")) == errno.ENOTEMPTY
    assert p.where("/d") == [0, 1, 2]


@pytest.mark.parametrize("rel", ["/missing", "/f", "/d/missing"])
def test_rmdir_errors_match_native(mkpool, rel):
    p = mkpool()
    p.both("/f", b"x", (1,))
    p.both("/d", None, (0,))
    assert err_of(p.fs.rmdir, rel) == err_of(os.rmdir, p.n(rel)) != 0


# ------------------------------------------- chmod chown truncate utimens
def test_metadata_changes_apply_to_every_copy_and_match_native(mkpool):
    p = mkpool(3)
    p.both("/f", b"0123456789", (0, 2))
    p.both("/d", None, (1, 2))
    steps = [
        (lambda fs: fs.chmod("/f", 0o4751), lambda: os.chmod(p.n("/f"), 0o4751)),
        (lambda fs: fs.chmod("/d", 0o3711), lambda: os.chmod(p.n("/d"), 0o3711)),
        (lambda fs: fs.chown("/f", 1234, -1), lambda: os.chown(p.n("/f"), 1234, -1)),
        (lambda fs: fs.chown("/d", -1, 2345), lambda: os.chown(p.n("/d"), -1, 2345)),
        (lambda fs: fs.truncate("/f", 4), lambda: os.truncate(p.n("/f"), 4)),
        (lambda fs: fs.truncate("/f", 8), lambda: os.truncate(p.n("/f"), 8)),
        (lambda fs: fs.utimens("/f", 10**18, 2 * 10**18), lambda: os.utime(p.n("/f"), ns=(10**18, 2 * 10**18))),
    ]
    for pool_op, native_op in steps:
        assert outcome(pool_op, p.fs) == outcome(native_op)
        for rel in ("/f", "/d"):
            nst = os.lstat(p.n(rel))
            for i in p.where(rel):
                assert_alike(os.lstat(p.b(i, rel)), nst)
    assert p.content("/f") == slurp(p.n("/f")) == b"0123\0\0\0\0"
    assert {os.lstat(p.b(i, "/f")).st_mtime_ns for i in (0, 2)} == {2 * 10**18}


def test_utimens_none_leaves_that_time(mkpool):
    p = mkpool()
    p.put(1, "/f", b"x")
    os.utime(p.b(1, "/f"), ns=(111, 222))
    p.fs.utimens("/f", None, 333)
    st = os.lstat(p.b(1, "/f"))
    assert (st.st_atime_ns, st.st_mtime_ns) == (111, 333)
    p.fs.utimens("/f", 444, None)
    st = os.lstat(p.b(1, "/f"))
    assert (st.st_atime_ns, st.st_mtime_ns) == (444, 333)


def test_setattr_errors_as_a_user_match_native(mkpool):
    """A non-owner may not chmod/chown or set explicit times; with write access
    it may set "now" (now_hint: how llfuse delivers UTIME_NOW), as natively."""
    p = mkpool()
    p.both("/f", b"x", (0, 1))
    for root in (p.b(0), p.b(1), p.native):
        os.chmod(root + "/f", 0o666)

    def pool_ops():
        return [
            err_of(p.fs.chmod, "/f", 0o777),
            err_of(p.fs.chown, "/f", USER, -1),
            err_of(p.fs.utimens, "/f", 5 * 10**9, 5 * 10**9),
            err_of(p.fs.utimens, "/f", 5 * 10**9, 5 * 10**9, True),
            err_of(p.fs.truncate, "/f", 0),
        ]

    def native_ops():
        n = p.n("/f")
        return [
            err_of(os.chmod, n, 0o777),
            err_of(os.chown, n, USER, -1),
            err_of(os.utime, n, ns=(5 * 10**9, 5 * 10**9)),
            err_of(os.utime, n, None),
            err_of(os.truncate, n, 0),
        ]

    assert as_user(USER, GROUP, pool_ops) == as_user(USER, GROUP, native_ops) == [errno.EPERM] * 3 + [0, 0]
    for i in (0, 1):
        assert abs(os.lstat(p.b(i, "/f")).st_mtime - time.time()) < 60


@pytest.mark.parametrize("op", ["chmod", "chown", "truncate", "utimens"])
def test_setattr_on_missing_is_enoent(mkpool, op):
    p = mkpool()
    args = {"chmod": (0o644,), "chown": (0, 0), "truncate": (0,), "utimens": (1, 1)}[op]
    assert err_of(getattr(p.fs, op), "/missing", *args) == errno.ENOENT


def test_chown_of_a_symlink_changes_the_link(mkpool):
    p = mkpool()
    p.put(0, "/f", b"")
    os.symlink("f", p.b(0, "/l"))
    p.fs.chown("/l", 1234, 2345)
    assert (os.lstat(p.b(0, "/l")).st_uid, os.lstat(p.b(0, "/f")).st_uid) == (1234, 0)


# ---------------------------------------------------------------- rename
def _tree(root: str) -> dict[str, object]:
    """relpath -> file bytes, 'dir' or ('link', target)."""
    out: dict[str, object] = {}
    for dirpath, dirs, files in os.walk(root):
        rel = dirpath[len(root) :] or "/"
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            key = join(rel, name)
            if os.path.islink(path):
                out[key] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                out[key] = "dir"
            else:
                out[key] = slurp(path)
    return out


def pool_tree(p: Pool, rel: str = "/") -> dict[str, object]:
    """The merged view through opendir/readdir/getattr/read/readlink."""
    out: dict[str, object] = {}
    dh = p.fs.opendir(rel)
    try:
        rows = p.fs.readdir(dh)
    finally:
        p.fs.releasedir(dh)
    for name, _, _ in rows:
        child = join(rel, os.fsdecode(name))
        st = p.fs.getattr(child)
        if S.S_ISLNK(st.st_mode):
            out[child] = ("link", p.fs.readlink(child))
        elif S.S_ISDIR(st.st_mode):
            out[child] = "dir"
            out.update(pool_tree(p, child))
        else:
            out[child] = p.content(child)
    return out


@pytest.mark.parametrize(
    "old,new",
    [
        ("/a", "/b"),  # plain
        ("/a", "/d/b"),  # into a directory held by another branch: its path is cloned
        ("/a", "/e"),  # over a file held by another branch: that copy goes
        ("/d", "/z"),  # a directory on two branches
        ("/d", "/emptydir"),  # over an empty directory
        ("/a", "/a"),  # onto itself
        ("/a", "/hl"),  # onto a hard link of itself: both names stay
    ],
)
def test_rename_matches_native(mkpool, old, new):
    p = mkpool(3, "category.create=ff")
    p.both("/a", b"A", (0,))
    p.both("/d/x", b"X", (1,))
    p.put(2, "/d", None)
    p.both("/e", b"E", (2,))
    p.both("/emptydir", None, (2,))
    os.link(p.b(0, "/a"), p.b(0, "/hl"))
    os.link(p.n("/a"), p.n("/hl"))
    assert outcome(p.fs.rename, old, new) == outcome(os.rename, p.n(old), p.n(new))
    assert pool_tree(p) == _tree(p.native)
    assert stale_copies(p) == []


@pytest.mark.parametrize(
    "old,new",
    [
        ("/missing", "/b"),
        ("/a", "/missing/b"),
        ("/a", "/dir"),  # file over directory
        ("/dir", "/a"),  # directory over file
        ("/dir", "/dir/sub"),  # into itself
        ("/a", "/a/b"),
        ("/dir", "/full"),  # over a non-empty directory on the same branch
    ],
)
def test_rename_errors_match_native(mkpool, old, new):
    p = mkpool(2, "category.create=ff")
    p.both("/a", b"A", (0,))
    p.both("/dir", None, (0,))
    p.both("/full/x", b"", (0,))
    native = err_of(os.rename, p.n(old), p.n(new))
    assert native != 0
    assert err_of(p.fs.rename, old, new) == native
    assert pool_tree(p) == _tree(p.native)
    assert stale_copies(p) == []


def test_rename_path_preserving_refuses_to_cross_branches(mkpool):
    p = mkpool(2, "category.create=epmfs")
    p.put(0, "/a", b"A")
    p.put(1, "/only1", None)
    assert err_of(p.fs.rename, "/a", "/only1/a") == errno.EXDEV
    assert p.where("/a") == [0]
    p = mkpool(2, "category.create=epmfs,ignorepponrename=true")
    p.put(0, "/a", b"A")
    p.put(1, "/only1", None)
    p.fs.rename("/a", "/only1/a")
    assert p.where("/only1/a") == [0] and p.where("/a") == []


@pytest.mark.parametrize("mode", ["rel-symlink", "abs-symlink"])
def test_rename_exdev_leaves_a_symlink(mkpool, mode):
    p = mkpool(2, f"category.create=epmfs,rename-exdev={mode}")
    p.put(0, "/a", b"A")
    p.put(1, "/only1", None)
    p.fs.rename("/a", "/only1/a")
    st = p.fs.getattr("/only1/a")
    assert S.S_ISLNK(st.st_mode)
    target = p.fs.readlink("/only1/a")
    hidden = "/.mergerfs_rename_exdev/a"
    if mode == "rel-symlink":
        assert os.path.normpath(os.path.join("/only1", target)) == hidden
    else:
        assert target == os.path.join(p.root, "mnt") + hidden
    assert slurp(p.b(0, hidden)) == b"A"
    assert err_of(p.fs.getattr, "/a") == errno.ENOENT
    dh = p.fs.opendir("/")
    try:
        assert b".mergerfs_rename_exdev" not in [e[0] for e in p.fs.readdir(dh)]
    finally:
        p.fs.releasedir(dh)


@pytest.mark.parametrize("flags", [RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_NOREPLACE | RENAME_EXCHANGE, 8])
@pytest.mark.parametrize("target", ["same branch", "other branch", "missing"])
def test_rename_flags_match_native(mkpool, flags, target):
    p = mkpool(2, "category.create=ff")
    p.both("/a", b"A", (0,))
    if target != "missing":
        p.both("/b", b"B", (0,) if target == "same branch" else (1,))
    native = outcome(renameat2, p.n("/a"), p.n("/b"), flags)
    mine = outcome(p.fs.rename, "/a", "/b", flags)
    if flags == RENAME_EXCHANGE and target == "other branch":
        # No branch holds both names: no atomic swap is possible (documented).
        assert mine == ("err", "EXDEV") and native == ("ok", None)
        return
    assert mine == native
    assert pool_tree(p) == _tree(p.native)
    assert stale_copies(p) == []


def test_rename_exchange_of_directories_on_two_branches(mkpool):
    p = mkpool(2)
    for rel, data in (("/x/1", b"1"), ("/y/2", b"2")):
        p.both(rel, data, (0,))
    p.put(1, "/x", None)
    p.put(1, "/y", None)
    p.fs.rename("/x", "/y", RENAME_EXCHANGE)
    renameat2(p.n("/x"), p.n("/y"), RENAME_EXCHANGE)
    assert pool_tree(p) == _tree(p.native)
    assert stale_copies(p) == []


def test_rename_exchange_where_a_branch_holds_one_name(mkpool):
    """/a is a directory on both branches, /b a file on the first: after the swap
    native /b holds all of /a's entries; anything short of that must fail (EXDEV)."""
    p = mkpool(2)
    p.both("/a/x", b"x", (0,))
    p.both("/a/y", b"y", (1,))
    p.both("/b", b"B", (0,))
    renameat2(p.n("/a"), p.n("/b"), RENAME_EXCHANGE)
    try:
        p.fs.rename("/a", "/b", RENAME_EXCHANGE)
    except OSError as e:
        assert e.errno == errno.EXDEV
        renameat2(p.n("/a"), p.n("/b"), RENAME_EXCHANGE)  # refused: the native side undone
    assert pool_tree(p) == _tree(p.native)
    assert stale_copies(p) == []


def test_rename_dir_over_a_dir_non_empty_on_another_branch(mkpool):
    """Spec 5: a rename succeeds if it succeeds on any branch; the target is
    empty where the source lives, so there is no ENOTEMPTY (native says
    ENOTEMPTY). The target's other copy survives: the merged directory."""
    p = mkpool(2, "category.create=ff")
    p.put(0, "/src/s", b"s")
    p.put(0, "/dst", None)
    p.put(1, "/dst/t", b"t")
    p.fs.rename("/src", "/dst")
    assert pool_tree(p) == {"/dst": "dir", "/dst/s": b"s", "/dst/t": b"t"}


# ------------------------------------------------------------------ link
def test_link_matches_native(mkpool):
    p = mkpool(3, "category.create=ff")
    p.both("/a", b"A", (1,))
    p.both("/d", None, (2,))
    for old, new in [("/a", "/b"), ("/a", "/d/c"), ("/a", "/b"), ("/d", "/dd"), ("/missing", "/m"), ("/a", "/x/y")]:
        assert outcome(p.fs.link, old, new) == outcome(os.link, p.n(old), p.n(new)), (old, new)
    assert p.where("/d/c") == [1]  # the new name lives beside the old, its parent cloned
    assert p.fs.getattr("/a").st_nlink == os.lstat(p.n("/a")).st_nlink == 3
    assert p.fs.getattr("/d/c").st_ino == p.fs.getattr("/a").st_ino
    assert pool_tree(p) == _tree(p.native)
    assert stale_copies(p) == []


# ------------------------------------------------------------------ tmpfile
def test_tmpfile_is_unnamed_until_linked_on_its_own_branch(mkpool):
    p = mkpool(3, "category.create=ff")
    p.put(1, "/d", None)
    h = p.fs.tmpfile("/d", os.O_RDWR, 0o640, UNNAMED + "1")
    try:
        assert h.branch.path == p.b(0) and h.relpath == UNNAMED + "1"
        assert p.where("/d") == [0, 1] and os.listdir(p.b(0, "/d")) == []  # the directory cloned, nothing named
        assert p.fs.write(h, 0, b"tmp") == 3
        st = p.fs.fgetattr(h)
        assert st.st_nlink == 0 and S.S_IMODE(st.st_mode) == 0o640 and st.st_size == 3
        again = p.fs.reopen(h, os.O_RDONLY)  # as the kernel reopens /proc/self/fd/N
        try:
            assert p.fs.read(again, 0, 10) == b"tmp"
        finally:
            p.fs.release(again)
        p.fs.fsetxattr(h, "user.k", b"v", 0)
        assert p.fs.fgetxattr(h, "user.k") == b"v" and "user.k" in p.fs.flistxattr(h)
        p.fs.fremovexattr(h, "user.k")
        assert err_of(p.fs.fgetxattr, h, "user.k") == errno.ENODATA
        p.fs.link_unnamed(h, "/d/named")
        assert p.where("/d/named") == [0] and p.content("/d/named") == b"tmp"
        assert p.fs.fgetattr(h).st_nlink == 1
    finally:
        p.fs.release(h)


def test_tmpfile_errors_and_placement_as_native(mkpool):
    base = mkpool(2)
    p = mkpool(branches=[base.b(0) + "=NC", base.b(1)], options="category.create=ff")
    h = p.fs.tmpfile("/", os.O_RDWR | os.O_EXCL, 0o600, UNNAMED + "1")
    fd = os.open(p.n(), os.O_TMPFILE | os.O_RDWR | os.O_EXCL, 0o600)
    try:
        assert h.branch.path == base.b(1)  # NC: left out by the create policy
        native = err_of(link_fd, fd, p.n("/x"))
        assert err_of(p.fs.link_unnamed, h, "/x") == native == errno.ENOENT  # O_EXCL: never linkable
    finally:
        os.close(fd)
        p.fs.release(h)
    native = err_of(os.open, p.n("/missing"), os.O_TMPFILE | os.O_RDWR, 0o600)
    assert err_of(p.fs.tmpfile, "/missing", os.O_RDWR, 0o600, UNNAMED + "2") == native == errno.ENOENT
    assert os.listdir(base.b(0)) == os.listdir(base.b(1)) == []
    p = mkpool(branches=[base.b(0) + "=RO", base.b(1)], options="category.create=ff")
    h = p.fs.tmpfile("/", os.O_RDWR, 0o600, UNNAMED + "3")
    try:
        assert h.branch.path == base.b(1)
    finally:
        p.fs.release(h)


def test_tmpfile_link_places_the_name_as_link_does(mkpool):
    p = mkpool(2, "category.create=epff")
    p.put(0, "/a", None)
    p.put(1, "/b", None)
    h = p.fs.tmpfile("/a", os.O_RDWR, 0o644, UNNAMED + "1")
    try:
        assert h.branch.path == p.b(0)
        p.put(0, "/a/f", b"f")
        # path preserving: /b is not where the policy would create: EXDEV, as link's
        assert err_of(p.fs.link_unnamed, h, "/b/x") == err_of(p.fs.link, "/a/f", "/b/x") == errno.EXDEV
        p.fs.link_unnamed(h, "/a/x")
        assert p.where("/a/x") == [0]
    finally:
        p.fs.release(h)
    p = mkpool(2, "category.create=ff")
    p.put(1, "/b", None)
    h = p.fs.tmpfile("/", os.O_RDWR, 0o644, UNNAMED + "1")
    try:
        p.fs.link_unnamed(h, "/b/x")  # not path preserving: /b cloned onto the file's branch
        assert p.where("/b/x") == [0] and p.where("/b") == [0, 1]
    finally:
        p.fs.release(h)


@pytest.mark.parametrize("mode", ["passthrough", "rel-symlink", "abs-base-symlink", "abs-pool-symlink"])
def test_link_exdev(mkpool, mode):
    p = mkpool(2, f"category.create=epmfs,link-exdev={mode}")
    p.put(0, "/a", b"A")
    p.put(1, "/only1", None)
    if mode == "passthrough":
        assert err_of(p.fs.link, "/a", "/only1/a") == errno.EXDEV
        return
    p.fs.link("/a", "/only1/a")
    target = p.fs.readlink("/only1/a")
    expect = {
        "rel-symlink": "../a",
        "abs-base-symlink": p.b(0, "/a"),
        "abs-pool-symlink": os.path.join(p.root, "mnt") + "/a",
    }[mode]
    assert target == expect


# ---------------------------------------------------------------- xattrs
def test_xattrs_match_native_and_reach_every_copy(mkpool):
    p = mkpool(3)
    p.both("/f", b"", (0, 2))
    n = p.n("/f")
    steps = [
        (lambda: p.fs.setxattr("/f", "user.a", b"1"), lambda: os.setxattr(n, "user.a", b"1")),
        (lambda: p.fs.setxattr("/f", "user.b", b"\0bin\xff"), lambda: os.setxattr(n, "user.b", b"\0bin\xff")),
        (lambda: p.fs.setxattr("/f", "user.a", b"2", os.XATTR_CREATE), lambda: os.setxattr(n, "user.a", b"2", 1)),
        (lambda: p.fs.setxattr("/f", "user.c", b"3", os.XATTR_REPLACE), lambda: os.setxattr(n, "user.c", b"3", 2)),
        (lambda: p.fs.setxattr("/f", "user.a", b"22", os.XATTR_REPLACE), lambda: os.setxattr(n, "user.a", b"22", 2)),
        (lambda: p.fs.getxattr("/f", "user.a"), lambda: os.getxattr(n, "user.a")),
        (lambda: p.fs.getxattr("/f", "user.nope"), lambda: os.getxattr(n, "user.nope")),
        (lambda: sorted(p.fs.listxattr("/f")), lambda: sorted(os.listxattr(n))),
        (lambda: p.fs.removexattr("/f", "user.b"), lambda: os.removexattr(n, "user.b")),
        (lambda: p.fs.removexattr("/f", "user.b"), lambda: os.removexattr(n, "user.b")),
        (lambda: sorted(p.fs.listxattr("/f")), lambda: sorted(os.listxattr(n))),
        (lambda: p.fs.setxattr("/f", "bogus.ns", b"1"), lambda: os.setxattr(n, "bogus.ns", b"1")),
        (lambda: p.fs.getxattr("/missing", "user.a"), lambda: os.getxattr(p.n("/missing"), "user.a")),
        (lambda: p.fs.setxattr("/missing", "user.a", b""), lambda: os.setxattr(p.n("/missing"), "user.a", b"")),
        (lambda: p.fs.listxattr("/missing"), lambda: os.listxattr(p.n("/missing"))),
        (lambda: p.fs.removexattr("/missing", "user.a"), lambda: os.removexattr(p.n("/missing"), "user.a")),
    ]
    for k, (pool_op, native_op) in enumerate(steps):
        assert outcome(pool_op) == outcome(native_op), k
    for i in (0, 2):
        assert {x: os.getxattr(p.b(i, "/f"), x) for x in os.listxattr(p.b(i, "/f"))} == {"user.a": b"22"}


def test_xattrs_on_a_symlink_are_the_links_own(mkpool):
    p = mkpool()
    for root in (p.b(0), p.native):
        touch(root + "/f")
        os.symlink("f", root + "/l")
    assert outcome(p.fs.setxattr, "/l", "user.a", b"1") == outcome(
        os.setxattr, p.n("/l"), "user.a", b"1", follow_symlinks=False
    )
    assert os.listxattr(p.b(0, "/f")) == []


@pytest.mark.parametrize(
    "options,name,expect",
    [
        ("xattr=noattr", "user.a", errno.ENODATA),
        ("xattr=nosys", "user.a", errno.ENOSYS),
        ("security-capability=false", "security.capability", errno.ENODATA),
        ("posix-acl=false", "system.posix_acl_access", errno.EOPNOTSUPP),
    ],
)
def test_xattr_gates(mkpool, options, name, expect):
    p = mkpool(options=options)
    p.put(0, "/f", b"")
    assert err_of(p.fs.getxattr, "/f", name) == expect
    assert err_of(p.fs.setxattr, "/f", name, b"v") == expect
    assert err_of(p.fs.removexattr, "/f", name) == expect
    assert os.listxattr(p.b(0, "/f")) == []
    if options == "xattr=noattr":
        os.setxattr(p.b(0, "/f"), "user.hidden", b"1")
        assert p.fs.listxattr("/f") == []
    if options == "xattr=nosys":
        assert err_of(p.fs.listxattr, "/f") == errno.ENOSYS


# ------------------------------------------------------------- basepaths
def test_basepaths(mkpool):
    p = mkpool(3)
    p.put(1, "/f", b"")
    p.put(2, "/f", b"")
    base, holders = p.fs.basepaths("/f")
    assert base.path == p.b(1) and [b.path for b in holders] == [p.b(1), p.b(2)]
    assert err_of(p.fs.basepaths, "/missing") == errno.ENOENT


# --------------------------------------------------- opendir readdir ...
def test_readdir_merges_branches_first_one_wins(mkpool):
    p = mkpool(3)
    p.put(0, "/d/a", b"")
    p.put(1, "/d/a", None)  # the same name as a directory further down: hidden
    p.put(1, "/d/sub", None)
    p.put(2, "/d/sub/deep", b"")
    os.symlink("a", p.b(2, "/d/link"))
    os.mkfifo(p.b(2, "/d/fifo"))
    p.put(2, "/d/" + os.fsdecode(b"\xff\xfe"), b"")
    dh = p.fs.opendir("/d")
    assert isinstance(dh, DirHandle)
    try:
        rows = p.fs.readdir(dh)
    finally:
        p.fs.releasedir(dh)
    names = [r[0] for r in rows]
    assert len(names) == len(set(names))
    assert sorted(names) == sorted([b"a", b"sub", b"link", b"fifo", b"\xff\xfe"])
    dtypes = {r[0]: r[1] for r in rows}
    assert dtypes == {b"a": 8, b"sub": 4, b"link": 10, b"fifo": 1, b"\xff\xfe": 8}


def test_readdir_of_root_hides_the_control_file_and_exdev_dir(mkpool):
    p = mkpool()
    p.put(0, "/.mergerfs", b"")
    p.put(1, "/.mergerfs_rename_exdev/x", b"")
    p.put(1, "/visible", b"")
    dh = p.fs.opendir("/")
    try:
        assert [r[0] for r in p.fs.readdir(dh)] == [b"visible"]
    finally:
        p.fs.releasedir(dh)


@pytest.mark.parametrize("rel", ["/f", "/missing", "/f/x"])
def test_opendir_errors_match_native(mkpool, rel):
    p = mkpool()
    p.both("/f", b"x", (1,))
    assert err_of(p.fs.opendir, rel) == err_of(os.open, p.n(rel), os.O_RDONLY | os.O_DIRECTORY) != 0


def test_opendir_needs_search_permission_as_natively(mkpool):
    p = mkpool()
    for root in (p.b(0), p.native):
        os.makedirs(root + "/priv/sub")
        os.chmod(root + "/priv", 0o700)
    assert as_user(USER, GROUP, lambda: err_of(p.fs.opendir, "/priv/sub")) == as_user(
        USER, GROUP, lambda: err_of(os.open, p.n("/priv/sub"), os.O_RDONLY | os.O_DIRECTORY)
    )


def test_releasedir_closes_and_an_open_dir_survives_rmdir(mkpool):
    p = mkpool()
    p.put(1, "/d", None)
    before = fd_count()
    dh = p.fs.opendir("/d")
    assert p.fs.readdir(dh) == []
    p.fs.rmdir("/d")  # (the kernel answers a readdir of a removed directory itself)
    p.fs.releasedir(dh)
    assert fd_count() == before


# ---------------------------------------------------------------- statfs
def test_statfs_counts_each_filesystem_once(mkpool):
    p = mkpool(3)
    got = p.fs.statfs("/")
    vfs = os.statvfs(p.b(0))
    assert (got["f_blocks"], got["f_files"], got["f_bsize"], got["f_namemax"]) == (
        vfs.f_blocks,
        vfs.f_files,
        vfs.f_bsize,
        vfs.f_namemax,
    )


def test_statfs_sums_distinct_filesystems_and_honours_the_options():
    with tmpfs(1024, 2048) as (t0, t1):
        v0, v1 = os.statvfs(t0), os.statvfs(t1)
        os.mkdir(t1 + "/only1")
        root = tempfile.mkdtemp(prefix="mfs-unit-")
        try:
            p = Pool(root, branches=[t0, t1])
            got = p.fs.statfs("/")
            assert got["f_blocks"] == v0.f_blocks + v1.f_blocks
            assert got["f_bavail"] == v0.f_bavail + v1.f_bavail
            assert got["f_files"] == v0.f_files + v1.f_files
            p = Pool(root, branches=[t0, t1 + "=RO"], options="statfs-ignore=ro")
            got = p.fs.statfs("/")
            assert got["f_blocks"] == v0.f_blocks + v1.f_blocks
            assert got["f_bavail"] == v0.f_bavail
            p = Pool(root, branches=[t0, t1], options="statfs=full")
            assert p.fs.statfs("/only1")["f_blocks"] == v1.f_blocks
            assert p.fs.statfs("/")["f_blocks"] == v0.f_blocks + v1.f_blocks
        finally:
            shutil.rmtree(root)


def test_statfs_without_any_branch_is_empty(mkpool, tmp_path):
    p = mkpool(branches=[str(tmp_path / "gone")])
    assert p.fs.statfs("/")["f_blocks"] == 0


# ------------------------------------------------------------ read write
def test_read_write_match_native(mkpool):
    p = mkpool()
    writes = [(0, b"hello"), (3, b"XYZ"), (100, b"far"), (4096 * 3 - 1, b"\x00\x01" * 3000), (1, b"")]
    reads = [(0, 10), (0, 1 << 20), (99, 5), (5, 0), (1 << 30, 10)]
    with opened(p.fs, "/f", os.O_RDWR, 0o644) as h:
        fd = os.open(p.n("/f"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for off, data in writes:
                assert p.fs.write(h, off, data) == os.pwrite(fd, data, off)
            for off, size in reads:
                assert p.fs.read(h, off, size) == os.pread(fd, size, off)
        finally:
            os.close(fd)


def test_read_write_errors_match_native(mkpool):
    p = mkpool()
    p.both("/f", b"data", (0,))
    with opened(p.fs, "/f", os.O_RDONLY) as h:
        fd = os.open(p.n("/f"), os.O_RDONLY)
        try:
            assert err_of(p.fs.write, h, 0, b"x") == err_of(os.pwrite, fd, b"x", 0) == errno.EBADF
        finally:
            os.close(fd)
    with opened(p.fs, "/f", os.O_WRONLY) as h:
        fd = os.open(p.n("/f"), os.O_WRONLY)
        try:
            assert err_of(p.fs.read, h, 0, 1) == err_of(os.pread, fd, 1, 0) == errno.EBADF
        finally:
            os.close(fd)


def test_nullrw_neither_reads_nor_writes(mkpool):
    p = mkpool(options="nullrw=true")
    p.put(0, "/f", b"real")
    with opened(p.fs, "/f", os.O_RDWR) as h:
        assert p.fs.write(h, 0, b"XXXXXXXX") == 8
        assert p.fs.read(h, 0, 6) == bytes(6)
    assert slurp(p.b(0, "/f")) == b"real"


MOVE_BASE = "category.create=ff"
CHUNK = bytes(range(256)) * 1024  # 256 KiB, position-dependent


@pytest.fixture
def small_big():
    with tmpfs(1024, 8192) as t:
        root = tempfile.mkdtemp(prefix="mfs-unit-")
        try:
            yield root, t
        finally:
            shutil.rmtree(root)


def _fill(fs, h, total: int, start: int = 0) -> int:
    off = start
    while off < start + total:
        off += fs.write(h, off, CHUNK)
    return off


def _ident(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


@pytest.mark.parametrize("value", ["true", "mfs", "lfs"])
def test_moveonenospc_moves_the_open_file(small_big, value):
    root, (small, big) = small_big
    p = Pool(root, branches=[small, big], options=f"{MOVE_BASE},moveonenospc={value}")
    p.fs.mkdir("/d", 0o755)
    with opened(p.fs, "/d/f", os.O_RDWR, 0o640) as h:
        assert p.where("/d/f") == [0]
        p.fs.setxattr("/d/f", "user.keep", b"me")
        p.fs.fchown(h, 1234, 2345)
        p.fs.write(h, 0, b"head")
        end = _fill(p.fs, h, 2 << 20, 4)  # twice what the small branch holds
        assert p.where("/d/f") == [1]
        st = os.lstat(p.b(1, "/d/f"))
        assert (S.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size) == (0o640, 1234, 2345, end)
        assert os.getxattr(p.b(1, "/d/f"), "user.keep") == b"me"
        assert _ident(p.fs.fgetattr(h)) == _ident(st)
        p.fs.write(h, end, b"tail")  # the handle keeps working on the moved file
        assert p.fs.read(h, 0, 4) == b"head"
        assert p.fs.read(h, 4 + len(CHUNK), len(CHUNK)) == CHUNK
    data = p.content("/d/f")
    assert data[:4] == b"head" and data[-4:] == b"tail" and len(data) == end + 4


@pytest.mark.parametrize("other_opened", ["before the writer", "after the writer"])
def test_moveonenospc_switches_every_handle_of_the_file(small_big, other_opened):
    root, (small, big) = small_big
    p = Pool(root, branches=[small, big], options=f"{MOVE_BASE},moveonenospc=true")
    p.fs.release(p.fs.create("/f", os.O_WRONLY, 0o644))
    if other_opened == "before the writer":
        other = p.fs.open("/f", os.O_RDONLY)
        h = p.fs.open("/f", os.O_RDWR)
    else:
        h = p.fs.open("/f", os.O_RDWR)
        other = p.fs.open("/f", os.O_RDONLY)
    try:
        end = _fill(p.fs, h, 2 << 20)
        p.fs.write(h, end, b"tail")
        assert p.where("/f") == [1]
        assert _ident(p.fs.fgetattr(other)) == _ident(os.lstat(p.b(1, "/f")))
        assert p.fs.read(other, end, 10) == b"tail"
    finally:
        p.fs.release(other)
        p.fs.release(h)


def test_without_moveonenospc_the_write_fails_enospc(small_big):
    root, (small, big) = small_big
    p = Pool(root, branches=[small, big], options=f"{MOVE_BASE},moveonenospc=false")
    with opened(p.fs, "/f", os.O_RDWR, 0o644) as h:
        assert err_of(_fill, p.fs, h, 2 << 20) == errno.ENOSPC
    assert p.where("/f") == [0]


def test_moveonenospc_on_fallocate(small_big):
    root, (small, big) = small_big
    p = Pool(root, branches=[small, big], options=f"{MOVE_BASE},moveonenospc=true")
    with opened(p.fs, "/f", os.O_RDWR, 0o644) as h:
        p.fs.write(h, 0, b"abc")
        p.fs.fallocate(h, 0, 0, 2 << 20)
        assert p.fs.fgetattr(h).st_size == 2 << 20
        assert p.fs.read(h, 0, 3) == b"abc"
    assert p.where("/f") == [1]


def test_moveonenospc_with_nowhere_to_go_is_enospc(small_big):
    root, (small, _) = small_big
    p = Pool(root, branches=[small], options=f"{MOVE_BASE},moveonenospc=true")
    with opened(p.fs, "/f", os.O_RDWR, 0o644) as h:
        assert err_of(_fill, p.fs, h, 2 << 20) == errno.ENOSPC


# ---------------------------------------------------- flush fsync release
def test_flush_fsync_release(mkpool):
    p = mkpool()
    before = fd_count()
    h = p.fs.create("/f", os.O_RDWR, 0o644)
    p.fs.write(h, 0, b"x")
    p.fs.flush(h)
    p.fs.fsync(h, False)
    p.fs.fsync(h, True)
    p.fs.flush(h)  # flush keeps the handle usable (close(2) of a dup)
    assert p.fs.read(h, 0, 1) == b"x"
    p.fs.release(h)
    assert fd_count() == before
    p = mkpool(options="dropcacheonclose=true")
    p.put(0, "/f", b"y")
    with opened(p.fs, "/f") as h:
        assert p.fs.read(h, 0, 1) == b"y"
    assert fd_count() == before


# ------------------------------------------ fallocate lseek copy ioctl
@pytest.mark.parametrize(
    "mode,off,length",
    [
        (0, 0, 10000),
        (0, 5000, 100),
        (FALLOC_FL_KEEP_SIZE, 0, 65536),
        (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 10, 5000),
    ],
)
def test_fallocate_matches_native(mkpool, mode, off, length):
    p = mkpool()
    p.both("/f", bytes(range(256)) * 32, (0,))
    with opened(p.fs, "/f", os.O_RDWR) as h:
        fd = os.open(p.n("/f"), os.O_RDWR)
        try:
            assert outcome(p.fs.fallocate, h, mode, off, length) == outcome(fallocate, fd, mode, off, length)
            assert p.fs.fgetattr(h).st_size == os.fstat(fd).st_size
        finally:
            os.close(fd)
    assert p.content("/f") == slurp(p.n("/f"))
    with opened(p.fs, "/f", os.O_RDONLY) as h:
        assert err_of(p.fs.fallocate, h, 0, 0, 10) == errno.EBADF


def test_lseek_matches_native(mkpool):
    p = mkpool()
    for path in (p.b(1, "/sparse"), p.n("/sparse")):
        with open(path, "wb") as f:
            f.seek(1 << 20)
            f.write(b"x" * 4096)
    with opened(p.fs, "/sparse") as h:
        fd = os.open(p.n("/sparse"), os.O_RDONLY)
        try:
            for off, whence in [
                (0, os.SEEK_SET),
                (10, os.SEEK_END),
                (0, os.SEEK_DATA),
                (0, os.SEEK_HOLE),
                ((1 << 20) + 10, os.SEEK_HOLE),
                (2 << 20, os.SEEK_DATA),
                (-1, os.SEEK_SET),
            ]:
                assert outcome(p.fs.lseek, h, off, whence) == outcome(os.lseek, fd, off, whence), (off, whence)
        finally:
            os.close(fd)


def test_copy_file_range_matches_native(mkpool):
    p = mkpool(3)
    p.both("/src", bytes(range(256)) * 64, (2,))
    p.both("/dst", b"-" * 100, (0,))
    with opened(p.fs, "/src") as src, opened(p.fs, "/dst", os.O_RDWR) as dst:
        a, b = os.open(p.n("/src"), os.O_RDONLY), os.open(p.n("/dst"), os.O_RDWR)
        try:
            for off_in, off_out, length in [(0, 0, 10), (1000, 50, 5000), (16000, 0, 1000), (20000, 0, 10)]:
                assert p.fs.copy_file_range(src, off_in, dst, off_out, length, 0) == os.copy_file_range(
                    a, b, length, off_in, off_out
                )
            assert err_of(p.fs.copy_file_range, src, 0, dst, 0, 10, 1) == errno.EINVAL
            assert err_of(p.fs.copy_file_range, dst, 0, src, 0, 10, 0) == err_of(os.copy_file_range, b, a, 10, 0, 0)
        finally:
            os.close(a)
            os.close(b)
    assert p.content("/dst") == slurp(p.n("/dst"))


def _native_flags(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 4))[0]


def test_ioctl_inode_flags_reach_the_branch_file(mkpool):
    p = mkpool()
    p.both("/f", b"x", (1,))
    with opened(p.fs, "/f", os.O_RDWR) as h:
        fd = os.open(p.n("/f"), os.O_RDWR)
        try:
            res, out = p.fs.ioctl(h, FS_IOC_GETFLAGS, b"", 4)
            assert (res, struct.unpack("i", out)[0]) == (0, _native_flags(fd))
            want = _native_flags(fd) | FS_NOATIME_FL
            assert p.fs.ioctl(h, FS_IOC_SETFLAGS, struct.pack("i", want), 0)[0] == 0
            bfd = os.open(p.b(1, "/f"), os.O_RDONLY)
            try:
                assert _native_flags(bfd) == want
            finally:
                os.close(bfd)
            assert err_of(p.fs.ioctl, h, 0x5401, b"", 60) == errno.ENOTTY  # TCGETS: not one we pass
        finally:
            os.close(fd)


# -------------------------------------------------------- fsyncdir syncfs
def test_fsyncdir_and_syncfs_touch_every_branch_and_leak_nothing(mkpool):
    p = mkpool(3)
    p.put(0, "/d", None)
    p.put(2, "/d", None)
    before = fd_count()
    p.fs.fsyncdir("/d", False)
    p.fs.fsyncdir("/d", True)
    p.fs.fsyncdir("/", False)
    p.fs.syncfs()
    assert fd_count() == before


# ----------------------------------------------- f* on an open handle
def test_handle_metadata_ops_match_native(mkpool):
    p = mkpool()
    p.both("/f", b"0123456789", (1,))
    with opened(p.fs, "/f", os.O_RDWR) as h:
        fd = os.open(p.n("/f"), os.O_RDWR)
        try:
            steps = [  # (pool, native, whether the times are now set)
                (lambda: p.fs.fchmod(h, 0o2750), lambda: os.fchmod(fd, 0o2750), False),
                (lambda: p.fs.fchown(h, 1234, 2345), lambda: os.fchown(fd, 1234, 2345), False),
                (lambda: p.fs.ftruncate(h, 3), lambda: os.ftruncate(fd, 3), False),
                (lambda: p.fs.futimens(h, 7 * 10**9, 8 * 10**9), lambda: os.utime(fd, ns=(7 * 10**9, 8 * 10**9)), True),
                (lambda: p.fs.futimens(h, None, 9 * 10**9), lambda: os.utime(fd, ns=(7 * 10**9, 9 * 10**9)), True),
                (lambda: p.fs.futimens(h, 6 * 10**9, None), lambda: os.utime(fd, ns=(6 * 10**9, 9 * 10**9)), True),
            ]
            for pool_op, native_op, timed in steps:
                assert outcome(pool_op) == outcome(native_op)
                mine, theirs = p.fs.fgetattr(h), os.fstat(fd)
                assert_alike(mine, theirs)
                if timed:
                    assert (mine.st_atime_ns, mine.st_mtime_ns) == (theirs.st_atime_ns, theirs.st_mtime_ns)
            # the path goes away: the handle is the file, as an unlinked native fd
            p.fs.unlink("/f")
            os.unlink(p.n("/f"))
            assert_alike(p.fs.fgetattr(h), os.fstat(fd))
            assert p.fs.fgetattr(h).st_nlink == 0
            assert outcome(p.fs.fchmod, h, 0o600) == outcome(os.fchmod, fd, 0o600)
            assert outcome(p.fs.ftruncate, h, 1) == outcome(os.ftruncate, fd, 1)
            assert p.fs.read(h, 0, 10) == os.pread(fd, 10, 0) == b"0"
        finally:
            os.close(fd)


def test_handle_metadata_ops_as_a_user_match_native(mkpool):
    p = mkpool()
    p.both("/f", b"x", (0,))
    os.chmod(p.b(0, "/f"), 0o666)
    os.chmod(p.n("/f"), 0o666)

    def run(open_, ops):
        def inner():
            target = open_()
            try:
                return [err_of(op, target) for op in ops]
            finally:
                release(target)

        return as_user(USER, GROUP, inner)

    def release(t):
        if isinstance(t, Handle):
            p.fs.release(t)
        else:
            os.close(t)

    pool_ops = [
        lambda h: p.fs.fchmod(h, 0o600),
        lambda h: p.fs.fchown(h, USER, -1),
        lambda h: p.fs.ftruncate(h, 0),
        lambda h: p.fs.futimens(h, 1, 1),
        lambda h: p.fs.futimens(h, 1, 1, True),
    ]
    native_ops = [
        lambda fd: os.fchmod(fd, 0o600),
        lambda fd: os.fchown(fd, USER, -1),
        lambda fd: os.ftruncate(fd, 0),
        lambda fd: os.utime(fd, ns=(1, 1)),
        lambda fd: os.utime(fd, None),
    ]
    mine = run(lambda: p.fs.open("/f", os.O_RDWR), pool_ops)
    theirs = run(lambda: os.open(p.n("/f"), os.O_RDWR), native_ops)
    assert mine == theirs == [errno.EPERM, errno.EPERM, 0, errno.EPERM, 0]


# ------------------------------------------------ reconfigure / refresh
def test_reconfigure_swaps_branches_and_notifies_listeners(mkpool):
    p = mkpool(2)
    extra = mkpool(1)
    extra.put(0, "/elsewhere", b"e")
    seen = []
    p.fs.listeners.append(lambda old, new: seen.append((old["moveonenospc"], new["moveonenospc"])))
    p.fs.listeners.append(lambda old, new: 1 / 0)  # a failing listener does not undo the change
    assert err_of(p.fs.getattr, "/elsewhere") == errno.ENOENT
    cfg = p.cfg.copy()
    cfg.apply("branches", ":".join([*p.branches, extra.b(0)]))
    cfg.apply("moveonenospc", "mfs")
    p.fs.reconfigure(cfg)
    assert p.fs.getattr("/elsewhere").st_size == 1
    assert seen == [(p.cfg["moveonenospc"], "mfs")]
    assert [b.path for b in p.fs.snap.branches] == [*p.branches, extra.b(0)]


def test_refresh_re_expands_globs(mkpool):
    parent = tempfile.mkdtemp(prefix="mfs-unit-glob-")
    try:
        os.mkdir(parent + "/disk1")
        q = mkpool(branches=[parent + "/disk*"])
        assert [b.path for b in q.fs.snap.branches] == [parent + "/disk1"]
        os.mkdir(parent + "/disk2")
        touch(parent + "/disk2/late")
        assert err_of(q.fs.getattr, "/late") == errno.ENOENT
        q.fs.refresh()
        assert q.fs.getattr("/late").st_size == 0
    finally:
        shutil.rmtree(parent)
