"""Requests on open files, and the cache decision each open makes (what it
does to the kernel's cached pages: KEEP, DROP or DIRECT)."""

from __future__ import annotations

import errno
import os

from mergerfs import fs as fs_mod, inodes
from mergerfs.errors import oserror
from mergerfs.requests.core import CONTROL_INO, DIRECT, DROP, KEEP, Core, process_name


class FileRequests(Core):
    def create(
        self, parent: int, name: bytes, mode: int, flags: int, pid: int = 0
    ) -> tuple[int, int, os.stat_result, int]:
        """(fh, nodeid, attributes, cache decision) of a newly created file."""
        rel = self.child(parent, name)
        return self._created(rel, self.fs.create(rel, flags, mode), pid)

    def tmpfile(self, parent: int, mode: int, flags: int, pid: int = 0) -> tuple[int, int, os.stat_result, int]:
        """(fh, nodeid, attributes, cache decision) of a new unnamed file
        (O_TMPFILE) in directory ``parent``. Its node is named by a placeholder
        (:data:`~mergerfs.fs.UNNAMED`) that no path search sees: until a link
        names it (:meth:`link`), its open handles are the only way to it."""
        name = f"{fs_mod.UNNAMED}{next(self._unnamed_ids)}"
        return self._created(name, self.fs.tmpfile(self.rel(parent), flags, mode, name), pid)

    def _created(self, name: str, h: fs_mod.Handle, pid: int) -> tuple[int, int, os.stat_result, int]:
        """A new file's open ``h`` under node name ``name``: counted as a lookup
        and an open (closed again if that fails)."""
        try:
            ino, st = self._entry(name, self.fs.fgetattr(h))
        except BaseException:
            self.fs.release(h)
            raise
        cache = DIRECT if self._cache_mode(pid) == "off" else KEEP
        return self._new_fh(ino, h), ino, st, cache

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
        relpath = self.table.relpath(inode)
        if fs_mod.is_unnamed(relpath):  # an unnamed file reopened (/proc/self/fd/N): through an open fd
            with self._open_handle(inode) as src:
                if not isinstance(src, fs_mod.Handle):
                    raise oserror(errno.ENOENT)
                h = self.fs.reopen(src, flags)
        else:
            h = self.fs.open(relpath, flags)
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

    def adopt(self, inode: int, fd: int, root: str, flags: int) -> int:
        """The fh of a Python handle for branch fd ``fd`` (on branch ``root``, opened
        with ``flags``) that a transport opened of ``inode`` itself."""
        return self._new_fh(inode, self.fs.adopt(fd, root, self.rel(inode), flags))

    def disown(self, fh: int) -> bool:
        """Forget open file ``fh`` without closing it: its transport answers it
        itself from now on. False (nothing changed) while a request borrows it."""
        with self._fh_lock:
            if fh in self._borrowed:
                return False
            ino, h = self._file(fh)
            del self._files[fh]
        self.table.drop_fh(ino, fh)
        self.fs.disown(h)
        return True

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
        held = self._files.get(fh, (0, None))[1]
        ino, h = self._forget_fh(fh)
        if self.cache_by_notify and self.fs.snap.cfg["cache.files"] == "off":
            self.notifier.inval_inode(ino)
        if h is not None:
            self._close(h)
        if isinstance(held, fs_mod.Handle) and fs_mod.is_unnamed(held.relpath) and not self.table.has_fh(ino):
            # The last open of a file never named: gone, as an unlinked file (its
            # node forgets its identity: the branch reuses the inode number).
            self.table.unlinked(held.relpath)

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
