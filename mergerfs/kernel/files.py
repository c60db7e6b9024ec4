"""Handlers of the requests on open files, and the passthrough backing ids.

An open file is registered with the compiled loop (:mod:`mergerfs._kernel`),
which answers its READ/WRITE/FLUSH without the GIL; the handlers here see
those only when the loop hands them back (e.g. ``nullrw``). Passthrough lets
the kernel do the I/O on the branch file itself: a backing id per inode,
shared by all its passthrough opens."""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading

from mergerfs import _kernel, ugid
from mergerfs.kernel.base import Base
from mergerfs.kernel.protocol import (
    FOPEN_DIRECT_IO,
    FOPEN_KEEP_CACHE,
    FOPEN_NOFLUSH,
    FOPEN_PARALLEL_DIRECT_WRITES,
    FOPEN_PASSTHROUGH,
    OPEN_KILL_SUIDGID,
    OPEN_OUT,
    WRITE_KILL_SUIDGID,
    Op,
    cstr,
)
from mergerfs.ops.io import IOCTLS
from mergerfs.requests import DIRECT, KEEP

log = logging.getLogger("mergerfs")


class Passthrough:
    """Which open gets a backing id: every passthrough open of one inode must
    share its backing file (the kernel refuses a second), and an inode open
    without passthrough cannot get it."""

    def __init__(self) -> None:
        self.devfd = -1
        self.modes: frozenset[int] | None = None  # O_ACCMODE values passed through, once INIT allows
        self._backing: dict[int, list[int]] = {}  # nodeid -> [backing id, opens]
        self._cached_opens: dict[int, int] = {}  # nodeid -> opens without passthrough
        self._lock = threading.Lock()

    def enable(self, devfd: int, modes: frozenset[int] | None) -> None:
        self.devfd, self.modes = devfd, modes

    def acquire(self, nodeid: int, fd: int, flags: int) -> int:
        """A passthrough backing id for this open of branch file ``fd``, or 0 for normal I/O."""
        with self._lock:
            held = self._backing.get(nodeid)
            if held is None and (
                self.modes is None or flags & os.O_ACCMODE not in self.modes or self._cached_opens.get(nodeid)
            ):
                self._cached_opens[nodeid] = self._cached_opens.get(nodeid, 0) + 1
                return 0
            if held is None:
                try:
                    backing = self._backing_file(fd)
                except OSError as e:
                    # As non-root (or on a branch the kernel cannot stack on), the
                    # ioctl is refused: normal I/O, never a failed open.
                    log.info("passthrough refused (%s): normal I/O", os.strerror(e.errno or 0))
                    self.modes = None if e.errno == errno.EPERM else self.modes
                    self._cached_opens[nodeid] = self._cached_opens.get(nodeid, 0) + 1
                    return 0
                held = self._backing[nodeid] = [backing, 0]
            held[1] += 1
            return held[0]

    def _backing_file(self, fd: int) -> int:
        """Register the branch file for passthrough, opened read-write when the
        file allows it: later opens of the inode (any mode) share this one."""
        try:
            with ugid.as_root():
                rw = os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            rw = os.dup(fd)
        try:
            return _kernel.backing_open(self.devfd, rw)
        finally:
            os.close(rw)

    def release(self, nodeid: int, passthrough: bool) -> None:
        """One open of ``nodeid`` is gone; the last passthrough one closes the backing id."""
        with self._lock:
            if not passthrough:
                n = self._cached_opens.get(nodeid, 0) - 1
                if n > 0:
                    self._cached_opens[nodeid] = n
                else:
                    self._cached_opens.pop(nodeid, None)
                return
            held = self._backing.get(nodeid)
            if held is None:
                return
            held[1] -= 1
            if held[1] > 0:
                return
            del self._backing[nodeid]
        try:
            _kernel.backing_close(self.devfd, held[0])
        except OSError as e:
            log.warning("passthrough backing %d close: %s", held[0], os.strerror(e.errno or 0))


