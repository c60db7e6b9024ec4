"""What every operation shares: the config/branch snapshot, the open-file
table, and running a function's policy over the branches (search: the first
branch found; create: each branch picked, its parents cloned; action: every
branch picked, any success wins).

Threading: operations run concurrently in worker threads that already carry
the caller's identity (:mod:`mergerfs.ugid`). Each operation reads
:attr:`Core.snap` once at its top, so a runtime reconfiguration never shows
it half a config; the handle table has its own lock.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, NamedTuple

from mergerfs import policies, ugid
from mergerfs.branches import Branch, expand
from mergerfs.clone import clonepath
from mergerfs.errors import Aggregate, oserror
from mergerfs.probe import Probe, RequestProbe

if TYPE_CHECKING:
    from mergerfs.config import Config

log = logging.getLogger("mergerfs")

#: Shown alone in the pool root when no branch is usable (the reference does the same).
ERROR_ENTRY = "error: no valid mergerfs branch found, check config"
#: Hidden per-branch directory used by ``rename-exdev`` symlink modes.
EXDEV_DIR = ".mergerfs_rename_exdev"
#: Flags of an open that mean nothing (or harm) on the branch file.
OPEN_STRIP = os.O_CREAT | os.O_EXCL | os.O_NOCTTY | getattr(os, "O_DIRECT", 0)
#: What an unnamed file (``O_TMPFILE``, not linked yet) is called until a link
#: names it: ``UNNAMED`` + a number. No relpath starts with "//" (the compiled
#: paths hand any such node to Python), and nothing searches the branches for it.
UNNAMED = "//tmpfile/"


def is_unnamed(relpath: str) -> bool:
    """``relpath`` is an unnamed file's placeholder (see :data:`UNNAMED`)."""
    return relpath.startswith(UNNAMED)


def dirname(relpath: str) -> str:
    head = relpath.rpartition("/")[0]
    return head or "/"


def join(parent: str, name: str) -> str:
    return "/" + name if parent == "/" else parent + "/" + name


class Snapshot(NamedTuple):
    """Config and the branch set it expands to, swapped together."""

    cfg: Config
    branches: tuple[Branch, ...]


class Handle:
    """An open pool file: the branch file's raw fd and where it lives."""

    __slots__ = ("fd", "branch", "relpath", "flags", "lock")

    def __init__(self, fd: int, branch: Branch, relpath: str, flags: int) -> None:
        self.fd = fd
        self.branch = branch
        self.relpath = relpath
        self.flags = flags
        self.lock = threading.Lock()  # serialises moveonenospc against other writers


class DirHandle:
    """An open pool directory. ``fd`` is the directory on the first branch that
    has it: fstat/fchmod on a removed-but-open directory keep working."""

    __slots__ = ("fd", "relpath", "entries")

    def __init__(self, fd: int, relpath: str) -> None:
        self.fd = fd
        self.relpath = relpath
        self.entries: list[tuple[bytes, int, int]] | None = None


