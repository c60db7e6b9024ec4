"""Calls that may hang (a stalled network branch), run with a deadline.

Each branch has a lane: a few daemon threads of its own, so one hung branch
holds only its own threads and callers give up on it after their timeout.
Thread-safe; the caller's identity (:mod:`mergerfs.ugid`) travels with each call.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections import deque

log = logging.getLogger("mergerfs")

#: Per thread, the Event the request it serves is interrupted by (the kernel's
#: INTERRUPT: its caller got a signal), or None: a wait on a lane then ends at
#: once with EINTR instead of at its deadline.
serving = threading.local()
#: How often a waiting caller looks at its interrupt flag (seconds).
_INTERRUPT_CHECK = 0.05


class Stalled(OSError):
    """A branch did not answer within its deadline (a hung network filesystem)."""

    def __init__(self, key: str) -> None:
        super().__init__(errno.EIO, f"branch {key} did not answer in time")


class _Job:
    __slots__ = ("fn", "args", "creds", "done", "result", "error", "cancelled", "started", "timeout", "key")

    def __init__(self, fn, args, creds, timeout: float) -> None:
        self.fn, self.args, self.creds, self.timeout = fn, args, creds, timeout
        self.done: threading.Event | None = None  # only for calls handed to a lane
        self.result: object = None
        self.error: BaseException | None = None
        self.cancelled = False
        self.started = 0.0
        self.key = ""


class _Running:
    """A call running in its caller's thread (:meth:`Lanes.direct`): what
    :meth:`_Lane.stalled` reads of it."""

    __slots__ = ("started", "timeout")

    def __init__(self, started: float, timeout: float) -> None:
        self.started, self.timeout = started, timeout


class _Lane:
    """One branch's worker threads and queue."""

    __slots__ = ("key", "queue", "idle", "threads", "running", "last_done", "stalled_logged", "cond")

    def __init__(self, key: str, lock) -> None:
        self.key = key
        self.cond = threading.Condition(lock)
        self.queue: deque[_Job] = deque()
        self.idle = 0
        self.threads = 0
        self.running: set[_Job | _Running] = set()
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
        submitted: list[_Job | Stalled] = []
        for key, fn, args in jobs:
            try:
                submitted.append(self.submit(key, timeout, fn, *args))
            except Stalled as e:
                submitted.append(e)
        out: list[object] = []
        for i, job in enumerate(submitted):
            if isinstance(job, Stalled):
                out.append(job)
                continue
            try:
                out.append(self.result(job, deadline))
            except InterruptedError:  # the whole request ends: the rest are not waited for
                self._cancel(j for j in submitted[i + 1 :] if isinstance(j, _Job))
                raise
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
        its exception, or :class:`Stalled` (the job is then dropped unrun if still queued);
        InterruptedError as soon as the request this thread serves is interrupted (:data:`serving`)."""
        done = job.done
        assert done is not None
        interrupt = getattr(serving, "interrupt", None)
        while not done.wait(max(0.0, min(deadline - time.monotonic(), _INTERRUPT_CHECK))):
            if interrupt is not None and interrupt.is_set():
                self._cancel((job,))
                raise InterruptedError(errno.EINTR, "interrupted by its caller")
            if time.monotonic() >= deadline:
                with self._lock:
                    job.cancelled = True
                    self._lane(job.key).stalled(time.monotonic())  # logs it once
                if not done.is_set():
                    raise Stalled(job.key)
                break
        if job.error is not None:
            raise job.error
        return job.result

    def _cancel(self, jobs) -> None:
        """Drop jobs nobody waits for any more: still queued, they never run."""
        with self._lock:
            for job in jobs:
                job.cancelled = True

    def direct(self, key: str, timeout: float, fn, *args):
        """Run ``fn`` in the calling thread (no hand-off: the policies' hot path),
        unless the branch is stalled (:class:`Stalled` at once). A call that hangs
        here blocks its caller, but marks the branch stalled after ``timeout`` for
        everyone else, lanes included."""
        job = _Running(time.monotonic(), timeout)
        with self._lock:
            lane = self._lane(key)
            if lane.running and lane.stalled(job.started):
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
