"""Inode numbers (``inodecalc``) and the kernel nodeid -> relpath table.

One number is both the kernel's nodeid and the reported ``st_ino``, so
nodeids *are* the ``inodecalc`` values (salted only where two objects would
share one). The table itself is compiled (:mod:`mergerfs._nodes`).
"""

from __future__ import annotations

import stat as S

from mergerfs import _fastpath, _nodes

ROOT = 1  # llfuse.ROOT_INODE; kept here so this module stays llfuse-free
#: ``inodecalc`` values and the codes ``_fastpath`` computes with.
_CODES = {
    "passthrough": _fastpath.CALC_PASSTHROUGH,
    "path-hash": _fastpath.CALC_PATH,
    "path-hash32": _fastpath.CALC_PATH | _fastpath.CALC_32,
    "devino-hash": _fastpath.CALC_DEVINO,
    "devino-hash32": _fastpath.CALC_DEVINO | _fastpath.CALC_32,
    "hybrid-hash": _fastpath.CALC_HYBRID,
    "hybrid-hash32": _fastpath.CALC_HYBRID | _fastpath.CALC_32,
}
CALCS = tuple(_CODES)


def mode_code(mode: str) -> int:
    """An ``inodecalc`` value as the code ``_fastpath`` computes with."""
    return _CODES[mode]


def calc(mode: str, relpath: str, st_mode: int, dev: int, ino: int) -> int:
    """The ``st_ino`` mergerfs reports for an entry, per ``inodecalc`` ``mode``."""
    return _fastpath.inode_calc(
        mode_code(mode),
        relpath.encode("utf-8", "surrogateescape"),
        S.S_ISDIR(st_mode),
        dev & (2**64 - 1),
        ino & (2**64 - 1),
    )


def identity(dev: int, ino: int) -> int:
    """(st_dev, st_ino) as one int."""
    return (dev << 64) | (ino & (2**64 - 1))


def stamp(st) -> int:
    """What tells the kernel's cached pages of a regular file stale: size and mtime."""
    return _nodes.stamp_of(st.st_size, st.st_mtime_ns)


#: The kernel's nodeids (nodeid -> relpath, lookup counts, hard-link names,
#: open handles), kept in C so the kernel session's workers use it without the GIL.
InodeTable = _nodes.NodeTable
