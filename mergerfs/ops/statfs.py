"""statfs: the pool's totals over its branches' filesystems."""

from __future__ import annotations

import os

from mergerfs.ops.core import Core


class StatfsOps(Core):
    def statfs(self, relpath: str = "/") -> dict:
        """Pool totals: each filesystem counted once, blocks in the smallest fragment size."""
        snap = self.snap
        cfg = snap.cfg
        ignore = cfg["statfs-ignore"]
        full = cfg["statfs"] == "full"
        seen: set[int] = set()
        rows = []
        probe = self.probe
        paths = [b.full(relpath) if full else b.path for b in snap.branches]
        facts = probe.fsinfos(paths)  # bounded: a stalled branch counts with its last answer
        for b, path, fact in zip(snap.branches, paths, facts):
            if isinstance(fact, BaseException):
                continue
            st, vfs = fact
            if path == b.path and probe.check_gone(b.path, st.st_dev):
                continue  # a bare mountpoint: its parent's filesystem is not the branch's
            if st.st_dev in seen:
                continue
            seen.add(st.st_dev)
            readonly = b.ro or bool(vfs.f_flag & os.ST_RDONLY)
            drop_avail = (ignore == "ro" and (readonly or b.nc)) or (ignore == "nc" and b.nc)
            rows.append((vfs, drop_avail))
        # the defaults: no branch answered, an empty filesystem of the usual geometry
        frsize = min((v.f_frsize for v, _ in rows), default=4096) or 4096
        out = {
            "f_bsize": min((v.f_bsize for v, _ in rows), default=4096),
            "f_frsize": frsize,
            "f_blocks": 0,
            "f_bfree": 0,
            "f_bavail": 0,
            "f_files": 0,
            "f_ffree": 0,
            "f_favail": 0,
            "f_namemax": min((v.f_namemax for v, _ in rows), default=255),
        }
        for v, drop_avail in rows:
            scale = v.f_frsize / frsize
            out["f_blocks"] += int(v.f_blocks * scale)
            out["f_bfree"] += int(v.f_bfree * scale)
            if not drop_avail:
                out["f_bavail"] += int(v.f_bavail * scale)
            out["f_files"] += v.f_files
            out["f_ffree"] += v.f_ffree
            out["f_favail"] += v.f_favail
        return out
