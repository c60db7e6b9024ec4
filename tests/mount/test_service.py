"""Running as a service: signals, branches-mount-timeout at boot, lazy-umount-mountpoint,
the systemd unit in contrib/.

branches-mount-timeout and lazy-umount-mountpoint are current-upstream options
that 2.33.5 rejects, so those tests skip for the reference; the oracle is the
kernel's mount table (tmpfs mounted on the branch dirs / the mountpoint).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from .helpers import (
    cmd_env,
    daemon_pid,
    is_pool_mounted,
    is_reference,
    mount,
    mountinfo,
    pid_alive,
    pool_cmd,
    run_cmd,
    unmount,
    wait_until,
)

upstream_only = pytest.mark.skipif(is_reference(), reason="option added after 2.33.5")


@pytest.fixture
def t(tmp_path):
    for d in ("disk1", "disk2", "pool"):
        (tmp_path / d).mkdir()
    yield tmp_path
    unmount(str(tmp_path / "pool"))
    for d in ("pool", "disk1", "disk2"):
        while mountinfo(str(tmp_path / d)) is not None:
            subprocess.run(["umount", "-l", str(tmp_path / d)], check=False)


def _tmpfs(path) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)], check=True)


@pytest.mark.parametrize("sig", [signal.SIGINT])
def test_signal_unmounts_and_exits(t, sig):
    """Like SIGTERM (test_lifecycle). SIGHUP no longer does, as with 2.42: tests/mount/test_upstream.py."""
    mnt = str(t / "pool")
    mount([str(t / "disk1"), str(t / "disk2")], mnt)
    pid = daemon_pid(mnt)
    assert pid and pid_alive(pid)
    os.kill(pid, sig)
    assert wait_until(lambda: not pid_alive(pid), 10), "daemon still running"
    assert wait_until(lambda: mountinfo(mnt) is None, 10), "still mounted"


@upstream_only
def test_sigusr1_reexpands_branch_globs(t):
    mnt = str(t / "pool")
    (t / "disk2").rmdir()
    mount([str(t / "disk*")], mnt)
    pid = daemon_pid(mnt)
    (t / "disk2").mkdir()
    (t / "disk2" / "late").write_text("x")
    assert "late" not in os.listdir(mnt)
    os.kill(pid, signal.SIGUSR1)
    assert wait_until(lambda: "late" in os.listdir(mnt), 10)
    assert pid_alive(pid) and is_pool_mounted(mnt)


@upstream_only
def test_branches_mount_timeout_fail(t):
    """Plain directories never become mounts: with -fail the command exits 1 after the wait."""
    start = time.monotonic()
    r = run_cmd(
        ["-o", "branches-mount-timeout=1,branches-mount-timeout-fail=true", f"{t}/disk1:{t}/disk2", f"{t}/pool"]
    )
    assert r.returncode == 1 and "branches not mounted after 1s" in r.stderr, r.stderr
    assert time.monotonic() - start >= 1
    assert mountinfo(str(t / "pool")) is None


@upstream_only
def test_branches_mount_timeout_waits_for_disks(t):
    """The pool mounts only once both branch dirs are mounts, and serves what is on them."""
    for d in ("disk1", "disk2"):
        (t / d / "underneath").write_text("hidden by the disk")
    late = threading.Timer(
        1.0, lambda: [_tmpfs(t / d) for d in ("disk1", "disk2")] + [(t / "disk2" / "ondisk").write_text("x")]
    )
    late.start()
    try:
        start = time.monotonic()
        r = run_cmd(
            ["-o", "branches-mount-timeout=30,branches-mount-timeout-fail=true", f"{t}/disk1:{t}/disk2", f"{t}/pool"],
            timeout=60,
        )
        waited = time.monotonic() - start
    finally:
        late.join()
    assert r.returncode == 0, r.stderr
    assert waited >= 1
    assert mountinfo(str(t / "disk1"))["type"] == "tmpfs"
    assert os.listdir(t / "pool") == ["ondisk"]


@upstream_only
def test_lazy_umount_replaces_stale_mount(t):
    """Whatever is mounted at the mountpoint (here a tmpfs) is lazily unmounted first."""
    mnt = str(t / "pool")
    _tmpfs(mnt)
    (t / "pool" / "stale").write_text("x")
    r = run_cmd(["-o", "lazy-umount-mountpoint=false", f"{t}/disk1", mnt])
    assert r.returncode != 0 and mountinfo(mnt)["type"] == "tmpfs"
    (t / "disk1" / "fresh").write_text("x")
    mount([str(t / "disk1")], mnt, "lazy-umount-mountpoint=true")
    with open("/proc/self/mountinfo") as f:
        assert [ln.split()[4] for ln in f].count(mnt) == 1
    assert os.listdir(mnt) == ["fresh"]


@upstream_only
def test_lazy_umount_live_upgrade(t):
    """A second daemon takes over a live pool; the old one finishes its open file, then exits."""
    mnt = str(t / "pool")
    (t / "disk1" / "f").write_text("old daemon's file")
    mount([str(t / "disk1")], mnt)
    old = daemon_pid(mnt)
    held = open(os.path.join(mnt, "f"))  # noqa: SIM115 - held open across the takeover
    try:
        mount([str(t / "disk1"), str(t / "disk2")], mnt, "lazy-umount-mountpoint=true")
        new = daemon_pid(mnt)
        assert new != old and is_pool_mounted(mnt)
        assert os.getxattr(os.path.join(mnt, ".mergerfs"), "user.mergerfs.branches").decode().count(":") == 1
        assert held.read() == "old daemon's file"  # the old session still serves it
    finally:
        held.close()
    assert wait_until(lambda: not pid_alive(old), 10), "old daemon did not exit"
    assert pid_alive(new)


# ------------------------------------------------------------- systemd unit
UNIT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "contrib", "mergerfs-pool.service"
)
VENV_MERGERFS = os.path.join(os.path.dirname(sys.executable), "mergerfs")


def _unit_lines() -> dict[str, str]:
    out = {}
    with open(UNIT) as f:
        for line in f:
            key, sep, value = line.strip().partition("=")
            if sep and not line.startswith("#"):
                out[key] = value
    return out


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_verifies(tmp_path):
    """`systemd-analyze verify` is silent on it (it warns, rc 0, on bad values: both checked)."""
    unit = tmp_path / "mergerfs-pool.service"
    with open(UNIT) as f:
        text = f.read()
    if not os.path.exists("/usr/local/bin/mergerfs"):  # verify wants the binary to exist
        assert os.path.exists(VENV_MERGERFS), "make build installs the mergerfs script"
        text = text.replace("/usr/local/bin/mergerfs", VENV_MERGERFS)
    unit.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    if r.returncode != 0 and "bus" in r.stderr.lower():
        pytest.skip(f"systemd-analyze cannot run here: {r.stderr.strip()}")
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    keys = _unit_lines()
    assert (keys["Type"], keys["KillMode"], keys["Restart"]) == ("forking", "process", "on-failure")
    assert "fusermount -u" in keys["ExecStop"]


@upstream_only
def test_unit_commands_start_crash_restart_stop(t):
    """What systemd does with the unit: ExecStart returns with the pool ready (Type=forking);
    after a crash (SIGKILL) the restart replaces the dead mount; ExecStop ends the daemon."""
    keys = _unit_lines()

    def command(line: str) -> list[str]:
        line = line.lstrip("-").replace("/srv/disk*", f"{t}/disk*").replace("/srv/pool", f"{t}/pool")
        argv = shlex.split(line)
        if argv[0].endswith("/mergerfs"):
            argv[:1] = pool_cmd()
        return argv

    for d in ("disk1", "disk2"):
        _tmpfs(t / d)  # the "disks": branches-mount-timeout in the unit waits for them
    (t / "disk1" / "f").write_text("on disk1")
    mnt = str(t / "pool")
    env = cmd_env()
    assert subprocess.run(command(keys["ExecStart"]), env=env, timeout=60).returncode == 0
    assert (t / "pool" / "f").read_text() == "on disk1"  # ready as soon as ExecStart returned
    pid = daemon_pid(mnt)
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not pid_alive(pid), 10)

    def dead() -> bool:
        try:
            os.stat(mnt)  # the root's attributes stay cached a moment; RestartSec outlasts that
            return False
        except OSError:
            return True

    assert wait_until(dead, 10)  # dead mount: ENOTCONN
    assert subprocess.run(command(keys["ExecStart"]), env=env, timeout=60).returncode == 0
    assert (t / "pool" / "f").read_text() == "on disk1"
    pid = daemon_pid(mnt)
    assert subprocess.run(command(keys["ExecStop"]), timeout=60).returncode == 0
    assert wait_until(lambda: not pid_alive(pid), 10), "daemon still running after ExecStop"
    assert mountinfo(mnt) is None
