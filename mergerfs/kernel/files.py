"""Handlers of the requests on open files.

An open file is registered with the compiled loop (:mod:`mergerfs._kernel`),
which answers its READ/WRITE/FLUSH without the GIL; the handlers here see
those only when the loop hands them back (e.g. ``nullrw``). Passthrough lets
the kernel do the I/O on the branch file itself: a backing id per inode,
shared by all its passthrough opens; registering an open decides it and
releasing one gives it up, in C for every open (``_files.pxi``), whoever made
it."""

from __future__ import annotations

import errno
import os
import struct

from mergerfs.kernel.base import Base
from mergerfs.kernel.protocol import (
    FOPEN_DIRECT_IO,
    FOPEN_KEEP_CACHE,
    FOPEN_NOFLUSH,
    FOPEN_PARALLEL_DIRECT_WRITES,
    OPEN_KILL_SUIDGID,
    WRITE_KILL_SUIDGID,
    Op,
    cstr,
)
from mergerfs.ops.io import IOCTLS
from mergerfs.requests import DIRECT, KEEP


def open_flags(cfg, cache: int, rdonly: bool) -> int:
    """An open reply's FOPEN flags for the open's cache decision (DIRECT, KEEP or
    DROP) and access mode, before passthrough (decided in C per open). The
    compiled OPEN gets its flags from here too (transport._c_opens)."""
    if cache == DIRECT:
        oflags = FOPEN_DIRECT_IO | (FOPEN_PARALLEL_DIRECT_WRITES if cfg["parallel-direct-writes"] else 0)
    else:
        oflags = FOPEN_KEEP_CACHE if cache == KEEP else 0
    flush = cfg["flush-on-close"]
    if flush == "never" or (flush == "opened-for-write" and rdonly):
        oflags |= FOPEN_NOFLUSH
    return oflags


class FileHandlers(Base):
    def _opened(self, nodeid: int, pyfh: int, cache: int, flags: int, hand_over: bool = False) -> bytes:
        """Register an open file with the compiled loop, which decides its
        passthrough; the open reply. ``hand_over``: the compiled loop owns it
        from now on if the config is plain (its RELEASE is answered in C; see
        _hand_over)."""
        assert self.session is not None
        cfg = self.fs.snap.cfg
        fd = -1 if cfg["nullrw"] else self.req.fd(pyfh)
        oflags = open_flags(cfg, cache, flags & os.O_ACCMODE == os.O_RDONLY)
        if hand_over and fd >= 0:
            out = self._hand_over(nodeid, pyfh, oflags)
            if out:
                return out
        try:
            return self.session.add(pyfh, fd, nodeid, flags, oflags)
        except OSError:
            self.req.release(pyfh)
            raise

    def _hand_over(self, nodeid: int, pyfh: int, oflags: int) -> bytes:
        """Make Python's open ``pyfh`` a C-owned one, as if the compiled OPEN had
        made it (passthrough included): the open reply, or b"" if the C path
        cannot take it now (the config is not plain; it stays Python's). Under
        ``_adopt_lock``: no adoption sees the slot before Python has let the
        handle go."""
        assert self.session is not None
        h = self.req.handle(pyfh)
        with self._adopt_lock:
            fh, out = self.session.add_c(h.fd, nodeid, os.fsencode(h.branch.path), h.flags, oflags)
            if fh and not self.req.disown(pyfh):  # borrowed meanwhile: Python's after all
                self.session.claim(fh)
                self.session.adopted(fh, pyfh)
        return out

    def _open(self, h, body):
        flags, open_flags = struct.unpack_from("<II", body)
        pyfh, cache = self.req.open(h.nodeid, flags, h.pid)
        if open_flags & OPEN_KILL_SUIDGID:  # an O_TRUNC open by a user without CAP_FSETID
            self.req.kill_priv(pyfh)
        return self._opened(h.nodeid, pyfh, cache, flags)

    def _create(self, h, body):
        flags, mode, _, _ = struct.unpack_from("<IIII", body)
        pyfh, ino, st, cache = self.req.create(h.nodeid, cstr(body, 16)[0], mode, flags, h.pid)
        # a create policy the compiled CREATE does not pick by (_create.pxi);
        # the open file then is as any other
        return self._entry_out(ino, st) + self._opened(ino, pyfh, cache, flags, hand_over=True)

    def _tmpfile(self, h, body):
        # fuse_create_in as CREATE's; the name after it is the kernel's placeholder ("/")
        flags, mode, _, _ = struct.unpack_from("<IIII", body)
        pyfh, ino, st, cache = self.req.tmpfile(h.nodeid, mode, flags, h.pid)
        # no name the compiled paths could search for: its opens stay Python's
        return self._entry_out(ino, st) + self._opened(ino, pyfh, cache, flags)

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
            pyfh = self.session.remove(fh)  # its passthrough share released with it
        if not pyfh:
            raise OSError(errno.EBADF, "unknown handle")
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
