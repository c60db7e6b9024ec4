"""Logging: syslog when daemonised, stderr with -f, ``log-level``, no per-request lines.

The daemon's syslog target is the fixed path /dev/log. To read what it sends
without a syslog daemon on the machine, each daemonised case runs in a private
mount namespace with its own /dev (tmpfs with the few device nodes needed and
a datagram socket at /dev/log that ns_syslog.py reads). ``log-level`` and the
request trace of ``-d``/``-o debug`` are ours (2.33.5 has no log-level and its
``-d`` prints no trace), so these tests skip for the reference.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from .helpers import cmd_env, is_pool_mounted, is_reference, pool_cmd, unmount, wait_until
from .nsutil import kill_leftovers, run_private

pytestmark = pytest.mark.skipif(is_reference(), reason="log-level and the request trace are ours")

HERE = os.path.dirname(os.path.abspath(__file__))
DAEMON_INFO, DAEMON_WARNING = "<30>", "<28>"  # facility daemon (3) * 8 + severity
REQUESTS = 100


@pytest.fixture
def dirs(tmp_path):
    t = tmp_path
    for d in ("disk1", "disk2", "pool"):
        (t / d).mkdir()
    yield t
    kill_leftovers(f"{t}/pool")


def _daemon_syslog(t, options: str) -> dict:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1)")
    spec = {
        "cmd": pool_cmd(),
        "args": ["-o", options, f"{t}/disk1:{t}/disk2", f"{t}/pool"],
        "mnt": f"{t}/pool",
        "requests": REQUESTS,
    }
    out = run_private([sys.executable, os.path.join(HERE, "ns_syslog.py"), json.dumps(spec)], env=cmd_env())
    result = json.loads(out.strip().splitlines()[-1])
    assert result["rc"] == 0, result["stderr"]
    assert result["exited"], "daemon did not exit on SIGTERM"
    return result


@pytest.mark.parametrize("level", ["info", "warning", "error"])
def test_daemon_logs_to_syslog_by_level(dirs, level):
    """Branches that are plain dirs never become mounts: after branches-mount-timeout a
    warning; mount and unmount are info; 3x100 requests add nothing."""
    r = _daemon_syslog(dirs, f"log-level={level},branches-mount-timeout=1")
    msgs = r["messages"]
    prefix = f"mergerfs[{r['pid']}]: "
    assert all(m[m.index(">") + 1 :].startswith(prefix) for m in msgs), msgs
    warnings = [m for m in msgs if m.startswith(DAEMON_WARNING)]
    infos = [m for m in msgs if m.startswith(DAEMON_INFO)]
    assert len(warnings) == (level != "error") and len(infos) == 3 * (level == "info"), msgs
    if warnings:
        assert "branches not mounted after 1s" in warnings[0] and f"{dirs}/disk1" in warnings[0]
    if infos:
        assert [m.split(": ", 1)[1].split()[0] for m in infos] == ["mounted", "signal", "unmounted"], infos
    assert len(msgs) < 5  # never per request


def _foreground(t, *flags: str) -> str:
    """Run -f with ``flags``, make requests, unmount; return stderr."""
    proc = subprocess.Popen(
        [*pool_cmd(), "-f", *flags, f"{t}/disk1:{t}/disk2", f"{t}/pool"],
        env=cmd_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_until(lambda: is_pool_mounted(f"{t}/pool"), 20), "foreground mount never appeared"
        for i in range(20):
            (t / "pool" / f"f{i}").write_text("x")
            os.stat(t / "pool" / f"f{i}")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        return err
    finally:
        if proc.poll() is None:
            unmount(f"{t}/pool")
            proc.kill()
            proc.communicate()


def test_foreground_logs_to_stderr(dirs):
    err = _foreground(dirs)
    assert f"INFO: mounted {dirs}/pool" in err and "INFO: signal 15: unmounting" in err, err
    assert "opcode" not in err and len(err.splitlines()) < 5, err
    err = _foreground(dirs, "-o", "log-level=warning")
    assert err.strip() == "", err


@pytest.mark.parametrize("flags", [["-d"], ["-o", "debug"]])
def test_debug_traces_every_request(dirs, flags):
    err = _foreground(dirs, *flags)
    creates = [ln for ln in err.splitlines() if "opcode: CREATE" in ln]
    assert len(creates) == 20, err[-2000:]
