"""The kernel session's own promises: passthrough proven by the kernel's request
tracepoint, the non-root mount through fusermount3 and its passthrough
fallback, and the ops libfuse 2 never delivered (fallocate, rename2, lseek,
copy_file_range, inode-flag ioctls, syncfs, statx), each compared with native."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import subprocess
import sys
import tempfile

import pytest

from mergerfs import _fastpath

from .helpers import REPO, counts, is_llfuse, is_reference, mountinfo, served, wait_until
from .nsutil import kill_leftovers

pytestmark = pytest.mark.skipif(is_reference() or is_llfuse(), reason="the kernel session's features")
READ, WRITE, OPEN = 15, 16, 14
MIB = 1 << 20


@contextlib.contextmanager
def requests_seen(mnt: str):
    """Opcodes the kernel sends to ``mnt``'s daemon inside the block, from the
    fuse_request_send tracepoint (tracefs mounted privately in a temp dir)."""
    dev = os.stat(mnt).st_dev
    seen: list[int] = []
    with tempfile.TemporaryDirectory() as trc:
        subprocess.run(["mount", "-t", "tracefs", "nodev", trc], check=True)
        ev = os.path.join(trc, "events/fuse/fuse_request_send")
        try:
            with open(os.path.join(ev, "filter"), "w") as f:
                f.write(f"connection == {os.minor(dev) | (os.major(dev) << 20)}")
            with open(os.path.join(trc, "trace"), "w"):
                pass  # clear
            with open(os.path.join(ev, "enable"), "w") as f:
                f.write("1")
            yield seen
            with open(os.path.join(ev, "enable"), "w") as f:
                f.write("0")
            with open(os.path.join(trc, "trace")) as f:
                for line in f:
                    if " opcode " in line:
                        seen.append(int(line.split(" opcode ")[1].split()[0]))
        finally:
            with open(os.path.join(ev, "enable"), "w") as f:
                f.write("0")
            with open(os.path.join(ev, "filter"), "w") as f:
                f.write("0")
            subprocess.run(["umount", trc], check=False)


def _io(mnt: str) -> bytes:
    data = os.urandom(4 * MIB)
    path = os.path.join(mnt, "data")
    with open(path, "wb") as f:
        f.write(data)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("1")
    with open(path, "rb") as f:
        back = f.read()
    return data if back == data else b""


@pytest.mark.parametrize("passthrough", [True, False])
def test_passthrough_sends_no_read_or_write(mount_pool, passthrough):
    """With passthrough.io=rw the kernel reads and writes the branch file itself;
    without it the same I/O reaches the daemon (so the count can fail)."""
    opts = "cache.files=auto-full,minfreespace=0" + (",passthrough.io=rw" if passthrough else "")
    p = mount_pool(n=2, options=opts)
    with requests_seen(p.mnt) as seen:
        assert _io(p.mnt)
    assert OPEN in seen, "tracepoint saw nothing: the test cannot tell"
    io = sum(op in (READ, WRITE) for op in seen)
    assert (io == 0) if passthrough else (io > 0), seen


NONROOT = r"""
set -e
T="$1"; PY="$2"
mknod -m 0666 "$T/fuse" c 10 229
mount --bind "$T/fuse" /dev/fuse
cd /
setpriv --reuid=65534 --regid=65534 --clear-groups env PYTHONPATH="$3" "$PY" -m mergerfs \
    -o passthrough.io=rw,cache.files=auto-full,minfreespace=0,category.create=ff "$T/b1:$T/b2" "$T/mnt"
grep " $T/mnt " /proc/mounts
setpriv --reuid=65534 --regid=65534 --clear-groups sh -c "
  head -c 3000000 /dev/urandom > $T/mnt/f && cmp $T/mnt/f $T/b1/f && cat $T/mnt/f | cmp - $T/b1/f
  stat -c %U $T/b1/f"
