"""Branches: parsing the ``BRANCHES`` string, glob expansion, and branch facts.

A :class:`Branches` snapshot is immutable; reconfiguration builds a new one and
swaps it in, so an operation that read the snapshot once at its top sees one
consistent branch set. :class:`Probe` is the only place that asks the branch
filesystems about existence, space and read-only state (policies get it
injected, which keeps them pure).
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import random
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

log = logging.getLogger("mergerfs")

MODES = ("RW", "RO", "NC")

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([BKMGT]?)\s*$", re.IGNORECASE)
_SIZE_MULT = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``SIZE`` value: integer with optional B/K/M/G/T suffix (powers of 1024)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"invalid size {text!r}")
    return int(m.group(1)) * _SIZE_MULT[m.group(2).upper()]


def format_size(value: int) -> str:
    """Shortest exact spelling of a size (4294967296 -> ``4G``)."""
    for suffix in ("T", "G", "M", "K"):
        mult = _SIZE_MULT[suffix]
        if value and value % mult == 0:
            return f"{value // mult}{suffix}"
    return str(value)


@dataclass(frozen=True)
class BranchSpec:
    """One ``PATH[=MODE[,MINFREESPACE]]`` entry as the user wrote it (PATH may be a glob)."""

    pattern: str
    mode: str = "RW"
    minfreespace: int | None = None  # None: use the global minfreespace

    def format(self) -> str:
        text = f"{self.pattern}={self.mode}"
        if self.minfreespace is not None:
            text += f",{format_size(self.minfreespace)}"
        return text


def parse_branch_spec(entry: str) -> BranchSpec:
    """Parse one branch entry; raises ValueError with a user-facing message."""
    if not entry.strip():
        raise ValueError("empty branch path")
    path, sep, rest = entry.rpartition("=")
    if sep and not path.strip():
        raise ValueError(f"empty branch path in {entry!r}")
    if not sep:
        return BranchSpec(entry)
    mode_text, _, mfs_text = rest.partition(",")
    mode = mode_text.strip().upper()
    if mode not in MODES:
        # '=' may legitimately appear in a path: only treat it as a mode marker
        # when what follows looks like one.
        if "," not in rest and not mode_text.isalpha():
            return BranchSpec(entry)
        raise ValueError(f"invalid branch mode {mode_text!r} in {entry!r}")
    mfs = parse_size(mfs_text) if mfs_text else None
    return BranchSpec(path, mode, mfs)


def parse_branches(text: str) -> list[BranchSpec]:
    """``:``-separated branch list. An empty entry beside real ones (``/a::/b``,
    ``/a:``) is refused, as 2.42 does; all empty (``''``, ``:``) is no branch."""
    entries = text.split(":")
    if all(not e.strip() for e in entries):
        return []
    return [parse_branch_spec(e) for e in entries]


def check_runtime(specs: list[BranchSpec]) -> None:
    """What a runtime branches write must satisfy (ValueError otherwise): absolute
    paths only (the daemon's cwd means nothing to the caller) and at least one
    branch that is a directory now (else the pool would show only its error entry)."""
    for s in specs:
        if not s.pattern.startswith("/"):
            raise ValueError(f"relative branch path {s.pattern!r}")
    if not any(os.path.isdir(s.pattern) for s in expand_specs(specs)):
        raise ValueError("no valid branch")


def format_branches(specs: list[BranchSpec]) -> str:
    return ":".join(s.format() for s in specs)


@dataclass(frozen=True)
class Branch:
    """A concrete branch root after glob expansion.

    ``minfreespace`` is resolved (per-branch value or the global one) when the
    snapshot is built, so policies need no config.
    """

    path: str
    mode: str = "RW"
    minfreespace: int = 4 << 30

    def join(self, relpath: str) -> str:
        """``relpath`` (``/``-prefixed, relative to the pool root) on this branch, as
        text: what users are shown. It may exceed PATH_MAX; syscalls take :meth:`full`."""
        if relpath == "/":
            return self.path
        return relpath if self.path == "/" else self.path + relpath

    def full(self, relpath: str) -> str:
        """A path naming ``relpath`` on this branch that every syscall accepts.

        Normally :meth:`join`. A path the kernel accepted inside the pool may not
        fit PATH_MAX once the branch root is prefixed; it is then reached through
        its parent directory, opened with :meth:`at`, as ``/proc/self/fd/N/NAME``
        (one short path, so every ``os`` call works unchanged, and lookups stay the
        caller's: each component is still searched with the thread's credentials).
        The fd stays open while the returned string lives: bind it to a name for
        the duration of the call. Raises the OSError opening the parent gives
        (ENOENT, ENOTDIR, EACCES...), which the full path would have given too.
        """
        path = self.join(relpath)
        if len(path) < _SURELY_SHORT or len(os.fsencode(path)) < PATH_MAX:
            return path
        fd, name = self.at(relpath)
        return FdPath(f"/proc/self/fd/{fd}/{name}", fd)

    def at(self, relpath: str) -> tuple[int, str]:
        """(O_PATH fd of ``relpath``'s parent directory on this branch, last component).

        The parent is opened in pieces of under PATH_MAX each, every piece
        relative to the previous one. The caller closes the fd.
        """
        head, _, name = self.join(relpath).rpartition("/")
        fd = -1
        piece = b"/"  # the first piece is absolute, the later ones relative to it
        try:
            for part in os.fsencode(head).strip(b"/").split(b"/"):
                if len(piece) + len(part) + 1 >= PATH_MAX:
                    fd = _open_dir(piece, fd)
                    piece = b""
                piece = piece + b"/" + part if piece not in (b"", b"/") else piece + part
            fd = _open_dir(piece, fd)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        return fd, name

    @property
    def ro(self) -> bool:
        return self.mode == "RO"

    @property
    def nc(self) -> bool:
        return self.mode == "NC"


#: The kernel's limit on a path handed to a syscall, terminating NUL included.
PATH_MAX = 4096
_SURELY_SHORT = PATH_MAX // 4  # chars: even 4-byte UTF-8 each stays under PATH_MAX
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


def _open_dir(piece: bytes, parent: int) -> int:
    """Open ``piece`` relative to ``parent`` (absolute if -1), closing ``parent``."""
    try:
        return os.open(piece, _DIR_FLAGS, dir_fd=None if parent < 0 else parent)
    finally:
        if parent >= 0:
            os.close(parent)


class FdPath(str):
    """A ``/proc/self/fd/N/NAME`` path that owns fd N: closed when the string is freed."""

    def __new__(cls, text: str, fd: int) -> "FdPath":
        self = super().__new__(cls, text)
        self.fd = fd
        return self

    def __del__(self) -> None:
        os.close(self.fd)


def _normalize(path: str) -> str:
    path = os.path.abspath(path)
    return path.rstrip("/") or "/"


def expand_specs(specs: list[BranchSpec]) -> list[BranchSpec]:
    """One spec per concrete branch: globs expanded (sorted; a pattern matching
    nothing contributes nothing), duplicates dropped, per-branch settings kept.

    A plain path that does not exist is kept: it simply answers ENOENT until the
    disk appears, which is what a NAS with a late disk needs.
    """
    out: list[BranchSpec] = []
    seen: set[str] = set()
    for spec in specs:
        if glob.has_magic(spec.pattern):
            paths = sorted(p for p in glob.glob(spec.pattern) if os.path.isdir(p))
        else:
            paths = [spec.pattern]
        for p in paths:
            p = _normalize(p)
            if p not in seen:
                seen.add(p)
                out.append(BranchSpec(p, spec.mode, spec.minfreespace))
    return out


def expand(specs: list[BranchSpec], global_minfreespace: int) -> tuple[Branch, ...]:
    """The concrete branches, each with its minfreespace resolved."""
    return tuple(
        Branch(s.pattern, s.mode, global_minfreespace if s.minfreespace is None else s.minfreespace)
        for s in expand_specs(specs)
    )


def invalid_branches(branches: tuple[Branch, ...]) -> list[str]:
    """Human-readable problems with branch roots (missing, not a directory)."""
    problems = []
    for b in branches:
        if not os.path.exists(b.path):
            problems.append(f"branch {b.path} does not exist")
        elif not os.path.isdir(b.path):
            problems.append(f"branch {b.path} is not a directory")
    return problems


class SpaceInfo(NamedTuple):
    """statvfs facts about one branch filesystem, in bytes."""

    available: int  # f_bavail * f_frsize: what an unprivileged writer can use
    used: int  # (f_blocks - f_bfree) * f_frsize
    total: int  # f_blocks * f_frsize
    readonly: bool  # mounted read-only (ST_RDONLY)
    gone: bool = False  # its filesystem went away: the root now sits on its parent's device


# -- calls that may hang ------------------------------------------------------
#: Seconds a branch's statvfs may take before its last answer is used instead.
STATFS_TIMEOUT = 1.0
#: Seconds a branch's directory listing may take before the listing goes without it.
LIST_TIMEOUT = 5.0


class Stalled(OSError):
    """A branch did not answer within its deadline (a hung network filesystem)."""

    def __init__(self, key: str) -> None:
        super().__init__(errno.EIO, f"branch {key} did not answer in time")


class _Job:
    __slots__ = ("fn", "args", "creds", "done", "result", "error", "cancelled", "started", "timeout", "key")

    def __init__(self, fn, args, creds, timeout: float) -> None:
        self.fn, self.args, self.creds, self.timeout = fn, args, creds, timeout
        self.done: threading.Event | None = None  # only for calls handed to a lane
        self.result = self.error = None
        self.cancelled = False
        self.started = 0.0
        self.key = ""


class _Lane:
    """One branch's worker threads and queue."""

    __slots__ = ("key", "queue", "idle", "threads", "running", "last_done", "stalled_logged", "cond")

    def __init__(self, key: str, lock) -> None:
        self.key = key
        self.cond = threading.Condition(lock)
        self.queue: deque[_Job] = deque()
        self.idle = 0
        self.threads = 0
        self.running: set[_Job] = set()
        self.last_done = 0.0
        self.stalled_logged = False

    def stalled(self, now: float) -> bool:
        """A call has run past its deadline and nothing finished since it started."""
        if not any(now - j.started > j.timeout and self.last_done < j.started for j in self.running):
            return False
        if not self.stalled_logged:
            self.stalled_logged = True
            log.warning(
                "branch %s: no answer for over %.1fs; left out until it answers",
                self.key,
                max(now - j.started for j in self.running),
            )
        return True


class Lanes:
    """Run calls that touch a branch filesystem with a deadline.

    Each branch (key) gets up to ``width`` daemon threads, started on demand
    and ended after ``IDLE`` seconds without work. A caller waits at most its
    timeout, then gets :class:`Stalled`; the call itself keeps running in its
    thread (a syscall on a hung mount cannot be interrupted) and its result is
    dropped. While a branch has a call past its deadline and nothing has
    finished since, new calls for it fail at once, so a hung branch costs each
    later request nothing and holds at most ``width`` threads. The caller's
    identity (:mod:`mergerfs.ugid`) travels with the call.
    """

    IDLE = 30.0

    def __init__(self, width: int = 4) -> None:
        self.width = width
        self._lock = threading.Lock()
        self._lanes: dict[str, _Lane] = {}
        self._pid = os.getpid()

    def call(self, key: str, timeout: float, fn, *args):
        """``fn(*args)`` on ``key``'s lane within ``timeout`` seconds, else :class:`Stalled`."""
        return self.result(self.submit(key, timeout, fn, *args), time.monotonic() + timeout)

    def calls(self, jobs, timeout: float) -> list:
        """Several ``(key, fn, args)`` at once (one wait for all, not one each):
        each entry is the result or the exception it raised (:class:`Stalled`
        included), in order."""
        deadline = time.monotonic() + timeout
        submitted = []
        for key, fn, args in jobs:
            try:
                submitted.append(self.submit(key, timeout, fn, *args))
            except Stalled as e:
                submitted.append(e)
        out = []
        for job in submitted:
            if isinstance(job, Stalled):
                out.append(job)
                continue
            try:
                out.append(self.result(job, deadline))
            except Exception as e:  # noqa: BLE001 - handed to the caller
                out.append(e)
        return out

    def submit(self, key: str, timeout: float, fn, *args) -> _Job:
        """Queue ``fn(*args)`` on ``key``'s lane (:class:`Stalled` at once if it is stalled)."""
        from mergerfs import ugid  # noqa: PLC0415 - ugid needs the compiled extension

        job = _Job(fn, args, ugid.current(), timeout)
        job.done = threading.Event()
        job.key = key
        with self._lock:
            lane = self._lane(key)
            if lane.stalled(time.monotonic()):
                raise Stalled(key)
            lane.queue.append(job)
            if lane.idle:
                lane.cond.notify()
            elif lane.threads < self.width:
                lane.threads += 1
                threading.Thread(target=self._work, args=(key, lane), name=f"branch-io {key}", daemon=True).start()
        return job

    def result(self, job: _Job, deadline: float):
        """Wait for a submitted job until ``deadline`` (monotonic); its result, or
        its exception, or :class:`Stalled` (the job is then dropped unrun if still queued)."""
        done = job.done
        assert done is not None
        if not done.wait(max(0.0, deadline - time.monotonic())):
            with self._lock:
                job.cancelled = True
                self._lane(job.key).stalled(time.monotonic())  # logs it once
            if not done.is_set():
                raise Stalled(job.key)
        if job.error is not None:
            raise job.error
        return job.result

    def direct(self, key: str, timeout: float, fn, *args):
        """Run ``fn`` in the calling thread (no hand-off: the policies' hot path),
        unless the branch is stalled (:class:`Stalled` at once). A call that hangs
        here blocks its caller, but marks the branch stalled after ``timeout`` for
        everyone else, lanes included."""
        job = _Job(fn, args, None, timeout)
        with self._lock:
            lane = self._lane(key)
            job.started = time.monotonic()
            if lane.stalled(job.started):
                raise Stalled(key)
            lane.running.add(job)
        try:
            return fn(*args)
        finally:
            with self._lock:
                lane.running.discard(job)
                self._finished(key, lane)

    def _lane(self, key: str) -> _Lane:
        if self._pid != os.getpid():  # forked: the threads stayed with the parent
            self._lanes.clear()
            self._pid = os.getpid()
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(key, self._lock)
        return lane

    @staticmethod
    def _finished(key: str, lane: _Lane) -> None:
        lane.last_done = time.monotonic()
        if lane.stalled_logged:
            lane.stalled_logged = False
            log.warning("branch %s answers again", key)

    def _work(self, key: str, lane: _Lane) -> None:
        from mergerfs import ugid  # noqa: PLC0415

        while True:
            with self._lock:
                job = None
                while job is None:
                    while lane.queue:
                        j = lane.queue.popleft()
                        if not j.cancelled:
                            job = j
                            break
                    if job is not None:
                        break
                    lane.idle += 1
                    woke = lane.cond.wait(self.IDLE)
                    lane.idle -= 1
                    if not woke and not lane.queue:
                        lane.threads -= 1
                        return
                job.started = time.monotonic()
                lane.running.add(job)
            try:
                ugid.adopt(job.creds)
                job.result = job.fn(*job.args)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                job.error = e
            with self._lock:
                lane.running.discard(job)
                self._finished(key, lane)
            job.done.set()  # type: ignore[union-attr]


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
    def fsinfo(
        self, path: str, stale_ok: bool = False, inline: bool = False
    ) -> tuple[os.stat_result, os.statvfs_result]:
        """(stat, statvfs) of ``path`` within :data:`STATFS_TIMEOUT`; with
        ``stale_ok`` a stalled branch answers its last known facts. ``inline``:
        ask in the calling thread (see :meth:`Lanes.direct`)."""
        try:
            if inline:
                facts = self.lanes.direct(path, STATFS_TIMEOUT, _fsinfo, path)
            else:
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
        st, vfs = self.fsinfo(branch.path, inline=True)
        info = SpaceInfo(
            vfs.f_bavail * vfs.f_frsize,
            (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize,
            vfs.f_blocks * vfs.f_frsize,
            bool(vfs.f_flag & os.ST_RDONLY) or branch.path in self._marked_ro,
            self.check_gone(branch.path, st.st_dev),
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
