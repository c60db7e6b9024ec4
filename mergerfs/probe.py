"""Branch facts: the only place that asks the branch filesystems about
existence, free space, read-only state and whether a branch's filesystem went
away. Policies get a probe injected, which keeps them pure.

:class:`Probe` is shared by every operation (thread-safe, small locks);
:class:`RequestProbe` is one operation's memo over it (one thread).
"""

from __future__ import annotations

import errno
import logging
import os
import random
import threading
import time
from typing import TYPE_CHECKING, NamedTuple

from mergerfs import _fastpath
from mergerfs.lanes import Lanes, Stalled

if TYPE_CHECKING:
    from mergerfs.branches import Branch

log = logging.getLogger("mergerfs")

#: Seconds a branch's statvfs may take before its last answer is used instead.
STATFS_TIMEOUT = 1.0
#: A branch answering these does not know whether a path exists (a network
#: filesystem whose server is down): such a branch counts as not having it,
#: so lookups and creates on the other branches go on (as the reference).
_UNREACHABLE = frozenset(
    {
        errno.EIO,
        errno.ENOTCONN,
        errno.ETIMEDOUT,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
        errno.ECONNABORTED,
        errno.ECONNRESET,
    }
)


class SpaceInfo(NamedTuple):
    """statvfs facts about one branch filesystem, in bytes."""

    available: int  # f_bavail * f_frsize: what an unprivileged writer can use
    used: int  # (f_blocks - f_bfree) * f_frsize
    total: int  # f_blocks * f_frsize
    readonly: bool  # mounted read-only (ST_RDONLY)
    gone: bool = False  # its filesystem went away: the root now sits on its parent's device


def _fsinfo(path: str) -> tuple[os.stat_result, os.statvfs_result]:
    try:
        return os.stat(path), os.statvfs(path)
    except ValueError:  # an embedded NUL (a hostile branches= value): no such path
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), path) from None


def _parent_dev(path: str) -> int:
    return os.stat(os.path.dirname(path) or "/").st_dev


class Probe:
    """Branch facts from the real filesystems, as seen by the calling thread's identity.

    ``space`` results may be cached for ``cache.statfs`` seconds (0 = never).
    Every statvfs runs on the branch's lane (:class:`Lanes`) with a deadline of
    :data:`STATFS_TIMEOUT`: a hung branch answers :class:`Stalled` (EIO) to
    policies, which then leave it out, and its last known answer to ``statfs``.

    Each branch root's device is recorded when the branch set is built
    (:meth:`record`). A branch that was a mount of its own (its device differed
    from its parent directory's) and whose root now sits on its parent's device
    has lost its filesystem (an sshfs or rclone mount exited, a USB disk
    dropped): ``space`` reports it ``gone`` and the create filter leaves it out,
    so nothing lands in the bare mountpoint directory. Once a filesystem is
    mounted there again (whatever its device number) the branch is back.
    """

    def __init__(
        self, statfs_cache_seconds: float = 0, rng: random.Random | None = None, lanes: Lanes | None = None
    ) -> None:
        self.ttl = statfs_cache_seconds
        self._cache: dict[str, tuple[float, SpaceInfo]] = {}
        self._lock = threading.Lock()
        self._rng = rng or random.Random()
        self._marked_ro: frozenset[str] = frozenset()
        self.lanes = lanes or Lanes()
        self._last: dict[str, tuple[os.stat_result, os.statvfs_result]] = {}
        self._origin: dict[str, tuple[int, bool]] = {}  # root -> (st_dev, a mount of its own)
        self._gone: set[str] = set()

    def mark_readonly(self, branch: Branch) -> None:
        """A create failed with EROFS: treat the branch as read-only from now on."""
        with self._lock:
            self._marked_ro = self._marked_ro | {branch.path}

    def exists(self, branch: Branch, relpath: str) -> bool:
        try:
            os.lstat(branch.full(relpath))
        except OSError:
            return False
        return True

    # -- device tracking
    def record(self, branches, keep: Probe | None = None) -> None:
        """Note each branch root's device (a new snapshot was built). Roots
        already known to ``keep`` (the previous probe) or to this one keep their
        record, so a branch that is gone at reconfiguration stays gone."""
        for b in branches:
            known = (keep._origin.get(b.path) if keep is not None else None) or self._origin.get(b.path)
            if known is None:
                try:
                    known = self.lanes.call(b.path, STATFS_TIMEOUT, _origin_of, b.path)
                except OSError:
                    continue  # unknown for now: recorded at its first answer
            with self._lock:
                self._origin[b.path] = known
                if keep is not None and b.path in keep._gone:
                    self._gone.add(b.path)

    def check_gone(self, path: str, dev: int) -> bool:
        """Whether branch root ``path``, now on device ``dev``, lost its filesystem
        (logged once when that changes)."""
        origin = self._origin.get(path)
        if origin is not None and dev == origin[0] and path not in self._gone:
            return False  # the common case: unchanged, no lock
        if origin is None:
            try:
                origin = _origin_of(path, dev)
            except OSError:
                return False
            with self._lock:
                self._origin.setdefault(path, origin)
        if dev == origin[0]:
            gone = False
        else:
            try:
                on_parent = _parent_dev(path) == dev
            except OSError:
                on_parent = False
            gone = origin[1] and on_parent
            if not gone:  # mounted again (a new device number), mounted late, or moved
                with self._lock:
                    self._origin[path] = (dev, not on_parent)
        with self._lock:
            changed = gone != (path in self._gone)
            if changed:
                (self._gone.add if gone else self._gone.discard)(path)
        if changed:
            if gone:
                log.warning(
                    "branch %s: its filesystem went away (now on its parent's device); "
                    "no new files go there until it is back",
                    path,
                )
            else:
                log.warning("branch %s: its filesystem is back", path)
        return gone

    def check(self, branch: Branch) -> bool:
        """Probe ``branch`` now (bounded); True if its filesystem is gone."""
        st, _ = self.fsinfo(branch.path)
        return self.check_gone(branch.path, st.st_dev)

    def gone(self) -> list[str]:
        """Branch roots currently known to have lost their filesystem."""
        with self._lock:
            return sorted(self._gone)

    # -- space
    def fsinfo(self, path: str, stale_ok: bool = False) -> tuple[os.stat_result, os.statvfs_result]:
        """(stat, statvfs) of ``path`` within :data:`STATFS_TIMEOUT`; with
        ``stale_ok`` a stalled branch answers its last known facts."""
        try:
            facts = self.lanes.call(path, STATFS_TIMEOUT, _fsinfo, path)
        except Stalled:
            if stale_ok:
                with self._lock:
                    last = self._last.get(path)
                if last is not None:
                    return last
            raise
        with self._lock:
            self._last[path] = facts
        return facts

    def fsinfos(self, paths: list[str]) -> list:
        """:meth:`fsinfo` of several paths at once (``stale_ok``), in parallel on
        their lanes: each entry the facts or the exception."""
        out = self.lanes.calls([(p, _fsinfo, (p,)) for p in paths], STATFS_TIMEOUT)
        with self._lock:
            for i, (p, facts) in enumerate(zip(paths, out)):
                if isinstance(facts, Stalled) and p in self._last:
                    out[i] = self._last[p]
                elif not isinstance(facts, BaseException):
                    self._last[p] = facts
        return out

    def space(self, branch: Branch) -> SpaceInfo:
        """Raises OSError if the branch cannot be queried (missing disk, :class:`Stalled`)."""
        if self.ttl > 0:
            now = time.monotonic()
            with self._lock:
                hit = self._cache.get(branch.path)
            if hit and now - hit[0] < self.ttl:
                return hit[1]
        # in the calling thread (see Lanes.direct): the policies' hot path
        dev, available, used, total, readonly = self.lanes.direct(
            branch.path, STATFS_TIMEOUT, _fastpath.space, branch.path
        )
        info = SpaceInfo(
            available,
            used,
            total,
            readonly or branch.path in self._marked_ro,
            self.check_gone(branch.path, dev),
        )
        if self.ttl > 0:
            with self._lock:
                self._cache[branch.path] = (time.monotonic(), info)
        return info

    def mtime(self, branch: Branch, relpath: str) -> float | None:
        try:
            return os.lstat(branch.full(relpath)).st_mtime
        except OSError:
            return None

    def random(self) -> float:
        return self._rng.random()


