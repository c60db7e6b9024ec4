"""Listings answered by the compiled session (_dirs.pxi) against the Python
path over the same branches (``func.getattr=newest`` turns every compiled
handler off), against the union computed from the branches themselves, and
against 2.33.5's names: first branch wins (its d_type and inode number),
telldir/seekdir/rewinddir, concurrent readers of one handle, a directory removed
under an open handle, fsyncdir, the root's hidden names. And that the compiled
path is the one taken: at log-level=debug the dispatcher logs each request it
gets, and a compiled listing sends it none."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from .helpers import REFERENCE, as_user, is_llfuse, is_reference, mount, unmount, wait_until

pytestmark = pytest.mark.skipif(is_reference() or is_llfuse(), reason="the kernel session's compiled listings")

# One worker: it acts as the caller after the LOOKUP before an OPENDIR (the
# compiled path needs that), whatever the time since its last request.
MT_OPTS = "cache.files=off,cache.attr=0,cache.entry=0,cache.negative_entry=0,cache.readdir=false"
OPTS = MT_OPTS + ",threads=1"
PYTHON_PATH = OPTS + ",func.getattr=newest"  # no compiled handler at all: Python lists
N = 5000

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
SYS_GETDENTS64 = 217 if os.uname().machine == "x86_64" else 61


def getdents(fd: int, size: int = 4096) -> list[tuple[bytes, int, int, int]]:
    """One getdents64 call on ``fd``: ``[(name, d_type, d_ino, d_off)]`` ([] at the end)."""
    buf = ctypes.create_string_buffer(size)
    n = libc.syscall(SYS_GETDENTS64, fd, buf, size)
    if n < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    raw = buf.raw[:n]
    out, pos = [], 0
    while pos < n:
        ino, off = int.from_bytes(raw[pos : pos + 8], "little"), int.from_bytes(raw[pos + 8 : pos + 16], "little")
        reclen = int.from_bytes(raw[pos + 16 : pos + 18], "little")
        out.append((raw[pos + 19 : pos + reclen].split(b"\0", 1)[0], raw[pos + 18], ino, off))
        pos += reclen
    return out


def listing(fd: int) -> list[tuple[bytes, int, int]]:
    """All of an open directory from its start, as ``(name, d_type, d_ino)`` in order."""
    os.lseek(fd, 0, os.SEEK_SET)
    out = []
    while chunk := getdents(fd):
        out += [(name, dtype, ino) for name, dtype, ino, _ in chunk]
    return out


def list_path(path: str) -> list[tuple[bytes, int, int]]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return listing(fd)
    finally:
        os.close(fd)


def _fill(branches: list[str], rel: str) -> None:
    """N names over the branches, a third of them on two or three, with other
    types on the later branches (a name is a file first, a directory later...)."""
    for b in branches:
        os.makedirs(os.path.join(b, rel), exist_ok=True)
    for k in range(N):
        name = f"e{k:05d}"
        on = [k % 3] + ([(k % 3 + 1) % 3] if k % 4 == 0 else []) + ([(k % 3 + 2) % 3] if k % 9 == 0 else [])
        for j, i in enumerate(sorted(on)):
            path = os.path.join(branches[i], rel, name)
            kind = (k + j) % 4
            if kind == 0:
                os.mkdir(path)
            elif kind == 1:
                os.symlink("target", path)
            elif kind == 2 and k % 50 == 0:
                os.mkfifo(path)
            else:
                with open(path, "wb") as f:
                    f.write(b"x" * j)


def _union(branches: list[str], rel: str) -> dict[bytes, int]:
    """name -> d_type of the first branch holding it, from the branches themselves."""
    out: dict[bytes, int] = {}
    for b in branches:
        d = os.path.join(os.fsencode(b), os.fsencode(rel.lstrip("/")))
        if not os.path.isdir(d):
            continue
        for e in os.scandir(d):
            if e.name not in out:
                out[e.name] = stat.S_IFMT(os.lstat(e.path).st_mode) >> 12
    return out


@pytest.mark.parametrize("calc", ["hybrid-hash", "path-hash", "devino-hash", "passthrough"])
def test_big_listing_equals_python_path_and_union(mount_pool, calc):
    c = mount_pool(n=3, options=f"{OPTS},inodecalc={calc}")
    _fill(c.branches, "big")
    py = mount_pool(options=f"{PYTHON_PATH},inodecalc={calc}", branches=c.branches)
    got = list_path(c.path("big"))
    assert got == list_path(py.path("big"))  # names, order, d_type and d_ino
    assert {name: dtype for name, dtype, _ in got} == _union(c.branches, "big")
    assert len(got) == N
    for name, _, ino in got[::97]:  # readdir's numbers are the ones stat gives
        assert os.lstat(os.path.join(os.fsencode(c.path("big")), name)).st_ino == ino


@pytest.mark.skipif(not os.path.exists(REFERENCE), reason="2.33.5 not installed")
def test_names_equal_2_33_5(mount_pool, tmp_path):
    c = mount_pool(n=3, options=OPTS)
    _fill(c.branches, "big")
    mnt = str(tmp_path / "ref")
    ref = [REFERENCE, "-o", "cache.files=off", ":".join(c.branches), mnt]
    os.makedirs(mnt)
    subprocess.run(ref, check=True)
    try:
        assert wait_until(lambda: os.path.ismount(mnt))
        assert sorted(os.listdir(os.path.join(mnt, "big"))) == sorted(os.listdir(c.path("big")))
    finally:
        unmount(mnt)


def test_cache_readdir_behaves_as_the_python_path(mount_pool):
    """cache.readdir: the open flags (FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE) as
    Python gives them: the kernel keeps its cached listing across opens."""
    cached = OPTS.replace("cache.readdir=false", "cache.readdir=true")
    layout = [{"d/": None, "d/a": b""}, {"d/": None, "d/b": b""}]
    c = mount_pool(n=2, options=cached, layout=layout)
    py = mount_pool(options=cached + ",func.getattr=newest", branches=c.branches)
    first = [list_path(p.path("d")) for p in (c, py)]
    st = os.stat(c.branch_path(0, "d"))
    open(c.branch_path(0, "d/late"), "w").close()
    os.utime(c.branch_path(0, "d"), ns=(st.st_atime_ns, st.st_mtime_ns))  # unchanged: the cache stays valid
    again = [list_path(p.path("d")) for p in (c, py)]
    assert first[0] == first[1] and again[0] == again[1]
    assert again[0] == first[0]  # the kernel's cache, not a new listing
    os.utime(c.branch_path(0, "d"))  # changed: both list anew
    assert [{n for n, _, _ in list_path(p.path("d"))} for p in (c, py)] == [{b"a", b"b", b"late"}] * 2


def test_root_hides_control_file_and_exdev_dir(mount_pool):
    layout = [{".mergerfs_rename_exdev/": None, "a": b""}, {".mergerfs": b"x", "b/": None}]
    c = mount_pool(n=2, options=OPTS, layout=layout)
    py = mount_pool(options=PYTHON_PATH, branches=c.branches)
    got = list_path(c.mnt)
    assert sorted(name for name, _, _ in got) == [b"a", b"b"]
    assert got == list_path(py.mnt)


@pytest.mark.parametrize("compiled", [True, False])
def test_listing_never_reaches_python(mount_pool, tmp_path, compiled):
    """At log-level=debug the dispatcher logs every request the compiled loop
    left to Python: none of OPENDIR, READDIR, RELEASEDIR for a compiled listing
    (and all three without the compiled path, so the check can fail)."""
    logfile = tmp_path / "daemon.log"
    layout = [{"d/": None, "d/a": b""}, {"d/": None, "d/b": b""}]
    opts = (OPTS if compiled else PYTHON_PATH) + f",log-level=debug,log.file={logfile}"
    p = mount_pool(n=2, options=opts, layout=layout)
    for _ in range(2):  # the first request of a caller on a worker is Python's (it switches identity)
        assert sorted(os.listdir(p.path("d"))) == ["a", "b"]
        assert sorted(os.listdir(p.mnt)) == ["d"]
    fd = os.open(p.path("d"), os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(fd)
    os.close(fd)
    assert wait_until(lambda: "python: opcode" in logfile.read_text())  # the log works
    lines = [line for line in logfile.read_text().splitlines() if "python: opcode" in line]
    ops = {int(line.split("opcode ")[1].split(",")[0]) for line in lines}
    dir_ops = ops & {27, 28, 29, 30}  # OPENDIR, READDIR, RELEASEDIR, FSYNCDIR
    assert dir_ops == (set() if compiled else {27, 28, 29, 30}), ops


def test_seekdir_telldir_rewinddir(mount_pool):
    c = mount_pool(n=2, options=OPTS)
    for i, b in enumerate(c.branches):
        os.mkdir(os.path.join(b, "d"))
        for k in range(600):
            open(os.path.join(b, "d", f"n{i}_{k:04d}_" + "x" * (k % 40)), "w").close()
    fd = os.open(c.path("d"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        whole = listing(fd)
        assert len(whole) == 1200
        # read part, remember where (telldir: the last entry's d_off), go on, come back
        os.lseek(fd, 0, os.SEEK_SET)
        first = getdents(fd, 1024)
        mark = first[-1][3]
        rest = []
        while chunk := getdents(fd, 2048):
            rest += chunk
        assert [e[0] for e in first + rest] == [e[0] for e in whole]
        os.lseek(fd, mark, os.SEEK_SET)
        again = []
        while chunk := getdents(fd, 3000):
            again += chunk
        assert [e[0] for e in again] == [e[0] for e in rest]
        # a name created meanwhile: not in the listing read, listed after a rewind
        open(os.path.join(c.branches[1], "d", "late"), "w").close()
        os.lseek(fd, mark, os.SEEK_SET)
        assert b"late" not in [e[0] for e in getdents(fd, 65536)]
        assert b"late" in [e[0] for e in listing(fd)]
        # past the end: nothing; a new opendir sees it too
        os.lseek(fd, 10**6, os.SEEK_SET)
        assert getdents(fd) == []
        assert b"late" in [e[0] for e in list_path(c.path("d"))]
    finally:
        os.close(fd)


def test_concurrent_readers_of_one_handle(mount_pool):
    """Threads share one open directory (so one fh); each rewinds and reads
    concurrently with the others. Every record read is well formed and one of
    the directory's; the handle still lists everything afterwards."""
    c = mount_pool(n=2, options=MT_OPTS)
    for i, b in enumerate(c.branches):
        os.mkdir(os.path.join(b, "d"))
        for k in range(1500):
            open(os.path.join(b, "d", f"f{k:04d}" if i == 0 else f"g{k:04d}"), "w").close()
    expected = {os.fsencode(n) for n in os.listdir(c.path("d"))}
    assert len(expected) == 3000
    fd = os.open(c.path("d"), os.O_RDONLY | os.O_DIRECTORY)
    bad: list[object] = []

    def reader(seed: int) -> None:
        try:
            for r in range(30):
                if (r + seed) % 3 == 0:
                    os.lseek(fd, 0, os.SEEK_SET)
                for name, _, _, _ in getdents(fd, 4096):
                    if name not in expected:
                        bad.append(name)
        except OSError as e:
            bad.append(e)

    # many handles opened and listed in parallel too (the handle table grows)
    def opener() -> None:
        for _ in range(20):
            if {n for n, _, _ in list_path(c.path("d"))} != expected:
                bad.append("listing")

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(6)]
    threads += [threading.Thread(target=opener) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not bad, bad[:5]
        assert {n for n, _, _ in listing(fd)} == expected
    finally:
        os.close(fd)


@pytest.mark.parametrize("opts", [OPTS, MT_OPTS, PYTHON_PATH], ids=["compiled", "workers", "python"])
def test_directory_removed_on_first_branch_while_open(mount_pool, opts):
    layout = [{"d/": None, "d/a": b"", "d/both": b"1"}, {"d/": None, "d/b": b"", "d/both": b"22"}]
    p = mount_pool(n=2, options=opts, layout=layout)
    fd = os.open(p.path("d"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert sorted(n for n, _, _ in listing(fd)) == [b"a", b"b", b"both"]
        for name in ("a", "both"):
            os.unlink(p.branch_path(0, f"d/{name}"))
        os.rmdir(p.branch_path(0, "d"))
        assert sorted(n for n, _, _ in listing(fd)) == [b"b", b"both"]  # read anew at offset 0
        assert stat.S_ISDIR(os.fstat(fd).st_mode)
        os.fsync(fd)
        for name in ("b", "both"):
            os.unlink(p.branch_path(1, f"d/{name}"))
        os.rmdir(p.branch_path(1, "d"))
        with pytest.raises(OSError) as e:
            listing(fd)
        assert e.value.errno == errno.ENOENT  # no branch has it: the first branch's error
        # the handle's fd still answers for it (as native for a removed directory)
        os.fchmod(fd, 0o700)
        os.utime(fd, ns=(10**18, 10**18))
        st = os.fstat(fd)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_mtime_ns == 10**18
    finally:
        os.close(fd)


def test_fsyncdir_and_fdatasync_on_an_open_directory(mount_pool):
    p = mount_pool(n=2, options=OPTS, layout=[{"d/": None}, {"d/": None, "d/x": b""}])
    fd = os.open(p.path("d"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
        os.fdatasync(fd)
        assert [n for n, _, _ in listing(fd)] == [b"x"]
        os.fsync(fd)
    finally:
        os.close(fd)


def test_empty_directory_and_enotdir_and_missing(mount_pool):
    p = mount_pool(n=2, options=OPTS, layout=[{"e/": None, "f": b""}, {}])
    assert list_path(p.path("e")) == []
    with pytest.raises(NotADirectoryError):
        os.open(p.path("f"), os.O_RDONLY | os.O_DIRECTORY)
    with pytest.raises(FileNotFoundError):
        os.listdir(p.path("nope"))


USER_PY = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or sys.executable  # one nobody may run
USER = """
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
print("open", flush=True)
sys.stdin.readline()
print(" ".join(sorted(os.listdir(fd))), flush=True)
"""


@contextlib.contextmanager
def _user_and_root_pool():
    """A pool of three branches whose ``d`` holds ``a``, ``b`` and ``c`` (one
    each), the last not readable by user 65534; root only (switching users)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    base = tempfile.mkdtemp(prefix="mfsdirs-", dir="/tmp")
    os.chmod(base, 0o755)
    branches = [os.path.join(base, f"b{i}") for i in range(3)]
    for i, b in enumerate(branches):
        os.makedirs(os.path.join(b, "d"))
        open(os.path.join(b, "d", "abc"[i]), "w").close()
        os.chmod(b, 0o755)
        os.chmod(os.path.join(b, "d"), 0o700 if i == 2 else 0o755)  # the last: not the user's
    p = mount(branches, os.path.join(base, "mnt"), OPTS)
    try:
        yield p
    finally:
        unmount(p.mnt)
        shutil.rmtree(base, ignore_errors=True)


def test_reader_whose_worker_serves_another_caller():
    """A user opens the directory (the compiled OPENDIR, acting as that user)
    and reads it after root's requests moved the only worker to root: the
    READDIR goes through Python, which switches to the user and lets the
    compiled code answer it; a branch the user may not read is left out."""
    with (
        _user_and_root_pool() as p,
        subprocess.Popen(
            [USER_PY, "-c", USER, p.path("d")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=as_user(65534, 65534),
        ) as proc,
    ):
        assert proc.stdout is not None and proc.stdin is not None
        try:
            assert proc.stdout.readline().strip() == "open"
            assert sorted(os.listdir(p.path("d"))) == ["a", "b", "c"]  # root's listing, on the same worker
            proc.stdin.write("\n")
            proc.stdin.flush()
            assert proc.stdout.readline().split() == ["a", "b"]
        finally:
            proc.kill()


# -- kept listings (_listing.pxi) ---------------------------------------------

QUIET = 5.5  # over _listing.pxi's LISTED_QUIET_NS: a directory this old is kept once listed
IN_ACCESS = 0x1  # inotify: a directory was read (getdents), what a kept listing does not do


class _Reads:
    """inotify IN_ACCESS on directories: which of them were read (listed) since the last take()."""

    def __init__(self, paths: list[str]) -> None:
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0
        self.wd = {libc.inotify_add_watch(self.fd, os.fsencode(p), IN_ACCESS): p for p in paths}
        assert all(w >= 0 for w in self.wd)

    def take(self) -> set[str]:
        out = set()
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return out
        pos = 0
        while pos < len(data):
            wd, mask, _, length = struct.unpack_from("iIII", data, pos)
            pos += 16 + length
            if mask & IN_ACCESS and wd in self.wd:
                out.add(self.wd[wd])
        return out

    def close(self) -> None:
        os.close(self.fd)


#: One directory per kind of change (_change), each applied while its listing is kept.
_CHANGES = ("created", "removed", "renamed", "retyped", "appeared", "vanished", "via-pool", "unchanged")


def _change(kind: str, p, b: list[str]) -> None:
    """Change directory ``kind`` as its name says (on the branches ``b`` directly, or through pool ``p``)."""
    if kind == "created":
        open(os.path.join(b[1], kind, "new"), "w").close()
    elif kind == "removed":
        os.unlink(os.path.join(b[0], kind, "x0"))
    elif kind == "renamed":
        os.rename(os.path.join(b[1], kind, "y1"), os.path.join(b[1], kind, "z1"))
    elif kind == "retyped":  # a file becomes a directory: same name, another d_type
        os.unlink(os.path.join(b[0], kind, "x1"))
        os.mkdir(os.path.join(b[0], kind, "x1"))
    elif kind == "appeared":  # on a branch that had no such directory
        os.mkdir(os.path.join(b[2], kind))
        os.mkfifo(os.path.join(b[2], kind, "w"))
    elif kind == "vanished":
        shutil.rmtree(os.path.join(b[1], kind))
    elif kind == "via-pool":
        os.rename(p.path(f"{kind}/x2"), p.path(f"{kind}/moved"))


def _kept_layout() -> list[dict[str, bytes | None]]:
    first: dict[str, bytes | None] = {}
    second: dict[str, bytes | None] = {}
    for d in _CHANGES:
        first[d + "/"] = None
        second[d + "/"] = None
        for i in range(3):
            first[f"{d}/x{i}"] = b"x" * i
            second[f"{d}/y{i}"] = b""
        second[f"{d}/x0"] = b"shadowed"  # the first branch's x0 wins
    return [first, second, {}]


def test_kept_listing_is_used_until_a_branch_directory_changes(mount_pool):
    """A directory unchanged for over 5 s is read once, and its merged listing
    kept: listing it again reads no branch directory (inotify sees no read)
    and gives what the Python path reads from the branches. Each kind of change
    (a name created, removed, renamed or changing type on a branch directly,
    the directory appearing on or vanishing from a branch, a rename through
    the pool) makes the next listing read the branches again and show it."""
    c = mount_pool(n=3, options=OPTS, layout=_kept_layout())
    py = mount_pool(options=PYTHON_PATH, branches=c.branches)
    time.sleep(QUIET)
    for d in _CHANGES:  # read, and kept (the first request after the pause may be Python's: twice)
        assert list_path(c.path(d)) == list_path(c.path(d)) == list_path(py.path(d)), d
    dirs = [os.path.join(b, d) for b in c.branches for d in _CHANGES if os.path.isdir(os.path.join(b, d))]
    reads = _Reads(dirs)
    try:
        kept = {d: list_path(c.path(d)) for d in _CHANGES}
        assert reads.take() == set(), "a kept listing read its branch directories"
        for d in _CHANGES:
            _change(d, c, c.branches)
        for d in _CHANGES:
            got = list_path(c.path(d))
            read = reads.take()
            assert got == list_path(py.path(d)), d
            assert {name: dtype for name, dtype, _ in got} == _union(c.branches, d), d
            reads.take()  # the Python path's and the oracle's own reads
            if d == "unchanged":
                assert got == kept[d] and read == set()
            else:
                assert got != kept[d] and read, d
    finally:
        reads.close()


def test_kept_listing_is_per_caller():
    """Root's kept listing is not another user's: the user lists the directory
    as itself, without the branch it may not read."""
    with _user_and_root_pool() as p:
        time.sleep(QUIET)
        for _ in range(3):
            assert sorted(os.listdir(p.path("d"))) == ["a", "b", "c"]  # root's, kept
        r = subprocess.run(
            [USER_PY, "-c", "import os, sys; print(' '.join(sorted(os.listdir(sys.argv[1]))))", p.path("d")],
            capture_output=True,
            text=True,
            preexec_fn=as_user(65534, 65534),
            timeout=30,
        )
        assert r.stdout.split() == ["a", "b"], r.stderr
