"""Remote branches: a pool of one local disk and one network filesystem (sshfs
from an sshd, ``rclone mount`` of ``rclone serve sftp``), real servers on
127.0.0.1 (see :mod:`remote`).

Local branch: a 16 MiB tmpfs; the server serves a 48 MiB tmpfs, so the two
free spaces differ and placement by mfs/lfs/pfrd with minfreespace is
deterministic. Faults: the server killed mid-read, stopped (SIGSTOP: a hung
remote), and the mount client exiting (the bare mountpoint left behind).
Everything is torn down in ``finally`` blocks and context managers; every wait
is bounded.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from .branchfs import MiB, avail, pool, tmpfs_branches, where
from .helpers import (
    cmd_env,
    daemon_pid,
    err_of,
    get as _get,
    is_llfuse,
    is_reference,
    pid_alive,
    put as _put,
    wait_until,
)
from .remote import remotes, tools_missing

pytestmark = pytest.mark.skipif(tools_missing() is not None, reason=str(tools_missing()))

NOCACHE = "cache.files=off,cache.attr=0,cache.entry=0,cache.negative_entry=0"
README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "README.md")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def local_and_sshfs(options: str, keepalive: bool = True):
    """(pool mountpoint, local branch, remote) over a 16 MiB local tmpfs and an
    sshfs of a 48 MiB tmpfs; the local branch first."""
    with tmpfs_branches([16, 48], prefix="mfsremote") as (local, served), remotes() as r:
        remote = r.sshfs(served, keepalive=keepalive)
        with pool([local, remote.mnt], f"{NOCACHE},{options}") as mnt:
            yield mnt, local, remote


def _ctl(mnt: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mergerfs.tools.ctl", "--mount", mnt, *args],
        env=cmd_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )


# -- placement, bytes, listing -------------------------------------------------


def test_create_policies_see_the_remote_space():
    with local_and_sshfs("minfreespace=1M,category.create=mfs") as (mnt, local, remote):
        branches = [local, remote.mnt]
        # the remote reports the server's filesystem, not the local disk's
        assert 40 * MiB < avail(remote.mnt) <= 48 * MiB
        assert avail(local) <= 16 * MiB
        ctl = os.path.join(mnt, ".mergerfs")

        def place(policy: str, name: str) -> list[int]:
            os.setxattr(ctl, "user.mergerfs.category.create", policy.encode())
            _put(os.path.join(mnt, name), b"x")
            return where(branches, name)

        assert place("mfs", "mfs") == [1]
        assert place("lfs", "lfs") == [0]
        os.setxattr(ctl, "user.mergerfs.minfreespace", b"32M")  # only the remote has that much
        assert place("lfs", "lfs-min") == [1]
        assert place("pfrd", "pfrd-min") == [1]
        assert all(place("pfrd", f"pfrd{i}") == [1] for i in range(5))
        os.setxattr(ctl, "user.mergerfs.minfreespace", b"64M")  # nobody has
        assert err_of(_put, os.path.join(mnt, "none"), b"x") == errno.ENOSPC


def test_bytes_reach_the_remote_and_listings_merge():
    with local_and_sshfs("minfreespace=1M,category.create=mfs") as (mnt, local, remote):
        data = os.urandom(3 * MiB + 123)
        _put(os.path.join(mnt, "big"), data)
        assert where([local, remote.mnt], "big") == [1]
        assert _sha(_get(os.path.join(remote.served, "big"))) == _sha(data)  # server side
        assert _sha(_get(os.path.join(mnt, "big"))) == _sha(data)
        served = os.urandom(MiB + 7)
        _put(os.path.join(remote.served, "from-server"), served)
        assert _sha(_get(os.path.join(mnt, "from-server"))) == _sha(served)
        with open(os.path.join(mnt, "big"), "r+b") as f:  # an in-place write
            f.seek(MiB)
            f.write(b"patched")
        patched = data[:MiB] + b"patched" + data[MiB + 7 :]
        assert _sha(_get(os.path.join(remote.served, "big"))) == _sha(patched)
        os.makedirs(os.path.join(local, "d"))
        os.makedirs(os.path.join(remote.served, "d"))
        _put(os.path.join(local, "d", "l"), b"L")
        _put(os.path.join(local, "d", "both"), b"local")
        _put(os.path.join(remote.served, "d", "r"), b"R")
        _put(os.path.join(remote.served, "d", "both"), b"remote")
        assert sorted(os.listdir(os.path.join(mnt, "d"))) == ["both", "l", "r"]
        assert _get(os.path.join(mnt, "d", "both")) == b"local"  # first branch wins
        assert sorted(os.listdir(mnt)) == ["big", "d", "from-server"]


# -- faults ---------------------------------------------------------------------


def _timed(argv: list[str], timeout: float = 8.0) -> tuple[float | None, str]:
    """(seconds ``argv`` took or None if it had not finished after ``timeout``, its output).
    Run as a child process: a request hung in the pool never blocks the test itself."""
    t0 = time.monotonic()
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, ""
    assert r.returncode == 0, (argv, r.stderr)
    return round(time.monotonic() - t0, 3), r.stdout


def _record(timings: dict) -> None:
    if os.environ.get("MERGERFS_REMOTE_TIMINGS"):
        with open(os.environ["MERGERFS_REMOTE_TIMINGS"], "a") as f:
            f.write(json.dumps(timings) + "\n")


def _local_dir_on_both(local: str, remote) -> None:
    """``local/`` on both branches: ``f`` on the local one, ``r`` on the remote."""
    os.makedirs(os.path.join(local, "local"))
    _put(os.path.join(local, "local", "f"), b"local")
    os.makedirs(os.path.join(remote.served, "local"))
    _put(os.path.join(remote.served, "local", "r"), b"remote")


def _local_ops(mnt: str) -> dict[str, tuple[float | None, str]]:
    """stat and cat of a file of the local branch, df of the pool, ls of a local directory."""
    return {
        "stat": _timed(["stat", "-c", "%s", os.path.join(mnt, "local/f")]),
        "cat": _timed(["cat", os.path.join(mnt, "local/f")]),
        "df": _timed(["stat", "-f", "-c", "%b", mnt]),
        "ls": _timed(["ls", os.path.join(mnt, "local")]),
    }


def test_remote_killed_mid_read():
    """sshd SIGKILLed while a file of the remote is being read through the pool.

    The reader gets EIO within milliseconds: sshfs fails every request pending on
    the lost connection (and, with ``reconnect``, every request while the server
    refuses connections) with EIO, and the pool hands the branch's errno back
    unchanged. Sometimes (timing) sshfs answers the read in flight short
    instead, which FUSE takes for end of file: the reader then sees a premature
    EOF, as it would reading sshfs directly. Local-only requests keep answering,
    the daemon stays up, and once the server is back the same pool serves the
    remote again (sshfs reconnects on demand).
    """
    with local_and_sshfs("minfreespace=1M,category.create=mfs") as (mnt, local, remote):
        data = os.urandom(40 * MiB)
        _put(os.path.join(remote.served, "big"), data)
        os.makedirs(os.path.join(local, "local"))
        _put(os.path.join(local, "local", "f"), b"local")
        pid = daemon_pid(mnt)
        fd = os.open(os.path.join(mnt, "big"), os.O_RDONLY)
        got, err, t0 = 0, None, time.monotonic()
        try:
            got = len(os.read(fd, 64 * 1024))
            remote.server.kill()
            t0 = time.monotonic()
            for _ in range(1000):  # 40 MiB in 64 KiB reads, bounded
                chunk = os.read(fd, 64 * 1024)
                if not chunk:
                    break
                got += len(chunk)
        except OSError as e:
            err = e.errno
        finally:
            took = time.monotonic() - t0
            with contextlib.suppress(OSError):  # close's flush fails alike (EIO), as on sshfs itself
                os.close(fd)
        assert err == errno.EIO or (err is None and got < len(data)), (err, got)
        assert took < 5, took
        down = _local_ops(mnt)
        # a new name is looked up on the remote too: its EIO means "unknown", not an error
        down["create"] = _timed(["touch", os.path.join(mnt, "local", "new")])
        _record({"down": {k: v[0] for k, v in down.items()}})
        assert all(v[0] is not None and v[0] < 2 for v in down.values()), down
        assert down["cat"][1] == "local" and "f" in down["ls"][1].split()
        assert where([local, remote.mnt], "local/new") == [0]  # mfs: the remote is down
        assert pid_alive(pid)
        remote.server.start()
        back = b""
        for _ in range(50):  # sshfs reconnects at the next request after the server is back
            with contextlib.suppress(OSError):
                back = _get(os.path.join(mnt, "big"))
                if len(back) == len(data):  # (after a short read sshfs may lag on the size)
                    break
            time.sleep(0.1)
        assert _sha(back) == _sha(data)
        assert daemon_pid(mnt) == pid


@pytest.mark.xfail(
    condition=is_reference(),
    strict=True,
    reason="2.33.5 lists and statfs's every branch without a deadline: ls and df hang",
)
def test_hung_remote_leaves_local_requests_answering():
    """The server SIGSTOPped (sshfs without keepalive: its requests hang until the
    server resumes). Local-only stat and cat never touch the remote (the local
    branch is first); ls and df must, and are bounded: the first statvfs waits
    at most 1 s, the first listing at most 5 s, then the stalled branch is left
    out at once (df counts its last known size) until it answers again.
    Latencies are appended to the file ``MERGERFS_REMOTE_TIMINGS`` names, if set."""
    with local_and_sshfs("minfreespace=1M,category.create=mfs", keepalive=False) as (mnt, local, remote):
        _local_dir_on_both(local, remote)
        healthy = _local_ops(mnt)
        assert healthy["ls"][1].split() == ["f", "r"]
        remote.server.pause()
        try:
            first = _local_ops(mnt)
            again = _local_ops(mnt)
            key = _timed(
                [
                    "getfattr",
                    "--only-values",
                    "-n",
                    "user.mergerfs.branches-unavailable",
                    os.path.join(mnt, ".mergerfs"),
                ]
            )
            status = _timed([sys.executable, "-m", "mergerfs.tools.ctl", "--mount", mnt, "status"])
        finally:
            remote.server.resume()
        timings = {
            "healthy": {k: v[0] for k, v in healthy.items()},
            "hung, first": {k: v[0] for k, v in first.items()},
            "hung, again": {k: v[0] for k, v in again.items()},
        }
        _record(timings)
        limits = {"stat": 1, "cat": 1, "df": 3, "ls": 7}
        for op, limit in limits.items():
            took = first[op][0]
            assert took is not None and took < limit, timings
            assert again[op][0] is not None and again[op][0] < 1, timings
        assert first["df"][1] == again["df"][1] == healthy["df"][1]  # the remote's last known size
        assert first["ls"][1].split() == again["ls"][1].split() == ["f"]
        assert first["cat"][1] == "local"
        assert key[0] is not None and key[0] < 1 and key[1] == f"{remote.mnt}: not answering\n", key
        assert status[0] is not None and status[0] < 3, status  # ctl does not statvfs it either
        assert "unavailable: not answering" in status[1], status
        # resumed: the remote is listed again, without a remount
        assert wait_until(lambda: sorted(os.listdir(os.path.join(mnt, "local"))) == ["f", "r"], 5, 0.1)


@pytest.mark.xfail(
    condition=is_reference(),
    strict=True,
    reason="the references ignore INTERRUPT (2.33.5 lists without a deadline: ls waits for the server)",
)
@pytest.mark.skipif(is_llfuse(), reason="llfuse does not deliver INTERRUPT (DIFFERENCES.md)")
def test_interrupted_listing_of_a_hung_remote_ends_at_once():
    """``ls`` blocked in a listing the pool waits on a hung remote for (up to the
    listing's 5 s deadline) gets SIGINT: the kernel sends INTERRUPT, the pool
    answers the listing EINTR at once and ``ls`` dies of its signal, as it would
    on a local directory. Without the interrupt it would live until the
    deadline. The pool serves on and lists the remote again once it answers."""
    with local_and_sshfs("minfreespace=1M,category.create=mfs", keepalive=False) as (mnt, local, remote):
        _local_dir_on_both(local, remote)
        pid = daemon_pid(mnt)
        remote.server.pause()
        try:
            ls = subprocess.Popen(["ls", os.path.join(mnt, "local")], stdout=subprocess.DEVNULL)
            try:
                time.sleep(0.5)  # ls is in getdents now: the listing waits on the remote
                assert ls.poll() is None, "the listing did not wait on the hung remote"
                t0 = time.monotonic()
                ls.send_signal(signal.SIGINT)
                ls.wait(timeout=10)
                took = time.monotonic() - t0
            finally:
                if ls.poll() is None:
                    ls.kill()
                    ls.wait()
        finally:
            remote.server.resume()
        assert ls.returncode == -signal.SIGINT
        assert took < 2.0, f"ls lived {took:.1f} s after SIGINT: the listing ran to its deadline"
        assert pid_alive(pid) and daemon_pid(mnt) == pid
        assert wait_until(lambda: sorted(os.listdir(os.path.join(mnt, "local"))) == ["f", "r"], 10, 0.1)


@pytest.mark.xfail(
    condition=is_reference(), strict=True, reason="2.33.5 creates files in the bare mountpoint of a gone remote"
)
def test_gone_remote_receives_no_new_files():
    """``rclone mount`` exits (it unmounts itself), leaving the bare mountpoint
    directory on the local disk. The pool must not create files there (they would
    vanish from view once the remote is back); ``mergerfs-ctl status`` and the
    control key report the branch until it returns, then creates go there again."""
    with tmpfs_branches([16], prefix="mfsremote") as (local,), remotes() as r:
        remote = r.rclone()
        with pool([remote.mnt, local], f"{NOCACHE},minfreespace=1M,category.create=ff") as mnt:
            _put(os.path.join(mnt, "a"), b"A")
            assert wait_until(lambda: os.path.exists(os.path.join(remote.served, "a")), 5)
            ctl = os.path.join(mnt, ".mergerfs")
            assert os.getxattr(ctl, "user.mergerfs.branches-unavailable") == b""
            remote.exit_client()
            assert not remote.mounted() and os.listdir(remote.mnt) == []
            _put(os.path.join(mnt, "b"), b"B")
            os.mkdir(os.path.join(mnt, "dir"))
            assert os.listdir(remote.mnt) == []  # nothing in the bare directory
            assert sorted(os.listdir(local)) == ["b", "dir"]
            assert os.getxattr(ctl, "user.mergerfs.branches-unavailable").decode() == f"{remote.mnt}: filesystem gone\n"
            st = _ctl(mnt, "status")
            assert st.returncode == 0, st.stderr
            assert "unavailable: filesystem gone" in st.stdout, st.stdout
            js = json.loads(_ctl(mnt, "status", "--json").stdout)
            row = next(b for b in js["branches"] if b["path"] == remote.mnt)
            assert row["unavailable"] == "filesystem gone"
            remote.mount()  # back (a new device number)
            _put(os.path.join(mnt, "c"), b"C")
            assert wait_until(lambda: os.path.exists(os.path.join(remote.served, "c")), 5)
            assert not os.path.exists(os.path.join(local, "c"))
            assert os.getxattr(ctl, "user.mergerfs.branches-unavailable") == b""
            assert "unavailable" not in _ctl(mnt, "status").stdout


# -- the README's recipe ----------------------------------------------------------


def _recipe() -> tuple[list[str], str]:
    """(rclone mount flags, mergerfs -o options) of the README's rclone recipe."""
    with open(README) as f:
        text = f.read()
    block = text.split("<!-- recipe:rclone:begin -->")[1].split("<!-- recipe:rclone:end -->")[0]
    lines = block.replace("\\\n", " ").splitlines()
    rclone = shlex.split(next(line for line in lines if line.startswith("rclone mount")))
    mergerfs = shlex.split(next(line for line in lines if line.startswith("mergerfs")))
    flags, args = [], rclone[4:]  # after: rclone mount REMOTE MOUNTPOINT
    while args:
        a = args.pop(0)
        if a == "--cache-dir":  # the test keeps its own
            args.pop(0)
        elif a != "--daemon":  # the test holds the process
            flags.append(a)
    return flags, mergerfs[mergerfs.index("-o") + 1]


def test_readme_rclone_recipe():
    """The README's recipe, scaled down: a 16 MiB local disk (minfreespace 4M
    instead of 20G) before the rclone remote. Files fill the local disk first,
    then go to the remote; a file outgrowing the local disk moves there whole."""
    flags, options = _recipe()
    with tmpfs_branches([16], prefix="mfsremote") as (local,), remotes() as r:
        remote = r.rclone(extra=[*flags, "--vfs-write-back", "0s"])  # upload at close: no waiting
        with pool([local, remote.mnt], options + ",minfreespace=4M") as mnt:
            _put(os.path.join(mnt, "a"), os.urandom(MiB))
            _put(os.path.join(mnt, "grow"), b"start")
            _put(os.path.join(mnt, "fill"), os.urandom(11 * MiB))
            assert where([local, remote.mnt], "a") == where([local, remote.mnt], "fill") == [0]
            b = os.urandom(2 * MiB)
            _put(os.path.join(mnt, "b"), b)  # the local disk is below minfreespace now
            assert where([local, remote.mnt], "b") == [1]
            tail = os.urandom(8 * MiB)
            with open(os.path.join(mnt, "grow"), "ab") as f:  # ENOSPC locally: moved
                f.write(tail)
            assert where([local, remote.mnt], "grow") == [1]
            for name, data in (("b", b), ("grow", b"start" + tail)):
                path = os.path.join(remote.served, name)
                assert wait_until(lambda p=path, d=data: os.path.exists(p) and _sha(_get(p)) == _sha(d), 10, 0.1), name
                assert _sha(_get(os.path.join(mnt, name))) == _sha(data)
