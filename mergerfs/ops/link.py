"""link: on every branch holding the source; ``link-exdev`` for what cannot;
the first name of an unnamed file (O_TMPFILE), on its own branch."""

from __future__ import annotations

import errno
import os

from mergerfs import policies
from mergerfs.errors import Aggregate, oserror
from mergerfs.ops.core import Handle, dirname
from mergerfs.ops.create import CreateOps
from mergerfs.probe import RequestProbe


class LinkOps(CreateOps):
    """(A create mixin: ``link-exdev`` makes a symlink.)"""

    def link(self, old: str, new: str) -> None:
        snap = self.snap
        cfg = snap.cfg
        probe = RequestProbe(self.probe)
        sources = self._select(snap, "link", old, probe)
        preserve = cfg.policy("create") in policies.PATH_PRESERVING and not cfg["ignorepponrename"]
        agg = Aggregate()
        for b in sources:
            try:
                self._place_on(snap, probe, b, dirname(new), preserve, "link")
                os.link(b.full(old), b.full(new), follow_symlinks=False)
                agg.success()
            except OSError as e:
                agg.failure(e.errno or errno.EIO)
        mode = cfg["link-exdev"]
        if not agg.ok and agg.first_error == errno.EXDEV and mode != "passthrough":
            b = sources[0]
            if mode == "rel-symlink":
                target = os.path.relpath(old, dirname(new))
            elif mode == "abs-base-symlink":
                target = b.join(old)
            else:  # abs-pool-symlink
                target = self._mountpoint() + old
            return self.symlink(target, new)
        agg.raise_if_failed()

    def link_unnamed(self, h: Handle, new: str) -> None:
        """Give the unnamed file open as ``h`` its first name ``new``: on the
        branch it lives on, through its fd (linkat of ``/proc/self/fd/N`` with
        AT_SYMLINK_FOLLOW, as the caller), the new parent placed there as link
        places it (path-preserving create policy: EXDEV unless it would pick that
        branch). ``link-exdev`` does not apply: there is no name to point a
        symlink at. The kernel refuses a file opened O_EXCL itself (ENOENT)."""
        snap = self.snap
        cfg = snap.cfg
        b = next((x for x in snap.branches if x.path == h.branch.path), h.branch)
        if b.mode == "RO":  # link's action policy leaves it out
            raise oserror(errno.EROFS)
        probe = RequestProbe(self.probe)
        preserve = cfg.policy("create") in policies.PATH_PRESERVING and not cfg["ignorepponrename"]
        self._place_on(snap, probe, b, dirname(new), preserve, "link")
        # linkat(AT_SYMLINK_FOLLOW): os.link calls plain link(2) (which links the
        # /proc symlink itself: EXDEV) unless a dir fd is given; an absolute
        # source path ignores it.
        os.link(f"/proc/self/fd/{h.fd}", b.full(new), src_dir_fd=h.fd, follow_symlinks=True)