setpriv --reuid=65534 --regid=65534 --clear-groups fusermount3 -u "$T/mnt"
for i in $(seq 50); do pgrep -f -- "$T/mnt" >/dev/null || exit 0; sleep 0.1; done
echo "daemon outlived its mount" >&2; exit 1
"""


def _python_for_nobody() -> str:
    """An interpreter user nobody can run with our compiled modules importable."""
    for exe in (sys.executable, "/usr/bin/python3"):
        r = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "env",
                f"PYTHONPATH={REPO}",
                exe,
                "-c",
                "import mergerfs._kernel",
            ],
            capture_output=True,
            cwd="/",
            check=False,
        )
        if r.returncode == 0:
            return exe
    pytest.skip("no interpreter user nobody can run with this checkout importable")


def test_nonroot_mount_via_fusermount3_falls_back_from_passthrough(tmp_path):
    """An unprivileged user mounts through fusermount3 (fd handoff), asks for
    passthrough, gets normal I/O (the backing ioctl needs CAP_SYS_ADMIN), and
    the daemon exits after fusermount3 -u. /dev/fuse is 0600 on the host: a
    private mount namespace binds its own 0666 node over it."""
    t = tempfile.mkdtemp(dir="/tmp", prefix="mfs-nonroot-")
    try:
        os.chmod(t, 0o755)
        for d in ("b1", "b2", "mnt"):
            os.mkdir(os.path.join(t, d))
            os.chown(os.path.join(t, d), 65534, 65534)
        r = subprocess.run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                NONROOT,
                "sh",
                t,
                _python_for_nobody(),
                REPO,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"{t}/mnt fuse.mergerfs" in r.stdout
        assert r.stdout.split()[-1] == "nobody"
    finally:
        kill_leftovers(f"{t}/mnt")
        subprocess.run(["rm", "-rf", t], check=False)


# ------------------------------------------------------------ ops vs native
def _both(pool_dir: str, native: str, fn):
    """``fn(root)`` on the pool and on native: (result or errno) pairs."""
    out = []
    for root in (pool_dir, native):
        try:
            out.append(("ok", fn(root)))
        except OSError as e:
            out.append(("err", errno.errorcode.get(e.errno, e.errno)))
    return out


def _text(path: str) -> str:
    with open(path) as f:
        return f.read()


#: The kernel's FUSE client refuses these before asking any daemon (fs/fuse/file.c):
#: an application sees EOPNOTSUPP, as from any filesystem without them.
KERNEL_REFUSED = {"collapse", "insert"}
FALLOC = {
    "default": 0,
    "keep_size": 1,
    "punch_hole": 3,
    "collapse": 8,
    "zero_range": 0x10,
    "zero_keep": 0x11,
    "insert": 0x20,
}


@pytest.mark.parametrize("mode", sorted(FALLOC))
def test_fallocate_modes_match_native(mount_pool, native, mode):
    p = mount_pool(n=2, options="minfreespace=0,category.create=ff")

    def run(root):
        path = os.path.join(root, f"fa-{mode}")
        with open(path, "wb") as f:
            f.write(bytes(range(256)) * 64)  # 16 KiB
        fd = os.open(path, os.O_RDWR)
        try:
            _fastpath.fallocate(fd, FALLOC[mode], 4096, 4096)
        finally:
            os.close(fd)
        with open(path, "rb") as f:
            data = f.read()
        return os.stat(path).st_size, data

    pool_res, native_res = _both(p.mnt, native, run)
    if mode in KERNEL_REFUSED:
        assert pool_res == ("err", "ENOTSUP")
    else:
        assert pool_res == native_res


@pytest.mark.parametrize("flags", [1, 2])  # RENAME_NOREPLACE, RENAME_EXCHANGE
@pytest.mark.parametrize("target", ["exists", "missing"])
def test_rename2_flags_match_native(mount_pool, native, flags, target):
    p = mount_pool(n=2, options="minfreespace=0,category.create=ff")

    def run(root):
        with open(os.path.join(root, "a"), "w") as f:
            f.write("A")
        if target == "exists":
            with open(os.path.join(root, "b"), "w") as f:
                f.write("B")
        _fastpath.renameat2(os.path.join(root, "a"), os.path.join(root, "b"), flags)
        return sorted((n, _text(os.path.join(root, n))) for n in os.listdir(root) if n in "ab")

    pool_res, native_res = _both(p.mnt, native, run)
    assert pool_res == native_res


def test_lseek_data_hole_and_copy_file_range_match_native(mount_pool, native):
    p = mount_pool(n=2, options="minfreespace=0,category.create=ff")

    def run(root):
        path = os.path.join(root, "sparse")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, b"x" * 4096, 1 << 20)
            found = (os.lseek(fd, 0, os.SEEK_DATA), os.lseek(fd, 0, os.SEEK_HOLE))
            out = os.open(os.path.join(root, "copy"), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                n = os.copy_file_range(fd, out, 4096, 1 << 20, 100)
                copied = os.pread(out, 8192, 0)
            finally:
                os.close(out)
            try:
                os.lseek(fd, 2 << 20, os.SEEK_DATA)
                past = "ok"
            except OSError as e:
                past = errno.errorcode[e.errno]
        finally:
            os.close(fd)
        return found, n, copied, past

    pool_res, native_res = _both(p.mnt, native, run)
    assert pool_res == native_res


def test_inode_flags_ioctl_and_syncfs(mount_pool, native):
    """lsattr/chattr's FS_IOC_GETFLAGS/SETFLAGS reach the branch file; syncfs works."""
    p = mount_pool(n=1, options="minfreespace=0")
    libc = ctypes.CDLL(None, use_errno=True)

    def run(root):
        path = os.path.join(root, "attrs")
        open(path, "w").close()
        fd = os.open(path, os.O_RDONLY)
        try:
            flags = ctypes.c_long(0)
            got = libc.ioctl(fd, 0x80086601, ctypes.byref(flags))  # FS_IOC_GETFLAGS
            if got != 0:
                raise OSError(ctypes.get_errno(), "ioctl")
            _fastpath.syncfs(fd)
            return flags.value
        finally:
            os.close(fd)

    pool_res, native_res = _both(p.mnt, native, run)
    assert pool_res == native_res


