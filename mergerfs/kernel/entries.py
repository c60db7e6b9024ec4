"""Handlers of the requests on names and attributes: lookup and forget,
getattr/setattr/access/readlink, and creating, removing, renaming and linking
names (an open file's creation is in :mod:`~mergerfs.kernel.files`)."""

from __future__ import annotations

import errno
import struct
import time

from mergerfs import _kernel
from mergerfs.kernel.base import Base
from mergerfs.kernel.protocol import (
    ENTRY_OUT,
    FATTR_ATIME,
    FATTR_ATIME_NOW,
    FATTR_FH,
    FATTR_GID,
    FATTR_KILL_SUIDGID,
    FATTR_MODE,
    FATTR_MTIME,
    FATTR_MTIME_NOW,
    FATTR_SIZE,
    FATTR_UID,
    SETATTR_IN,
    cstr,
    rdev_decode,
)


class EntryHandlers(Base):
    def _lookup(self, h, body):
        try:
            return self._entry_out(*self.req.lookup(h.nodeid, body[:-1]))
        except OSError as e:
            neg = self.req.timeouts()[2]
            if e.errno == errno.ENOENT and neg:
                return ENTRY_OUT.pack(0, 0, neg, 0, 0, 0)
            raise

    def _forget(self, h, body):
        self.req.forget(h.nodeid, struct.unpack_from("<Q", body)[0])

    def _batch_forget(self, h, body):
        (count,) = struct.unpack_from("<I", body)
        for i in range(count):
            ino, n = struct.unpack_from("<QQ", body, 8 + 16 * i)
            self.req.forget(ino, n)

    def _getattr(self, h, body):
        flags, _, fh = struct.unpack_from("<IIQ", body)
        try:
            return self._attr_out(h.nodeid, self.req.getattr(h.nodeid, self._pyfh(fh) if flags & 1 else None))
        except FileNotFoundError:
            return self._on_open_dir(h, body)

    def _on_open_dir(self, h, body):
        """A directory removed while the compiled session holds it open: its
        handle's fd answers (as a Python DirHandle's would); else ENOENT."""
        assert self.session is not None
        reply = _kernel.dir_attr(self.session, h.opcode, h.nodeid, body, self.req.timeouts()[1])
        if reply is None:
            raise OSError(errno.ENOENT, "no such file or directory")
        return reply

    def _setattr(self, h, body):
        try:
            return self._setattr_path(h, body)
        except FileNotFoundError:
            return self._on_open_dir(h, body)

    def _setattr_path(self, h, body):
        (valid, _, fh, size, _, atime, mtime, _, atimensec, mtimensec, _, mode, _, uid, gid, _) = (
            SETATTR_IN.unpack_from(body)
        )
        now = time.time_ns()
        at = now if valid & FATTR_ATIME_NOW else atime * 1_000_000_000 + atimensec
        mt = now if valid & FATTR_MTIME_NOW else mtime * 1_000_000_000 + mtimensec
        st = self.req.setattr(
            h.nodeid,
            self._pyfh(fh) if valid & FATTR_FH else None,
            mode=mode if valid & FATTR_MODE else None,
            uid=uid if valid & FATTR_UID else None,
            gid=gid if valid & FATTR_GID else None,
            size=size if valid & FATTR_SIZE else None,
            atime=at if valid & FATTR_ATIME else None,
            mtime=mt if valid & FATTR_MTIME else None,
            now_hint=bool(valid & FATTR_ATIME_NOW and valid & FATTR_MTIME_NOW),
            kill_priv=bool(valid & FATTR_KILL_SUIDGID),
        )
        return self._attr_out(h.nodeid, st)

    def _access(self, h, body):
        self.req.access(h.nodeid, struct.unpack_from("<I", body)[0])

    def _readlink(self, h, body):
        return self.req.readlink(h.nodeid)

    def _symlink(self, h, body):
        name, i = cstr(body)
        target, _ = cstr(body, i)
        return self._entry_out(*self.req.symlink(h.nodeid, name, target))

    def _mknod(self, h, body):
        mode, rdev = struct.unpack_from("<II", body)
        name, _ = cstr(body, 16 if self.minor >= 12 else 8)
        return self._entry_out(*self.req.mknod(h.nodeid, name, mode, rdev_decode(rdev)))

    def _mkdir(self, h, body):
        mode, _ = struct.unpack_from("<II", body)
        return self._entry_out(*self.req.mkdir(h.nodeid, cstr(body, 8)[0], mode))

    def _unlink(self, h, body):
        self.req.unlink(h.nodeid, body[:-1])

    def _rmdir(self, h, body):
        self.req.rmdir(h.nodeid, body[:-1])

    def _rename(self, h, body):
        (newdir,) = struct.unpack_from("<Q", body)
        old, i = cstr(body, 8)
        new, _ = cstr(body, i)
        self.req.rename(h.nodeid, old, newdir, new)

    def _rename2(self, h, body):
        newdir, flags = struct.unpack_from("<QI", body)
        old, i = cstr(body, 16)
        new, _ = cstr(body, i)
        self.req.rename(h.nodeid, old, newdir, new, flags)

    def _link(self, h, body):
        (oldnodeid,) = struct.unpack_from("<Q", body)
        ino, st, cacheable = self.req.link(oldnodeid, h.nodeid, cstr(body, 8)[0])
        return self._entry_out(ino, st, cacheable)
