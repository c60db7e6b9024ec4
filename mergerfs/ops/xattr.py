"""getxattr, listxattr (search) and setxattr, removexattr (action), behind the
``xattr``, ``security-capability`` and ``posix-acl`` options."""

from __future__ import annotations

import errno
import os

from mergerfs.errors import oserror
from mergerfs.ops.core import Core, Handle
from mergerfs.probe import RequestProbe


class XattrOps(Core):
    def getxattr(self, relpath: str, name: str) -> bytes:
        cfg = self.snap.cfg
        self._xattr_gate(cfg, name)
        b, _ = self._found(self.snap, "getxattr", relpath, RequestProbe(self.probe))
        return os.getxattr(b.full(relpath), name, follow_symlinks=False)

    def listxattr(self, relpath: str) -> list[str]:
        cfg = self.snap.cfg
        if cfg["xattr"] == "nosys":
            raise oserror(errno.ENOSYS)
        b, _ = self._found(self.snap, "listxattr", relpath, RequestProbe(self.probe))
        if cfg["xattr"] == "noattr":
            return []
        return os.listxattr(b.full(relpath), follow_symlinks=False)

    def setxattr(self, relpath: str, name: str, value: bytes, flags: int = 0) -> None:
        self._xattr_gate(self.snap.cfg, name)
        self._acting(
            self.snap, "setxattr", relpath, lambda p: os.setxattr(p, name, value, flags, follow_symlinks=False)
        )

    def removexattr(self, relpath: str, name: str) -> None:
        self._xattr_gate(self.snap.cfg, name)
        self._acting(self.snap, "removexattr", relpath, lambda p: os.removexattr(p, name, follow_symlinks=False))

    # An unnamed file's (O_TMPFILE, not linked): on its open fd, as the path forms
    # would on the one branch it lives on.
    def fgetxattr(self, h: Handle, name: str) -> bytes:
        self._xattr_gate(self.snap.cfg, name)
        return os.getxattr(h.fd, name)

    def flistxattr(self, h: Handle) -> list[str]:
        mode = self.snap.cfg["xattr"]
        if mode == "nosys":
            raise oserror(errno.ENOSYS)
        return [] if mode == "noattr" else os.listxattr(h.fd)

    def fsetxattr(self, h: Handle, name: str, value: bytes, flags: int = 0) -> None:
        self._xattr_gate(self.snap.cfg, name)
        os.setxattr(h.fd, name, value, flags)

    def fremovexattr(self, h: Handle, name: str) -> None:
        self._xattr_gate(self.snap.cfg, name)
        os.removexattr(h.fd, name)

    @staticmethod
    def _xattr_gate(cfg, name: str) -> None:
        mode = cfg["xattr"]
        if mode == "nosys":
            raise oserror(errno.ENOSYS)
        if mode == "noattr":  # set included: both references answer ENODATA and write nothing
            raise oserror(errno.ENODATA)
        if name == "security.capability" and not cfg["security-capability"]:
            raise oserror(errno.ENODATA)
        if name.startswith("system.posix_acl_") and not cfg["posix-acl"]:
            raise oserror(errno.EOPNOTSUPP)
