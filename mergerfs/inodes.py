"""Inode numbers (``inodecalc``) and the kernel nodeid -> relpath table.

llfuse uses one number as both the kernel's nodeid and the reported
``st_ino``, so nodeids *are* the ``inodecalc`` values. The table maps each
nodeid the kernel holds to the relpath it was last seen at, with the lookup
count the kernel will later ``forget``. A table-wide lock guards it; every
method is short and never does I/O.
"""

from __future__ import annotations

import errno
import stat as S
import struct
import threading

from mergerfs import _fastpath

ROOT = 1  # llfuse.ROOT_INODE; kept here so this module stays llfuse-free
CALCS = ("passthrough", "path-hash", "path-hash32", "devino-hash", "devino-hash32",
         "hybrid-hash", "hybrid-hash32")
_DEVINO = struct.Struct("<QQ")


def _fix(value: int) -> int:
    # 0 is invalid and 1 is the root's nodeid: never hand those out.
    return value if value > ROOT else value + 2


def path_hash(relpath: str) -> int:
    return _fix(_fastpath.hash64(relpath.encode("utf-8", "surrogateescape")))


def devino_hash(dev: int, ino: int) -> int:
    return _fix(_fastpath.hash64(_DEVINO.pack(dev & (2**64 - 1), ino & (2**64 - 1))))


def calc(mode: str, relpath: str, st_mode: int, dev: int, ino: int) -> int:
    """The ``st_ino`` mergerfs reports for an entry, per ``inodecalc`` ``mode``."""
    if mode == "passthrough":
        return _fix(ino)
    base = mode.removesuffix("32")
    if base == "path-hash" or (base == "hybrid-hash" and S.S_ISDIR(st_mode)):
        value = path_hash(relpath)
    else:
        value = devino_hash(dev, ino)
    return _fix(value & 0xFFFFFFFF) if mode.endswith("32") else value


class Node:
    __slots__ = ("relpath", "nlookup", "ident", "seen", "fhs")

    def __init__(self, relpath: str, ident: tuple[int, int] | None) -> None:
        self.relpath = relpath
        self.nlookup = 0
        self.ident = ident  # (st_dev, st_ino) on the branch: tells a reused number apart
        self.seen: tuple[int, int] | None = None  # (size, mtime_ns) last told to the kernel
        self.fhs: set[int] = set()  # open file handles, for ops on unlinked files


class InodeTable:
    def __init__(self) -> None:
        self._nodes: dict[int, Node] = {ROOT: Node("/", None)}
        self._nodes[ROOT].nlookup = 1 << 62  # the root is never forgotten
        self._lock = threading.Lock()

    def node(self, ino: int) -> Node:
        n = self._nodes.get(ino)
        if n is None:
            # The kernel asked about a nodeid we never gave out (or forgot): stale.
            raise OSError(errno.ESTALE, "stale inode")
        return n

    def relpath(self, ino: int) -> str:
        return self.node(ino).relpath

    def remember(self, ino: int, relpath: str, ident: tuple[int, int] | None) -> tuple[int, bool]:
        """Count one kernel lookup of ``relpath`` answered with ``ino``.

        Returns ``(nodeid, replaced)``. If ``ino`` is held for a *different*
        object at a different path (a renamed directory's path-hash reused, two
        branches with the same passthrough inode), a fresh number is derived so
        the kernel never merges two objects. ``replaced`` is true when the same
        path now holds a different object under the same number: the caller must
        invalidate the kernel's cached data for it.
        """
        with self._lock:
            salt = 0
            replaced = False
            while True:
                n = self._nodes.get(ino)
                if n is None:
                    n = self._nodes[ino] = Node(relpath, ident)
                    break
                if n.ident == ident or ino == ROOT:
                    break
                if n.relpath == relpath:
                    n.ident = ident
                    n.seen = None
                    replaced = True
                    break
                salt += 1
                ino = _fix(_fastpath.hash64(f"{relpath}\0{salt}".encode("utf-8", "surrogateescape")))
            n.relpath = relpath
            n.nlookup += 1
            return ino, replaced

    def forget(self, ino: int, count: int) -> None:
        with self._lock:
            n = self._nodes.get(ino)
            if n is None or ino == ROOT:
                return
            n.nlookup -= count
            if n.nlookup <= 0 and not n.fhs:
                del self._nodes[ino]

    def renamed(self, old: str, new: str) -> None:
        """Point every node at or below ``old`` to its new relpath."""
        prefix = old + "/"
        with self._lock:
            for n in self._nodes.values():
                if n.relpath == old:
                    n.relpath = new
                elif n.relpath.startswith(prefix):
                    n.relpath = new + n.relpath[len(old):]

    def add_fh(self, ino: int, fh: int) -> None:
        with self._lock:
            self.node(ino).fhs.add(fh)

    def drop_fh(self, ino: int, fh: int) -> None:
        with self._lock:
            n = self._nodes.get(ino)
            if n is not None:
                n.fhs.discard(fh)
                if n.nlookup <= 0 and not n.fhs:
                    del self._nodes[ino]

    def any_fh(self, ino: int) -> int | None:
        with self._lock:
            n = self._nodes.get(ino)
            return next(iter(n.fhs), None) if n else None
