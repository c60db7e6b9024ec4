"""Handlers of the requests on open directories, and on the filesystem as a
whole (statfs, syncfs).

A directory opened by the compiled loop (_dirs.pxi) has a kernel fh with
:data:`C_DIR` set; its READDIR/FSYNCDIR reach Python only when the worker did
not act as the caller yet: :func:`_kernel.dir_request` answers them here,
after the dispatcher switched to the caller."""

from __future__ import annotations

import stat as S
import struct

from mergerfs import _kernel
from mergerfs.kernel.base import Base
from mergerfs.kernel.protocol import DIRENT, ENTRY_OUT, FOPEN_CACHE_DIR, FOPEN_KEEP_CACHE, KSTATFS, OPEN_OUT

#: The bit of a kernel fh made by the compiled OPENDIR (never set in the request layer's numbers).
C_DIR = 1 << _kernel.DIR_FH_BIT


def dir_open_flags(cfg) -> int:
    """OPENDIR's FOPEN flags (the compiled OPENDIR gets them from here too):
    ``cache.readdir`` lets the kernel keep a listing."""
    return FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE if cfg["cache.readdir"] else 0


class DirHandlers(Base):
    def _c_dir(self, h, body):
        """A request on a C directory handle, answered by the compiled code as this caller."""
        assert self.session is not None
        return _kernel.dir_request(self.session, h.opcode, body, h.uid, h.gid)

    def _opendir(self, h, body):
        fh = self.req.opendir(h.nodeid)
        return OPEN_OUT.pack(fh, dir_open_flags(self.fs.snap.cfg), 0)

    def _readdir(self, h, body):
        fh, off, size = struct.unpack_from("<QQI", body)
        if fh & C_DIR:
            return self._c_dir(h, body)
        return _kernel.pack_dirents(self.req.readdir(fh, off), off, size)

    def _readdirplus(self, h, body):
        fh, off, size = struct.unpack_from("<QQI", body)
        entries = self.req.readdir(fh, off)
        used = 0
        count = 0
        for i in range(off, len(entries)):  # how many fit: each one found counts a lookup
            rec = ENTRY_OUT.size + 24 + len(entries[i][0])
            rec += -rec % 8
            if used + rec > size:
                break
            used += rec
            count += 1
        out = []
        for nxt, name, dtype, ino, st in self.req.readdirplus(fh, off, count):
            rec = ENTRY_OUT.size + 24 + len(name)
            pad = -rec % 8
            if st is None:
                out.append(ENTRY_OUT.pack(0, 0, 0, 0, 0, 0))
                out.append(DIRENT.pack(0, nxt, len(name), dtype))
            else:
                out.append(self._entry_out(ino, st))
                out.append(DIRENT.pack(ino, nxt, len(name), S.S_IFMT(st.st_mode) >> 12))
            out.append(name + b"\0" * pad)
        return b"".join(out)

    def _releasedir(self, h, body):
        fh = struct.unpack_from("<Q", body)[0]
        if fh & C_DIR:
            return self._c_dir(h, body)
        self.req.releasedir(fh)

    def _fsyncdir(self, h, body):
        fh, flags = struct.unpack_from("<QI", body)
        if fh & C_DIR:
            return self._c_dir(h, body)
        self.req.fsyncdir(fh, bool(flags & 1))

    def _statfs(self, h, body):
        v = self.req.statfs(h.nodeid)
        return KSTATFS.pack(
            v["f_blocks"],
            v["f_bfree"],
            v["f_bavail"],
            v["f_files"],
            v["f_ffree"],
            v["f_bsize"],
            v["f_namemax"],
            v["f_frsize"],
            0,
        )

    def _syncfs(self, h, body):
        self.req.syncfs()
