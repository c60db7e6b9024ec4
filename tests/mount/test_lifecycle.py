"""CLI and lifecycle: errors, daemonising, fsname/type, unmount and signals end the daemon."""

from __future__ import annotations

import os
import signal
import subprocess

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


@pytest.fixture
def dirs(tmp_path):
    b1, b2, mnt = tmp_path / "disk1", tmp_path / "disk2", tmp_path / "mnt"
    for d in (b1, b2, mnt):
        d.mkdir()
    yield str(b1), str(b2), str(mnt)
    unmount(str(mnt))


def test_version_and_help():
    for flag in ("-v", "-h"):
        r = run_cmd([flag])
        assert r.returncode == 0, (flag, r.stderr)
        assert (r.stdout + r.stderr).strip()
    assert "mergerfs" in (run_cmd(["-v"]).stdout + run_cmd(["-v"]).stderr).lower()


def test_unknown_option(dirs):
    b1, b2, mnt = dirs
    r = run_cmd(["-o", "nosuchoption=1", f"{b1}:{b2}", mnt])
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "nosuchoption" in lines[0], r.stderr
    assert mountinfo(mnt) is None


@pytest.mark.xfail(
    condition=is_reference(), strict=True, reason="2.33.5 prints the error for a bad value but exits 0 and mounts"
)
def test_bad_value(dirs):
    b1, b2, mnt = dirs
    r = run_cmd(["-o", "minfreespace=lots", f"{b1}:{b2}", mnt])
    assert r.returncode != 0
    assert mountinfo(mnt) is None


def test_missing_mountpoint(dirs, tmp_path):
    b1, b2, _ = dirs
    r = run_cmd([f"{b1}:{b2}", str(tmp_path / "nope")])
    assert r.returncode != 0


def test_mountpoint_already_mounted(dirs):
    b1, b2, mnt = dirs
    mount([b1, b2], mnt)
    open(os.path.join(mnt, "first"), "w").close()
    r = run_cmd([f"{b1}:{b2}", mnt])
    # Compared with 2.33.5: a non-empty mountpoint (here: a live pool) is refused.
    assert r.returncode != 0
    with open("/proc/self/mountinfo") as f:
        assert sum(1 for ln in f if ln.split()[4] == mnt) == 1
    assert "first" in os.listdir(mnt)


def test_missing_branch_still_mounts(dirs, tmp_path):
    b1, _, mnt = dirs
    p = mount([b1, str(tmp_path / "missing")], mnt)
    open(p.path("f"), "w").close()
    assert os.path.exists(os.path.join(b1, "f"))


@pytest.mark.xfail(
    condition=is_reference(),
    strict=True,
    reason="2.33.5 mounts but its root answers ENOENT; upstream shows one error entry",
)
def test_no_valid_branch_shows_error_entry(dirs, tmp_path):
    _, _, mnt = dirs
    mount([str(tmp_path / "missing1"), str(tmp_path / "missing2")], mnt)
    names = os.listdir(mnt)
    assert len(names) == 1, names
    assert os.path.exists(os.path.join(mnt, ".mergerfs"))


def test_type_and_fsname(tmp_path):
    b1, b2, mnt = (str(tmp_path / n) for n in ("alpha", "beta", "mnt"))
    for d in (b1, b2, mnt):
        os.mkdir(d)
    mount([b1, b2], mnt)
    info = mountinfo(mnt)
    assert info["type"] == "fuse.mergerfs"
    try:
        assert info["source"] == "alpha:beta"
        with open("/proc/mounts") as f:
            lines = [ln.split() for ln in f if ln.split()[1] == mnt]
        assert lines and lines[-1][0] == "alpha:beta" and lines[-1][2] == "fuse.mergerfs"
    finally:
        unmount(mnt)


def test_fsname_option(dirs):
    b1, b2, mnt = dirs
    mount([b1, b2], mnt, "fsname=mypool")
    assert mountinfo(mnt)["source"] == "mypool"


@pytest.mark.parametrize("how", ["sigterm", "fusermount", "umount"])
def test_daemon_ends(dirs, how):
    b1, b2, mnt = dirs
    mount([b1, b2], mnt)
    pid = daemon_pid(mnt)
    assert pid and pid_alive(pid)
    if how == "sigterm":
        os.kill(pid, signal.SIGTERM)
    elif how == "fusermount":
        assert subprocess.run(["fusermount", "-u", mnt]).returncode == 0
    else:
        assert subprocess.run(["umount", mnt]).returncode == 0
    assert wait_until(lambda: not pid_alive(pid), 10), "daemon still running"
    assert wait_until(lambda: mountinfo(mnt) is None, 10), "still mounted"


def test_foreground(dirs):
    b1, b2, mnt = dirs
    proc = subprocess.Popen(
        [*pool_cmd(), "-f", f"{b1}:{b2}", mnt], env=cmd_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert wait_until(lambda: is_pool_mounted(mnt), 20), "foreground mount never appeared"
        open(os.path.join(mnt, "x"), "w").close()
        assert os.path.exists(os.path.join(b1, "x")) or os.path.exists(os.path.join(b2, "x"))
        assert subprocess.run(["fusermount", "-u", mnt]).returncode == 0
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            unmount(mnt)
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        for pipe in (proc.stdout, proc.stderr):
            if pipe and not pipe.closed:
                pipe.close()


def test_parent_returns_after_mount_is_live(dirs):
    """When the command returns 0 the pool already answers (no polling needed)."""
    b1, b2, mnt = dirs
    open(os.path.join(b1, "pre"), "w").close()
    r = run_cmd([f"{b1}:{b2}", mnt])
    assert r.returncode == 0, r.stderr
    assert is_pool_mounted(mnt)
    assert "pre" in os.listdir(mnt)
