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


def current() -> tuple[int, int]:
    return getattr(_local, "creds", (0, 0))


def switch(uid: int, gid: int) -> None:
    """Make this thread act as ``uid:gid`` (with its groups) for filesystem calls."""
    if getattr(_local, "creds", None) == (uid, gid):
        return
    _fastpath.set_creds(uid, gid, groups_of(uid, gid))
    _local.creds = (uid, gid)


@contextmanager
def as_root():
    """Temporarily act as root (clone-path, moveonenospc copy) and switch back."""
    prev = current()
    switch(0, 0)
    try:
        yield
    finally:
        switch(*prev)