def _origin_of(path: str, dev: int | None = None) -> tuple[int, bool]:
    """(st_dev of ``path``, whether it differs from its parent directory's)."""
    try:
        if dev is None:
            dev = os.stat(path).st_dev
        return dev, dev != _parent_dev(path)
    except ValueError:  # an embedded NUL: no such path
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), path) from None


class RequestProbe:
    """Per-operation view of :class:`Probe` that remembers ``lstat`` results.

    Policies ask "does the path exist on this branch?"; the operation then
    needs the very stat that answered it. Memoising avoids a second syscall.
    """

    __slots__ = ("_base", "_stats", "_errors")

    def __init__(self, base: Probe) -> None:
        self._base = base
        self._stats: dict[tuple[str, str], os.stat_result | None] = {}
        self._errors: dict[str, int] = {}  # relpath -> first errno other than ENOENT

    def why_missing(self, relpath: str) -> int:
        """Why ``relpath`` was not found: EACCES, ENAMETOOLONG... beat ENOENT,
        so a denied lookup answers like native, not as a missing file."""
        return self._errors.get(relpath, errno.ENOENT)

    def lstat(self, branch: Branch, relpath: str) -> os.stat_result | None:
        key = (branch.path, relpath)
        try:
            return self._stats[key]
        except KeyError:
            pass
        try:
            st: os.stat_result | None = os.lstat(branch.full(relpath))
        except OSError as e:
            st = None
            if e.errno is not None and e.errno != errno.ENOENT and e.errno not in _UNREACHABLE:
                self._errors.setdefault(relpath, e.errno)
        self._stats[key] = st
        return st

    def exists(self, branch: Branch, relpath: str) -> bool:
        return self.lstat(branch, relpath) is not None

    def forget(self, branch: Branch, relpath: str) -> None:
        """The operation changed ``relpath`` on ``branch``: ask the disk next time."""
        self._stats.pop((branch.path, relpath), None)

    def mtime(self, branch: Branch, relpath: str) -> float | None:
        st = self.lstat(branch, relpath)
        return st.st_mtime if st is not None else None

    def space(self, branch: Branch):
        return self._base.space(branch)

    def random(self) -> float:
        return self._base.random()
