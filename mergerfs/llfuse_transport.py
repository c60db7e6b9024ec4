"""The llfuse transport (``fuse-binding=llfuse``): libfuse 2 through llfuse, a
thin adapter onto :class:`mergerfs.requests.Requests`. Only this module and
nothing else imports llfuse.

Threading: llfuse calls every handler under its global lock; each handler here
releases that lock for the whole request (so requests run concurrently and a
slow disk blocks only its own request) after switching the worker thread to
the caller's identity. An unexpected exception is a bug: logged with its
traceback, answered EIO, and the mount stays up. libfuse 2's limits (128 KiB
requests, no direct_io per open, no inode for statfs, no fallocate/lseek/statx/...)
are listed in docs/DIFFERENCES.md.
"""

from __future__ import annotations

import errno
import functools
import logging
import time

import llfuse

from mergerfs import ugid
from mergerfs.requests import Requests

log = logging.getLogger("mergerfs")


def _handler(fn):
    """Release llfuse's lock, act as the caller, translate errors."""

    @functools.wraps(fn)
    def wrapper(self, *args):
        ctx = args[-1] if args and isinstance(args[-1], llfuse.RequestContext) else None
        try:
            with llfuse.lock_released:
                if ctx is not None:
                    ugid.switch(ctx.uid, ctx.gid, ctx.pid)
                return fn(self, *args)
        except OSError as e:
            raise llfuse.FUSEError(e.errno or errno.EIO) from None
        except llfuse.FUSEError:
            raise
        except Exception:
            log.exception("unexpected error in %s%r", fn.__name__, args[:-1] if ctx else args)
            raise llfuse.FUSEError(errno.EIO) from None

    return wrapper


class _Notifier:
    @staticmethod
    def inval_inode(ino: int) -> None:
        llfuse.invalidate_inode(ino)


