"""getattr (and statx, its form with the birth time), access, readlink: the
search functions that only look, and the ``basepaths`` the control xattrs report."""

from __future__ import annotations

import errno
import os
import stat as S
import time
from typing import NamedTuple

from mergerfs import _fastpath, inodes
from mergerfs.branches import Branch
from mergerfs.errors import oserror
from mergerfs.ops.core import ERROR_ENTRY, Core, DirHandle, Handle, Snapshot, synthetic_stat
from mergerfs.probe import RequestProbe

#: The fields of an os.stat_result a rebuilt one loses unless passed by name.
_STAT_EXTRA = ("st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_blksize", "st_blocks", "st_rdev")

# statx(2) facts (linux/stat.h, linux/fcntl.h): Python 3.11's os has none of them.
STATX_BASIC_STATS = 0x7FF  # type, mode, nlink, uid, gid, atime, mtime, ctime, ino, size, blocks
STATX_BTIME = 0x800
#: What FUSE_STATX carries (the kernel keeps no other field): all statx asks a branch for.
STATX_CARRIED = STATX_BASIC_STATS | STATX_BTIME
AT_SYMLINK_NOFOLLOW = 0x100
AT_STATX_SYNC_TYPE = 0x6000  # AT_STATX_FORCE_SYNC | AT_STATX_DONT_SYNC: the caller's freshness wish


class Statx(NamedTuple):
    """One statx(2) answer (struct statx's fields in its order, times in ns):
    what getattr reports plus the birth time and the mask saying what is filled."""

    mask: int
    blksize: int
    attributes: int
    nlink: int
    uid: int
    gid: int
    mode: int
    ino: int
    size: int
    blocks: int
    attributes_mask: int
    atime_ns: int
    btime_ns: int
    ctime_ns: int
    mtime_ns: int
    rdev_major: int
    rdev_minor: int
    dev_major: int
    dev_minor: int

    @classmethod
    def of_stat(cls, st: os.stat_result) -> Statx:
        """An entry no statx(2) describes (synthetic ones, the control file): no birth time."""
        return cls(
            STATX_BASIC_STATS,
            st.st_blksize,
            0,
            st.st_nlink,
            st.st_uid,
            st.st_gid,
            st.st_mode,
            st.st_ino,
            st.st_size,
            st.st_blocks,
            0,
            st.st_atime_ns,
            0,
            st.st_ctime_ns,
            st.st_mtime_ns,
            os.major(st.st_rdev),
            os.minor(st.st_rdev),
            os.major(st.st_dev),
            os.minor(st.st_dev),
        )

    # a stat_result's names for what the page-cache stamp (inodes.stamp) and
    # the identity of a file (inodes.identity) read
    @property
    def st_mode(self) -> int:
        return self.mode

    @property
    def st_dev(self) -> int:
        return os.makedev(self.dev_major, self.dev_minor)

    @property
    def st_ino(self) -> int:
        return self.ino

    @property
    def st_size(self) -> int:
        return self.size

    @property
    def st_mtime_ns(self) -> int:
        return self.mtime_ns


def _statx(target: str | int, flags: int) -> Statx:
    return Statx._make(_fastpath.statx(target, flags, STATX_CARRIED))


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
            return target if self._follows(follow, target.st_mode) else st
        if cfg["symlinkify"] and S.S_ISREG(mode) and self._symlinkified(cfg, st.st_mtime):
            fields = list(st)
            fields[0] = S.S_IFLNK | 0o777
            fields[6] = len(os.fsencode(b.join(relpath)))
            # the named-only fields too (ns times, blocks): the kernel's reply encoder reads them
            return os.stat_result(fields, {k: getattr(st, k) for k in _STAT_EXTRA})
        return st

    @staticmethod
    def _follows(follow: str, target_mode: int) -> bool:
        """Whether ``follow-symlinks`` reports a symlink as its target (of ``target_mode``)."""
        return (
            follow == "all"
            or (follow == "directory" and S.S_ISDIR(target_mode))
            or (follow == "regular" and S.S_ISREG(target_mode))
        )

    @staticmethod
    def _symlinkified(cfg, mtime: float) -> bool:
        return time.time() - mtime >= cfg["symlinkify-timeout"]

    def statx(self, relpath: str, sync: int = 0) -> Statx:
        """getattr with the birth time: the branch getattr's policy picks, its
        statx(2), ``follow-symlinks`` and ``symlinkify`` as getattr applies them,
        so stat and statx of a pool path agree. ``sync``: the caller's
        AT_STATX_*_SYNC wish, passed on to the branch."""
        snap = self.snap
        try:
            b, _ = self._found(snap, "getattr", relpath, RequestProbe(self.probe))
        except OSError:
            return Statx.of_stat(self.getattr(relpath))  # getattr's synthetic entries, or its error
        sync &= AT_STATX_SYNC_TYPE
        path = b.full(relpath)  # bound: a long path's parent fd lives as long as it
        sx = _statx(path, AT_SYMLINK_NOFOLLOW | sync)
        cfg = snap.cfg
        follow = cfg["follow-symlinks"]
        if S.S_ISLNK(sx.mode) and follow != "never":
            try:
                target = _statx(path, sync)
            except OSError:
                return sx
            return target if self._follows(follow, target.mode) else sx
        if cfg["symlinkify"] and S.S_ISREG(sx.mode) and self._symlinkified(cfg, sx.mtime_ns / 1e9):
            return sx._replace(mode=S.S_IFLNK | 0o777, size=len(os.fsencode(b.join(relpath))))
        return sx

    def fstatx(self, h: Handle | DirHandle, sync: int = 0) -> Statx:
        """statx(2) of an open file's (or directory's) fd: what fgetattr reports, with the birth time."""
        return _statx(h.fd, sync & AT_STATX_SYNC_TYPE)

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
        if snap.cfg["symlinkify"] and S.S_ISREG(st.st_mode) and self._symlinkified(snap.cfg, st.st_mtime):
            return b.join(relpath)
        return os.readlink(b.full(relpath))

    def basepaths(self, relpath: str) -> tuple[Branch, list[Branch]]:
        """(branch getattr picks, every branch holding ``relpath``) for the control xattrs."""
        snap = self.snap
        probe = RequestProbe(self.probe)
        b, _ = self._found(snap, "getattr", relpath, probe)
        return b, [x for x in snap.branches if probe.exists(x, relpath)]
