"""link: on every branch holding the source; ``link-exdev`` for what cannot."""

from __future__ import annotations

import errno
import os

from mergerfs import policies
from mergerfs.errors import Aggregate
from mergerfs.ops.core import dirname
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