class Operations(llfuse.Operations):
    def __init__(self, fs) -> None:
        super().__init__()
        self.req = Requests(fs, _Notifier(), cache_by_notify=True)

    def _attr(self, st, ino: int, cacheable: bool = True) -> llfuse.EntryAttributes:
        entry, attr, _ = self.req.timeouts()
        e = llfuse.EntryAttributes()
        e.st_ino = ino
        e.generation = 0
        e.entry_timeout = entry if cacheable else 0
        e.attr_timeout = attr if cacheable else 0
        for k in (
            "st_mode",
            "st_nlink",
            "st_uid",
            "st_gid",
            "st_rdev",
            "st_size",
            "st_blksize",
            "st_blocks",
            "st_atime_ns",
            "st_mtime_ns",
            "st_ctime_ns",
        ):
            setattr(e, k, getattr(st, k))
        return e

    def _entry(self, ino_st) -> llfuse.EntryAttributes:
        return self._attr(ino_st[1], ino_st[0])

    @_handler
    def lookup(self, parent_inode, name, ctx):
        try:
            return self._entry(self.req.lookup(parent_inode, name))
        except OSError as e:
            neg = self.req.timeouts()[2]
            if e.errno == errno.ENOENT and neg:
                entry = llfuse.EntryAttributes()
                entry.st_ino = 0
                entry.entry_timeout = neg
                return entry
            raise

    def forget(self, inode_list):
        for ino, n in inode_list:
            self.req.forget(ino, n)

    @_handler
    def getattr(self, inode, ctx):
        return self._attr(self.req.getattr(inode), inode)

    @_handler
    def setattr(self, inode, attr, fields, fh, ctx):
        atime = attr.st_atime_ns if fields.update_atime else None
        mtime = attr.st_mtime_ns if fields.update_mtime else None
        # llfuse turns UTIME_NOW into the current clock reading: both times equal
        # and within a second of now may be that (see ops/attrs.py, _utimens, for why it matters).
        hint = atime is not None and atime == mtime and abs(time.time_ns() - atime) < 1_000_000_000
        st = self.req.setattr(
            inode,
            fh,
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            size=attr.st_size if fields.update_size else None,
            atime=atime,
            mtime=mtime,
            now_hint=hint,
        )
        return self._attr(st, inode)

    @_handler
    def readlink(self, inode, ctx):
        return self.req.readlink(inode)

    @_handler
    def access(self, inode, mode, ctx):
        self.req.access(inode, mode)
        return True

    @_handler
    def mknod(self, parent_inode, name, mode, rdev, ctx):
        return self._entry(self.req.mknod(parent_inode, name, mode, rdev))

    @_handler
    def mkdir(self, parent_inode, name, mode, ctx):
        return self._entry(self.req.mkdir(parent_inode, name, mode))

    @_handler
    def symlink(self, parent_inode, name, target, ctx):
        return self._entry(self.req.symlink(parent_inode, name, target))

    @_handler
    def create(self, parent_inode, name, mode, flags, ctx):
        fh, ino, st, _ = self.req.create(parent_inode, name, mode, flags, ctx.pid)
        return fh, self._attr(st, ino)

    @_handler
    def unlink(self, parent_inode, name, ctx):
        self.req.unlink(parent_inode, name)

    @_handler
    def rmdir(self, parent_inode, name, ctx):
        self.req.rmdir(parent_inode, name)

    @_handler
    def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, ctx):
        self.req.rename(parent_inode_old, name_old, parent_inode_new, name_new)

    @_handler
    def link(self, inode, new_parent_inode, new_name, ctx):
        ino, st, cacheable = self.req.link(inode, new_parent_inode, new_name)
        return self._attr(st, ino, cacheable)

    @_handler
    def open(self, inode, flags, ctx):
        return self.req.open(inode, flags, ctx.pid)[0]

    @_handler
    def read(self, fh, off, size):
        return self.req.read(fh, off, size)

    @_handler
    def write(self, fh, off, buf):
        return self.req.write(fh, off, buf)

    @_handler
    def flush(self, fh):
        self.req.flush(fh)

    @_handler
    def release(self, fh):
        self.req.release(fh)

    @_handler
    def fsync(self, fh, datasync):
        self.req.fsync(fh, bool(datasync))

    @_handler
    def opendir(self, inode, ctx):
        return self.req.opendir(inode)

    @_handler
    def _entries(self, fh, off):
        return self.req.readdir(fh, off)

    def readdir(self, fh, off):
        entries = self._entries(fh, off)
        # llfuse copies each entry into the reply before asking for the next,
        # so one attributes object serves them all (20k allocations saved on a 20k listing)
        e = llfuse.EntryAttributes()
        for i in range(off, len(entries)):
            name, dtype, e.st_ino = entries[i]
            e.st_mode = dtype << 12
            yield name, e, i + 1

    @_handler
    def releasedir(self, fh):
        self.req.releasedir(fh)

    @_handler
    def fsyncdir(self, fh, datasync):
        self.req.fsyncdir(fh, bool(datasync))

    @_handler
    def statfs(self, ctx):
        out = llfuse.StatvfsData()
        for k, v in self.req.statfs(llfuse.ROOT_INODE).items():  # libfuse 2 gives no inode
            setattr(out, k, v)
        return out

    @_handler
    def getxattr(self, inode, name, ctx=None):  # llfuse omits ctx for XATTR_CREATE checks
        return self.req.getxattr(inode, name)

    @_handler
    def setxattr(self, inode, name, value, ctx):
        self.req.setxattr(inode, name, value)

    @_handler
    def listxattr(self, inode, ctx):
        return self.req.listxattr(inode)

    @_handler
    def removexattr(self, inode, name, ctx):
        self.req.removexattr(inode, name)


class Transport:
    """Mount, serve until unmounted, close: the shape lifecycle.py drives."""

    def __init__(self, fs) -> None:
        self.ops = Operations(fs)
        self.req = self.ops.req

    def mount(self, mnt: str, opts: set[str]) -> None:
        # The reference mounts over non-empty directories (a NAS's empty pool dir
        # often has a stray file); libfuse 2 refuses unless told.
        llfuse.init(self.ops, mnt, opts | {"nonempty", "big_writes"})

    def serve(self, workers: int) -> None:
        llfuse.main(workers=workers, handle_signals=False)

    def close(self) -> None:
        llfuse.close(unmount=True)
