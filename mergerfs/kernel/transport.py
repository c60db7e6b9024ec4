"""The kernel session's life (mount, serve, close) and its opcode table.

Every request the compiled loop does not answer itself arrives at
:meth:`KernelTransport.dispatch` as bytes, is decoded once by its handler,
handed to :class:`~mergerfs.requests.Requests` and answered exactly once
(FORGET, BATCH_FORGET and INTERRUPT get no reply).
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import sys
import threading

from mergerfs import _kernel, inodes, lanes, mounts, ugid
from mergerfs.kernel import mount as mounting
from mergerfs.kernel.dirs import DirHandlers, dir_open_flags
from mergerfs.kernel.entries import EntryHandlers
from mergerfs.kernel.files import FileHandlers, open_flags
from mergerfs.kernel.negotiate import negotiate
from mergerfs.kernel.notifier import Notifier
from mergerfs.kernel.protocol import (
    FOPEN_KEEP_CACHE,
    IN_HEADER,
    NO_CALLER,
    NO_REPLY,
    Op,
    Request,
    frame,
)
from mergerfs.kernel.xattrs import XattrHandlers
from mergerfs.lifecycle import mounted_device, unmount
from mergerfs.requests import DIRECT, DROP, Requests

log = logging.getLogger("mergerfs")

#: fuse_interrupt_in: the unique of the interrupted request.
_UNIQUE = struct.Struct("<Q")
#: How many interrupts for requests Python has not seen are kept (the latest;
#: a unique is never reused, so an old one only takes room).
_EARLY_KEPT = 256
#: Entries per ring worker: while it answers one, the kernel fills the next (4 KiB O_DIRECT
#: reads, one pinned worker per queue: 1.6x legacy with 1 entry, 2.1x with 2, 1.9x with 8).
RING_DEPTH = 2

#: The compiled actions: SETATTR's chmod, chown and utimens, UNLINK, RMDIR and RENAME (each when its policy is epall).
_ACTIONS = {
    "chmod": _kernel.ACT_CHMOD,
    "chown": _kernel.ACT_CHOWN,
    "utimens": _kernel.ACT_UTIMENS,
    "unlink": _kernel.ACT_UNLINK,
    "rmdir": _kernel.ACT_RMDIR,
    "rename": _kernel.ACT_RENAME,
}

#: The create policies the compiled CREATE and MKDIR pick by (_create.pxi): their pick and filter.
_PICKS = {
    "ff": _kernel.PICK_FIRST,
    "mfs": _kernel.PICK_MOST_FREE,
    "lfs": _kernel.PICK_LEAST_FREE,
    "lus": _kernel.PICK_LEAST_USED,
    "lup": _kernel.PICK_LEAST_USED_PCT,
    "pfrd": _kernel.PICK_WEIGHTED,
    "rand": _kernel.PICK_RANDOM,
}
_PICKS.update({"ep" + name: pick | _kernel.PICK_EP for name, pick in _PICKS.items()})


class KernelTransport(EntryHandlers, FileHandlers, DirHandlers, XattrHandlers):
    """Mount, serve until unmounted, close: the shape lifecycle.py drives."""

    def __init__(self, fs) -> None:
        self.fs = fs
        self.notifier = Notifier()
        self.req = Requests(fs, self.notifier, auto_inval=True)
        self.cfg = fs.snap.cfg
        self.devfd = -1
        self.mnt = ""
        self.device: str | None = None
        self.debug = False
        self.session = None
        self.minor = 0
        self.request_kib = 0  # the largest READ/WRITE agreed at INIT (KiB): readahead's default
        self.uring = False  # INIT agreed FUSE over io_uring: serve() runs ring workers
        self._branch_paths: tuple[str, ...] = ()  # the branches the kernel's caches were filled from
        self._adopt_lock = threading.Lock()
        # INTERRUPT's bookkeeping: the requests Python is answering (unique ->
        # the Event lanes.py waits watch) and interrupts that named a request
        # not (yet) here, oldest first (_interrupt)
        self._serving: dict[int, threading.Event] = {}
        self._early: dict[int, None] = {}
        self._serving_lock = threading.Lock()
        # The opcode table: each opcode answered here and its handler (in
        # entries.py, files.py, dirs.py or xattrs.py); any other gets ENOSYS.
        self._handlers = {
            Op.LOOKUP: self._lookup,
            Op.FORGET: self._forget,
            Op.BATCH_FORGET: self._batch_forget,
            Op.GETATTR: self._getattr,
            Op.STATX: self._statx,
            Op.SETATTR: self._setattr,
            Op.READLINK: self._readlink,
            Op.SYMLINK: self._symlink,
            Op.MKNOD: self._mknod,
            Op.MKDIR: self._mkdir,
            Op.UNLINK: self._unlink,
            Op.RMDIR: self._rmdir,
            Op.RENAME: self._rename,
            Op.RENAME2: self._rename2,
            Op.LINK: self._link,
            Op.OPEN: self._open,
            Op.READ: self._read,
            Op.WRITE: self._write,
            Op.STATFS: self._statfs,
            Op.RELEASE: self._release,
            Op.FSYNC: self._fsync,
            Op.SETXATTR: self._setxattr,
            Op.GETXATTR: self._getxattr,
            Op.LISTXATTR: self._listxattr,
            Op.REMOVEXATTR: self._removexattr,
            Op.FLUSH: self._flush,
            Op.OPENDIR: self._opendir,
            Op.READDIR: self._readdir,
            Op.READDIRPLUS: self._readdirplus,
            Op.RELEASEDIR: self._releasedir,
            Op.FSYNCDIR: self._fsyncdir,
            Op.ACCESS: self._access,
            Op.CREATE: self._create,
            Op.TMPFILE: self._tmpfile,
            Op.INTERRUPT: self._interrupt,
            Op.DESTROY: self._empty,
            Op.IOCTL: self._ioctl,
            Op.FALLOCATE: self._fallocate,
            Op.LSEEK: self._lseek,
            Op.COPY_FILE_RANGE: self._copy_file_range,
            Op.COPY_FILE_RANGE_64: self._copy_file_range,
            Op.SYNCFS: self._syncfs,
            Op.INIT: self._empty,
        }

    # ------------------------------------------------------------ lifecycle
    def mount(self, mnt: str, opts: set[str]) -> None:
        # Resolved now: once mounted, resolving it would ask this very daemon.
        self.mnt = mnt = os.path.realpath(mnt)
        self.devfd = mounting.mount(mnt, opts)
        self.device = mounted_device(mnt)
        self.session = session = _kernel.Session(self.devfd, self.req.table)
        # the compiled OPEN's handles get Python ones when Python needs them
        self.req.adopt_open = self._adopt_open
        self.fs.adopt_branch = self._adopt_branch
        session.slow = self.dispatch
        session.inval = self.notifier.inval_inode
        session.trace = self.debug = any(o.partition("=")[0] == "debug" for o in opts)
        agreed = negotiate(self.devfd, self.cfg)
        self.minor = agreed.minor
        self.request_kib = agreed.max_write // 1024
        self.uring = agreed.uring
        session.passthrough(agreed.passthrough)
        session.configure(agreed.max_write, agreed.minor)
        self.req.control.counts = self._counts
        self._fast_path()
        self._busy_poll()
        self._branch_paths = tuple(b.path for b in self.fs.snap.branches)
        self.fs.listeners += [self._fast_path, self._busy_poll, self._follow_branches]
        self.notifier.start(self.devfd)

    def _fast_path(self, *_changed) -> None:
        """Let the compiled loop answer LOOKUP, GETATTR, STATX, GETXATTR, SETATTR,
        UNLINK, RMDIR, RENAME, the listings (OPENDIR, READDIR), OPEN and
        RELEASE, CREATE and MKDIR while the config has the plain shape it
        implements: a first-found search, epall actions, attributes reported
        as the branch's lstat gives them (no symlink following, symlinkify or
        uid/gid/umask overrides), no READDIRPLUS for listings and a
        single-branch create policy (_PICKS) over local branches for
        CREATE/MKDIR. Otherwise Python answers them. Called again after every
        config change."""
        assert self.session is not None
        cfg = self.fs.snap.cfg
        plain = (
            cfg.policy("getattr") == "ff"
            and cfg["follow-symlinks"] == "never"
            and not cfg["symlinkify"]
            and self.req.force is None
        )
        if not plain:
            self.session.set_fast(None)
            return
        entry, attr, negative = self.req.timeouts()
        branches = self.fs.snap.branches
        self.session.set_fast(
            [os.fsencode(b.path) for b in branches],
            [b.mode == "RO" for b in branches],
            inodes.mode_code(cfg["inodecalc"]),
            entry,
            attr,
            negative,
            actions=sum(bit for func, bit in _ACTIONS.items() if cfg.policy(func) == "epall"),
            getxattr=cfg["xattr"] == "passthrough" and cfg.policy("getxattr") == "ff",
            capability=cfg["security-capability"],
            posix_acl=cfg["posix-acl"],
            creds_fixed=not ugid.acts_as_caller(),
            pid_bound=cfg["proxy-ioprio"],
            # A compiled listing or create has no deadline: only over local
            # filesystems (a network branch keeps the lanes of ops/readdir.py and
            # probe.py). A listing is the same whatever func.readdir says (how
            # branches are read).
            root_devs=mounts.local_devs([b.path for b in branches]),
            readdir=not cfg["readdirplus"],
            dir_flags=dir_open_flags(cfg),
            opens=self._c_opens(cfg),
            creatable=[b.mode == "RW" for b in branches],
            minfree=[b.minfreespace for b in branches],
            # nfsopenhack changes a create's mode: Python's
            create=_PICKS.get(cfg.policy("create"), 0) if cfg["nfsopenhack"] == "off" else 0,
            mkdir=_PICKS.get(cfg.policy("mkdir"), 0),
        )

    def _follow_branches(self, *_changed) -> None:
        """A new branch list (the control file, SIGUSR1's re-expanded globs)
        changes what names are and what they show: the kernel drops every
        cached name, found or not found (INC_EPOCH, protocol 7.44; older
        kernels keep them until cache.entry / cache.negative-entry run out),
        and every node's attributes and pages, so the pool shows the new
        branches at once."""
        paths = tuple(b.path for b in self.fs.snap.branches)
        if paths == self._branch_paths:
            return
        self._branch_paths = paths
        if self.minor >= 44:
            self.notifier.inc_epoch()
        self.req.invalidate_all()

    def _busy_poll(self, *_changed) -> None:
        """fuse-busy-poll: the polling worker's budget. Not on a single CPU,
        where polling would only keep the caller from running."""
        assert self.session is not None
        cpus = len(os.sched_getaffinity(0))
        self.session.busy_poll_ns = self.fs.snap.cfg["fuse-busy-poll"] * 1000 if cpus >= 2 else 0

    def _counts(self) -> dict[str, tuple[int, int]]:
        """Requests served per opcode name: (answered compiled, answered by Python);
        and "io_uring": how many came (over io_uring, through read())."""
        assert self.session is not None
        out = {_opname(op): n for op, n in self.session.counts().items()}
        out["io_uring"] = self.session.ways_in()
        return out

    def _c_opens(self, cfg) -> tuple[int, int, int, bool, bool] | None:
        """The compiled OPEN's part of the fast config (see set_fast), or None
        while an open is a decision Python makes: a search policy other than
        ff, nullrw, per-process caching (the caller's name), cache invalidation
        by notification. The FOPEN flags are what _opened replies (passthrough:
        decided per open in C for both)."""
        mode = cfg["cache.files"]
        if cfg.policy("open") != "ff" or cfg["nullrw"] or mode == "per-process" or self.req.cache_by_notify:
            return None
        # as requests/files.py _freshen decides: DIRECT under off, else KEEP only
        # while the file did not change behind the kernel's back (C adds ``keep``)
        base = DIRECT if mode == "off" else DROP
        rd, wr = open_flags(cfg, base, True), open_flags(cfg, base, False)
        keep = FOPEN_KEEP_CACHE if mode in ("full", "auto-full") else 0
        return rd, wr, keep, bool(cfg["dropcacheonclose"]), bool(cfg["link-cow"])

    def serve(self, workers: int) -> None:
        """Run ``workers`` threads, one per (cloned) fd, until the mount goes away.
        Over io_uring: ``workers`` ring workers spread over the queues (at least
        one each) and one reading /dev/fuse (INIT's successors that do not take
        the ring: FORGET, INTERRUPT)."""
        assert self.session is not None
        session = self.session
        rings: list[threading.Thread] = []
        if self.uring:
            rings = self._ring_workers(workers)
            workers = 1
        fds = [self.devfd]
        for _ in range(workers - 1):
            try:
                fds.append(_kernel.clone_fd(self.devfd))
            except OSError:
                fds.append(self.devfd)  # no /dev/fuse access (fusermount): share the fd
        errors: list[BaseException] = []

        # one worker polls (fuse-busy-poll), on an fd of its own: a shared one
        # would make every worker's read non-blocking
        poller = fds[-1] if len(set(fds)) == len(fds) and not rings else -1

        def work(fd: int) -> None:
            try:
                session.serve(fd, fd == poller)
            except OSError as e:
                if e.errno not in (errno.ENODEV, errno.EBADF):
                    errors.append(e)

        threads = [threading.Thread(target=work, args=(fd,), name=f"fuse-{i}", daemon=True) for i, fd in enumerate(fds)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for t in rings:  # each entry ends with ENOTCONN at unmount; a stuck one keeps no daemon alive
            t.join(5.0)
        for fd in set(fds) - {self.devfd}:
            os.close(fd)
        if errors:
            raise errors[0]

    def _ring_workers(self, workers: int) -> list[threading.Thread]:
        """Started ring workers: ``workers`` spread over the queues, one queue
        per possible CPU (the kernel queues a request on its caller's CPU's),
        each worker pinned to its queue's CPU with RING_DEPTH entries, the
        first of each queue polling (fuse-busy-poll). A worker
        whose ring cannot be set up unmounts: the kernel would wait for its
        queue forever."""
        assert self.session is not None
        session = self.session
        queues = possible_cpus()
        count = max(workers, len(queues))

        def work(qid: int, poller: bool) -> None:
            try:  # unpinned: seqread 0.72 and smallfiles 0.74 of 2.33.5's speed where pinned ran 1.17 / 1.27
                os.sched_setaffinity(0, {qid})
            except OSError:
                pass  # not an allowed CPU here: the requests still come, from afar
            try:
                session.serve_ring(qid, RING_DEPTH, poller)
            except BaseException:  # its queue would hold its CPU's requests forever
                log.exception("io_uring queue %d failed: unmounting", qid)
                unmount(self.mnt)

        rings = [
            threading.Thread(
                target=work, args=(queues[i % len(queues)], i < len(queues)), name=f"fuse-ring-{i}", daemon=True
            )
            for i in range(count)
        ]
        for t in rings:
            t.start()
        return rings

    def close(self) -> None:
        self.notifier.stop()
        # Only our own mount: after lazy-umount-mountpoint another pool may sit there.
        if self.devfd >= 0 and self.device and mounted_device(self.mnt) == self.device:
            unmount(self.mnt)
        if self.devfd >= 0:
            os.close(self.devfd)
            self.devfd = -1

    # ------------------------------------------------------------ replies
    def dispatch(self, data: bytes) -> bytes | None:
        """Decode, act as the caller, answer: the whole reply, or None (no
        reply). Never raises."""
        h = Request(data)
        if self.debug:  # libfuse's -d trace, which scripts and users grep
            name = Op(h.opcode).name if h.opcode in self._handlers else "?"
            print(
                f"unique: {h.unique}, opcode: {name} ({h.opcode}), nodeid: {h.nodeid}, "
                f"insize: {len(data)}, pid: {h.pid}",
                file=sys.stderr,
                flush=True,
            )
        handler = self._handlers.get(h.opcode, self._enosys)
        if log.isEnabledFor(logging.DEBUG):  # which requests the compiled loop left to Python
            log.debug("python: opcode %d, nodeid %d, pid %d", h.opcode, h.nodeid, h.pid)
        interrupt = None
        if h.opcode not in NO_REPLY:
            interrupt = lanes.serving.interrupt = threading.Event()
            with self._serving_lock:
                self._serving[h.unique] = interrupt
                if self._early.pop(h.unique, None) is not None:
                    interrupt.set()
        try:
            # every request with a caller, answered or not: the compiled loop
            # takes this thread's identity to be the last such request's
            if h.uid != 0xFFFFFFFF and h.opcode not in NO_CALLER:
                ugid.switch(h.uid, h.gid, h.pid)
            payload = handler(h, data[IN_HEADER.size :])
        except OSError as e:
            err = e.errno or errno.EIO
        except Exception:
            log.exception("unexpected error in opcode %d (nodeid %d)", h.opcode, h.nodeid)
            err = errno.EIO
        else:
            if h.opcode in NO_REPLY:
                return None
            return frame(h.unique, 0, payload or b"")
        finally:
            if interrupt is not None:
                lanes.serving.interrupt = None
                with self._serving_lock:
                    del self._serving[h.unique]
        return None if h.opcode in NO_REPLY else frame(h.unique, -err)

    def _interrupt(self, h, body):
        """INTERRUPT: the caller of request ``unique`` got a signal. A request
        Python answers that waits on a lane (a listing or statfs of a network
        branch) then ends with EINTR at once, not at its deadline; one answered
        in C, or already answered, needs nothing. The kernel only interrupts a
        request a worker has read, so one not here yet may be about to be: the
        interrupt is kept for it (the latest _EARLY_KEPT). No reply (an error
        would tell the kernel to stop sending interrupts)."""
        (unique,) = _UNIQUE.unpack_from(body)
        with self._serving_lock:
            interrupt = self._serving.get(unique)
            if interrupt is not None:
                interrupt.set()
                return
            self._early[unique] = None
            if len(self._early) > _EARLY_KEPT:  # the oldest: answered in C long ago
                del self._early[next(iter(self._early))]

    @staticmethod
    def _empty(h, body):
        return b""

    @staticmethod
    def _enosys(h, body):
        raise OSError(errno.ENOSYS, "not implemented")


def possible_cpus() -> list[int]:
    """The CPUs this kernel may ever run (its FUSE queues: one per possible CPU)."""
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            text = f.read().strip()
    except OSError:
        return list(range(os.cpu_count() or 1))
    cpus: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.extend(range(int(first), int(last or first) + 1))
    return cpus


def _opname(op: int) -> str:
    try:
        return Op(op).name
    except ValueError:  # one this session does not decode (answered ENOSYS)
        return str(op)
