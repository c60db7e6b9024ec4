"""create, mkdir, mknod, symlink: the create functions, on each branch the
policy picks (create: the first), the parent directories cloned there first."""

from __future__ import annotations

import os

from mergerfs.branches import Branch
from mergerfs.ops.core import OPEN_STRIP, Core, Handle


class CreateOps(Core):
    def create(self, relpath: str, flags: int, mode: int) -> Handle:
        snap = self.snap
        hack = snap.cfg["nfsopenhack"]
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        needs_hack = writable and not (mode & 0o200) and (hack == "all" or (hack == "git" and "/.git/" in relpath))

        def attempt(b: Branch, probe) -> Handle:
            path = b.full(relpath)
            fd = os.open(
                path,
                (flags & ~OPEN_STRIP) | os.O_CREAT | (flags & os.O_EXCL) | os.O_CLOEXEC,
                (mode | 0o200) if needs_hack else mode,
            )
            if needs_hack:
                os.fchmod(fd, mode)
            return Handle(fd, b, relpath, flags)

        return self._register(self._creating(snap, "create", relpath, attempt)[0])

    def mkdir(self, relpath: str, mode: int) -> None:
        self._creating(self.snap, "mkdir", relpath, lambda b, p: os.mkdir(b.full(relpath), mode))

    def mknod(self, relpath: str, mode: int, rdev: int) -> None:
        self._creating(self.snap, "mknod", relpath, lambda b, p: os.mknod(b.full(relpath), mode, rdev))

    def symlink(self, target: str, relpath: str) -> None:
        self._creating(self.snap, "symlink", relpath, lambda b, p: os.symlink(target, b.full(relpath)))
