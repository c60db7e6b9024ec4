"""The binding-neutral request layer (:class:`mergerfs.requests.Requests`) over a
real FileSystem, without FUSE: nodeids and file handles in, attributes out, with
a fake notifier recording what the kernel would be told.

What a transport relies on: a nodeid names one object until the kernel forgets
it (lookups counted, renames and hard links followed), an open fh is the file
even after its name is gone, cached data is dropped when the file changed
behind the kernel's back, and the control file ``/.mergerfs`` reads and
changes the configuration.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat as S
import tempfile

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from poolkit import RENAME_EXCHANGE, Pool, as_user, err_of, fd_count, outcome, slurp

from mergerfs import _fastpath, fs as fs_mod
from mergerfs.requests import DIRECT, DROP, KEEP, Requests

ROOT = 1  # FUSE_ROOT_ID
USER, GROUP = 4242, 4343


class Notifier:
    """Records the inodes the kernel would be told to drop."""

    def __init__(self) -> None:
        self.inval: list[int] = []

    def inval_inode(self, ino: int) -> None:
        self.inval.append(ino)


class Env:
    def __init__(self, root: str, n: int = 2, options: str = "", **kw) -> None:
        self.p = Pool(root, n, options)
        self.notifier = Notifier()
        self.req = Requests(self.p.fs, self.notifier, **kw)

    def look(self, rel: str) -> int:
        """Look ``rel`` up component by component, as the kernel walks a path."""
        ino = ROOT
        for name in rel.strip("/").split("/"):
            ino, _ = self.req.lookup(ino, name.encode())
        return ino

    @property
    def control(self) -> int:
        return self.req.lookup(ROOT, b".mergerfs")[0]


@pytest.fixture
def mkenv():
    roots = []

    def make(n: int = 2, options: str = "", **kw) -> Env:
        root = tempfile.mkdtemp(prefix="mfs-unit-req-")
        os.chmod(root, 0o755)
        roots.append(root)
        return Env(root, n, options, **kw)

    yield make
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)


def ident(st: os.stat_result) -> tuple:
    return st.st_mode, st.st_size, st.st_nlink, st.st_uid, st.st_gid, st.st_mtime_ns


# ---------------------------------------------------------------- lookup
def test_lookup_gives_attributes_and_a_stable_nodeid(mkenv):
    e = mkenv()
    e.p.put(1, "/d/f", b"abc")
    d, dst = e.req.lookup(ROOT, b"d")
    f, fst = e.req.lookup(d, b"f")
    assert ident(fst) == ident(os.lstat(e.p.b(1, "/d/f")))
    assert ident(dst) == ident(os.lstat(e.p.b(1, "/d")))
    assert f == e.p.fs.inode_of("/d/f", e.p.fs.getattr("/d/f"))  # the nodeid is the reported st_ino
    assert e.req.lookup(d, b"f")[0] == f and f not in (ROOT, d)
    assert e.req.rel(f) == "/d/f" and e.req.child(d, b"x") == "/d/x"
    assert e.req.lookup(d, b".")[0] == d
    assert e.req.lookup(d, b"..")[0] == ROOT
    assert ident(e.req.getattr(f)) == ident(fst)
    assert err_of(e.req.lookup, d, b"missing") == err_of(os.lstat, e.p.b(1, "/d/missing")) == errno.ENOENT
    assert err_of(e.req.lookup, f, b"x") == errno.ENOTDIR


def test_forget_drops_a_node_after_its_last_lookup(mkenv):
    e = mkenv()
    e.p.put(0, "/f", b"")
    ino = e.look("/f")
    assert e.look("/f") == ino
    e.req.forget(ino, 1)
    assert e.req.rel(ino) == "/f"  # one lookup still counted
    e.req.forget(ino, 1)
    assert err_of(e.req.getattr, ino) == errno.ESTALE
    assert err_of(e.req.rel, ino) == errno.ESTALE
    assert e.look("/f") > 0  # looked up anew


def test_hard_links_share_a_nodeid_and_keep_it_through_an_unlink(mkenv):
    e = mkenv()
    e.p.put(1, "/f", b"data")
    f = e.look("/f")
    ino, st, cacheable = e.req.link(f, ROOT, b"g")
    assert (ino, cacheable) == (f, True) and st.st_nlink == 2
    assert e.look("/g") == f
    e.req.unlink(ROOT, b"f")
    assert e.req.rel(f) == "/g" and e.req.getattr(f).st_nlink == 1


def test_link_exdev_symlink_answers_the_source_uncached(mkenv):
    e = mkenv(options="category.create=epmfs,link-exdev=rel-symlink")
    e.p.put(0, "/f", b"x")
    e.p.put(1, "/only1", None)
    f, only1 = e.look("/f"), e.look("/only1")
    ino, st, cacheable = e.req.link(f, only1, b"f")
    assert (ino, cacheable) == (f, False) and S.S_ISREG(st.st_mode)  # the kernel insists on the source's type
    assert S.S_ISLNK(e.req.lookup(only1, b"f")[1].st_mode)


# ---------------------------------------------------------------- rename
def test_rename_moves_the_nodes_of_a_subtree(mkenv):
    e = mkenv()
    e.p.put(0, "/a/sub/f", b"f")
    e.p.put(1, "/a/g", b"gg")
    a, f, g = e.look("/a"), e.look("/a/sub/f"), e.look("/a/g")
    e.req.rename(ROOT, b"a", ROOT, b"z")
    assert [e.req.rel(x) for x in (a, f, g)] == ["/z", "/z/sub/f", "/z/g"]
    assert e.req.getattr(g).st_size == 2 and e.req.getattr(f).st_size == 1
    assert e.p.where("/z/g") == [1] and e.p.where("/a") == []


def test_a_renamed_directory_keeps_its_nodeid_while_held(mkenv):
    e = mkenv()
    e.p.put(0, "/a/f", b"")
    a = e.look("/a")
    e.req.rename(ROOT, b"a", ROOT, b"c")
    assert e.req.rel(a) == "/c"
    assert e.req.lookup(ROOT, b"c")[0] == a  # one directory, one nodeid


def test_a_salted_nodeid_survives_a_rename(mkenv):
    e = mkenv(options="inodecalc=path-hash")
    e.p.put(0, "/x", b"old")
    old = e.look("/x")
    e.req.rename(ROOT, b"x", ROOT, b"y")  # the old object keeps its number (the kernel holds it)
    e.p.put(0, "/x", b"new")
    new = e.look("/x")  # path-hash("/x") is taken: a number is derived for the newcomer
    assert new != old
    e.req.rename(ROOT, b"x", ROOT, b"z")
    assert e.req.rel(new) == "/z"
    assert e.req.lookup(ROOT, b"z")[0] == new


def test_rename_exchange_swaps_the_nodes(mkenv):
    e = mkenv()
    e.p.put(0, "/x", b"x")
    e.p.put(0, "/y", b"yyy")
    x, y = e.look("/x"), e.look("/y")
    e.req.rename(ROOT, b"x", ROOT, b"y", RENAME_EXCHANGE)
    assert (e.req.rel(x), e.req.rel(y)) == ("/y", "/x")
    assert (e.req.getattr(x).st_size, e.req.getattr(y).st_size) == (1, 3)


def test_rename_of_or_onto_the_control_file_is_refused(mkenv):
    e = mkenv()
    e.p.put(0, "/f", b"")
    assert err_of(e.req.rename, ROOT, b"f", ROOT, b".mergerfs") == errno.EPERM
    assert err_of(e.req.rename, ROOT, b".mergerfs", ROOT, b"g") == errno.EPERM
    assert e.p.where("/f") == [0]


# ------------------------------------------------- create, entry replies
def test_create_mkdir_mknod_symlink_answer_the_new_entry(mkenv):
    e = mkenv()
    fh, f, st, cache = e.req.create(ROOT, b"f", 0o640, os.O_RDWR)
    try:
        assert S.S_ISREG(st.st_mode) and cache == DIRECT  # cache.files=off by default
        assert e.req.lookup(ROOT, b"f")[0] == f
        assert e.req.write(fh, 0, b"hello") == 5
        assert e.req.read(fh, 1, 3) == b"ell"
        assert os.pread(e.req.fd(fh), 5, 0) == b"hello"
    finally:
        e.req.release(fh)
    d, st = e.req.mkdir(ROOT, b"d", 0o750)
    assert S.S_ISDIR(st.st_mode) and e.req.lookup(ROOT, b"d")[0] == d
    fifo, st = e.req.mknod(d, b"p", S.S_IFIFO | 0o600, 0)
    assert S.S_ISFIFO(st.st_mode) and e.req.rel(fifo) == "/d/p"
    ln, st = e.req.symlink(d, b"l", b"../f")
    assert S.S_ISLNK(st.st_mode) and e.req.readlink(ln) == b"../f"


def test_tmpfile_is_a_node_without_a_name_until_linked(mkenv):
    e = mkenv(3, "category.create=ff")
    fh, ino, st, cache = e.req.tmpfile(ROOT, 0o600, os.O_RDWR)
    try:
        assert S.S_ISREG(st.st_mode) and st.st_nlink == 0 and cache == DIRECT
        placeholder = e.req.table.relpath(ino)
        assert fs_mod.is_unnamed(placeholder)
        assert err_of(e.req.rel, ino) == errno.ENOENT  # no path search ever looks for it
        e.p.put(0, placeholder, b"impostor")  # what a search of "//tmpfile/N" would find
        assert e.req.write(fh, 0, b"hello") == 5
        assert e.req.getattr(ino).st_size == 5  # no fh named: its open handle answers
        assert e.req.setattr(ino, None, size=2).st_size == 2
        e.req.setxattr(ino, b"user.k", b"v")
        assert e.req.getxattr(ino, b"user.k") == b"v" and b"user.k" in e.req.listxattr(ino)
        e.req.removexattr(ino, b"user.k")
        again, _ = e.req.open(ino, os.O_RDONLY)  # /proc/self/fd/N reopened
        try:
            assert e.req.read(again, 0, 10) == b"he"
        finally:
            e.req.release(again)
        assert e.req.statfs(ino)["f_blocks"] == e.req.statfs(ROOT)["f_blocks"]  # the pool's, never the impostor's
        new, st, cacheable = e.req.link(ino, ROOT, b"named")
        assert (new, cacheable) == (ino, True) and st.st_nlink == 1
        assert e.req.rel(ino) == "/named" and e.look("/named") == ino
        assert e.p.where("/named") == [0] and e.p.content("/named") == b"he"
    finally:
        e.req.release(fh)
    assert e.req.getattr(ino).st_size == 2  # named: found by its path


def test_tmpfile_closed_unnamed_leaves_nothing(mkenv):
    e = mkenv(2, "category.create=ff")
    fh, ino, _, _ = e.req.tmpfile(ROOT, 0o600, os.O_RDWR)
    e.req.write(fh, 0, b"gone")
    e.req.release(fh)
    assert err_of(e.req.getattr, ino) == errno.ENOENT  # the kernel still holds it until FORGET
    assert err_of(e.req.link, ino, ROOT, b"late") == errno.ENOENT
    assert [os.listdir(e.p.b(i)) for i in range(2)] == [[], []]
    e.req.forget(ino, 1)
    assert err_of(e.req.getattr, ino) == errno.ESTALE


def test_unlink_rmdir_and_what_the_nodes_then_answer(mkenv):
    e = mkenv()
    e.p.both("/d/f", b"x", (0, 1))
    e.p.both("/e", None, (1,))
    d, f, dd = e.look("/d"), e.look("/d/f"), e.look("/e")
    for call, native in [
        (lambda: e.req.rmdir(ROOT, b"d"), lambda: os.rmdir(e.p.n("/d"))),
        (lambda: e.req.unlink(ROOT, b"d"), lambda: os.unlink(e.p.n("/d"))),
        (lambda: e.req.unlink(d, b"f"), lambda: os.unlink(e.p.n("/d/f"))),
        (lambda: e.req.unlink(d, b"f"), lambda: os.unlink(e.p.n("/d/f"))),
        (lambda: e.req.rmdir(ROOT, b"d"), lambda: os.rmdir(e.p.n("/d"))),
        (lambda: e.req.rmdir(ROOT, b"e"), lambda: os.rmdir(e.p.n("/e"))),
    ]:
        assert outcome(call) == outcome(native)
    assert e.p.where("/d") == e.p.where("/e") == []
    for ino in (d, f, dd):  # still held by the kernel, their names gone
        assert err_of(e.req.getattr, ino) == errno.ENOENT


def test_attr_handle_and_control_attr(mkenv):
    e = mkenv()
    e.p.put(0, "/f", b"x")
    f = e.look("/f")
    st = e.p.fs.getattr("/f")
    assert e.req.attr(st) == st  # no uid=/gid=/umask= options: as the branch says
    cst = e.req.control_attr()
    assert (S.S_IFMT(cst.st_mode), S.S_IMODE(cst.st_mode), cst.st_size) == (S.S_IFREG, 0o444, 0)
    fh, _ = e.req.open(f, os.O_RDONLY)
    try:
        h = e.req.handle(fh)
        assert h.fd == e.req.fd(fh) and h.relpath == "/f"
    finally:
        e.req.release(fh)
    assert err_of(e.req.handle, fh) == errno.EBADF


def test_forced_owner_and_mode_options(mkenv):
    e = mkenv(options="uid=1234,gid=2345,umask=027")
    e.p.put(0, "/f", b"")
    os.chmod(e.p.b(0, "/f"), 0o600)
    st = e.req.lookup(ROOT, b"f")[1]
    assert (st.st_uid, st.st_gid, S.S_IMODE(st.st_mode), S.S_ISREG(st.st_mode)) == (1234, 2345, 0o750, True)
    assert e.req.getattr(ROOT).st_uid == 1234
    assert os.lstat(e.p.b(0, "/f")).st_uid == 0  # reported only


def test_statx_reports_what_getattr_reports(mkenv):
    """statx (FUSE_STATX) of a path, of the control file, of an open fh and of an
    inode whose open file lost its name: getattr's answer (overrides included)
    plus the birth time of the branch file."""
    e = mkenv(options="uid=1234,gid=2345,umask=027")
    e.p.put(1, "/f", b"data")
    born = _fastpath.statx(e.p.b(1, "/f"), 0, 0xFFF)[12]
    f = e.look("/f")

    def same(sx, st) -> None:
        assert (sx.mode, sx.size, sx.nlink, sx.uid, sx.gid, sx.mtime_ns) == ident(st)

    sx = e.req.statx(f)
    same(sx, e.req.getattr(f))
    assert (sx.uid, sx.gid, S.S_IMODE(sx.mode), sx.btime_ns, sx.mask & 0x800) == (1234, 2345, 0o750, born, 0x800)
    assert e.req.attrx(e.p.fs.statx("/f")) == sx
    cx = e.req.statx(e.control)
    assert (cx.mode, cx.size, cx.nlink, cx.uid, cx.gid) == ident(e.req.getattr(e.control))[:5]  # times: "now"
    assert not cx.mask & 0x800
    fh, _ = e.req.open(f, os.O_RDONLY)
    try:
        same(e.req.statx(f, fh), e.req.getattr(f, fh))
        os.unlink(e.p.b(1, "/f"))
        gone = e.req.statx(f)  # no fh named: the open handle of the inode answers
        assert (gone.btime_ns, gone.nlink) == (born, 0)
    finally:
        e.req.release(fh)
    assert err_of(e.req.statx, f) == errno.ENOENT


def test_timeouts_come_from_the_config(mkenv):
    e = mkenv(options="cache.entry=7,cache.attr=8,cache.negative-entry=9")
    assert e.req.timeouts() == (7, 8, 9)


def test_access(mkenv):
    e = mkenv()
    e.p.put(1, "/f", b"")
    os.chmod(e.p.b(1, "/f"), 0o644)
    f = e.look("/f")
    assert e.req.access(f, os.R_OK | os.W_OK) is None
    assert err_of(e.req.access, f, os.X_OK) == errno.EACCES
    assert as_user(USER, GROUP, lambda: err_of(e.req.access, f, os.W_OK)) == errno.EACCES
    assert e.req.access(e.control, os.R_OK) is None


# ------------------------------------------------------------- open files
@pytest.mark.parametrize(
    "mode,changed,expect",
    [
        ("off", False, DIRECT),
        ("partial", False, DROP),
        ("libfuse", False, DROP),
        ("full", False, KEEP),
        ("auto-full", False, KEEP),
        ("full", True, DROP),
    ],
)
def test_open_cache_decisions(mkenv, mode, changed, expect):
    e = mkenv(options=f"cache.files={mode}")
    e.p.put(0, "/f", b"abc")
    f = e.look("/f")
    if changed:  # behind the kernel's back
        with open(e.p.b(0, "/f"), "ab") as out:
            out.write(b"more")
    fh, cache = e.req.open(f, os.O_RDONLY)
    e.req.release(fh)
    assert cache == expect
    assert e.notifier.inval == []  # the decision travels in the open reply


def test_open_cache_by_notify_drops_through_the_notifier(mkenv):
    e = mkenv(options="cache.files=off", cache_by_notify=True)
    e.p.put(0, "/f", b"abc")
    f = e.look("/f")
    fh, cache = e.req.open(f, os.O_RDONLY)
    assert cache == DIRECT and e.notifier.inval == [f]
    e.req.release(fh)
    assert e.notifier.inval == [f, f]  # off: dropped again at release


def test_per_process_caching(mkenv):
    with open("/proc/self/comm") as f:
        me = f.read().strip()
    e = mkenv(options=f"cache.files=per-process,cache.files.process-names={me}|other")
    e.p.put(0, "/f", b"abc")
    f = e.look("/f")
    for pid, expect in ((os.getpid(), DROP), (1, DIRECT), (0, DIRECT)):
        fh, cache = e.req.open(f, os.O_RDONLY, pid)
        e.req.release(fh)
        assert cache == expect, pid


def test_release_closes_and_a_released_fh_is_ebadf(mkenv):
    e = mkenv()
    e.p.put(0, "/f", b"abc")
    f = e.look("/f")
    before = fd_count()
    fh, _ = e.req.open(f, os.O_RDONLY)
    e.req.release(fh)
    assert fd_count() == before
    assert err_of(e.req.release, fh) == errno.EBADF
    assert err_of(e.req.read, fh, 0, 1) == errno.EBADF
    assert err_of(e.req.fd, 12345) == errno.EBADF


def test_adopt_gives_a_transport_open_a_handle(mkenv):
    """A file a transport opened itself (the compiled OPEN) gets a Python handle:
    the branch it was opened on, I/O and release as any open, and the inode
    counts it among its open handles until then."""
    e = mkenv()
    e.p.put(1, "/f", b"abc")
    f = e.look("/f")
    fd = os.open(e.p.b(1, "/f"), os.O_RDWR | os.O_CLOEXEC)
    fh = e.req.adopt(f, fd, e.p.branches[1], os.O_RDWR)
    assert e.req.handle(fh).branch.path == e.p.branches[1]
    assert e.req.fd(fh) == fd and e.req.read(fh, 0, 10) == b"abc"
    assert e.req.table.has_fh(f) and e.req.table.any_fh(f) == fh
    e.req.release(fh)
    assert not e.req.table.has_fh(f)
    assert err_of(os.fstat, fd) == errno.EBADF  # closed with the handle


def test_disown_leaves_the_fd_open(mkenv):
    """A transport that takes an open over: Python forgets the handle, the fd stays open."""
    e = mkenv()
    fh, f, _, _ = e.req.create(ROOT, b"f", 0o644, os.O_RDWR)
    fd = e.req.fd(fh)
    assert e.req.disown(fh)
    assert err_of(e.req.read, fh, 0, 1) == errno.EBADF and not e.req.table.has_fh(f)
    assert fd not in e.p.fs.handles
    os.close(fd)  # still open: the transport's to close


def test_open_errors(mkenv):
    e = mkenv()
    e.p.put(0, "/d", None)
    d = e.look("/d")
    assert err_of(e.req.open, d, os.O_RDWR) == errno.EISDIR
    assert err_of(e.req.open, e.control, os.O_RDONLY) == errno.EOPNOTSUPP
    assert err_of(e.req.open, e.control, os.O_WRONLY) == errno.EACCES


def test_an_open_file_outlives_its_name(mkenv):
    """getattr/setattr of an open file reach the file, not whatever its path names now."""
    e = mkenv()
    fh, f, _, _ = e.req.create(ROOT, b"f", 0o644, os.O_RDWR)
    try:
        e.req.write(fh, 0, b"old data")
        e.p.put(0, "/g", b"new")
        e.p.fs.rename("/g", "/f")  # behind the kernel's back: /f is another file now
        assert e.req.getattr(f).st_size == 8  # the open file, through its fd
        st = e.req.setattr(f, None, size=3, mode=0o600)
        assert (st.st_size, S.S_IMODE(st.st_mode)) == (3, 0o600)
        assert e.req.read(fh, 0, 10) == b"old"
        assert slurp(e.p.b(0, "/f")) == b"new"  # the new /f untouched
        e.req.unlink(ROOT, b"f")
        st = e.req.getattr(f, fh)
        assert (st.st_nlink, st.st_size) == (0, 3)
    finally:
        e.req.release(fh)


def test_getattr_notices_changes_behind_the_kernels_back(mkenv):
    e = mkenv()
    e.p.put(0, "/f", b"abc")
    f = e.look("/f")
    e.req.getattr(f)
    assert e.notifier.inval == []
    with open(e.p.b(0, "/f"), "ab") as out:
        out.write(b"d")
    assert e.req.getattr(f).st_size == 4
    assert e.notifier.inval == [f]
    e.req.getattr(f)
    assert e.notifier.inval == [f]  # once per change
    fh, _ = e.req.open(f, os.O_RDWR)
    e.req.write(fh, 0, b"ours")  # a change the kernel made itself: no drop
    e.req.release(fh)
    e.req.getattr(f)
    assert e.notifier.inval == [f]


def test_auto_inval_leaves_it_to_the_kernel(mkenv):
    e = mkenv(auto_inval=True)
    e.p.put(0, "/f", b"abc")
    f = e.look("/f")
    with open(e.p.b(0, "/f"), "ab") as out:
        out.write(b"d")
    assert e.req.getattr(f).st_size == 4 and e.notifier.inval == []


def test_setattr_matches_native(mkenv):
    e = mkenv()
    e.p.both("/f", b"0123456789", (1,))
    f = e.look("/f")
    n = e.p.n("/f")
    steps = [
        ({"mode": S.S_IFREG | 0o4711}, lambda: os.chmod(n, 0o4711)),
        ({"uid": 1234}, lambda: os.chown(n, 1234, -1)),
        ({"gid": 2345}, lambda: os.chown(n, -1, 2345)),
        ({"size": 4}, lambda: os.truncate(n, 4)),
        ({"atime": 10**9, "mtime": 2 * 10**9}, lambda: os.utime(n, ns=(10**9, 2 * 10**9))),
        ({"mtime": 3 * 10**9}, lambda: os.utime(n, ns=(10**9, 3 * 10**9))),
    ]
    for change, native in steps:
        st = e.req.setattr(f, None, **change)
        native()
        nst = os.lstat(n)
        assert (st.st_mode, st.st_uid, st.st_gid, st.st_size) == (nst.st_mode, nst.st_uid, nst.st_gid, nst.st_size)
        if "mtime" in change:
            assert (st.st_atime_ns, st.st_mtime_ns) == (nst.st_atime_ns, nst.st_mtime_ns)
    assert err_of(e.req.setattr, e.control, None, mode=0o777) == errno.EPERM


def test_setattr_through_an_fh(mkenv):
    e = mkenv()
    e.p.put(0, "/f", b"0123456789")
    f = e.look("/f")
    fh, _ = e.req.open(f, os.O_RDWR)
    try:
        st = e.req.setattr(f, fh, size=2, mode=0o600, atime=5, mtime=6)
        assert (st.st_size, S.S_IMODE(st.st_mode), st.st_atime_ns, st.st_mtime_ns) == (2, 0o600, 5, 6)
        assert os.lstat(e.p.b(0, "/f")).st_size == 2
    finally:
        e.req.release(fh)


def test_setid_bits_cleared_for_a_non_owner_as_the_kernel_asks(mkenv):
    """The kernel drops setuid/setgid when a non-owner writes (it checked the
    write permission): natively that happens whoever owns the file."""
    e = mkenv()
    e.p.put(0, "/f", b"x")
    os.chmod(e.p.b(0, "/f"), 0o6777)
    f = e.look("/f")
    st = as_user(USER, GROUP, lambda: e.req.setattr(f, None, mode=0o0777))
    assert S.S_IMODE(st.st_mode) == 0o777
    assert as_user(USER, GROUP, lambda: err_of(e.req.setattr, f, None, mode=0o0700)) == errno.EPERM
    assert S.S_IMODE(os.lstat(e.p.b(0, "/f")).st_mode) == 0o777


@pytest.mark.parametrize("mode,after", [(0o6755, 0o755), (0o4755, 0o755), (0o2644, 0o2644), (0o2654, 0o654)])
def test_kill_priv_drops_setuid_and_setgid_with_group_exec(mkenv, mode, after):
    """What the kernel does natively on a write by a user without CAP_FSETID."""
    e = mkenv()
    e.p.put(0, "/f", b"x")
    os.chmod(e.p.b(0, "/f"), mode)
    f = e.look("/f")
    fh, _ = e.req.open(f, os.O_RDWR)
    try:
        e.req.kill_priv(fh)
        assert S.S_IMODE(os.lstat(e.p.b(0, "/f")).st_mode) == after
    finally:
        e.req.release(fh)
    os.chmod(e.p.b(0, "/f"), mode)
    st = e.req.setattr(f, None, size=0, kill_priv=True)
    assert S.S_IMODE(st.st_mode) == after


def test_file_data_operations_pass_through(mkenv):
    e = mkenv()
    e.p.both("/a", bytes(range(256)) * 16, (0,))
    e.p.both("/b", b"", (1,))
    a, b = e.look("/a"), e.look("/b")
    fa, _ = e.req.open(a, os.O_RDWR)
    fb, _ = e.req.open(b, os.O_RDWR)
    na, nb = os.open(e.p.n("/a"), os.O_RDWR), os.open(e.p.n("/b"), os.O_RDWR)
    try:
        assert e.req.copy_file_range(fa, 100, fb, 0, 1000, 0) == os.copy_file_range(na, nb, 1000, 100, 0)
        assert e.req.lseek(fb, 0, os.SEEK_END) == os.lseek(nb, 0, os.SEEK_END)
        e.req.fallocate(fb, 0, 0, 8192)
        os.posix_fallocate(nb, 0, 8192)
        e.req.flush(fb)
        e.req.fsync(fb, True)
        e.req.fsync(fa, False)
        assert e.req.getattr(b, fb).st_size == os.fstat(nb).st_size == 8192
        assert e.req.read(fb, 0, 9000) == os.pread(nb, 9000, 0)
        assert e.req.ioctl(fa, 0x80086601, b"", 4)[0] == 0  # FS_IOC_GETFLAGS
        assert err_of(e.req.ioctl, fa, 0x5401, b"", 4) == errno.ENOTTY
    finally:
        for fh in (fa, fb):
            e.req.release(fh)
        os.close(na)
        os.close(nb)
    e.req.syncfs()


# ------------------------------------------------------------------ dirs
def test_readdir_readdirplus_releasedir(mkenv):
    e = mkenv(3)
    e.p.put(0, "/d/a", b"")
    e.p.put(1, "/d/b", None)
    e.p.put(2, "/d/c", b"ccc")
    d = e.look("/d")
    before = fd_count()
    fh = e.req.opendir(d)
    rows = e.req.readdir(fh, 0)
    assert sorted(r[0] for r in rows) == [b"a", b"b", b"c"]
    os.unlink(e.p.b(0, "/d/a"))
    assert e.req.readdir(fh, 1) == rows  # a later offset of the same listing: not re-read
    plus = e.req.readdirplus(fh, 0, 10)  # offset 0: read anew
    assert sorted(x[1] for x in plus) == [b"b", b"c"] and [x[0] for x in plus] == [1, 2]
    listed = {r[0]: r[2] for r in e.req.readdir(fh, 0)}
    for _, name, _, ino, attrs in plus:
        assert ino == e.req.lookup(d, name)[0] == listed[name] and attrs is not None  # ls -i agrees with stat
        e.req.forget(ino, 2)  # one for readdirplus, one for our lookup
        assert err_of(e.req.rel, ino) == errno.ESTALE
    e.req.fsyncdir(fh, False)
    e.req.releasedir(fh)
    assert fd_count() == before
    assert err_of(e.req.releasedir, fh) == errno.EBADF
    fh = e.req.opendir(d)
    assert err_of(e.req.fd, fh) == errno.EISDIR
    e.req.releasedir(fh)


def test_readdirplus_skips_an_entry_that_vanished(mkenv):
    e = mkenv()
    e.p.put(0, "/d/a", b"")
    e.p.put(0, "/d/b", b"")
    d = e.look("/d")
    fh = e.req.opendir(d)
    try:
        first = e.req.readdirplus(fh, 0, 1)
        gone = next(n for n in (b"a", b"b") if n != first[0][1])
        os.unlink(e.p.b(0, "/d/" + gone.decode()))
        rest = e.req.readdirplus(fh, 1, 10)
        assert [(x[0], x[1], x[3], x[4]) for x in rest] == [(2, gone, 0, None)]
    finally:
        e.req.releasedir(fh)


def test_statfs(mkenv):
    e = mkenv()
    e.p.put(0, "/d", None)
    want = e.p.fs.statfs("/")
    for ino in (ROOT, e.control, e.look("/d")):
        got = e.req.statfs(ino)
        assert (got["f_blocks"], got["f_files"], got["f_bsize"]) == (want["f_blocks"], want["f_files"], want["f_bsize"])


# ---------------------------------------------------------------- xattrs
def test_xattrs_on_a_pool_path(mkenv):
    e = mkenv(3)
    e.p.both("/f", b"", (1, 2))
    f = e.look("/f")
    n = e.p.n("/f")
    e.req.setxattr(f, b"user.a", b"1")
    os.setxattr(n, "user.a", b"1")
    assert e.req.getxattr(f, b"user.a") == os.getxattr(n, "user.a")
    assert outcome(e.req.setxattr, f, b"user.a", b"2", os.XATTR_CREATE) == outcome(os.setxattr, n, "user.a", b"2", 1)
    assert e.req.listxattr(f) == [k.encode() for k in os.listxattr(n)]
    e.req.removexattr(f, b"user.a")
    assert err_of(e.req.getxattr, f, b"user.a") == errno.ENODATA
    assert err_of(e.req.getxattr, f, b"user.mergerfs.nosuchkey") == errno.ENODATA


def test_path_keys_of_the_control_xattrs(mkenv):
    e = mkenv(3)
    e.p.put(1, "/d/f", b"")
    e.p.put(2, "/d/f", b"")
    f = e.look("/d/f")
    assert e.req.getxattr(f, b"user.mergerfs.basepath") == e.p.b(1).encode()
    assert e.req.getxattr(f, b"user.mergerfs.relpath") == b"/d/f"
    assert e.req.getxattr(f, b"user.mergerfs.fullpath") == e.p.b(1, "/d/f").encode()
    assert e.req.getxattr(f, b"user.mergerfs.allpaths").split(b"\0") == [
        e.p.b(1, "/d/f").encode(),
        e.p.b(2, "/d/f").encode(),
    ]
    assert all(not k.startswith(b"user.mergerfs.") for k in e.req.listxattr(f))


# ---------------------------------------------------------- control file
def test_control_file_attributes_and_refusals(mkenv):
    e = mkenv()
    c = e.control
    st = e.req.getattr(c)
    assert S.S_ISREG(st.st_mode) and S.S_IMODE(st.st_mode) == 0o444
    assert err_of(e.req.removexattr, c, b"user.mergerfs.minfreespace") == errno.ENOTSUP
    fh = e.req.opendir(ROOT)
    try:
        assert b".mergerfs" not in [r[0] for r in e.req.readdir(fh, 0)]
    finally:
        e.req.releasedir(fh)


def test_control_xattrs_read_the_config(mkenv):
    e = mkenv(options="category.create=mfs,moveonenospc=lfs")
    c = e.control
    keys = e.req.listxattr(c)
    assert keys == sorted(keys)
    for k in (b"user.mergerfs.branches", b"user.mergerfs.version", b"user.mergerfs.pid", b"user.mergerfs.func.create"):
        assert k in keys
    assert e.req.getxattr(c, b"user.mergerfs.pid") == str(os.getpid()).encode()
    assert e.req.getxattr(c, b"user.mergerfs.func.create") == b"mfs"
    assert e.req.getxattr(c, b"user.mergerfs.moveonenospc") == b"lfs"
    assert e.req.getxattr(c, b"user.mergerfs.branches").decode().split(":") == [b + "=RW" for b in e.p.branches]
    assert e.req.getxattr(c, b"user.mergerfs.branches-unavailable") == b""
    for bad in (b"user.mergerfs.nosuchkey", b"user.other", b"trusted.mergerfs.branches"):
        assert err_of(e.req.getxattr, c, bad) == errno.ENODATA, bad


def test_control_xattrs_change_the_config(mkenv):
    e = mkenv(3, options="category.create=mfs")
    c = e.control
    e.req.setxattr(c, b"user.mergerfs.category.create", b"ff")
    assert e.req.getxattr(c, b"user.mergerfs.func.mkdir") == b"ff"
    fh, _, _, _ = e.req.create(ROOT, b"f", 0o644, os.O_WRONLY)
    e.req.release(fh)
    assert e.p.where("/f") == [0]  # the new policy decides
    before = e.req.getxattr(c, b"user.mergerfs.minfreespace")
    for key, value, expect in [
        (b"user.mergerfs.minfreespace", b"lots", errno.EINVAL),
        (b"user.mergerfs.category.create", b"nosuchpolicy", errno.EINVAL),
        (b"user.mergerfs.version", b"1", errno.EROFS),
        (b"user.mergerfs.pid", b"1", errno.EROFS),
        (b"user.mergerfs.nullrw", b"true", errno.EROFS),  # not changeable at runtime
        (b"user.mergerfs.nosuchkey", b"1", errno.ENODATA),
    ]:
        assert err_of(e.req.setxattr, c, key, value) == expect, key
    assert e.req.getxattr(c, b"user.mergerfs.minfreespace") == before


def test_control_branch_edits_take_effect(mkenv):
    e = mkenv(2)
    extra = tempfile.mkdtemp(prefix="mfs-unit-extra-")
    try:
        with open(extra + "/there", "wb") as f:
            f.write(b"!")
        c = e.control
        assert err_of(e.req.lookup, ROOT, b"there") == errno.ENOENT
        e.req.setxattr(c, b"user.mergerfs.branches", b"+>" + extra.encode())
        assert e.req.lookup(ROOT, b"there")[1].st_size == 1
        e.req.setxattr(c, b"user.mergerfs.branches", b"-" + e.p.b(0).encode())
        assert e.req.getxattr(c, b"user.mergerfs.branches") == f"{e.p.b(1)}=RW:{extra}=RW".encode()
    finally:
        shutil.rmtree(extra)


def test_invalidate_all_nodes_command(mkenv):
    e = mkenv()
    e.p.put(0, "/d/f", b"")
    d, f = e.look("/d"), e.look("/d/f")
    e.req.setxattr(e.control, b"user.mergerfs.cmd.invalidate-all-nodes", b"1")
    assert sorted(e.notifier.inval) == sorted([d, f])
    e.notifier.inval.clear()
    e.req.invalidate_all()  # as the kernel transport does after a branch change
    assert sorted(e.notifier.inval) == sorted([d, f])
    e.req.setxattr(e.control, b"user.mergerfs.cmd.gc", b"1")  # accepted, nothing to do
    assert err_of(e.req.getxattr, e.control, b"user.mergerfs.cmd.gc") == errno.ENODATA


# --------------------------------------------- random lookup bookkeeping
NAMES = (b"a", b"b", b"c", b"d")


class Bookkeeping(RuleBasedStateMachine):
    """Lookups, forgets, renames and unlinks of files: a nodeid answers for its
    file exactly while the kernel holds a lookup of it, under its current name."""

    env: Env

    def __init__(self) -> None:
        super().__init__()
        self.e = self.env
        self.e.p.wipe()
        self.e.req = Requests(self.e.p.fs, self.e.notifier)  # a fresh mount's tables
        # Every file also gets a name outside the pool, so no inode number is
        # reused within an example (a reused number held by a forgotten-late
        # node is the salted case: test_a_salted_nodeid_survives_a_rename).
        self.keep = os.path.join(self.e.p.root, "keep")
        shutil.rmtree(self.keep, ignore_errors=True)
        os.mkdir(self.keep)
        for name in NAMES[:3]:
            self._keep(self.e.p.put(0, "/" + name.decode(), name * 3))
        self.held: dict[int, list] = {}  # nodeid -> [count, name, content]

    def _keep(self, path: str) -> None:
        os.link(path, os.path.join(self.keep, str(len(os.listdir(self.keep)))))

    def _node_of(self, name: bytes):
        return next((ino for ino, (_, n, _) in self.held.items() if n == name), None)

    @rule(name=st.sampled_from(NAMES))
    def lookup(self, name):
        path = self.e.p.b(0, "/" + name.decode())
        if not os.path.exists(path):
            assert err_of(self.e.req.lookup, ROOT, name) == errno.ENOENT
            return
        ino, st = self.e.req.lookup(ROOT, name)
        known = self._node_of(name)
        assert known in (None, ino)
        if known is None:
            self._named(ino, name, slurp(path))
        self.held[ino][0] += 1
        assert st.st_size == len(self.held[ino][2])

    def _named(self, ino: int, name: bytes, content: bytes) -> None:
        """``ino`` answers for ``name`` now: a new node, or one the kernel still
        holds without a name (the same name and inode number came back)."""
        if ino in self.held:
            assert self.held[ino][1] is None
            self.held[ino][1:] = [name, content]
        else:
            self.held[ino] = [0, name, content]

    @precondition(lambda self: self.held)
    @rule(i=st.integers(0, 7), k=st.integers(1, 3))
    def forget(self, i, k):
        ino = list(self.held)[i % len(self.held)]  # (drawn by position: nodeids differ between runs)
        k = min(k, self.held[ino][0])
        self.e.req.forget(ino, k)
        self.held[ino][0] -= k
        if not self.held[ino][0]:
            del self.held[ino]
            assert err_of(self.e.req.rel, ino) == errno.ESTALE

    @rule(old=st.sampled_from(NAMES), new=st.sampled_from(NAMES))
    def rename(self, old, new):
        src = self.e.p.b(0, "/" + old.decode())
        if old == new or not os.path.exists(src):
            return
        moving, replaced = self._node_of(old), self._node_of(new)
        self.e.req.rename(ROOT, old, ROOT, new)
        assert not os.path.exists(src)
        if replaced is not None:
            self.held[replaced][1] = None  # no name: the kernel reaches it by an fh only
        if moving is not None:
            self.held[moving][1] = new

    @rule(name=st.sampled_from(NAMES))
    def unlink(self, name):
        if not os.path.exists(self.e.p.b(0, "/" + name.decode())):
            return
        self.e.req.unlink(ROOT, name)
        node = self._node_of(name)
        if node is not None:
            self.held[node][1] = None

    @rule(name=st.sampled_from(NAMES), data=st.binary(min_size=1, max_size=5))
    def create(self, name, data):
        if os.path.exists(self.e.p.b(0, "/" + name.decode())):
            return
        fh, ino, _, _ = self.e.req.create(ROOT, name, 0o644, os.O_WRONLY)
        self.e.req.write(fh, 0, data)
        self.e.req.release(fh)
        self._keep(self.e.p.b(0, "/" + name.decode()))
        self._named(ino, name, data)
        self.held[ino][0] += 1

    @invariant()
    def named_nodes_answer_for_their_file(self):
        for ino, (count, name, content) in self.held.items():
            assert count > 0
            if name is not None:
                assert self.e.req.rel(ino) == "/" + name.decode()
                assert self.e.req.getattr(ino).st_size == len(content)


def test_random_lookup_forget_rename_bookkeeping():
    root = tempfile.mkdtemp(prefix="mfs-unit-req-model-")
    try:
        Bookkeeping.env = Env(root, 1, "category.create=ff")
        run_state_machine_as_test(
            Bookkeeping,
            settings=settings(
                max_examples=40, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
            ),
        )
    finally:
        shutil.rmtree(root)
