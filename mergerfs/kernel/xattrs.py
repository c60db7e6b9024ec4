"""Handlers of the extended-attribute requests (the control xattrs included:
:class:`~mergerfs.requests.Requests` tells them apart)."""

from __future__ import annotations

import errno
import struct

from mergerfs.kernel.base import Base
from mergerfs.kernel.protocol import cstr


class XattrHandlers(Base):
    def _setxattr(self, h, body):
        size, flags = struct.unpack_from("<II", body)
        name, i = cstr(body, 8)
        self.req.setxattr(h.nodeid, name, body[i : i + size], flags)

    def _getxattr(self, h, body):
        (size,) = struct.unpack_from("<I", body)
        return _sized(size, self.req.getxattr(h.nodeid, cstr(body, 8)[0]))

    def _listxattr(self, h, body):
        (size,) = struct.unpack_from("<I", body)
        return _sized(size, b"".join(n + b"\0" for n in self.req.listxattr(h.nodeid)))

    def _removexattr(self, h, body):
        self.req.removexattr(h.nodeid, body[:-1])


def _sized(size: int, value: bytes) -> bytes:
    """A size probe (0) gets the length; a short buffer ERANGE."""
    if size == 0:
        return struct.pack("<II", len(value), 0)
    if len(value) > size:
        raise OSError(errno.ERANGE, "buffer too small")
    return value
