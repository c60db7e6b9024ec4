"""Extended-attribute requests: the control file's and the ``user.mergerfs.*``
per-path keys go to :mod:`mergerfs.control`, the rest to the branches (an
unnamed file's, O_TMPFILE, to its open fd)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from mergerfs import control as control_mod, fs as fs_mod
from mergerfs.errors import oserror
from mergerfs.requests.core import CONTROL_INO, Core


class XattrRequests(Core):
    def getxattr(self, inode: int, name: bytes) -> bytes:
        key = os.fsdecode(name)
        if inode == CONTROL_INO:
            return self.control.getxattr(key)
        rel = self.table.relpath(inode)
        if fs_mod.is_unnamed(rel):
            with self._unnamed(inode) as h:
                return self.fs.fgetxattr(h, key)
        if key.startswith(control_mod.PREFIX) and key[len(control_mod.PREFIX) :] in control_mod.PATH_KEYS:
            return self.control.path_getxattr(rel, key)
        return self.fs.getxattr(rel, key)

    def setxattr(self, inode: int, name: bytes, value: bytes, flags: int = 0) -> None:
        key = os.fsdecode(name)
        if inode == CONTROL_INO:
            self.control.setxattr(key, value)
            return
        rel = self.table.relpath(inode)
        if fs_mod.is_unnamed(rel):
            with self._unnamed(inode) as h:
                self.fs.fsetxattr(h, key, value, flags)
            return
        self.fs.setxattr(rel, key, value, flags)

    def listxattr(self, inode: int) -> list[bytes]:
        if inode == CONTROL_INO:
            return [os.fsencode(k) for k in self.control.listxattr()]
        rel = self.table.relpath(inode)
        if fs_mod.is_unnamed(rel):
            with self._unnamed(inode) as h:
                return [os.fsencode(k) for k in self.fs.flistxattr(h)]
        return [os.fsencode(k) for k in self.fs.listxattr(rel)]

    def removexattr(self, inode: int, name: bytes) -> None:
        if inode == CONTROL_INO:
            raise oserror(errno.ENOTSUP)
        rel = self.table.relpath(inode)
        if fs_mod.is_unnamed(rel):
            with self._unnamed(inode) as h:
                self.fs.fremovexattr(h, os.fsdecode(name))
            return
        self.fs.removexattr(rel, os.fsdecode(name))

    @contextmanager
    def _unnamed(self, inode: int) -> Iterator[fs_mod.Handle]:
        """An open handle of unnamed file ``inode`` (O_TMPFILE), kept open for
        the block: its xattrs are its fd's. None left open: ENOENT."""
        with self._open_handle(inode) as h:
            if not isinstance(h, fs_mod.Handle):
                raise oserror(errno.ENOENT)
            yield h
