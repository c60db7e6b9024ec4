"""open: the search policy's branch file, with ``link-cow`` breaking a hard
link before a write."""

from __future__ import annotations

import os
import stat as S
import threading

from mergerfs.branches import Branch
from mergerfs.clone import clonefile
from mergerfs.ops.core import OPEN_STRIP, Core, Handle
from mergerfs.probe import RequestProbe


class OpenOps(Core):
    def open(self, relpath: str, flags: int) -> Handle:
        snap = self.snap
        b, st = self._found(snap, "open", relpath, RequestProbe(self.probe))
        path = b.full(relpath)
        if snap.cfg["link-cow"] and (flags & os.O_ACCMODE) != os.O_RDONLY and S.S_ISREG(st.st_mode) and st.st_nlink > 1:
            _break_link(path, st)
        fd = os.open(path, (flags & ~OPEN_STRIP) | os.O_CLOEXEC)
        return self._register(Handle(fd, b, relpath, flags))

    def reopen(self, h: Handle, flags: int) -> Handle:
        """Another open of the file ``h`` holds (an unnamed one, O_TMPFILE, that
        the kernel reopens through /proc/self/fd): through ``h``'s fd, as the caller."""
        fd = os.open(f"/proc/self/fd/{h.fd}", (flags & ~OPEN_STRIP) | os.O_CLOEXEC)
        return self._register(Handle(fd, h.branch, h.relpath, flags))

    def disown(self, h: Handle) -> None:
        """Forget ``h`` without closing its fd: the kernel session's compiled loop owns it now."""
        with self._handles_lock:
            self.handles.pop(h.fd, None)

    def adopt(self, fd: int, root: str, relpath: str, flags: int) -> Handle:
        """The handle of branch fd ``fd`` that the kernel session opened itself
        (its compiled open, as :meth:`open` would) on branch ``root``."""
        b = next((b for b in self.snap.branches if b.path == root), None) or Branch(root)
        return self._register(Handle(fd, b, relpath, flags))


def _break_link(path: str, st: os.stat_result) -> None:
    """link-cow: give this name its own copy before it is opened for writing."""
    src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        clonefile(src, st, f"{path}.mergerfs.cow.{os.getpid()}.{threading.get_ident()}", path, path)
    finally:
        os.close(src)
