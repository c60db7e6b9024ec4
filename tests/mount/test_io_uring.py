"""FUSE over io_uring (mergerfs/_ring.pxi): with the fuse module's enable_uring
set, the kernel session takes every request but INIT, FORGET and INTERRUPT
over its rings (one queue per CPU), answers them as from /dev/fuse (compared
with a native directory: names, data through 1 MiB requests, attributes,
xattrs, links), and ends with its mount on every path. The module sets
enable_uring for its tests and restores it; `make test` also runs a part of
the suite with it set (MERGERFS_IO_URING=1, see conftest.py)."""

from __future__ import annotations

import mmap
import os
import random
import signal
import subprocess

import pytest

from .helpers import (
    compare,
    counts,
    daemon_pid,
    get,
    is_llfuse,
    is_reference,
    mount,
    mountinfo,
    pid_alive,
    set_enable_uring,
    unmount,
    wait_until,
)

pytestmark = pytest.mark.skipif(is_reference() or is_llfuse(), reason="our kernel session's io_uring transport")

#: Requests the kernel still sends through read() while the rings serve the rest.
_READ_ONLY = ("FORGET", "BATCH_FORGET", "INTERRUPT")


@pytest.fixture(scope="module", autouse=True)
def enable_uring():
    before = set_enable_uring("Y")
    if before is None:
        pytest.skip("this kernel offers no FUSE over io_uring (no fuse enable_uring parameter)")
    yield
    set_enable_uring(before)


def _ways_in(mnt: str) -> tuple[int, int, int]:
    """(requests over io_uring, through read(), of those the ones only read() brings)."""
    c = counts(mnt)
    ring, read = c["io_uring"]
    return ring, read, sum(sum(c.get(op, (0, 0))) for op in _READ_ONLY)


def _scenario(root: str) -> list:
    """Names, data and metadata through the pool: what native shows too."""
    rnd = random.Random(7)
    j = lambda *p: os.path.join(root, *p)  # noqa: E731
    out: list = []
    os.mkdir(j("d"))
    for i in range(400):
        with open(j("d", f"f{i:03d}"), "wb") as f:
            f.write(bytes([i % 251]) * (i * 37))
    out.append(sorted(os.listdir(j("d"))))
    out.append(all(get(j("d", f"f{i:03d}")) == bytes([i % 251]) * (i * 37) for i in range(400)))
    # 1 MiB requests both ways (a WRITE's payload and a READ's reply fill an entry), then small ones
    big = rnd.randbytes(8 << 20)
    fd = os.open(j("big"), os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o644)
    try:
        buf = mmap.mmap(-1, 1 << 20)
        for k in range(8):
            buf[:] = big[k << 20 : (k + 1) << 20]
            out.append(os.pwritev(fd, [buf], k << 20))
        back = bytearray()
        for k in range(8):
            os.preadv(fd, [buf], k << 20)
            back += buf[:]
        out.append(back == big)
    finally:
        os.close(fd)
    with open(j("big"), "r+b") as f:
        for _ in range(50):
            off = rnd.randrange(8 << 20)
            f.seek(off)
            data = rnd.randbytes(rnd.randrange(1, 9000))
            f.write(data)
            big = big[:off] + data + big[off + len(data) :]
        f.flush()
        f.seek(0)
        out.append(f.read() == big)
    os.rename(j("d", "f001"), j("d", "renamed"))
    os.link(j("d", "f002"), j("hard"))
    os.symlink("d/f003", j("sym"))
    out.append(os.readlink(j("sym")))
    os.truncate(j("d", "f004"), 10)
    os.chmod(j("d", "f005"), 0o600)
    os.utime(j("d", "f006"), (1e9, 2e9))
    os.setxattr(j("d", "f007"), "user.k", b"v" * 300)
    out.append(os.getxattr(j("d", "f007"), "user.k"))
    out.append(sorted(os.listxattr(j("d", "f007"))))
    os.removexattr(j("d", "f007"), "user.k")
    for name in ("f004", "f005", "f006", "hard"):
        st = os.stat(j("d", name) if name != "hard" else j("hard"))
        out.append((name, st.st_size, oct(st.st_mode), st.st_nlink, int(st.st_mtime) if name == "f006" else 0))
    os.unlink(j("d", "f010"))
    os.mkdir(j("e"))
    os.rmdir(j("e"))
    for err_call in (lambda: os.stat(j("nope")), lambda: os.rmdir(j("d")), lambda: os.mkdir(j("d"))):
        try:
            err_call()
        except OSError as e:
            out.append(e.errno)
    out.append(len(os.listdir(j("d"))))
    return out


def test_requests_come_over_the_rings(mount_pool, native):
    """Everything but FORGET/INTERRUPT comes over io_uring, answered as natively."""
    p = mount_pool(n=2, options="cache.files=partial")
    compare(lambda: _scenario(p.mnt), lambda: _scenario(native))
    ring, read, read_only = _ways_in(p.mnt)
    assert ring > 1000 and read <= read_only, (ring, read, read_only)


def test_passthrough_over_the_rings(mount_pool):
    """An open's reply carries its backing id over the ring as through write():
    the kernel reads the branch file itself (no READ reaches the daemon)."""
    p = mount_pool(n=2, options="cache.files=auto-full,passthrough.io=rw")
    data = random.Random(3).randbytes(3 << 20)
    with open(p.branch_path(0, "f"), "wb") as f:
        f.write(data)
    before = counts(p.mnt)
    with open(p.path("f"), "rb") as f:
        assert f.read() == data
    after = counts(p.mnt)
    assert sum(after.get("READ", (0, 0))) == sum(before.get("READ", (0, 0)))
    assert after["io_uring"][0] > before["io_uring"][0]


def test_off_takes_everything_through_read(mount_pool):
    """fuse-io-uring=false: the kernel offers the rings, the pool declines them."""
    p = mount_pool(n=2, options="fuse-io-uring=false")
    os.listdir(p.mnt)
    with open(p.path("f"), "wb") as f:
        f.write(b"x")
    ring, read, _ = _ways_in(p.mnt)
    assert ring == 0 and read > 0


@pytest.mark.parametrize("how", ["sigterm", "fusermount", "umount"])
def test_daemon_ends(tmp_path, how):
    """The ring workers end with the mount (each entry completes with ENOTCONN):
    the daemon exits, nothing stays mounted."""
    b, mnt = tmp_path / "b", tmp_path / "mnt"
    b.mkdir()
    p = mount([str(b)], str(mnt))
    try:
        pid = daemon_pid(p.mnt)
        assert pid and pid_alive(pid)
        os.listdir(p.mnt)
        assert _ways_in(p.mnt)[0] > 0
        if how == "sigterm":
            os.kill(pid, signal.SIGTERM)
        else:
            assert subprocess.run([how, "-u" if how == "fusermount" else "--", p.mnt]).returncode == 0
        assert wait_until(lambda: not pid_alive(pid), 10), "daemon still running"
        assert wait_until(lambda: mountinfo(p.mnt) is None, 10), "still mounted"
    finally:
        unmount(p.mnt)
