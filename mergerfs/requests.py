"""The binding-neutral request layer between a FUSE transport and :mod:`mergerfs.fs`.

Nodeids and file handles in, relpaths and :class:`~mergerfs.fs.Handle` objects
out to the filesystem logic; ``os.stat_result`` and plain values back, and
``OSError`` for the transport to turn into an error reply. Cache decisions
(what an open does to the kernel's page cache) are made here, once; each
transport only spells them in its own protocol.

Threading: transports call every method concurrently from worker threads that
already carry the caller's identity (:mod:`mergerfs.ugid`). The inode table and
the handle table have their own small locks; nothing here holds a lock while
doing I/O or while notifying the kernel.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat as S
import threading
from contextlib import contextmanager
from typing import Protocol

from mergerfs import control as control_mod
from mergerfs import fs as fs_mod
from mergerfs import inodes, ugid
from mergerfs.errors import oserror

#: Nodeid of ``/.mergerfs``; inodes.calc never yields it for a real entry in practice
#: (a 1-in-2**64 hash collision), and the table is checked before use.
CONTROL_INO = 0xFFFF_FFFF_FFFF_FFF0

#: What an open does to the kernel's cached pages of the file.
KEEP, DROP, DIRECT = 0, 1, 2


class Notifier(Protocol):
    """How a transport tells the kernel that cached data is stale (any thread)."""

    def inval_inode(self, ino: int) -> None: ...


def forced_attrs(fuse_options: list[str]) -> tuple | None:
    """``uid=``, ``gid=``, ``umask=`` mount options: reported owner and mode
    overrides (libfuse's high-level options, which a low-level session lacks)."""
    opts = dict(o.partition("=")[::2] for o in fuse_options)
    if not any(k in opts for k in ("uid", "gid", "umask")):
        return None
    uid = int(opts["uid"]) if "uid" in opts else None
    gid = int(opts["gid"]) if "gid" in opts else None
    umask = int(opts["umask"], 8) if "umask" in opts else None
    return uid, gid, umask


def process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().strip().decode("utf-8", "replace")
    except OSError:
        return ""


class Requests:
    """Every FUSE request, on nodeids and handles.

    ``auto_inval``: the kernel itself drops cached pages when the attributes it
    is given show a new size or mtime (FUSE_AUTO_INVAL_DATA); otherwise this
    layer notifies it when a getattr sees a change made behind its back.
    ``cache_by_notify``: the transport's open reply cannot say what happens to
    the cached pages (llfuse always keeps them), so the decision is carried out
    by notifications: DROP at open, and ``cache.files=off`` approximated by
    dropping the cache at open and release. Otherwise the decision goes into
    the open reply alone (a late notification would drop pages the new open
    already read).
    """

    def __init__(
        self, fs: fs_mod.FileSystem, notifier: Notifier, *, auto_inval: bool = False, cache_by_notify: bool = False
    ) -> None:
        self.fs = fs
        self.notifier = notifier
        self.auto_inval = auto_inval
        self.cache_by_notify = cache_by_notify
        self.table = inodes.InodeTable()
        self.control = control_mod.Control(fs, self._invalidate_all)
        self.force = forced_attrs(fs.snap.cfg.fuse_options)
        self._fh_lock = threading.Lock()
        self._fh_ids = itertools.count(1)
        # fh -> (nodeid, Handle or DirHandle): one numbering for files and dirs
        self._files: dict[int, tuple[int, fs_mod.Handle | fs_mod.DirHandle]] = {}
        # fh -> borrowers: getattr/setattr reach an inode's handle without the
        # kernel pinning it, so its release defers the close to the last borrower
        self._borrowed: dict[int, int] = {}
        self._closing: dict[int, fs_mod.Handle | fs_mod.DirHandle] = {}

    # ------------------------------------------------------------ helpers
    def rel(self, ino: int) -> str:
        return self.table.relpath(ino)

    def child(self, parent: int, name: bytes) -> str:
        return fs_mod.join(self.rel(parent), os.fsdecode(name))

    def timeouts(self) -> tuple[int, int, int]:
        """(entry, attr, negative entry) cache seconds of the current config."""
        cfg = self.fs.snap.cfg
        return cfg["cache.entry"], cfg["cache.attr"], cfg["cache.negative-entry"]

    def attr(self, st: os.stat_result) -> os.stat_result:
        """What the kernel is told: ``st`` with the uid/gid/umask overrides."""
        if self.force is None:
            return st
        uid, gid, umask = self.force
        fields = list(st)
        if umask is not None:  # as libfuse: every entry gets 0777 & ~umask
            fields[0] = S.S_IFMT(st.st_mode) | (0o777 & ~umask)
        if uid is not None:
            fields[4] = uid
        if gid is not None:
            fields[5] = gid
        return os.stat_result(
            fields,
            {
                k: getattr(st, k)
                for k in ("st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_blksize", "st_blocks", "st_rdev")
            },
        )

    def _entry(self, relpath: str, st: os.stat_result) -> tuple[int, os.stat_result]:
        """Reply to a lookup-like request: count the kernel's reference."""
        ino, replaced = self.table.remember(
            self.fs.inode_of(relpath, st), relpath, inodes.identity(st.st_dev, st.st_ino), S.S_ISDIR(st.st_mode)
        )
        if replaced:
            self.notifier.inval_inode(ino)
        self._saw(ino, st)
        return ino, self.attr(st)

    def _saw(self, ino: int, st: os.stat_result, ours: bool = False) -> None:
        """Record the (size, mtime) the kernel now has for a regular file; if it
        changed behind the kernel's back, drop the kernel's cached pages."""
        if not S.S_ISREG(st.st_mode):
            return
        current = inodes.stamp(st)
        try:
            before = self.table.swap_seen(ino, current)
        except OSError:  # forgotten meanwhile
            return
        if not ours and not self.auto_inval and before is not None and before != current:
            self.notifier.inval_inode(ino)

    def _lookup_entry(self, relpath: str) -> tuple[int, os.stat_result]:
        return self._entry(relpath, self.fs.getattr(relpath))

    def control_attr(self) -> os.stat_result:
        return self.attr(fs_mod.synthetic_stat(S.S_IFREG | 0o444))

    def _invalidate_all(self) -> None:
        for ino in self.table.nodeids():
            if ino != inodes.ROOT:
                self.notifier.inval_inode(ino)

    def _file(self, fh: int):
        """(nodeid, Handle or DirHandle) of an open fh; EBADF if none."""
        try:
            return self._files[fh]
        except KeyError:
            raise oserror(errno.EBADF) from None

    def handle(self, fh: int):
        return self._file(fh)[1]

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
            try:
                ino, h = self._files.pop(fh)
            except KeyError:
                raise oserror(errno.EBADF) from None
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

    def _new_fh(self, ino: int, h) -> int:
        with self._fh_lock:
            fh = next(self._fh_ids)
            self._files[fh] = (ino, h)
        self.table.add_fh(ino, fh)
        return fh

    # ------------------------------------------------------------- lookup
    def lookup(self, parent: int, name: bytes) -> tuple[int, os.stat_result]:
        if parent == inodes.ROOT and name == control_mod.NAME.encode():
            return CONTROL_INO, self.control_attr()
        if name == b".":
            relpath = self.rel(parent)
        elif name == b"..":
            relpath = fs_mod.dirname(self.rel(parent))
        else:
            relpath = self.child(parent, name)
        if relpath == "/":  # ".." of a top-level directory (export reconnects): the root's own nodeid
            return inodes.ROOT, self.attr(self.fs.getattr("/"))
        return self._lookup_entry(relpath)

    def forget(self, ino: int, count: int) -> None:
        self.table.forget(ino, count)

    def getattr(self, inode: int, fh: int | None = None) -> os.stat_result:
        if inode == CONTROL_INO:
            return self.control_attr()
        path = self.table.relpath(inode)
        h = self._files.get(fh, (0, None))[1] if fh is not None else None
        if isinstance(h, fs_mod.Handle):  # the kernel pins an fh it names
            st = self.fs.fgetattr(h)
        elif self.table.has_fh(inode):
            with self._open_handle(inode) as h:
                # An open file is the kernel's inode even if its path was unlinked
                # or renamed over: its fd is the truth.
                st = self.fs.fgetattr(h) if h is not None else self.fs.getattr(path)
        else:  # the common case, without the borrowing
            st = self.fs.getattr(path)
        self._saw(inode, st)
        return self.attr(st)

    def setattr(
        self,
        inode: int,
        fh: int | None,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        size: int | None = None,
        atime: int | None = None,
        mtime: int | None = None,
        now_hint: bool = False,
        kill_priv: bool = False,
    ) -> os.stat_result:
        """Change what is given (``None``: leave it); times in ns. ``now_hint``:
        both times may be "now" as the caller asked (see fs._utimens). ``kill_priv``:
        the kernel asks us to drop setuid/setgid as native would (handle-killpriv-v2)."""
        if inode == CONTROL_INO:
            raise oserror(errno.EPERM)
        change = (mode, uid, gid, size, atime, mtime, now_hint, kill_priv)
        if fh is not None:
            st = self._setattr_on(self.handle(fh), self._FD_OPS, *change)
        else:
            with self._open_handle(inode) as h:
                if h is not None and self._path_moved_on(inode, h):
                    st = self._setattr_on(h, self._FD_OPS, *change)
                else:
                    st = self._setattr_on(self.rel(inode), self._PATH_OPS, *change)
        self._saw(inode, st, ours=True)
        return self.attr(st)

    #: fs methods for setattr on an open handle and on a path, in the same order.
    _FD_OPS = ("fchmod", "fchown", "ftruncate", "futimens", "fgetattr")
    _PATH_OPS = ("chmod", "chown", "truncate", "utimens", "getattr")

    def _setattr_on(self, target, ops, mode, uid, gid, size, atime, mtime, now_hint, kill_priv) -> os.stat_result:
        chmod, chown, truncate, utimens, stat = (getattr(self.fs, n) for n in ops)
        if mode is not None:
            mode = S.S_IMODE(mode)
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
        if uid is not None or gid is not None:
            chown(target, -1 if uid is None else uid, -1 if gid is None else gid)
        if size is not None:
            truncate(target, size)
        if atime is not None or mtime is not None:
            utimens(target, atime, mtime, now_hint)
        st = stat(target)
        return self._kill_priv(target, ops, st) if kill_priv and mode is None else st

    def kill_priv(self, fh: int) -> None:
        """A write or O_TRUNC open by a user without CAP_FSETID: drop setuid/setgid."""
        h = self.handle(fh)
        self._kill_priv(h, self._FD_OPS, self.fs.fgetattr(h))

    def _kill_priv(self, target, ops, st: os.stat_result) -> os.stat_result:
        """What the kernel does natively: setuid always goes, setgid only with
        group execute (else it is mandatory locking, not privilege)."""
        mode = S.S_IMODE(st.st_mode)
        drop = S.S_ISUID | (S.S_ISGID if mode & S.S_IXGRP else 0)
        if not S.S_ISREG(st.st_mode) or not mode & drop:
            return st
        chmod, stat = getattr(self.fs, ops[0]), getattr(self.fs, ops[4])
        with ugid.as_root():  # the kernel already checked the caller may write
            chmod(target, mode & ~drop)
        return stat(target)

    def _drops_setid_only(self, st: os.stat_result, mode: int) -> bool:
        """``mode`` is the current mode minus some setuid/setgid bits, and the
        kernel checks permissions (so it, not a user's chmod, asked for it)."""
        old = S.S_IMODE(st.st_mode)
        setid = S.S_ISUID | S.S_ISGID
        return (
            bool(self.fs.snap.cfg["kernel-permissions-check"])
            and mode != old
            and mode & ~setid == old & ~setid
            and not mode & setid & ~old
        )

    def _path_moved_on(self, inode: int, h) -> bool:
        """True when the open file's path no longer names it (unlinked, renamed
        over): metadata calls then go to the fd, not to whatever the path is now."""
        mine = self.fs.fgetattr(h)
        try:
            there = self.fs.getattr(self.rel(inode))
        except OSError:
            return True
        return (there.st_dev, there.st_ino) != (mine.st_dev, mine.st_ino)

    def readlink(self, inode: int) -> bytes:
        return os.fsencode(self.fs.readlink(self.rel(inode)))

    def access(self, inode: int, mode: int) -> None:
        if inode != CONTROL_INO:
            self.fs.access(self.rel(inode), mode)

    # ------------------------------------------------------------- create
    def mknod(self, parent: int, name: bytes, mode: int, rdev: int) -> tuple[int, os.stat_result]:
        rel = self.child(parent, name)
        self.fs.mknod(rel, mode, rdev)
        return self._lookup_entry(rel)

    def mkdir(self, parent: int, name: bytes, mode: int) -> tuple[int, os.stat_result]:
        rel = self.child(parent, name)
        self.fs.mkdir(rel, mode)
        return self._lookup_entry(rel)

    def symlink(self, parent: int, name: bytes, target: bytes) -> tuple[int, os.stat_result]:
        rel = self.child(parent, name)
        self.fs.symlink(os.fsdecode(target), rel)
        return self._lookup_entry(rel)

    def create(
        self, parent: int, name: bytes, mode: int, flags: int, pid: int = 0
    ) -> tuple[int, int, os.stat_result, int]:
        """(fh, nodeid, attributes, cache decision) of a newly created file."""
        rel = self.child(parent, name)
        h = self.fs.create(rel, flags, mode)
        try:
            ino, st = self._entry(rel, self.fs.fgetattr(h))
        except BaseException:
            self.fs.release(h)
            raise
        cache = DIRECT if self._cache_mode(pid) == "off" else KEEP
        return self._new_fh(ino, h), ino, st, cache

    def link(self, inode: int, new_parent: int, new_name: bytes) -> tuple[int, os.stat_result, bool]:
        """(nodeid, attributes, cacheable) of the new name."""
        new = self.child(new_parent, new_name)
        old = self.rel(inode)
        self.fs.link(old, new)
        st = self.fs.getattr(new)
        if not S.S_ISLNK(st.st_mode) or S.S_ISLNK(self.fs.getattr(old).st_mode):
            return (*self._entry(new, st), True)
        # link-exdev made a symlink: the kernel insists a link reply has the
        # source's type (else EIO), so answer with the source, uncached; the
        # next lookup of the new name finds the symlink.
        return (*self._lookup_entry(old), False)

    # ------------------------------------------------------------- action
    def unlink(self, parent: int, name: bytes) -> None:
        rel = self.child(parent, name)
        self.fs.unlink(rel)
        self.table.unlinked(rel)

    def rmdir(self, parent: int, name: bytes) -> None:
        rel = self.child(parent, name)
        self.fs.rmdir(rel)
        self.table.unlinked(rel)

    def rename(self, parent_old: int, name_old: bytes, parent_new: int, name_new: bytes, flags: int = 0) -> None:
        old = self.child(parent_old, name_old)
        new = self.child(parent_new, name_new)
        if control_mod.NAME in (old[1:], new[1:]):
            raise oserror(errno.EPERM)
        self.fs.rename(old, new, flags)
        if flags & fs_mod.RENAME_EXCHANGE:
            self.table.exchanged(old, new)
        else:
            self.table.renamed(old, new)

    # ------------------------------------------------------------- files
    def _cache_mode(self, pid: int) -> str:
        cfg = self.fs.snap.cfg
        mode = cfg["cache.files"]
        if mode == "per-process":
            names = cfg["cache.files.process-names"].split("|")
            return "partial" if pid and process_name(pid) in names else "off"
        return mode

    def open(self, inode: int, flags: int, pid: int = 0) -> tuple[int, int]:
        """(fh, cache decision) of an opened file."""
        if inode == CONTROL_INO:
            raise oserror(errno.EACCES) if flags & os.O_ACCMODE else oserror(errno.EOPNOTSUPP)
        h = self.fs.open(self.rel(inode), flags)
        try:
            cache = self._freshen(inode, h, self._cache_mode(pid))
        except BaseException:
            self.fs.release(h)
            raise
        return self._new_fh(inode, h), cache

    def _freshen(self, inode: int, h: fs_mod.Handle, mode: str) -> int:
        """The open's cache decision: direct I/O under ``cache.files=off``, else
        keep the kernel's pages unless ``cache.files`` says to drop them or the
        branch file changed behind the kernel's back."""
        st = self.fs.fgetattr(h)
        current = inodes.stamp(st)
        changed = current != self.table.swap_seen(inode, current)
        if mode == "off":
            decision = DIRECT
        elif changed or mode in ("partial", "libfuse"):
            decision = DROP
        else:
            decision = KEEP
        if self.cache_by_notify and decision != KEEP:
            self.notifier.inval_inode(inode)
        return decision

    def fd(self, fh: int) -> int:
        """The branch fd behind an open file (for a transport's own data path)."""
        h = self.handle(fh)
        if not isinstance(h, fs_mod.Handle):
            raise oserror(errno.EISDIR)
        return h.fd

    def read(self, fh: int, off: int, size: int) -> bytes:
        return self.fs.read(self.handle(fh), off, size)

    def write(self, fh: int, off: int, buf) -> int:
        ino, h = self._file(fh)
        n = self.fs.write(h, off, buf)
        if not self.auto_inval:
            # The kernel saw this change (it sent it): keep its cache, track the new state.
            self._saw(ino, self.fs.fgetattr(h), ours=True)
        return n

    def flush(self, fh: int) -> None:
        self.fs.flush(self.handle(fh))

    def release(self, fh: int) -> None:
        ino, h = self._forget_fh(fh)
        if self.cache_by_notify and self.fs.snap.cfg["cache.files"] == "off":
            self.notifier.inval_inode(ino)
        if h is not None:
            self._close(h)

    def fsync(self, fh: int, datasync: bool) -> None:
        self.fs.fsync(self.handle(fh), datasync)

    def fallocate(self, fh: int, mode: int, off: int, length: int) -> None:
        self.fs.fallocate(self.handle(fh), mode, off, length)

    def lseek(self, fh: int, off: int, whence: int) -> int:
        return self.fs.lseek(self.handle(fh), off, whence)

    def copy_file_range(self, fh_in: int, off_in: int, fh_out: int, off_out: int, length: int, flags: int) -> int:
        return self.fs.copy_file_range(self.handle(fh_in), off_in, self.handle(fh_out), off_out, length, flags)

    def ioctl(self, fh: int, cmd: int, arg: bytes, out_size: int) -> tuple[int, bytes]:
        return self.fs.ioctl(self.handle(fh), cmd, arg, out_size)

    # ------------------------------------------------------------- dirs
    def opendir(self, inode: int) -> int:
        return self._new_fh(inode, self.fs.opendir(self.rel(inode)))

    def readdir(self, fh: int, off: int) -> list[tuple[bytes, int, int]]:
        """The merged listing ``(name, d_type, st_ino)``, read anew at offset 0."""
        dh = self.handle(fh)
        if dh.entries is None or off == 0:
            dh.entries = self.fs.readdir(dh)
        return dh.entries

    def readdirplus(self, fh: int, off: int, count: int):
        """Up to ``count`` entries from ``off`` as ``(name, d_type, nodeid, attributes)``:
        each counts a kernel lookup, as a LOOKUP would (an entry that vanished
        meanwhile is skipped; its offset still advances)."""
        dh = self.handle(fh)
        entries = self.readdir(fh, off)
        out = []
        for i in range(off, min(len(entries), off + count)):
            name, dtype, _ = entries[i]
            try:
                ino, st = self._lookup_entry(fs_mod.join(dh.relpath, os.fsdecode(name)))
            except OSError:
                out.append((i + 1, name, dtype, 0, None))
                continue
            out.append((i + 1, name, dtype, ino, st))
        return out

    def releasedir(self, fh: int) -> None:
        h = self._forget_fh(fh)[1]
        if h is not None:
            self._close(h)

    def fsyncdir(self, fh: int, datasync: bool) -> None:
        self.fs.fsyncdir(self.handle(fh).relpath, datasync)

    def statfs(self, inode: int) -> dict:
        relpath = "/" if inode in (inodes.ROOT, CONTROL_INO) else self.table.get_path(inode, "/")
        return self.fs.statfs(relpath)

    def syncfs(self) -> None:
        self.fs.syncfs()

    # ------------------------------------------------------------- xattrs
    def getxattr(self, inode: int, name: bytes) -> bytes:
        key = os.fsdecode(name)
        if inode == CONTROL_INO:
            return self.control.getxattr(key)
        rel = self.rel(inode)
        if key.startswith(control_mod.PREFIX) and key[len(control_mod.PREFIX) :] in control_mod.PATH_KEYS:
            return self.control.path_getxattr(rel, key)
        return self.fs.getxattr(rel, key)

    def setxattr(self, inode: int, name: bytes, value: bytes, flags: int = 0) -> None:
        key = os.fsdecode(name)
        if inode == CONTROL_INO:
            self.control.setxattr(key, value)
            return
        self.fs.setxattr(self.rel(inode), key, value, flags)

    def listxattr(self, inode: int) -> list[bytes]:
        if inode == CONTROL_INO:
            return [os.fsencode(k) for k in self.control.listxattr()]
        return [os.fsencode(k) for k in self.fs.listxattr(self.rel(inode))]

    def removexattr(self, inode: int, name: bytes) -> None:
        if inode == CONTROL_INO:
            raise oserror(errno.ENOTSUP)
        self.fs.removexattr(self.rel(inode), os.fsdecode(name))
