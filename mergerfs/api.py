"""Running a pool from Python, without shelling out by hand.

``mergerfs.mount(branches, mountpoint, options)`` returns a :class:`Pool` once
the pool answers, or raises :class:`~mergerfs.lifecycle.MountError` with the same
one-line message the command prints. The pool is served by its own daemon
process, not by threads of the caller: a management service must not share
its process-wide state with a filesystem daemon (the daemon sets umask 0,
switches per-thread credentials, owns signals and caps malloc arenas), a hung
branch or a crash in the pool must not take the service down, and a service
restart must not unmount the pool.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Union

from mergerfs.lifecycle import MountError, is_mountpoint, unmount

#: Mount options as ``-o`` takes them: one string, a list of ``key[=value]``, or a
#: mapping where True means a bare flag and False leaves the key out.
Options = Union[str, Iterable[str], Mapping[str, object], None]


def _options(options: Options) -> str:
    if options is None:
        return ""
    if isinstance(options, str):
        return options
    if isinstance(options, Mapping):
        return ",".join(k if v is True else f"{k}={v}" for k, v in options.items() if v is not False)
    return ",".join(options)


class Pool:
    """A mounted pool: its mountpoint and the daemon serving it."""

    def __init__(self, mountpoint: str, pid: int) -> None:
        self.mountpoint = mountpoint
        self.pid = pid

    @property
    def running(self) -> bool:
        """The daemon is alive and the pool is mounted."""
        return _alive(self.pid) and is_mountpoint(self.mountpoint)

    def unmount(self, timeout: float = 10.0) -> None:
        """Unmount and wait for the daemon to exit (killed if it outlives ``timeout``)."""
        if is_mountpoint(self.mountpoint):
            unmount(self.mountpoint)
        if not self.wait(timeout) and _alive(self.pid):
            os.kill(self.pid, 9)
            self.wait(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the daemon has exited (True) or ``timeout`` passed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while _alive(self.pid):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unmount()

    def __repr__(self) -> str:
        return f"Pool({self.mountpoint!r}, pid={self.pid}, running={self.running})"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def mount(branches: str | Iterable[str], mountpoint: str, options: Options = None) -> Pool:
    """Mount a pool of ``branches`` (a ``:``-joined string or a list) at
    ``mountpoint``; ``options`` as ``-o`` takes them (a string, a list, or a
    mapping where True means a bare flag)."""
    if not isinstance(branches, str):
        branches = ":".join(branches)
    mountpoint = os.path.abspath(mountpoint)
    cmd = [sys.executable, "-m", "mergerfs"]
    if opts := _options(options):
        cmd += ["-o", opts]
    cmd += [branches, mountpoint]
    proc = subprocess.run(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False
    )
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln and "warning:" not in ln]
        msg = (lines[-1] if lines else proc.stderr.strip()) or "mount failed"
        raise MountError(msg.removeprefix("mergerfs: "))
    pid = int(os.getxattr(os.path.join(mountpoint, ".mergerfs"), "user.mergerfs.pid"))
    return Pool(mountpoint, pid)
