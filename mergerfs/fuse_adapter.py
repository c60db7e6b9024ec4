"""The llfuse protocol adapter: the only module that imports llfuse.

Nodeids and file handles in, relpaths and :class:`~mergerfs.fs.Handle` objects
out to :mod:`mergerfs.fs`; ``OSError`` back as ``FUSEError``. Threading: llfuse
calls every handler under its global lock; each handler here releases that
lock for the whole operation (so requests run concurrently and a slow disk
blocks only its own request) after switching the worker thread to the
caller's identity. The inode and handle tables have their own locks.
An unexpected exception is a bug: logged with its traceback, answered EIO,
and the mount stays up.
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import stat as S
import threading
import time
from contextlib import contextmanager

import llfuse

from mergerfs import control as control_mod
from mergerfs import fs as fs_mod
from mergerfs import inodes, ugid
from mergerfs.errors import oserror

log = logging.getLogger("mergerfs")

#: Nodeid of ``/.mergerfs``; inodes.calc never yields it for a real entry in practice
#: (a 1-in-2**64 hash collision), and the table is checked before use.
CONTROL_INO = 0xFFFF_FFFF_FFFF_FFF0
#: cache.files modes whose page cache must not survive a new open.
_DROP_AT_OPEN = frozenset({"off", "partial", "libfuse", "per-process"})


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


def _times(attr, fields) -> tuple:
    """(atime, mtime, now_hint) for fs.utimens; a time is ns or None (omit).

    llfuse turns UTIME_NOW into the current clock reading: both times equal and
    within a second of now may be that (see fs._utimens for why it matters).
    """
    atime = attr.st_atime_ns if fields.update_atime else None
    mtime = attr.st_mtime_ns if fields.update_mtime else None
    hint = atime is not None and atime == mtime and abs(time.time_ns() - atime) < 1_000_000_000
    return atime, mtime, hint


def _forced_attrs(fuse_options: list[str]) -> tuple | None:
    """``uid=``, ``gid=``, ``umask=`` mount options: reported owner and mode
    overrides (libfuse's high-level options, which llfuse's low level lacks)."""
    opts = dict(o.partition("=")[::2] for o in fuse_options)
    if not any(k in opts for k in ("uid", "gid", "umask")):
        return None
    uid = int(opts["uid"]) if "uid" in opts else None
    gid = int(opts["gid"]) if "gid" in opts else None
    umask = int(opts["umask"], 8) if "umask" in opts else None
    return uid, gid, umask


class Operations(llfuse.Operations):
    def __init__(self, fs: fs_mod.FileSystem) -> None:
        super().__init__()
        self.fs = fs
        self.table = inodes.InodeTable()
        self.control = control_mod.Control(fs, self._invalidate_all)
        self._fh_lock = threading.Lock()
        self._force = _forced_attrs(fs.snap.cfg.fuse_options)
        self._fh_ids = itertools.count(1)
        # fh -> (nodeid, Handle or DirHandle): one numbering for files and dirs
        self._files: dict[int, tuple[int, fs_mod.Handle | fs_mod.DirHandle]] = {}
        # fh -> borrowers: getattr/setattr reach an inode's handle without the
        # kernel pinning it, so its release defers the close to the last borrower
        self._borrowed: dict[int, int] = {}
        self._closing: dict[int, fs_mod.Handle | fs_mod.DirHandle] = {}

    # ------------------------------------------------------------ helpers
    def _rel(self, ino: int) -> str:
        return self.table.relpath(ino)

    def _child(self, parent: int, name: bytes) -> str:
        return fs_mod.join(self._rel(parent), os.fsdecode(name))

    def _attr(self, st: os.stat_result, ino: int) -> llfuse.EntryAttributes:
        cfg = self.fs.snap.cfg
        e = llfuse.EntryAttributes()
        e.st_ino = ino
        e.generation = 0
        e.entry_timeout = cfg["cache.entry"]
        e.attr_timeout = cfg["cache.attr"]
        e.st_mode = st.st_mode
        e.st_nlink = st.st_nlink
        e.st_uid = st.st_uid
        e.st_gid = st.st_gid
        if self._force:
            uid, gid, umask = self._force
            if uid is not None:
                e.st_uid = uid
            if gid is not None:
                e.st_gid = gid
            if umask is not None:  # as libfuse: every entry gets 0777 & ~umask
                e.st_mode = S.S_IFMT(st.st_mode) | (0o777 & ~umask)
        e.st_rdev = st.st_rdev
        e.st_size = st.st_size
        e.st_blksize = st.st_blksize
        e.st_blocks = st.st_blocks
        e.st_atime_ns = st.st_atime_ns
        e.st_mtime_ns = st.st_mtime_ns
        e.st_ctime_ns = st.st_ctime_ns
        return e

    def _entry(self, relpath: str, st: os.stat_result) -> llfuse.EntryAttributes:
        """Reply to a lookup-like request: count the kernel's reference."""
        ino, replaced = self.table.remember(self.fs.inode_of(relpath, st), relpath,
                                            inodes.identity(st.st_dev, st.st_ino), S.S_ISDIR(st.st_mode))
        if replaced:
            llfuse.invalidate_inode(ino)
        self._saw(ino, st)
        return self._attr(st, ino)

    def _saw(self, ino: int, st: os.stat_result, ours: bool = False) -> None:
        """Record the (size, mtime) the kernel now has for a regular file; if it
        changed behind the kernel's back, drop the kernel's cached pages."""
        if not S.S_ISREG(st.st_mode):
            return
        node = self.table.get(ino)
        if node is None:
            return
        current = inodes.stamp(st)
        if not ours and node.seen is not None and node.seen != current:
            llfuse.invalidate_inode(ino)
        node.seen = current

    def _lookup_entry(self, relpath: str) -> llfuse.EntryAttributes:
        return self._entry(relpath, self.fs.getattr(relpath))

    def _control_attr(self) -> llfuse.EntryAttributes:
        return self._attr(fs_mod.synthetic_stat(S.S_IFREG | 0o444), CONTROL_INO)

    def _invalidate_all(self) -> None:
        for ino in self.table.nodeids():
            if ino != inodes.ROOT:
                llfuse.invalidate_inode(ino)

    def _file(self, fh: int) -> tuple[int, fs_mod.Handle]:
        try:
            return self._files[fh]
        except KeyError:
            raise oserror(errno.EBADF) from None

    @contextmanager
    def _open_handle(self, inode: int):
        """Some open handle of ``inode`` (or None), kept open for the block: a
        RELEASE may race with a GETATTR that was not sent through that fh."""
        with self._fh_lock:
            fh = self.table.any_fh(inode)
            h = self._files.get(fh, (0, None))[1] if fh is not None else None
            if h is not None:
                self._borrowed[fh] = self._borrowed.get(fh, 0) + 1
        try:
            yield h
        finally:
            if h is not None:
                with self._fh_lock:
                    self._borrowed[fh] -= 1
                    last = self._borrowed[fh] == 0
                    if last:
                        del self._borrowed[fh]
                    late = self._closing.pop(fh, None) if last else None
                if late is not None:
                    self._close(late)

    def _forget_fh(self, fh: int):
        """Unregister fh; the handle to close now, or None if a borrower will."""
        with self._fh_lock:
            ino, h = self._files.pop(fh)
            if fh in self._borrowed:
                self._closing[fh] = h
                h = None
        self.table.drop_fh(ino, fh)
        return ino, h

    def _close(self, h) -> None:
        if isinstance(h, fs_mod.DirHandle):
            self.fs.releasedir(h)
        else:
            self.fs.release(h)

    # ------------------------------------------------------------- lookup
    @_handler
    def lookup(self, parent_inode, name, ctx):
        if parent_inode == llfuse.ROOT_INODE and name == control_mod.NAME.encode():
            return self._control_attr()
        if name == b".":
            relpath = self._rel(parent_inode)
        elif name == b"..":
            relpath = fs_mod.dirname(self._rel(parent_inode))
        else:
            relpath = self._child(parent_inode, name)
        try:
            return self._lookup_entry(relpath)
        except OSError as e:
            neg = self.fs.snap.cfg["cache.negative-entry"]
            if e.errno == errno.ENOENT and neg:
                entry = llfuse.EntryAttributes()
                entry.st_ino = 0
                entry.entry_timeout = neg
                return entry
            raise

    def forget(self, inode_list):
        for ino, n in inode_list:
            self.table.forget(ino, n)

    @_handler
    def getattr(self, inode, ctx):
        if inode == CONTROL_INO:
            return self._control_attr()
        node = self.table.node(inode)
        if node.fhs:
            with self._open_handle(inode) as h:
                # An open file is the kernel's inode even if its path was unlinked
                # or renamed over: its fd is the truth.
                st = self.fs.fgetattr(h) if h is not None else self.fs.getattr(node.path)
        else:  # the common case, without the borrowing (a read of fhs is atomic)
            st = self.fs.getattr(node.path)
        self._saw(inode, st)
        return self._attr(st, inode)

    @_handler
    def setattr(self, inode, attr, fields, fh, ctx):
        if inode == CONTROL_INO:
            raise oserror(errno.EPERM)
        if fh is not None:
            st = self._setattr_on(self._file(fh)[1], self._FD_OPS, attr, fields)
        else:
            with self._open_handle(inode) as h:
                if h is not None and self._path_moved_on(inode, h):
                    st = self._setattr_on(h, self._FD_OPS, attr, fields)
                else:
                    st = self._setattr_on(self._rel(inode), self._PATH_OPS, attr, fields)
        self._saw(inode, st, ours=True)
        return self._attr(st, inode)

    #: fs methods for setattr on an open handle and on a path, in the same order.
    _FD_OPS = ("fchmod", "fchown", "ftruncate", "futimens", "fgetattr")
    _PATH_OPS = ("chmod", "chown", "truncate", "utimens", "getattr")

    def _setattr_on(self, target, ops, attr, fields) -> os.stat_result:
        chmod, chown, truncate, utimens, stat = (getattr(self.fs, n) for n in ops)
        atime, mtime, now_hint = _times(attr, fields)
        if fields.update_mode:
            mode = S.S_IMODE(attr.st_mode)
            try:
                chmod(target, mode)
            except PermissionError:
                if not self._drops_setid_only(stat(target), mode):
                    raise
                # The kernel clearing S_ISUID/S_ISGID because a non-owner writes
                # or truncates (it already checked the caller may do that): native
                # does it regardless of ownership, so do it as the owner would.
                with ugid.as_root():
                    chmod(target, mode)
        if fields.update_uid or fields.update_gid:
            chown(target, attr.st_uid if fields.update_uid else -1,
                  attr.st_gid if fields.update_gid else -1)
        if fields.update_size:
            truncate(target, attr.st_size)
        if atime is not None or mtime is not None:
            utimens(target, atime, mtime, now_hint)
        return stat(target)

    def _drops_setid_only(self, st: os.stat_result, mode: int) -> bool:
        """``mode`` is the current mode minus some setuid/setgid bits, and the
        kernel checks permissions (so it, not a user's chmod, asked for it)."""
        old = S.S_IMODE(st.st_mode)
        setid = S.S_ISUID | S.S_ISGID
        return (bool(self.fs.snap.cfg["kernel-permissions-check"]) and mode != old
                and mode & ~setid == old & ~setid and not mode & setid & ~old)

    def _path_moved_on(self, inode: int, h) -> bool:
        """True when the open file's path no longer names it (unlinked, renamed
        over): metadata calls then go to the fd, not to whatever the path is now."""
        mine = self.fs.fgetattr(h)
        try:
            there = self.fs.getattr(self._rel(inode))
        except OSError:
            return True
        return (there.st_dev, there.st_ino) != (mine.st_dev, mine.st_ino)

    @_handler
    def readlink(self, inode, ctx):
        return os.fsencode(self.fs.readlink(self._rel(inode)))

    @_handler
    def access(self, inode, mode, ctx):
        if inode == CONTROL_INO:
            return True
        self.fs.access(self._rel(inode), mode)
        return True

    # ------------------------------------------------------------- create
    @_handler
    def mknod(self, parent_inode, name, mode, rdev, ctx):
        rel = self._child(parent_inode, name)
        self.fs.mknod(rel, mode, rdev)
        return self._lookup_entry(rel)

    @_handler
    def mkdir(self, parent_inode, name, mode, ctx):
        rel = self._child(parent_inode, name)
        self.fs.mkdir(rel, mode)
        return self._lookup_entry(rel)

    @_handler
    def symlink(self, parent_inode, name, target, ctx):
        rel = self._child(parent_inode, name)
        self.fs.symlink(os.fsdecode(target), rel)
        return self._lookup_entry(rel)

    @_handler
    def create(self, parent_inode, name, mode, flags, ctx):
        rel = self._child(parent_inode, name)
        h = self.fs.create(rel, flags, mode)
        try:
            entry = self._entry(rel, self.fs.fgetattr(h))
        except BaseException:
            self.fs.release(h)
            raise
        return self._new_fh(entry.st_ino, h), entry

    def _new_fh(self, ino: int, h) -> int:
        with self._fh_lock:
            fh = next(self._fh_ids)
            self._files[fh] = (ino, h)
        self.table.add_fh(ino, fh)
        return fh

    # ------------------------------------------------------------- action
    @_handler
    def unlink(self, parent_inode, name, ctx):
        rel = self._child(parent_inode, name)
        self.fs.unlink(rel)
        self.table.unlinked(rel)

    @_handler
    def rmdir(self, parent_inode, name, ctx):
        rel = self._child(parent_inode, name)
        self.fs.rmdir(rel)
        self.table.unlinked(rel)

    @_handler
    def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, ctx):
        old = self._child(parent_inode_old, name_old)
        new = self._child(parent_inode_new, name_new)
        if control_mod.NAME in (old[1:], new[1:]):
            raise oserror(errno.EPERM)
        self.fs.rename(old, new)
        self.table.renamed(old, new)

    @_handler
    def link(self, inode, new_parent_inode, new_name, ctx):
        new = self._child(new_parent_inode, new_name)
        old = self._rel(inode)
        self.fs.link(old, new)
        st = self.fs.getattr(new)
        if not S.S_ISLNK(st.st_mode) or S.S_ISLNK(self.fs.getattr(old).st_mode):
            return self._entry(new, st)
        # link-exdev made a symlink: the kernel insists a link reply has the
        # source's type (else EIO), so answer with the source, uncached; the
        # next lookup of the new name finds the symlink.
        entry = self._lookup_entry(old)
        entry.entry_timeout = 0
        entry.attr_timeout = 0
        return entry

    # ------------------------------------------------------------- files
    @_handler
    def open(self, inode, flags, ctx):
        if inode == CONTROL_INO:
            raise oserror(errno.EACCES) if flags & os.O_ACCMODE else oserror(errno.EOPNOTSUPP)
        h = self.fs.open(self._rel(inode), flags)
        try:
            self._freshen(inode, h)
        except BaseException:
            self.fs.release(h)
            raise
        return self._new_fh(inode, h)

    def _freshen(self, inode: int, h: fs_mod.Handle) -> None:
        """Drop the kernel's cached pages of this file at open when ``cache.files``
        says so, or when the branch file changed behind the kernel's back."""
        st = self.fs.fgetattr(h)
        node = self.table.node(inode)
        current = inodes.stamp(st)
        if current != node.seen or self.fs.snap.cfg["cache.files"] in _DROP_AT_OPEN:
            llfuse.invalidate_inode(inode)
        node.seen = current

    @_handler
    def read(self, fh, off, size):
        return self.fs.read(self._file(fh)[1], off, size)

    @_handler
    def write(self, fh, off, buf):
        ino, h = self._file(fh)
        n = self.fs.write(h, off, buf)
        # The kernel saw this change (it sent it): keep its cache, track the new state.
        self._saw(ino, self.fs.fgetattr(h), ours=True)
        return n

    @_handler
    def flush(self, fh):
        self.fs.flush(self._file(fh)[1])

    @_handler
    def release(self, fh):
        ino, h = self._forget_fh(fh)
        if self.fs.snap.cfg["cache.files"] == "off":
            llfuse.invalidate_inode(ino)
        if h is not None:
            self._close(h)

    @_handler
    def fsync(self, fh, datasync):
        self.fs.fsync(self._file(fh)[1], bool(datasync))

    # ------------------------------------------------------------- dirs
    @_handler
    def opendir(self, inode, ctx):
        return self._new_fh(inode, self.fs.opendir(self._rel(inode)))

    @_handler
    def _entries(self, fh, off):
        dh = self._file(fh)[1]
        if dh.entries is None or off == 0:
            dh.entries = self.fs.readdir(dh)
        return dh.entries

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
        h = self._forget_fh(fh)[1]
        if h is not None:
            self._close(h)

    @_handler
    def fsyncdir(self, fh, datasync):
        dh = self._file(fh)[1]
        snap = self.fs.snap
        for b in snap.branches:
            try:
                fd = os.open(b.full(dh.relpath), os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue
            try:
                (os.fdatasync if datasync else os.fsync)(fd)
            finally:
                os.close(fd)

    @_handler
    def statfs(self, ctx):
        out = llfuse.StatvfsData()
        for k, v in self.fs.statfs("/").items():
            setattr(out, k, v)
        return out

    # ------------------------------------------------------------- xattrs
    @_handler
    def getxattr(self, inode, name, ctx=None):  # llfuse omits ctx for XATTR_CREATE checks
        key = os.fsdecode(name)
        if inode == CONTROL_INO:
            return self.control.getxattr(key)
        rel = self._rel(inode)
        if key.startswith(control_mod.PREFIX) and key[len(control_mod.PREFIX):] in control_mod.PATH_KEYS:
            return self.control.path_getxattr(rel, key)
        return self.fs.getxattr(rel, key)

    @_handler
    def setxattr(self, inode, name, value, ctx):
        key = os.fsdecode(name)
        if inode == CONTROL_INO:
            return self.control.setxattr(key, value)
        self.fs.setxattr(self._rel(inode), key, value)

    @_handler
    def listxattr(self, inode, ctx):
        if inode == CONTROL_INO:
            return [os.fsencode(k) for k in self.control.listxattr()]
        return [os.fsencode(k) for k in self.fs.listxattr(self._rel(inode))]

    @_handler
    def removexattr(self, inode, name, ctx):
        if inode == CONTROL_INO:
            raise oserror(errno.ENOTSUP)
        self.fs.removexattr(self._rel(inode), os.fsdecode(name))
