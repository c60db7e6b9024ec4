"""Handlers of the requests on names and attributes: lookup and forget,
getattr/statx/setattr/access/readlink, and creating, removing, renaming and linking
names (an open file's creation is in :mod:`~mergerfs.kernel.files`)."""

from __future__ import annotations

import errno
import os
import struct
import time

from mergerfs import _kernel
from mergerfs.kernel.base import Base
from mergerfs.kernel.protocol import (
    ATTR_OUT,
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
    GETATTR_FH,
    SETATTR_IN,
    STATX_IN,
    STATX_OUT,
    Op,
    cstr,
    rdev_decode,
)
from mergerfs.ops.getattr import STATX_BASIC_STATS, STATX_CARRIED, Statx

#: statx attributes that describe the branch's mount, not the pool's: STATX_ATTR_MOUNT_ROOT, STATX_ATTR_DAX.
_BRANCH_ONLY = 0x2000 | 0x200000


def _attr_statx(attr_out: bytes) -> Statx:
    """A fuse_attr_out (the compiled open directory's fstat) as a statx answer without birth time."""
    (_, _, ino, size, blocks, atime, mtime, ctime, atns, mtns, ctns, mode, nlink, uid, gid, rdev, blksize, _) = (
        ATTR_OUT.unpack(attr_out)
    )
    dev = rdev_decode(rdev)
    ns = 1_000_000_000
    head = (STATX_BASIC_STATS, blksize, 0, nlink, uid, gid, mode, ino, size, blocks, 0)
    times = (atime * ns + atns, 0, ctime * ns + ctns, mtime * ns + mtns)  # no btime
    return Statx(*head, *times, os.major(dev), os.minor(dev), 0, 0)


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
            return self._attr_out(h.nodeid, self.req.getattr(h.nodeid, self._pyfh(fh) if flags & GETATTR_FH else None))
        except FileNotFoundError:
            return self._on_open_dir(h, body)

    def _statx(self, h, body):
        """FUSE_STATX: what GETATTR would say plus the birth time. The kernel asks
        only when a statx(2) wants STATX_BTIME; an ENOSYS here would make it stop
        asking for the rest of the mount."""
        flags, _, fh, sx_flags, _ = STATX_IN.unpack_from(body)
        try:
            sx = self.req.statx(h.nodeid, self._pyfh(fh) if flags & GETATTR_FH else None, sx_flags)
        except FileNotFoundError:  # a removed directory a compiled handle holds open: its fstat
            sx = _attr_statx(self._on_open_dir(h, bytes(16), Op.GETATTR))
        return self._statx_out(h.nodeid, sx)

    def _statx_out(self, ino: int, sx: Statx) -> bytes:
        """fuse_statx_out. The inode number is the nodeid, as GETATTR reports it;
        the mask claims only what FUSE carries (the basic stats, btime);
        st_dev is the kernel's own (the pool's), so dev is left 0."""
        times: list[int] = []
        for ns in (sx.atime_ns, sx.btime_ns, sx.ctime_ns, sx.mtime_ns):
            times.extend(divmod(ns, 1_000_000_000))
        return STATX_OUT.pack(
            self.req.timeouts()[1],
            0,
            0,
            sx.mask & STATX_CARRIED,
            sx.blksize,
            sx.attributes & ~_BRANCH_ONLY,
            sx.nlink,
            sx.uid & 0xFFFFFFFF,
            sx.gid & 0xFFFFFFFF,
            sx.mode & 0xFFFF,
            ino,
            sx.size,
            sx.blocks,
            sx.attributes_mask & ~_BRANCH_ONLY,
            *times,
            sx.rdev_major,
            sx.rdev_minor,
            0,
            0,
        )

    def _on_open_dir(self, h, body, opcode: int | None = None):
        """A directory removed while the compiled session holds it open: its
        handle's fd answers (as a Python DirHandle's would); else ENOENT.
        ``opcode``: the request to answer as (GETATTR for a STATX)."""
        assert self.session is not None
        reply = _kernel.dir_attr(self.session, opcode or h.opcode, h.nodeid, body, self.req.timeouts()[1])
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
