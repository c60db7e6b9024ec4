"""getattr, access, readlink: the search functions that only look, and the
``basepaths`` the control xattrs report."""

from __future__ import annotations

import errno
import os
import stat as S
import time

from mergerfs import inodes
from mergerfs.branches import Branch
from mergerfs.errors import oserror
from mergerfs.ops.core import ERROR_ENTRY, Core, Snapshot, synthetic_stat
from mergerfs.probe import RequestProbe

#: The fields of an os.stat_result a rebuilt one loses unless passed by name.
_STAT_EXTRA = ("st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_blksize", "st_blocks", "st_rdev")


class GetattrOps(Core):
    def getattr(self, relpath: str) -> os.stat_result:
        snap = self.snap
        probe = RequestProbe(self.probe)
        try:
            b, st = self._found(snap, "getattr", relpath, probe)
        except OSError as e:
            if relpath == "/" and e.errno == errno.ENOENT:
                return synthetic_stat(S.S_IFDIR | 0o755, nlink=2)
            if relpath == "/" + ERROR_ENTRY and not self._any_branch_root(snap):
                return synthetic_stat(S.S_IFREG | 0o444)
            raise
        return self._present(snap, b, relpath, st)

    def _present(self, snap: Snapshot, b: Branch, relpath: str, st: os.stat_result) -> os.stat_result:
        """Apply ``follow-symlinks`` and ``symlinkify`` to what getattr reports."""
        cfg = snap.cfg
        mode = st.st_mode
        follow = cfg["follow-symlinks"]
        if S.S_ISLNK(mode) and follow != "never":
            try:
                target = os.stat(b.full(relpath))
            except OSError:
                return st
            if (
                follow == "all"
                or (follow == "directory" and S.S_ISDIR(target.st_mode))
                or (follow == "regular" and S.S_ISREG(target.st_mode))
            ):
                return target
            return st
        if cfg["symlinkify"] and S.S_ISREG(mode) and self._symlinkified(cfg, st):
            fields = list(st)
            fields[0] = S.S_IFLNK | 0o777
            fields[6] = len(os.fsencode(b.join(relpath)))
            # the named-only fields too (ns times, blocks): the kernel's reply encoder reads them
            return os.stat_result(fields, {k: getattr(st, k) for k in _STAT_EXTRA})
        return st

    @staticmethod
    def _symlinkified(cfg, st: os.stat_result) -> bool:
        return time.time() - st.st_mtime >= cfg["symlinkify-timeout"]

    def inode_of(self, relpath: str, st: os.stat_result) -> int:
        return inodes.calc(self.snap.cfg["inodecalc"], relpath, st.st_mode, st.st_dev, st.st_ino)

    def access(self, relpath: str, mode: int) -> None:
        snap = self.snap
        b, _ = self._found(snap, "access", relpath, RequestProbe(self.probe))
        if not os.access(b.full(relpath), mode, effective_ids=True):
            raise oserror(errno.EACCES)

    def readlink(self, relpath: str) -> str:
        snap = self.snap
        b, st = self._found(snap, "readlink", relpath, RequestProbe(self.probe))
        if snap.cfg["symlinkify"] and S.S_ISREG(st.st_mode) and self._symlinkified(snap.cfg, st):
            return b.join(relpath)
        return os.readlink(b.full(relpath))

    def basepaths(self, relpath: str) -> tuple[Branch, list[Branch]]:
        """(branch getattr picks, every branch holding ``relpath``) for the control xattrs."""
        snap = self.snap
        probe = RequestProbe(self.probe)
        b, _ = self._found(snap, "getattr", relpath, probe)
        return b, [x for x in snap.branches if probe.exists(x, relpath)]
