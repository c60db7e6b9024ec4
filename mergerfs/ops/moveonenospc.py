"""moveonenospc: a write or fallocate that finds its branch full moves the
file to a branch the configured policy picks and tries again."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from typing import TypeVar

from mergerfs import policies, ugid
from mergerfs.clone import clonefile, remove_quietly
from mergerfs.errors import oserror
from mergerfs.ops.core import OPEN_STRIP, Core, Handle, dirname, is_unnamed, join
from mergerfs.probe import RequestProbe

log = logging.getLogger("mergerfs")
T = TypeVar("T")


class MoveOps(Core):
    #: Set by a transport that opens files itself (the kernel session's compiled
    #: OPEN): gives every such open on a branch root a registered Python handle,
    #: so the move switches them with the rest.
    adopt_branch: Callable[[str], None] | None = None

    def _moved(self, h: Handle, err: OSError, cfg, again: Callable[[], T]) -> T:
        """``again()`` once the file has moved, if ``err`` says its branch is full
        and ``moveonenospc`` is on; otherwise ``err`` stands."""
        policy = _moveonenospc_policy(cfg["moveonenospc"])
        if err.errno not in (errno.ENOSPC, errno.EDQUOT) or policy is None or is_unnamed(h.relpath):
            raise err  # (an unnamed file, O_TMPFILE: no name to copy it to)
        with h.lock:
            self._move(h, policy)
        return again()

    def _move(self, h: Handle, policy: str) -> None:
        """Copy the file to a branch with room, switch every open handle of it
        to the copy (same fd numbers via dup2), drop the original."""
        if self.adopt_branch is not None:
            self.adopt_branch(h.branch.path)
        snap = self.snap
        rel = h.relpath
        origin = h.branch.path  # h.branch changes below, with every other handle of the file
        others = tuple(b for b in snap.branches if b.path != origin)
        probe = RequestProbe(self.probe)
        try:
            dst = policies.select("create", policy, others, dirname(rel), probe)[0]
        except OSError:
            raise oserror(errno.ENOSPC) from None
        src_path = h.branch.full(rel)
        dst_path = dst.full(rel)
        tmp = dst.full(join(dirname(rel), f".mergerfs.move.{os.getpid()}.{h.fd}"))
        with ugid.as_root():
            self._clonepath(snap, probe, dst, dirname(rel))
            st = os.fstat(h.fd)
            # h.fd may be write-only: read through a fresh fd while the name is there
            src = os.open(src_path, os.O_RDONLY | os.O_CLOEXEC) if os.path.exists(src_path) else -1
            try:
                clonefile(src if src >= 0 else h.fd, st, tmp, dst_path, src_path)
            finally:
                if src >= 0:
                    os.close(src)
            # Under the lock: a concurrent release must not close (and an open
            # reuse) an fd number between our listing it and dup2 onto it.
            with self._handles_lock:
                for x in self.handles.values():
                    if x.branch.path == origin and x.relpath == rel:
                        fd = os.open(dst_path, (x.flags & ~(OPEN_STRIP | os.O_TRUNC)) | os.O_CLOEXEC)
                        os.dup2(fd, x.fd)
                        os.close(fd)
                        x.branch = dst
            remove_quietly(src_path)
        log.info("moveonenospc: moved %s from %s to %s", rel, origin, dst.path)


def _moveonenospc_policy(value) -> str | None:
    if value in (None, False, "false"):
        return None
    if value in (True, "true"):
        return "mfs"
    return str(value)
