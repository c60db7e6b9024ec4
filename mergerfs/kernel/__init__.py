"""The kernel transport (``fuse-binding=kernel``, the default): our own FUSE
session on ``/dev/fuse``, without libfuse.

The compiled loop (:mod:`mergerfs._kernel`) runs one worker thread per cloned
fd and answers the hot requests without the GIL; the rest come to Python, one
module per concern:

* ``protocol``: struct layouts, flags, opcodes, framing (no state)
* ``mount``: the mounted /dev/fuse fd (mount(2) as root, else fusermount3)
* ``negotiate``: the INIT exchange
* ``transport``: :class:`KernelTransport`: mount/serve/close, the opcode table, dispatch
* ``entries``, ``files``, ``dirs``, ``xattrs``: the request handlers, by what they act on
* ``notifier``: the one thread that writes cache invalidations

A new opcode: its number in ``protocol.Op``, a handler in one of the handler
modules, one entry in the table in ``transport``.
"""

from mergerfs.kernel.transport import KernelTransport

__all__ = ["KernelTransport"]
