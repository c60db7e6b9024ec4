"""Per-thread caller identity.

Each FUSE worker thread switches its own fsuid/fsgid/supplementary groups to
the caller's before touching a branch, so files are created owned by the caller
and the branch filesystem enforces permissions. The raw syscalls live in
``_fastpath.set_creds`` (glibc's setgroups would change every thread).
The current identity is cached per thread so repeated calls by the same user
cost nothing.
"""

from __future__ import annotations

import os
import pwd
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from mergerfs import _fastpath

_GROUPS_TTL = 60.0  # seconds a user's group list is trusted (like nscd would)

_local = threading.local()
_groups: dict[tuple[int, int], tuple[float, tuple[int, ...]]] = {}
_groups_lock = threading.Lock()


def groups_of(uid: int, gid: int) -> tuple[int, ...]:
    """Supplementary groups of ``uid`` from the user database (cached)."""
    key = (uid, gid)
    now = time.monotonic()
    with _groups_lock:
        hit = _groups.get(key)
    if hit and now - hit[0] < _GROUPS_TTL:
        return hit[1]
    try:
        groups = tuple(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
    except (KeyError, OSError):
        groups = (gid,)  # unknown uid: only its primary group
    with _groups_lock:
        _groups[key] = (now, groups)
    return groups


_PROC_TTL = 1.0  # seconds a caller's /proc groups are reused (same pid, same request burst)
_proc: dict[int, tuple[float, tuple[int, ...]]] = {}


def caller_groups(pid: int, uid: int, gid: int) -> tuple[int, ...]:
    """The calling process's real supplementary groups (``Groups:`` in
    /proc/PID/status), as the kernel would use them natively; the user
    database if the process is gone."""
    now = time.monotonic()
    hit = _proc.get(pid)
    if hit and now - hit[0] < _PROC_TTL:
        return hit[1]
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Groups:"):
                    groups = tuple(int(g) for g in line.split()[1:])
                    break
            else:
                raise OSError("no Groups line")
    except (OSError, ValueError):
        groups = groups_of(uid, gid)
    if len(_proc) > 4096:
        _proc.clear()
    _proc[pid] = (now, groups)
    return groups


def current() -> tuple[int, int, tuple[int, ...]]:
    return getattr(_local, "creds", (0, 0, (0,)))


#: Only root can act as another user; a daemon mounted by a user (fusermount3)
#: serves that user alone and acts as itself.
_CAN_SWITCH = os.geteuid() == 0


_ROOT = (0, 0, (0,))


def acts_as_caller() -> bool:
    """Whether requests run with their caller's identity (False: the daemon is not root)."""
    return _CAN_SWITCH


def _set(creds: tuple[int, int, tuple[int, ...]]) -> None:
    if _CAN_SWITCH and getattr(_local, "creds", None) != creds:
        _fastpath.set_creds(*creds)
        _local.creds = creds


def adopt(creds: tuple[int, int, tuple[int, ...]]) -> None:
    """Act as ``creds`` (another thread's :func:`current`), e.g. in a helper thread."""
    _set(creds)


def switch(uid: int, gid: int, pid: int = 0) -> None:
    """Make this thread act as the caller ``uid:gid`` (with its groups), and with
    its I/O priority under ``proxy-ioprio``."""
    if uid == 0 and gid == 0:  # root's requests: no group lookup
        _set(_ROOT)
    else:
        _set((uid, gid, caller_groups(pid, uid, gid) if pid and uid else groups_of(uid, gid)))
    if proxy_ioprio and pid:
        _proxy_ioprio(pid)


#: ``proxy-ioprio``: set from the config by the filesystem (a plain flag read per request).
proxy_ioprio = False


def _proxy_ioprio(pid: int) -> None:
    """Give this thread the I/O priority of the calling thread ``pid`` (best effort:
    a caller that is gone leaves it as it was)."""
    prio = _fastpath.ioprio_get(pid)
    if prio < 0 or getattr(_local, "ioprio", None) == prio:
        return
    if _fastpath.ioprio_set(prio):
        _local.ioprio = prio


@contextmanager
def as_root() -> Iterator[None]:
    """Temporarily act as root (clone-path, moveonenospc copy) and switch back."""
    prev = current()
    _set(_ROOT)
    try:
        yield
    finally:
        _set(prev)
