"""What every request handler of the kernel session may use: the state the
transport holds and the encoders of the replies several opcodes share. The
handler groups (entries, files, dirs, xattrs) derive from :class:`Base`, and
:class:`~mergerfs.kernel.transport.KernelTransport` composes them."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from mergerfs import _kernel

if TYPE_CHECKING:
    from mergerfs.fs import FileSystem
    from mergerfs.requests import Requests


class Base:
    fs: FileSystem
    req: Requests
    session: _kernel.Session | None
    devfd: int
    minor: int  # the negotiated protocol minor: some layouts depend on it

    def _entry_out(self, ino: int, st: os.stat_result, cacheable: bool = True) -> bytes:
        entry, attr, _ = self.req.timeouts()
        if not cacheable:
            entry = attr = 0
        return _kernel.entry_out(ino, st, entry, attr)

    def _attr_out(self, ino: int, st: os.stat_result) -> bytes:
        return _kernel.attr_out(ino, st, self.req.timeouts()[1])

    _adopt_lock: threading.Lock  # an adoption is whole to a Python RELEASE (see _adopt)

    def _pyfh(self, fh: int) -> int:
        """The :class:`~mergerfs.requests.Requests` handle behind the kernel's fh
        (0: none). An open the compiled OPEN made has none until a Python
        request needs it: it is adopted here."""
        assert self.session is not None
        return self.session.pyfh(fh) or self._adopt(fh)

    def _adopt(self, fh: int) -> int:
        """Give the C-owned open ``fh`` a Python handle (fd, branch, relpath,
        flags registered as a Python open would be); from then on the slot is
        Python's and so is its RELEASE. 0 if ``fh`` is no C-owned open.

        Race-free against its RELEASE: the claim is atomic with a C RELEASE
        (the slot mutex), and a Python RELEASE waits for ``_adopt_lock``, so it
        never sees a slot between its claim and its Python handle."""
        assert self.session is not None
        with self._adopt_lock:
            pyfh = self.session.pyfh(fh)
            if pyfh:
                return pyfh  # adopted meanwhile
            got = self.session.claim(fh)
            if got is None:
                return 0
            fd, nodeid, root, flags = got
            try:
                pyfh = self.req.adopt(nodeid, fd, os.fsdecode(root), flags)
            finally:
                self.session.adopted(fh, pyfh)  # 0: the fd is closed, the slot freed
            return pyfh

    def _adopt_open(self, nodeid: int) -> None:
        """One C-owned open of ``nodeid`` adopted (GETATTR/SETATTR borrowing an open handle)."""
        assert self.session is not None
        for fh in self.session.c_fhs(nodeid=nodeid):
            if self._adopt(fh):
                return

    def _adopt_branch(self, root: str) -> None:
        """Every C-owned open on branch ``root`` adopted (moveonenospc switches Python handles only)."""
        assert self.session is not None
        for fh in self.session.c_fhs(root=os.fsencode(root)):
            self._adopt(fh)
