"""Requests on open directories (the merged listing, read anew at offset 0),
and on the filesystem as a whole (statfs, syncfs)."""

from __future__ import annotations

import os

from mergerfs import fs as fs_mod, inodes
from mergerfs.requests.core import CONTROL_INO, Core


class DirRequests(Core):
    def opendir(self, inode: int) -> int:
        return self._new_fh(inode, self.fs.opendir(self.rel(inode)))

    def readdir(self, fh: int, off: int) -> list[tuple[bytes, int, int]]:
        """The merged listing ``(name, d_type, st_ino)``, read anew at offset 0."""
        dh = self.handle(fh)
        if dh.entries is None or off == 0:
            dh.entries = self.fs.readdir(dh)
        return dh.entries

    def readdirplus(self, fh: int, off: int, count: int):
        """Up to ``count`` entries from ``off`` as ``(name, d_type, nodeid, attributes)``:
        each counts a kernel lookup, as a LOOKUP would (an entry that vanished
        meanwhile is skipped; its offset still advances)."""
        dh = self.handle(fh)
        entries = self.readdir(fh, off)
        out: list[tuple[int, bytes, int, int, os.stat_result | None]] = []
        for i in range(off, min(len(entries), off + count)):
            name, dtype, _ = entries[i]
            try:
                ino, st = self._lookup_entry(fs_mod.join(dh.relpath, os.fsdecode(name)))
            except OSError:
                out.append((i + 1, name, dtype, 0, None))
                continue
            out.append((i + 1, name, dtype, ino, st))
        return out

    def releasedir(self, fh: int) -> None:
        h = self._forget_fh(fh)[1]
        if h is not None:
            self._close(h)

    def fsyncdir(self, fh: int, datasync: bool) -> None:
        self.fs.fsyncdir(self.handle(fh).relpath, datasync)

    def statfs(self, inode: int) -> dict:
        relpath = "/" if inode in (inodes.ROOT, CONTROL_INO) else self.table.get_path(inode, "/")
        return self.fs.statfs("/" if fs_mod.is_unnamed(relpath) else relpath)

    def syncfs(self) -> None:
        self.fs.syncfs()
