"""What every request handler of the kernel session may use: the state the
transport holds and the encoders of the replies several opcodes share. The
handler groups (entries, files, dirs, xattrs) derive from :class:`Base`, and
:class:`~mergerfs.kernel.transport.KernelTransport` composes them."""

from __future__ import annotations

import os
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

    def _pyfh(self, fh: int) -> int:
        """The :class:`~mergerfs.requests.Requests` handle behind the kernel's fh."""
        assert self.session is not None
        return self.session.pyfh(fh)