# statx(2) through libc (ctypes), not through our compiled module: the oracle must not be our code.
STATX_BASIC_STATS, STATX_BTIME = 0x7FF, 0x800
AT_FDCWD, AT_SYMLINK_NOFOLLOW, AT_EMPTY_PATH = -100, 0x100, 0x1000


class _Time(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_int64), ("nsec", ctypes.c_uint32), ("reserved", ctypes.c_int32)]


class _Statx(ctypes.Structure):
    _fields_ = [
        ("mask", ctypes.c_uint32),
        ("blksize", ctypes.c_uint32),
        ("attributes", ctypes.c_uint64),
        ("nlink", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("gid", ctypes.c_uint32),
        ("mode", ctypes.c_uint16),
        ("spare0", ctypes.c_uint16),
        ("ino", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
        ("blocks", ctypes.c_uint64),
        ("attributes_mask", ctypes.c_uint64),
        ("atime", _Time),
        ("btime", _Time),
        ("ctime", _Time),
        ("mtime", _Time),
        ("rdev_major", ctypes.c_uint32),
        ("rdev_minor", ctypes.c_uint32),
        ("dev_major", ctypes.c_uint32),
        ("dev_minor", ctypes.c_uint32),
        ("spare", ctypes.c_uint64 * 14),
    ]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.statx.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_Statx)]


def statx(target: str | int, flags: int = AT_SYMLINK_NOFOLLOW) -> dict:
    """statx(2) asking for the basic stats and the birth time, of a path or an
    open fd; the fields as a dict, times in ns, btime None when not reported."""
    buf = _Statx()
    mask = STATX_BASIC_STATS | STATX_BTIME
    if isinstance(target, int):
        rv = _libc.statx(target, b"", flags | AT_EMPTY_PATH, mask, ctypes.byref(buf))
    else:
        rv = _libc.statx(AT_FDCWD, os.fsencode(target), flags, mask, ctypes.byref(buf))
    if rv != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)
    out = {k: getattr(buf, k) for k in ("mask", "nlink", "uid", "gid", "mode", "ino", "size", "blocks")}
    for k in ("atime", "ctime", "mtime", "btime"):
        t = getattr(buf, k)
        out[k] = t.sec * 1_000_000_000 + t.nsec
    if not buf.mask & STATX_BTIME:
        out["btime"] = None
    return out


#: rel -> index of the branch whose file each pool name shows (func.getattr=ff).
_STATX_WHERE = {
    "": 0,
    "f": 0,
    "d": 1,
    "old": 1,
    "lf": 1,
    "ld": 1,
    "dangling": 0,
    "only2": 1,
    "made": 0,
}


