"""What every group of requests shares: the inode and handle tables, the
control file, the attribute overrides, and the helpers that keep them."""

from __future__ import annotations

import errno
import itertools
import os
import stat as S
import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Protocol

from mergerfs import control as control_mod, fs as fs_mod, inodes
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


class Core:
    """The tables every group of requests shares: inodes, open handles, the
    control file; and the helpers that keep them."""

    #: Set by a transport that opens files itself (the kernel session's compiled
    #: OPEN): gives one such open of a nodeid a Python handle (see _open_handle).
    adopt_open: Callable[[int], None] | None = None

    def __init__(
        self, fs: fs_mod.FileSystem, notifier: Notifier, *, auto_inval: bool = False, cache_by_notify: bool = False
    ) -> None:
        self.fs = fs
        self.notifier = notifier
        self.auto_inval = auto_inval
        self.cache_by_notify = cache_by_notify
        self.table = inodes.InodeTable()
        self.control = control_mod.Control(fs, self.invalidate_all)
        self.force = forced_attrs(fs.snap.cfg.fuse_options)
        self._fh_lock = threading.Lock()
        self._fh_ids = itertools.count(1)
        # fh -> (nodeid, Handle or DirHandle): one numbering for files and dirs
        self._files: dict[int, tuple[int, fs_mod.Handle | fs_mod.DirHandle]] = {}
        # fh -> borrowers: getattr/setattr reach an inode's handle without the
        # kernel pinning it, so its release defers the close to the last borrower
        self._borrowed: dict[int, int] = {}
        self._closing: dict[int, fs_mod.Handle | fs_mod.DirHandle] = {}
        self._unnamed_ids = itertools.count(1)  # unnamed files' placeholders (fs.UNNAMED)

    def rel(self, ino: int) -> str:
        """``ino``'s path in the pool; ENOENT for an unnamed file (O_TMPFILE,
        not linked: only its open handles reach it)."""
        return self._named(self.table.relpath(ino))

    @staticmethod
    def _named(relpath: str) -> str:
        """``relpath`` if it is a path; ENOENT for an unnamed file's placeholder."""
        if fs_mod.is_unnamed(relpath):
            raise oserror(errno.ENOENT)
        return relpath

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

    def attrx(self, sx: fs_mod.Statx) -> fs_mod.Statx:
        """:meth:`attr` for a statx answer: the same owner and mode as stat reports."""
        if self.force is None:
            return sx
        uid, gid, umask = self.force
        return sx._replace(
            mode=sx.mode if umask is None else S.S_IFMT(sx.mode) | (0o777 & ~umask),
            uid=sx.uid if uid is None else uid,
            gid=sx.gid if gid is None else gid,
        )

    def _entry(self, relpath: str, st: os.stat_result, ino: int | None = None) -> tuple[int, os.stat_result]:
        """Reply to a lookup-like request: count the kernel's reference. ``ino``:
        the nodeid the object already has (an unnamed file getting its name)."""
        ino, replaced = self.table.remember(
            self.fs.inode_of(relpath, st) if ino is None else ino,
            relpath,
            inodes.identity(st.st_dev, st.st_ino),
            S.S_ISDIR(st.st_mode),
        )
        if replaced:
            self.notifier.inval_inode(ino)
        self._saw(ino, st)
        return ino, self.attr(st)

    def _saw(self, ino: int, st: os.stat_result | fs_mod.Statx, ours: bool = False) -> None:
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

    def invalidate_all(self) -> None:
        """Drop the kernel's attributes and pages of every node it holds but the root."""
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
        if self.adopt_open is not None and self.table.any_fh(inode) is None and self.table.has_fh(inode):
            self.adopt_open(inode)  # only the transport's own (compiled) opens: one gets a Python handle
        with self._fh_lock:
            fh = self.table.any_fh(inode)
            h = self._files.get(fh, (0, None))[1] if fh is not None else None
            borrowed = fh if h is not None else None
            if borrowed is not None:
                self._borrowed[borrowed] = self._borrowed.get(borrowed, 0) + 1
        try:
            yield h
        finally:
            if borrowed is not None:
                with self._fh_lock:
                    self._borrowed[borrowed] -= 1
                    last = self._borrowed[borrowed] == 0
                    if last:
                        del self._borrowed[borrowed]
                    late = self._closing.pop(borrowed, None) if last else None
                if late is not None:
                    self._close(late)

    def _forget_fh(self, fh: int):
        """Unregister fh; the handle to close now, or None if a borrower will."""
        close: fs_mod.Handle | fs_mod.DirHandle | None
        with self._fh_lock:
            try:
                ino, close = self._files.pop(fh)
            except KeyError:
                raise oserror(errno.EBADF) from None
            if fh in self._borrowed:
                self._closing[fh] = close
                close = None
        self.table.drop_fh(ino, fh)
        return ino, close

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
