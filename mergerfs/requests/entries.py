"""Requests on names and attributes: lookup and forget, getattr/statx/setattr
(setuid/setgid dropped as the kernel would), access/readlink, and creating,
removing, renaming and linking names (creating an open file is in
:mod:`~mergerfs.requests.files`)."""

from __future__ import annotations

import errno
import os
import stat as S
from collections.abc import Callable
from typing import Any, TypeVar

from mergerfs import control as control_mod, fs as fs_mod, inodes, ugid
from mergerfs.errors import oserror
from mergerfs.requests.core import CONTROL_INO, Core

T = TypeVar("T")


class EntryRequests(Core):
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
        st = self._described(inode, fh, self.fs.fgetattr, self.fs.getattr)
        self._saw(inode, st)
        return self.attr(st)

    def statx(self, inode: int, fh: int | None = None, sync: int = 0) -> fs_mod.Statx:
        """getattr with the birth time (FUSE_STATX): the same file (open handle
        or path), the same uid/gid/umask overrides. ``sync``: the caller's
        AT_STATX_*_SYNC flags."""
        if inode == CONTROL_INO:
            return fs_mod.Statx.of_stat(self.control_attr())
        sx = self._described(inode, fh, lambda h: self.fs.fstatx(h, sync), lambda path: self.fs.statx(path, sync))
        self._saw(inode, sx)
        return self.attrx(sx)

    def _described(self, inode: int, fh: int | None, of_handle: Callable[[Any], T], of_path: Callable[[str], T]) -> T:
        """``of_handle`` of the open file the kernel names (``fh``) or of any
        open handle of ``inode``, else ``of_path`` of its relpath."""
        path = self.table.relpath(inode)
        h = self._files.get(fh, (0, None))[1] if fh is not None else None
        if isinstance(h, fs_mod.Handle):  # the kernel pins an fh it names
            return of_handle(h)
        if self.table.has_fh(inode):
            if self.table.any_fh(inode) is None:  # compiled opens only: none adopted while
                by_path = self._same_object(inode, path, of_path)  # the path names their object
                if by_path is not None:
                    return by_path
            with self._open_handle(inode) as h:
                # An open file is the kernel's inode even if its path was unlinked
                # or renamed over (or it has none yet: O_TMPFILE): its fd is the truth.
                return of_handle(h) if h is not None else of_path(self._named(path))
        return of_path(self._named(path))  # the common case, without the borrowing

    def _same_object(self, inode: int, path: str, of_path: Callable[[str], T]) -> T | None:
        """``of_path`` of ``inode``'s relpath while it names the object the node was
        looked up as (as the compiled GETATTR answers), else None."""
        ident = self.table.ident(inode)
        if ident is None:
            return None
        try:
            got = of_path(self._named(path))
        except OSError:  # gone, or unnamed (O_TMPFILE)
            return None
        st: Any = got  # an os.stat_result or a Statx
        return got if inodes.identity(st.st_dev, st.st_ino) == ident else None

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
        both times may be "now" as the caller asked (see ops/attrs.py, _utimens). ``kill_priv``:
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

    def link(self, inode: int, new_parent: int, new_name: bytes) -> tuple[int, os.stat_result, bool]:
        """(nodeid, attributes, cacheable) of the new name."""
        new = self.child(new_parent, new_name)
        old = self.table.relpath(inode)
        if fs_mod.is_unnamed(old):
            return (*self._name_unnamed(inode, new), True)
        self.fs.link(old, new)
        st = self.fs.getattr(new)
        if not S.S_ISLNK(st.st_mode) or S.S_ISLNK(self.fs.getattr(old).st_mode):
            return (*self._entry(new, st), True)
        # link-exdev made a symlink: the kernel insists a link reply has the
        # source's type (else EIO), so answer with the source, uncached; the
        # next lookup of the new name finds the symlink.
        return (*self._lookup_entry(old), False)

    def _name_unnamed(self, inode: int, new: str) -> tuple[int, os.stat_result]:
        """LINK of an unnamed file (O_TMPFILE): the first name of the branch file,
        through one of its open handles. The node keeps its nodeid (the kernel
        links its own inode) and gives up its placeholder; its handles are the
        file's at ``new`` from now on (moveonenospc finds them by that name)."""
        with self._open_handle(inode) as h:
            if not isinstance(h, fs_mod.Handle):
                raise oserror(errno.ENOENT)  # closed meanwhile: nothing left to link
            placeholder = h.relpath
            self.fs.link_unnamed(h, new)
            st = self.fs.fgetattr(h)
        ino, st = self._entry(new, st, ino=inode)
        if not fs_mod.is_unnamed(placeholder):  # another link named it meanwhile
            return ino, st
        self.table.unlinked(placeholder)
        with self._fh_lock:
            for node, x in self._files.values():
                if node == inode and isinstance(x, fs_mod.Handle) and x.relpath == placeholder:
                    x.relpath = new
        return ino, st

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