class Core:
    """The state every operation reads: :attr:`snap`, :attr:`probe`, :attr:`handles`."""

    def __init__(self, cfg) -> None:
        self.probe = Probe(cfg["cache.statfs"])
        self.snap = Snapshot(cfg, expand(cfg["branches"], cfg["minfreespace"]))
        self.probe.record(self.snap.branches)
        self._handles_lock = threading.Lock()
        self.handles: dict[int, Handle] = {}
        #: Called with (old cfg, new cfg) after each swap: what lives outside the
        #: snapshot (log file, readahead) follows the control file through these.
        self.listeners: list = []
        ugid.proxy_ioprio = cfg["proxy-ioprio"]

    def reconfigure(self, cfg) -> None:
        """Swap in a new config (control file, SIGUSR1): branches re-expanded."""
        old_cfg = self.snap.cfg
        old = self.probe
        if cfg["cache.statfs"] != old_cfg["cache.statfs"]:
            self.probe = Probe(cfg["cache.statfs"], lanes=old.lanes)
        snap = Snapshot(cfg, expand(cfg["branches"], cfg["minfreespace"]))
        self.probe.record(snap.branches, keep=old)
        self.snap = snap
        ugid.proxy_ioprio = cfg["proxy-ioprio"]
        for listener in self.listeners:
            try:
                listener(old_cfg, cfg)
            except Exception:
                log.exception("applying the new configuration")

    def refresh(self) -> None:
        self.reconfigure(self.snap.cfg)

    # -------------------------------------------------------------- policies
    def _select(self, snap: Snapshot, func: str, relpath: str, probe: RequestProbe) -> list[Branch]:
        """The branches ``func``'s policy picks, run as its category (:data:`policies.FUNCS`)."""
        return policies.select(policies.FUNCS[func], snap.cfg.policy(func), snap.branches, relpath, probe)

    def _found(self, snap: Snapshot, func: str, relpath: str, probe: RequestProbe) -> tuple[Branch, os.stat_result]:
        """First branch the search policy of ``func`` picks, with its lstat."""
        if snap.cfg.policy(func) == "ff":  # the common case, without building candidates
            for b in snap.branches:
                st = probe.lstat(b, relpath)
                if st is not None:
                    return b, st
            raise oserror(probe.why_missing(relpath))
        try:
            picked = self._select(snap, func, relpath, probe)
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise oserror(probe.why_missing(relpath)) from None
            raise
        for b in picked:
            st = probe.lstat(b, relpath)
            if st is not None:
                return b, st
        raise oserror(probe.why_missing(relpath))

    def _creating(self, snap: Snapshot, func: str, relpath: str, attempt, parent: str | None = None) -> list:
        """Run ``attempt(branch, probe)`` on each branch the create policy picks
        for ``relpath``'s directory (``parent``, if given: O_TMPFILE's has no name in it).

        A branch that answers EROFS is marked read-only and the policy re-run
        once, as the reference does for filesystems remounted read-only.
        """
        if parent is None:
            parent = dirname(relpath)
        for retry in (False, True):
            probe = RequestProbe(self.probe)
            targets = self._select(snap, func, parent, probe)
            if func == "create":
                targets = targets[:1]
            agg = Aggregate()
            results = []
            erofs = []
            for b in targets:
                try:
                    self._clonepath(snap, probe, b, parent)
                    results.append(attempt(b, probe))
                    agg.success()
                except OSError as e:
                    if e.errno == errno.EROFS:
                        erofs.append(b)
                    agg.failure(e.errno or errno.EIO)
            if agg.ok or not erofs or retry:
                agg.raise_if_failed()
                return results
            for b in erofs:
                self.probe.mark_readonly(b)
        raise AssertionError("unreachable")

    def _acting(self, snap: Snapshot, func: str, relpath: str, fn) -> None:
        """Apply ``fn(fullpath)`` on every branch the action policy returns; any success wins."""
        probe = RequestProbe(self.probe)

        def on(b: Branch) -> None:
            fn(b.full(relpath))  # full() may fail too: that branch's error

        agg = Aggregate()
        for b in self._select(snap, func, relpath, probe):
            agg.run(on, b)
        agg.raise_if_failed()

    # ------------------------------------------------------------ clone path
    def _clonepath(self, snap: Snapshot, probe: RequestProbe, dst: Branch, relpath: str) -> None:
        """Create ``relpath``'s missing directories on ``dst``, copying them from
        where they exist (getattr's search policy): mode, owner, times, xattrs."""
        clonepath(dst, relpath, lambda rel: self._found(snap, "getattr", rel, probe), probe, ugid.as_root)

    def _place_on(self, snap: Snapshot, probe: RequestProbe, b: Branch, parent: str, preserve: bool, func: str) -> None:
        """Make sure ``parent`` exists on ``b`` before a rename/link lands there.

        Path preserving: only if the create policy would pick ``b`` anyway;
        otherwise the move would have to cross branches: EXDEV.
        """
        if probe.exists(b, parent):
            return
        if preserve:
            try:
                picked = self._select(snap, "create", parent, probe)
            except OSError:
                picked = []
            if b not in picked:
                raise oserror(errno.EXDEV)
        self._clonepath(snap, probe, b, parent)

    # ---------------------------------------------------------------- misc
    def _register(self, h: Handle) -> Handle:
        with self._handles_lock:
            self.handles[h.fd] = h
        return h

    def _any_branch_root(self, snap: Snapshot) -> bool:
        return any(os.path.isdir(b.path) for b in snap.branches)

    def _mountpoint(self) -> str:
        return (self.snap.cfg.mountpoint or "").rstrip("/")


def synthetic_stat(mode: int, nlink: int = 1) -> os.stat_result:
    """A stat for entries that live on no branch (the root with no branch, errors)."""
    now = time.time_ns()
    return os.stat_result(
        (mode, 0, 0, nlink, 0, 0, 0, now // 10**9, now // 10**9, now // 10**9),
        {"st_atime_ns": now, "st_mtime_ns": now, "st_ctime_ns": now, "st_blksize": 4096, "st_blocks": 0, "st_rdev": 0},
    )