@pytest.mark.parametrize(
    "options",
    [
        "",
        "func.getattr=newest",
        "follow-symlinks=all",
        "symlinkify=true,symlinkify-timeout=3600",
        "uid=12345,gid=54321,umask=0027",
    ],
)
def test_statx_birth_time_is_the_branch_files(mount_pool, options):
    """statx(STATX_BTIME) of pool names (root, files, a directory, symlinks, a
    name on the second branch only, a file made through the pool) reports the
    birth time, mtime and size of the branch file stat reports, and inode, owner
    and mode as stat of the pool path does (the kernel used to answer from
    GETATTR: no birth time at all)."""
    base = "minfreespace=0,category.create=ff,cache.attr=0,cache.entry=0"
    p = mount_pool(n=2, options=base + ("," + options if options else ""))
    b1, b2 = p.branches
    with open(os.path.join(b1, "f"), "wb") as f:
        f.write(b"first")
    os.utime(os.path.join(b1, "f"), (1000, 1000))
    with open(os.path.join(b2, "f"), "wb") as f:
        f.write(b"second!")
    os.mkdir(os.path.join(b2, "d"))
    for name in ("old", "only2"):
        with open(os.path.join(b2, name), "wb") as f:
            f.write(name.encode())
    os.utime(os.path.join(b2, "old"), (1_000_000, 1_000_000))
    os.symlink("f", os.path.join(b2, "lf"))
    os.symlink("d", os.path.join(b2, "ld"))
    os.symlink("nowhere", os.path.join(b1, "dangling"))
    with open(p.path("made"), "wb") as f:
        f.write(b"made here")
    # mtime apart from the birth time (on the branch: with symlinkify the pool's own
    # utime would turn the file into a link under the kernel's feet)
    os.utime(os.path.join(b1, "made"), (2_000_000, 2_000_000))
    os.utime(b2, (3_000_000, 3_000_000))  # the first branch's root is the newest
    before = counts(p.mnt)
    where = dict(_STATX_WHERE)
    follow = {}
    if "newest" in options:
        where["f"] = 1
    if "follow-symlinks" in options:
        follow = {"lf": "f", "ld": "d"}
    for rel, i in where.items():
        pool = statx(p.path(rel))
        st = os.lstat(p.path(rel))
        native = statx(os.path.join(p.branches[i], follow.get(rel, rel)))
        assert pool["btime"] is not None and native["btime"] is not None, rel
        assert (pool["btime"], pool["mtime"], pool["nlink"]) == (native["btime"], native["mtime"], native["nlink"]), rel
        assert (pool["ino"], pool["uid"], pool["gid"], pool["mode"], pool["size"], pool["mtime"]) == (
            st.st_ino,
            st.st_uid,
            st.st_gid,
            st.st_mode,
            st.st_size,
            st.st_mtime_ns,
        ), rel
        if "symlinkify" not in options and "umask" not in options:
            assert (pool["mode"], pool["size"]) == (native["mode"], native["size"]), rel
    compiled, _ = served(p.mnt, before, "STATX", len(where))
    assert (compiled > 0) == (options == ""), compiled  # C answers the plain case only (_metadata.pxi)
    if "uid" in options:
        assert (statx(p.mnt)["uid"], statx(p.mnt)["gid"]) == (12345, 54321)
    if "symlinkify" in options:
        assert stat.S_ISLNK(statx(p.path("old"))["mode"]) and stat.S_ISREG(statx(p.path("only2"))["mode"])


def test_statx_of_open_and_unlinked_files(mount_pool, native):
    """statx of an open fd (AT_EMPTY_PATH), before and after its name is gone,
    as on a native directory: the open file answers, with its birth time."""
    p = mount_pool(n=2, options="minfreespace=0,category.create=ff")

    def run(root):
        path = os.path.join(root, "f")
        with open(path, "wb") as f:
            f.write(b"x" * 100)
        born = statx(os.path.join(p.branches[0], "f") if root == p.mnt else path)["btime"]
        fd = os.open(path, os.O_RDONLY)
        try:
            before = statx(fd)
            os.unlink(path)
            after = statx(fd)
            ino = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        assert before["btime"] == after["btime"] == born is not None
        assert (before["ino"], after["ino"]) == (ino, ino)
        return before["nlink"], after["nlink"], after["size"], stat.S_IFMT(after["mode"])

    pool_res, native_res = _both(p.mnt, native, run)
    assert pool_res == native_res == ("ok", (1, 0, 100, stat.S_IFREG))


