"""Private mount namespaces for tests that must replace system paths (/usr/local/bin,
/dev/log) without touching the machine: everything mounted inside stays inside."""

from __future__ import annotations

import os
import signal
import subprocess

try:
    from .helpers import wait_until
except ImportError:
    from helpers import wait_until


def run_private(argv: list[str], timeout: float = 90, env: dict[str, str] | None = None) -> str:
    """Run ``argv`` in a new private mount namespace; assert exit 0; return stdout."""
    r = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert r.returncode == 0, f"rc={r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r.stdout


def kill_leftovers(fragment: str) -> None:
    """Daemons a failed run left behind in a namespace, found by a path only our test uses."""
    r = subprocess.run(["pgrep", "-f", "--", fragment], capture_output=True, text=True)
    for pid in (int(p) for p in r.stdout.split()):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        if not wait_until(lambda pid=pid: not os.path.exists(f"/proc/{pid}"), 5):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
