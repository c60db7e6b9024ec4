"""rename (and renameat2's NOREPLACE / EXCHANGE): on every branch holding the
source, the new parent placed there first; ``rename-exdev`` for what cannot move."""

from __future__ import annotations

import errno
import os

from mergerfs import _fastpath, policies, ugid
from mergerfs.branches import Branch
from mergerfs.clone import remove_quietly
from mergerfs.errors import Aggregate, oserror
from mergerfs.ops.core import EXDEV_DIR, Snapshot, dirname, join
from mergerfs.ops.create import CreateOps
from mergerfs.probe import RequestProbe

RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2  # renameat2(2) flags


class RenameOps(CreateOps):
    """(A create mixin: ``rename-exdev`` leaves a symlink.)"""

    def rename(self, old: str, new: str, flags: int = 0) -> None:
        """rename(2), or renameat2(2) with RENAME_NOREPLACE / RENAME_EXCHANGE."""
        snap = self.snap
        cfg = snap.cfg
        probe = RequestProbe(self.probe)
        sources = self._select(snap, "rename", old, probe)
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == RENAME_NOREPLACE | RENAME_EXCHANGE:
            raise oserror(errno.EINVAL)
        if flags & RENAME_EXCHANGE:
            return self._exchange(snap, probe, sources, old, new)
        if flags & RENAME_NOREPLACE and any(probe.exists(b, new) for b in snap.branches):
            raise oserror(errno.EEXIST)  # anywhere in the pool, not only where old lives
        src_paths = {b.path for b in sources}
        newparent = dirname(new)
        preserve = cfg.policy("create") in policies.PATH_PRESERVING and not cfg["ignorepponrename"]
        agg = Aggregate()
        remove: list[tuple[Branch, str]] = []
        for b in snap.branches:
            if b.path not in src_paths:
                remove.append((b, new))
                continue
            try:
                self._place_on(snap, probe, b, newparent, preserve, "rename")
                if flags:
                    _fastpath.renameat2(b.full(old), b.full(new), flags)
                else:
                    os.rename(b.full(old), b.full(new))
                agg.success()
            except OSError as e:
                agg.failure(e.errno or errno.EIO)
                remove.append((b, old))
        if not agg.ok and agg.first_error == errno.EXDEV and cfg["rename-exdev"] != "passthrough":
            return self._rename_exdev(snap, sources, old, new)
        agg.raise_if_failed()
        for b, rel in remove:
            try:
                path = b.full(rel)
            except OSError:
                continue  # its parent is not on that branch: nothing to remove
            remove_quietly(path)

    def _exchange(self, snap: Snapshot, probe: RequestProbe, sources: list[Branch], old: str, new: str) -> None:
        """RENAME_EXCHANGE on every branch holding the names. Only a pool whose
        branches each hold both names or neither (and may all be written) can
        swap them whole; any other layout would leave a part of one name behind
        under the other: EXDEV, nothing changed."""
        old_on = [b.path for b in snap.branches if probe.exists(b, old)]
        new_on = [b.path for b in snap.branches if probe.exists(b, new)]
        if not new_on:
            raise oserror(errno.ENOENT)
        if old_on != new_on or [b.path for b in sources] != old_on:
            raise oserror(errno.EXDEV)

        def exchange(old_path: str, b: Branch) -> None:
            _fastpath.renameat2(old_path, b.full(new), RENAME_EXCHANGE)

        agg = Aggregate()
        for b in sources:
            agg.run(exchange, b.full(old), b)
        agg.raise_if_failed()

    def _rename_exdev(self, snap: Snapshot, sources: list[Branch], old: str, new: str) -> None:
        """``rename-exdev=rel-symlink|abs-symlink``: park the file in a hidden
        directory on its own branch and leave a symlink at the new name."""
        b = sources[0]
        hidden = join("/" + EXDEV_DIR, old.lstrip("/"))
        with ugid.as_root():
            os.makedirs(os.path.dirname(b.full(hidden)), exist_ok=True)
        os.rename(b.full(old), b.full(hidden))
        if snap.cfg["rename-exdev"] == "abs-symlink":
            target = self._mountpoint() + hidden
        else:
            target = os.path.relpath(hidden, dirname(new))
        try:
            self.symlink(target, new)
        except OSError:
            os.rename(b.full(hidden), b.full(old))
            raise