def test_statx_errors_match_native(mount_pool, native):
    """Missing names and a file used as a directory fail as natively; a file
    removed behind the pool's back while the kernel still trusts its entry
    reaches the daemon as STATX and fails ENOENT, as natively."""
    p = mount_pool(n=2, options="minfreespace=0,category.create=ff,cache.entry=60,cache.attr=0")
    for root in (p.mnt, native):
        with open(os.path.join(root, "f"), "wb"):
            pass
        with open(os.path.join(root, "g"), "wb"):
            pass
    for rel in ("missing", "f/x", "missing/x"):
        assert (
            _both(p.mnt, native, lambda root, rel=rel: statx(os.path.join(root, rel)))
            == [("err", errno.errorcode[errno.ENOTDIR if rel == "f/x" else errno.ENOENT])] * 2
        )
    assert statx(p.path("g"))["btime"] is not None  # the kernel now holds g's entry
    before = counts(p.mnt).get("STATX", (0, 0))
    os.unlink(os.path.join(p.branches[0], "g"))
    os.unlink(os.path.join(native, "g"))
    assert _both(p.mnt, native, lambda root: statx(os.path.join(root, "g"))) == [("err", "ENOENT")] * 2
    assert counts(p.mnt)["STATX"][1] > before[1]  # answered by the daemon, in Python


def test_readdirplus_100k_entries(mount_pool):
    """A 100k-entry directory through READDIRPLUS: every name once, attributes right."""
    p = mount_pool(n=2, options="readdirplus=true,minfreespace=0")
    d = os.path.join(p.branches[0], "big")
    os.mkdir(d)
    os.mkdir(os.path.join(p.branches[1], "big"))
    for i in range(100_000):
        os.close(
            os.open(os.path.join(d if i % 2 else p.branches[1] + "/big", f"f{i:06d}"), os.O_CREAT | os.O_WRONLY, 0o644)
        )
    with os.scandir(os.path.join(p.mnt, "big")) as it:
        names = [(e.name, e.is_file(follow_symlinks=False)) for e in it]
    assert len(names) == 100_000 and all(f for _, f in names)
    assert sorted(n for n, _ in names) == [f"f{i:06d}" for i in range(100_000)]


PER_PROCESS_READER = r"""
import ctypes, os, sys
ctypes.CDLL(None).prctl(15, sys.argv[2].encode(), 0, 0, 0)  # PR_SET_NAME: our comm
fd = os.open(sys.argv[1], os.O_RDONLY)
first = os.pread(fd, 4, 0)
with open(sys.argv[3], "wb") as f:  # change the branch file behind the pool's back
    f.write(b"NEW!")
print(first.decode(), os.pread(fd, 4, 0).decode())
"""


