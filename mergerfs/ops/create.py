"""create, mkdir, mknod, symlink: the create functions, on each branch the
policy picks (create: the first), the parent directories cloned there first;
tmpfile, an unnamed file (O_TMPFILE) where create's policy puts a file."""

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

    def tmpfile(self, dirpath: str, flags: int, mode: int, name: str) -> Handle:
        """An unnamed file (O_TMPFILE) in directory ``dirpath`` on the branch the
        policy of ``create`` picks for it (the directory cloned there first), as
        the caller; its handle's relpath is ``name``, an :data:`~mergerfs.ops.core.UNNAMED`
        placeholder, until :meth:`~mergerfs.ops.link.LinkOps.link_unnamed`. A
        branch filesystem without O_TMPFILE answers its own error (EOPNOTSUPP)."""
        kept = flags & ~(OPEN_STRIP | os.O_TRUNC | os.O_TMPFILE)  # O_TMPFILE holds O_DIRECTORY

        def attempt(b: Branch, probe) -> Handle:
            fd = os.open(b.full(dirpath), kept | (flags & os.O_EXCL) | os.O_TMPFILE | os.O_CLOEXEC, mode)
            return Handle(fd, b, name, kept)

        return self._register(self._creating(self.snap, "create", name, attempt, parent=dirpath)[0])

    def mkdir(self, relpath: str, mode: int) -> None:
        self._creating(self.snap, "mkdir", relpath, lambda b, p: os.mkdir(b.full(relpath), mode))

    def mknod(self, relpath: str, mode: int, rdev: int) -> None:
        self._creating(self.snap, "mknod", relpath, lambda b, p: os.mknod(b.full(relpath), mode, rdev))

    def symlink(self, target: str, relpath: str) -> None:
        self._creating(self.snap, "symlink", relpath, lambda b, p: os.symlink(target, b.full(relpath)))