class FileHandlers(Base):
    passthrough: Passthrough

    def _opened(self, nodeid: int, pyfh: int, cache: int, flags: int, hand_over: bool = False) -> bytes:
        """Register an open file with the compiled loop; the open reply.
        ``hand_over``: the compiled loop owns it from now on if the config is
        plain (its RELEASE is answered in C; see _hand_over)."""
        assert self.session is not None
        cfg = self.fs.snap.cfg
        fd = -1 if cfg["nullrw"] else self.req.fd(pyfh)
        if cache == DIRECT:
            oflags = FOPEN_DIRECT_IO | (FOPEN_PARALLEL_DIRECT_WRITES if cfg["parallel-direct-writes"] else 0)
        else:
            oflags = FOPEN_KEEP_CACHE if cache == KEEP else 0
        flush = cfg["flush-on-close"]
        if flush == "never" or (flush == "opened-for-write" and flags & os.O_ACCMODE == os.O_RDONLY):
            oflags |= FOPEN_NOFLUSH
        if hand_over and fd >= 0 and self.passthrough.modes is None:
            fh = self._hand_over(nodeid, pyfh)
            if fh:
                return OPEN_OUT.pack(fh, oflags, 0)
        backing = self.passthrough.acquire(nodeid, fd, flags) if fd >= 0 else 0
        if backing:
            oflags = (oflags & ~(FOPEN_DIRECT_IO | FOPEN_KEEP_CACHE)) | FOPEN_PASSTHROUGH
        try:
            fh = self.session.add(pyfh, fd, 1 if backing else 0)
        except OSError:
            self.passthrough.release(nodeid, bool(backing))
            self.req.release(pyfh)
            raise
        return OPEN_OUT.pack(fh, oflags, backing)

    def _hand_over(self, nodeid: int, pyfh: int) -> int:
        """Make Python's open ``pyfh`` a C-owned one, as if the compiled OPEN had
        made it: its kernel fh, or 0 if the C path cannot take it now (the
        config is not plain; it stays Python's). Under ``_adopt_lock``: no
        adoption sees the slot before Python has let the handle go."""
        assert self.session is not None
        h = self.req.handle(pyfh)
        with self._adopt_lock:
            fh = self.session.add_c(h.fd, nodeid, os.fsencode(h.branch.path), h.flags)
            if fh and not self.req.disown(pyfh):  # borrowed meanwhile: Python's after all
                self.session.claim(fh)
                self.session.adopted(fh, pyfh)
        return fh

    def _open(self, h, body):
        flags, open_flags = struct.unpack_from("<II", body)
        pyfh, cache = self.req.open(h.nodeid, flags, h.pid)
        if open_flags & OPEN_KILL_SUIDGID:  # an O_TRUNC open by a user without CAP_FSETID
            self.req.kill_priv(pyfh)
        return self._opened(h.nodeid, pyfh, cache, flags)

    def _create(self, h, body):
        flags, mode, _, _ = struct.unpack_from("<IIII", body)
        pyfh, ino, st, cache = self.req.create(h.nodeid, cstr(body, 16)[0], mode, flags, h.pid)
        # the create policy is Python's decision, the open file then is as any other
        return self._entry_out(ino, st) + self._opened(ino, pyfh, cache, flags, hand_over=True)

    def _read(self, h, body):
        fh, off, size = struct.unpack_from("<QQI", body)
        return self.req.read(self._pyfh(fh), off, size)

    def _write(self, h, body):
        fh, off, size, flags = struct.unpack_from("<QQII", body)
        start = 40 if self.minor >= 9 else 24
        if flags & WRITE_KILL_SUIDGID:
            self.req.kill_priv(self._pyfh(fh))
        n = self.req.write(self._pyfh(fh), off, memoryview(body)[start : start + size])
        return struct.pack("<II", n, 0)

    def _flush(self, h, body):
        self.req.flush(self._pyfh(struct.unpack_from("<Q", body)[0]))

    def _release(self, h, body):
        (fh,) = struct.unpack_from("<Q", body)
        assert self.session is not None
        self._pyfh(fh)  # a C-owned open the compiled RELEASE left (-o debug): adopted, then released here
        with self._adopt_lock:
            pyfh, passthrough = self.session.remove(fh)
        if not pyfh:
            raise OSError(errno.EBADF, "unknown handle")
        self.passthrough.release(h.nodeid, bool(passthrough))
        self.req.release(pyfh)

    def _fsync(self, h, body):
        fh, flags = struct.unpack_from("<QI", body)
        self.req.fsync(self._pyfh(fh), bool(flags & 1))

    def _fallocate(self, h, body):
        fh, off, length, mode = struct.unpack_from("<QQQI", body)
        self.req.fallocate(self._pyfh(fh), mode, off, length)

    def _lseek(self, h, body):
        fh, off, whence = struct.unpack_from("<QqI", body)
        return struct.pack("<q", self.req.lseek(self._pyfh(fh), off, whence))

    def _copy_file_range(self, h, body):
        fh_in, off_in, _, fh_out, off_out, length, flags = struct.unpack_from("<QQQQQQQ", body)
        n = self.req.copy_file_range(
            self._pyfh(fh_in), off_in, self._pyfh(fh_out), off_out, min(length, 1 << 30), flags
        )
        return struct.pack("<Q", n) if h.opcode == Op.COPY_FILE_RANGE_64 else struct.pack("<II", n, 0)

    def _ioctl(self, h, body):
        fh, flags, cmd, _, in_size, out_size = struct.unpack_from("<QIIQII", body)
        if flags & (1 << 4):  # FUSE_IOCTL_DIR
            raise OSError(errno.ENOTTY, "no directory ioctls")
        if cmd not in IOCTLS:  # e.g. isatty's TCGETS on every Python open(): no handle needed (nor adopted)
            raise OSError(errno.ENOTTY, "inappropriate ioctl")
        result, out = self.req.ioctl(self._pyfh(fh), cmd, body[32 : 32 + in_size], out_size)
        return struct.pack("<iIII", result, 0, 0, 0) + out