@pytest.mark.parametrize("comm, cached", [("rtorrent", True), ("other-proc", False)])
def test_cache_files_per_process(mount_pool, comm, cached):
    """cache.files=per-process: a process named in cache.files.process-names reads
    through the page cache (a change behind the pool's back stays unseen while it
    holds the file open); any other process gets direct I/O and sees it at once."""
    # attributes cached long: the kernel must not refetch them (and drop its pages) mid-test
    p = mount_pool(
        n=1,
        options="cache.files=per-process,cache.files.process-names=rtorrent,minfreespace=0,"
        "cache.attr=60,cache.entry=60",
    )
    branch_file = os.path.join(p.branches[0], "f")
    with open(branch_file, "wb") as f:
        f.write(b"old!")
    out = subprocess.run(
        [sys.executable, "-c", PER_PROCESS_READER, os.path.join(p.mnt, "f"), comm, branch_file],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    assert out == (["old!", "old!"] if cached else ["old!", "NEW!"])


FLUSH, SETATTR = 25, 4


@pytest.mark.parametrize(
    "mode, read_only_flushes, write_flushes",
    [("never", False, False), ("always", True, True), ("opened-for-write", False, True)],
)
def test_flush_on_close(mount_pool, mode, read_only_flushes, write_flushes):
    """flush-on-close decides whether close() sends FLUSH (FOPEN_NOFLUSH otherwise)."""
    p = mount_pool(n=1, options=f"flush-on-close={mode},minfreespace=0")
    path = os.path.join(p.mnt, "f")
    with open(path, "wb") as f:
        f.write(b"x")
    with requests_seen(p.mnt) as ro, open(path, "rb") as f:
        f.read()
    with requests_seen(p.mnt) as rw, open(path, "r+b") as f:
        f.write(b"y")
    assert OPEN in ro and OPEN in rw
    assert (FLUSH in ro, FLUSH in rw) == (read_only_flushes, write_flushes)


@pytest.mark.parametrize("v2", [True, False])
def test_handle_killpriv_v2_clears_setuid_ourselves(mount_pool, v2):
    """A non-owner's write to a setuid file clears the bit either way, as natively;
    with handle-killpriv-v2 we do it on the WRITE the kernel flags, with no SETATTR."""
    base = tempfile.mkdtemp(dir="/tmp", prefix="mfs-killpriv-")  # a branch nobody can reach
    os.chmod(base, 0o755)
    try:
        _killpriv_case(mount_pool, base, v2)
    finally:
        subprocess.run(["rm", "-rf", base], check=False)


def _killpriv_case(mount_pool, base, v2):
    p = mount_pool(options=f"handle-killpriv-v2={str(v2).lower()},minfreespace=0", branches=[base])
    path = os.path.join(p.mnt, "f")
    with open(path, "wb"):
        pass
    os.chmod(path, 0o4777)
    # nobody cannot walk to the pytest tmp dir: hand it the pool's root as an fd
    dfd = os.open(p.mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with requests_seen(p.mnt) as seen:
            subprocess.run(
                [
                    "setpriv",
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "sh",
                    "-c",
                    f"echo x >> /proc/self/fd/{dfd}/f",
                ],
                check=True,
                cwd="/",
                pass_fds=(dfd,),
            )
    finally:
        os.close(dfd)
    assert WRITE in seen
    assert oct(os.stat(os.path.join(p.branches[0], "f")).st_mode & 0o7777) == oct(0o777)
    if v2:
        assert SETATTR not in seen, seen


@pytest.mark.parametrize("allow", [True, False])
def test_direct_io_allow_mmap(mount_pool, allow):
    """cache.files=off opens with direct_io; shared mmap of such a file works only
    when direct-io-allow-mmap lets the kernel map it."""
    import mmap

    p = mount_pool(n=1, options=f"cache.files=off,direct-io-allow-mmap={str(allow).lower()},minfreespace=0")
    path = os.path.join(p.mnt, "f")
    with open(path, "wb") as f:
        f.write(b"m" * 4096)
    with open(path, "r+b") as f:
        try:
            with mmap.mmap(f.fileno(), 4096, mmap.MAP_SHARED) as m:
                mapped = m[:1] == b"m"
        except OSError as e:
            mapped = False
            assert e.errno == errno.ENODEV
    assert mapped == allow


@pytest.mark.parametrize(("msg_size", "kib"), [("", 1024), ("fuse-msg-size=64", 256)])
def test_pool_readahead_follows_the_request_size(mount_pool, msg_size, kib):
    """Without readahead=, the pool's read_ahead_kb is the agreed request size:
    the kernel's 128 KiB default window would cut each 1 MiB READ into eight."""
    p = mount_pool(1, options=msg_size)
    with open(p.branch_path(0, "f"), "wb") as f:
        f.write(os.urandom(4 * MIB))
    ra = f"/sys/class/bdi/{mountinfo(p.mnt)['dev']}/read_ahead_kb"

    def value() -> int:
        with open(ra) as f:
            return int(f.read())

    assert wait_until(lambda: value() == kib, 3), value()
    with requests_seen(p.mnt) as seen, open(p.path("f"), "rb") as f:
        while f.read(MIB):
            pass
    # the window ramps up and readahead reads ahead in halves: about two READs per window
    assert seen.count(READ) <= 2 * (4 * MIB // (kib * 1024)) + 2, seen.count(READ)
