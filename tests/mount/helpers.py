"""Helpers for the real-mount tier: the command under test, mounting, outcomes."""

from __future__ import annotations

import dataclasses
import errno
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from mergerfs import mounts

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FSTYPE = "fuse.mergerfs"


REFERENCE = "/usr/bin/mergerfs"


def pool_cmd() -> list[str]:
    """The command under test: env MERGERFS_CMD (shell-split), default ``python -m mergerfs``
    run by the interpreter running the tests (a bare ``python`` means that one too)."""
    cmd = shlex.split(os.environ.get("MERGERFS_CMD") or "python -m mergerfs")
    if cmd[0] == "python":
        cmd[0] = sys.executable
    return cmd


def is_reference(cmd: Sequence[str] | None = None) -> bool:
    """True when the command (default: the one under test) is the installed C++ mergerfs."""
    exe = (pool_cmd() if cmd is None else cmd)[0]
    exe = shutil.which(exe) or exe
    return os.path.realpath(exe) == os.path.realpath(REFERENCE)


def put(path: str, data: bytes) -> None:
    """Write ``data`` as the whole file at ``path``."""
    with open(path, "wb") as f:
        f.write(data)


def get(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def is_llfuse() -> bool:
    """True when ours runs on the llfuse transport (``-o fuse-binding=llfuse`` in MERGERFS_CMD)."""
    return not is_reference() and "fuse-binding=llfuse" in os.environ.get("MERGERFS_CMD", "")


def err_of(fn: Callable[..., Any], *args: Any) -> int:
    """The errno ``fn(*args)`` fails with; 0 if it succeeds."""
    try:
        fn(*args)
    except OSError as e:
        return e.errno or 0
    return 0


def cmd_env() -> dict[str, str]:
    """Environment for the command: our package importable from the repo."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def mountinfo(path: str) -> dict[str, str] | None:
    """The last mountinfo entry exactly at ``path`` (type, source, options), else None."""
    m = mounts.mounted_at(os.path.realpath(path))
    if m is None:
        return None
    return {"dev": m.dev, "type": m.fstype, "source": m.source, "options": m.options, "super": m.super_options}


def abort_connection(path: str) -> None:
    """Abort the FUSE connection behind ``path`` so calls hung in a bad daemon return ENOTCONN."""
    info = mountinfo(path)
    if info and info["type"].startswith("fuse"):
        minor = info["dev"].split(":")[1]
        try:
            with open(f"/sys/fs/fuse/connections/{minor}/abort", "w") as f:
                f.write("1")
        except OSError:
            pass


def is_pool_mounted(path: str) -> bool:
    info = mountinfo(path)
    return info is not None and info["type"] == FSTYPE


def wait_until(pred: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def daemon_pid(mnt: str) -> int | None:
    """PID of the daemon serving ``mnt``: control xattr, else pgrep on the mountpoint."""
    try:
        pid = int(os.getxattr(os.path.join(mnt, ".mergerfs"), "user.mergerfs.pid"))
        if pid_alive(pid):  # 2.33.5 reports its pre-fork parent's pid
            return pid
    except (OSError, ValueError):
        pass
    r = subprocess.run(["pgrep", "-f", "--", mnt], capture_output=True, text=True)
    pids = [int(p) for p in r.stdout.split() if int(p) != os.getpid()]
    return pids[0] if pids else None


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return False


def unmount(mnt: str, timeout: float = 10.0) -> None:
    """Unmount ``mnt`` (fusermount -u, then umount -l); wait until gone. Never raises."""
    for _ in range(50):
        if mountinfo(mnt) is None:
            return
        r = subprocess.run(["fusermount", "-u", mnt], capture_output=True)
        if r.returncode == 0:
            break
        time.sleep(0.1)
    else:
        subprocess.run(["umount", "-l", mnt], capture_output=True)
    if not wait_until(lambda: mountinfo(mnt) is None, timeout):
        subprocess.run(["umount", "-l", mnt], capture_output=True)
        wait_until(lambda: mountinfo(mnt) is None, timeout)


def run_cmd(args: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run(pool_cmd() + list(args), env=cmd_env(), capture_output=True, text=True, timeout=timeout)


@dataclasses.dataclass
class Pool:
    """A mounted pool: ``mnt``, ``branches`` (paths), ``options`` as passed."""

    mnt: str
    branches: list[str]
    options: str
    pid: int | None = None

    def path(self, rel: str | bytes = "") -> Any:
        if isinstance(rel, bytes):
            return os.path.join(os.fsencode(self.mnt), rel.lstrip(b"/"))
        return os.path.join(self.mnt, rel.lstrip("/"))

    def where(self, rel: str) -> list[int]:
        """Indexes of the branches holding ``rel`` (lexists)."""
        rel = rel.lstrip("/")
        return [i for i, b in enumerate(self.branches) if os.path.lexists(os.path.join(b, rel))]

    def branch_path(self, i: int, rel: str) -> str:
        return os.path.join(self.branches[i], rel.lstrip("/"))


def mount(branches: Sequence[str], mnt: str, options: str = "", timeout: float = 20.0) -> Pool:
    """Run ``CMD -o OPTIONS B1:B2 MNT`` (daemonises); assert rc 0 and the mount is live."""
    os.makedirs(mnt, exist_ok=True)
    argv = (["-o", options] if options else []) + [":".join(branches), mnt]
    r = run_cmd(argv, timeout=timeout)
    if r.returncode != 0:
        unmount(mnt)
        raise AssertionError(f"mount {argv} -> rc={r.returncode}: {r.stderr.strip()}")
    if not wait_until(lambda: is_pool_mounted(mnt), timeout):
        unmount(mnt)
        raise AssertionError(f"mount {argv}: {FSTYPE} not in mountinfo after {timeout}s")
    return Pool(mnt=mnt, branches=list(branches), options=options, pid=daemon_pid(mnt))


# -- outcomes ----------------------------------------------------------------

Outcome = tuple[bool, int | None, Any]


def outcome(fn: Callable[[], Any]) -> Outcome:
    """Run ``fn``: (True, None, value) or (False, errno, None)."""
    try:
        return (True, None, fn())
    except OSError as e:
        return (False, e.errno, None)


def errname(o: Outcome) -> Outcome:
    """Outcome with the errno shown by name (readable assertion diffs)."""
    ok, err, val = o
    return (ok, errno.errorcode.get(err, err) if err is not None else None, val)


def compare(fn_pool: Callable[[], Any], fn_native: Callable[[], Any]) -> Outcome:
    """Run the same call on pool and native; assert equal outcomes; return it."""
    a, b = errname(outcome(fn_pool)), errname(outcome(fn_native))
    assert a == b, f"pool {a} != native {b}"
    return a


def as_user(uid: int, gid: int, groups: Sequence[int] = ()) -> Callable[[], None]:
    """preexec_fn dropping to ``uid``/``gid`` with supplementary ``groups``."""

    def drop() -> None:
        os.setgroups(list(groups))
        os.setgid(gid)
        os.setuid(uid)

    return drop


#: Upstream 2.42 (outside the repo; tests comparing with it skip when it is absent).
REFERENCE_42 = "/work/shared/reference/mergerfs-2.42.0-17"


def kill_quietly(pid: int | None) -> None:
    """2.42's daemon sometimes outlives its unmount: end it by PID."""
    if pid and wait_until(lambda: not pid_alive(pid), 2) is False:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


# -- the kernel session's request counts ------------------------------------


def counts(mnt: str) -> dict[str, tuple[int, int]]:
    """{opcode name: (answered compiled, answered by Python)} of our pool at ``mnt``
    (``user.mergerfs.requests``)."""
    text = os.getxattr(os.path.join(mnt, ".mergerfs"), "user.mergerfs.requests").decode()
    out = {}
    for line in text.splitlines():
        op, c, py = line.split()
        out[op] = (int(c), int(py))
    return out


def served(mnt: str, before: dict, op: str, at_least: int) -> tuple[int, int]:
    """How many ``op`` requests each path answered since ``before`` (counted just
    after the reply is sent: waits until ``at_least`` show, or five seconds: a
    RELEASE is sent after close() returns, later still on a loaded machine)."""
    got = [(0, 0)]

    def enough() -> bool:
        c0, p0 = before.get(op, (0, 0))
        c1, p1 = counts(mnt).get(op, (0, 0))
        got[0] = (c1 - c0, p1 - p0)
        return sum(got[0]) >= at_least

    wait_until(enough, 5.0)
    return got[0]


ENABLE_URING = "/sys/module/fuse/parameters/enable_uring"


def set_enable_uring(value: str) -> str | None:
    """Set the fuse module's ``enable_uring`` ("Y" or "N": whether the kernel
    offers FUSE over io_uring at INIT): the value before, or None if this
    kernel has no such parameter (< 6.14) or it cannot be set."""
    try:
        with open(ENABLE_URING) as f:
            before = f.read().strip()
        if before != value:
            with open(ENABLE_URING, "w") as f:
                f.write(value)
    except OSError:
        return None
    return before


def warm_caller(root: str) -> None:
    """A request Python answers as this caller (LISTXATTR): the worker now acts
    as it, so the compiled path takes this caller's next requests (for a second)."""
    os.listxattr(root)
