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
import threading

from mergerfs import _fastpath

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


def _fix(value: int) -> int:
    # 0 is invalid and 1 is the root's nodeid: never hand those out.
    return value if value > ROOT else value + 2


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


class Node:
    """One nodeid the kernel holds. Kept small (a walk of 100k files holds 100k
    of these): the newest path plus a tuple of other hard-link names (usually
    the shared empty one), ints for identity and cache stamp, no fh set until
    the file is opened."""

    __slots__ = ("path", "links", "nlookup", "ident", "isdir", "seen", "fhs")

    def __init__(self, relpath: str, ident: int | None, isdir: bool) -> None:
        self.path = relpath  # newest name
        self.links: tuple[str, ...] = ()  # older names of a hard-linked file, newest first
        self.nlookup = 0
        self.ident = ident  # identity() on the branch: tells a reused number apart
        self.isdir = isdir
        self.seen: int | None = None  # stamp() last told to the kernel
        self.fhs: set[int] | None = None  # open file handles, for ops on unlinked files

    @property
    def paths(self) -> tuple[str, ...]:
        """Every name, newest first (never empty)."""
        return (self.path, *self.links)

    @paths.setter
    def paths(self, names) -> None:
        # a rename between two names of one file can repeat a name: keep each once
        self.path, *rest = dict.fromkeys(names)
        self.links = tuple(rest)


def identity(dev: int, ino: int) -> int:
    """(st_dev, st_ino) as one int."""
    return (dev << 64) | (ino & (2**64 - 1))


def stamp(st) -> int:
    """What tells the kernel's cached pages of a regular file stale: size and mtime."""
    return hash((st.st_size, st.st_mtime_ns))


class InodeTable:
    def __init__(self) -> None:
        root = Node("/", None, True)
        root.nlookup = 1 << 62  # the root is never forgotten
        self._nodes: dict[int, Node] = {ROOT: root}
        self._by_path: dict[str, int] = {"/": ROOT}
        self._lock = threading.Lock()
        self._peak = 1  # most nodes held since the last shrink
        #: never-forget-nodes: FORGET leaves nodes in place (nodeids stay valid for NFS handles)
        self.never_forget = False

    def node(self, ino: int) -> Node:
        n = self._nodes.get(ino)
        if n is None:
            # The kernel asked about a nodeid we never gave out (or forgot): stale.
            raise OSError(errno.ESTALE, "stale inode")
        return n

    def get(self, ino: int) -> Node | None:
        return self._nodes.get(ino)

    def relpath(self, ino: int) -> str:
        return self.node(ino).path

    def nodeids(self) -> list[int]:
        with self._lock:
            return list(self._nodes)

    def remember(self, ino: int, relpath: str, ident: int | None, isdir: bool = False) -> tuple[int, bool]:
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
                    n = self._nodes[ino] = Node(relpath, ident, isdir)
                    self._peak = max(self._peak, len(self._nodes))
                    break
                if n.ident == ident:
                    break
                if relpath in n.paths:
                    n.ident = ident
                    n.isdir = isdir
                    n.seen = None
                    replaced = True
                    break
                salt += 1
                ino = _fix(_fastpath.hash64(f"{relpath}\0{salt}".encode("utf-8", "surrogateescape")))
            self._bind(ino, n, relpath)
            n.nlookup += 1
            return ino, replaced

    def _bind(self, ino: int, n: Node, relpath: str) -> None:
        """Make ``relpath`` name node ``ino`` (newest first), unbinding its old owner."""
        old = self._by_path.get(relpath)
        if old is not None and old != ino:
            self._unbind(relpath)
        if n.path != relpath:
            n.paths = (relpath, *(p for p in n.paths if p != relpath))
        self._by_path[relpath] = ino

    def _unbind(self, relpath: str) -> None:
        """``relpath`` no longer names its node; a node keeps its last path so
        fd-backed calls on an unlinked open file still find it. A node that lost
        its last name forgets its identity: filesystems reuse inode numbers at
        once, and the next file with this (st_dev, st_ino) is another object
        (it must not inherit the kernel's cached pages and size)."""
        ino = self._by_path.pop(relpath, None)
        n = self._nodes.get(ino) if ino is not None else None
        if n is None:
            return
        rest = tuple(p for p in n.paths if p != relpath)
        if rest:
            n.paths = rest
        else:  # relpath was its only name
            n.ident = None

    def forget(self, ino: int, count: int) -> None:
        with self._lock:
            n = self._nodes.get(ino)
            if n is None or ino == ROOT:
                return
            n.nlookup -= count
            if n.nlookup <= 0 and not n.fhs and not self.never_forget:
                self._drop(ino, n)

    def _drop(self, ino: int, n: Node) -> None:
        del self._nodes[ino]
        for p in n.paths:
            if self._by_path.get(p) == ino:
                del self._by_path[p]
        if self._peak > 4096 and len(self._nodes) < self._peak // 4:
            self._shrink()

    def _shrink(self) -> None:
        """After the kernel forgot most of a big walk: dicts never shrink on
        delete, so copy them to right-sized ones and hand the heap back."""
        self._nodes = dict(self._nodes)
        self._by_path = dict(self._by_path)
        self._peak = len(self._nodes)
        _fastpath.trim_heap()

    def unlinked(self, relpath: str) -> None:
        with self._lock:
            self._unbind(relpath)

    def get_path(self, ino: int, default: str) -> str:
        n = self._nodes.get(ino)
        return n.path if n is not None else default

    def exchanged(self, a: str, b: str) -> None:
        """RENAME_EXCHANGE swapped what ``a`` and ``b`` name (subtrees included)."""
        tmp = "\0exchange"  # no relpath contains NUL
        self.renamed(a, tmp)
        self.renamed(b, a)
        self.renamed(tmp, b)

    def renamed(self, old: str, new: str) -> None:
        """Point the node at ``old`` (and, for a directory, all below it) to ``new``."""
        with self._lock:
            ino = self._by_path.get(old)
            if ino is None:
                self._unbind(new)  # whatever was at the target is gone
                return
            n = self._nodes[ino]
            self._by_path.pop(old)
            n.paths = tuple(new if p == old else p for p in n.paths)
            self._bind(ino, n, new)
            if not n.isdir:
                return
            prefix = old + "/"
            moved = [(p, i) for p, i in self._by_path.items() if p.startswith(prefix)]
            for p, i in moved:
                del self._by_path[p]
            for p, i in moved:
                child = self._nodes[i]
                q = new + p[len(old) :]
                child.paths = tuple(q if x == p else x for x in child.paths)
                self._by_path[q] = i

    def add_fh(self, ino: int, fh: int) -> None:
        with self._lock:
            n = self.node(ino)
            if n.fhs is None:
                n.fhs = set()
            n.fhs.add(fh)

    def drop_fh(self, ino: int, fh: int) -> None:
        with self._lock:
            n = self._nodes.get(ino)
            if n is not None and n.fhs is not None:
                n.fhs.discard(fh)
                if not n.fhs:
                    n.fhs = None
                if n.nlookup <= 0 and not n.fhs:
                    self._drop(ino, n)

    def any_fh(self, ino: int) -> int | None:
        with self._lock:
            n = self._nodes.get(ino)
            return next(iter(n.fhs)) if n is not None and n.fhs else None
