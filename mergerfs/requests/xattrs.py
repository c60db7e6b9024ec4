"""Extended-attribute requests: the control file's and the ``user.mergerfs.*``
per-path keys go to :mod:`mergerfs.control`, the rest to the branches."""

from __future__ import annotations

import errno
import os

from mergerfs import control as control_mod
from mergerfs.errors import oserror
from mergerfs.requests.core import CONTROL_INO, Core


class XattrRequests(Core):
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
