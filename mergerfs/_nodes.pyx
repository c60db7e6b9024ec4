# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The kernel's nodeids, in C: nodeid -> relpath (plus a hard-linked file's
other names), the lookup count FORGET takes back, the open-handle count, and
relpath -> nodeid.

One table serves both transports. Python changes it through the methods
below; the kernel session's workers look names up, count lookups and forget
without the GIL through the cdef methods (``_nodes.pxd``). Everything runs
under one mutex held only for memory work: no I/O, no GIL, no notification.
A walk of 100k files costs ~200 bytes a node instead of a Python object, a
str and two dict entries.

Names are relpaths as bytes (utf-8, surrogateescape); the root is ``/``.
"""

from cpython.bytes cimport PyBytes_AS_STRING
from libc.stdint cimport uint8_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, strcmp, strlen, strncmp

from mergerfs._fastpath cimport _path_hash

cdef object errno  # a module global the C code reaches directly
import errno

cdef extern from "<malloc.h>" nogil:
    int malloc_trim(size_t pad)

include "_names.pxi"

cdef enum:
    ROOT = 1
    MIN_CAP = 64


cdef inline size_t _slot_of(uint64_t nodeid, size_t cap) noexcept nogil:
    cdef uint64_t h = nodeid * 0x9E3779B97F4A7C15ULL
    return <size_t>((h ^ (h >> 29)) & (cap - 1))


cdef char *_dup(const char *p) noexcept nogil:
    cdef size_t n = strlen(p) + 1
    cdef char *s = <char *>malloc(n)
    if s != NULL:
        memcpy(s, p, n)
    return s


cdef inline bint _cyclic_between(size_t lo, size_t x, size_t hi) noexcept nogil:
    """``x`` in (lo, hi] on a ring: an entry whose home is there stays behind a hole at lo."""
    return (lo < x <= hi) if lo <= hi else (lo < x or x <= hi)


cdef class NodeMaps:
    """The table's two maps and what keeps them consistent: nodeid -> node,
    name -> node (every name a node owns, bound to at most one node)."""

    def __cinit__(self):
        pthread_mutex_init(&self.mu, NULL)
        self.ncap = MIN_CAP
        self.pcap = MIN_CAP
        self.nodes = <Node **>calloc(self.ncap, sizeof(Node *))
        self.slots = <PathSlot *>calloc(self.pcap, sizeof(PathSlot))
        if self.nodes == NULL or self.slots == NULL:
            raise MemoryError()
        cdef Node *root = self._new(ROOT, b"/", 0, 0, 0, 1)
        if root == NULL:
            raise MemoryError()
        root.nlookup = 1 << 62  # the root is never forgotten
        self._put_name(root, root.path)
        self.peak = 1

    def __dealloc__(self):
        cdef size_t i
        if self.nodes != NULL:
            for i in range(self.ncap):
                if self.nodes[i] != NULL:
                    _free_node(self.nodes[i])
        free(self.nodes)
        free(self.slots)
        pthread_mutex_destroy(&self.mu)

    cdef void lock(self) noexcept nogil:
        pthread_mutex_lock(&self.mu)

    cdef void unlock(self) noexcept nogil:
        pthread_mutex_unlock(&self.mu)

    # ------------------------------------------------------------ nodeid map
    cdef Node *node(self, uint64_t nodeid) noexcept nogil:
        cdef size_t i = _slot_of(nodeid, self.ncap)
        while self.nodes[i] != NULL:
            if self.nodes[i].nodeid == nodeid:
                return self.nodes[i]
            i = (i + 1) & (self.ncap - 1)
        return NULL

    cdef bint _resize_nodes(self, size_t cap) noexcept nogil:
        cdef Node **old = self.nodes
        cdef size_t oldcap = self.ncap
        cdef size_t i, j
        cdef Node **new = <Node **>calloc(cap, sizeof(Node *))
        if new == NULL:
            return False
        for i in range(oldcap):
            if old[i] != NULL:
                j = _slot_of(old[i].nodeid, cap)
                while new[j] != NULL:
                    j = (j + 1) & (cap - 1)
                new[j] = old[i]
        self.nodes = new
        self.ncap = cap
        free(old)
        return True

    cdef Node *_new(self, uint64_t nodeid, const char *path, bint has_ident, uint64_t dev, uint64_t ino,
                    bint isdir) noexcept nogil:
        if (self.ncount + 1) * 10 > self.ncap * 7 and not self._resize_nodes(self.ncap * 2):
            return NULL
        cdef Node *n = <Node *>calloc(1, sizeof(Node))
        if n == NULL:
            return NULL
        n.path = _dup(path)
        if n.path == NULL:
            free(n)
            return NULL
        n.nodeid = nodeid
        n.has_ident = <uint8_t>has_ident
        n.dev = dev
        n.ino = ino
        n.isdir = <uint8_t>isdir
        cdef size_t i = _slot_of(nodeid, self.ncap)
        while self.nodes[i] != NULL:
            i = (i + 1) & (self.ncap - 1)
        self.nodes[i] = n
        self.ncount += 1
        if self.ncount > self.peak:
            self.peak = self.ncount
        return n

    cdef void _del_node(self, Node *n) noexcept nogil:
        """Take ``n`` out of the nodeid map (backward-shift: no tombstones)."""
        cdef size_t mask = self.ncap - 1
        cdef size_t i = _slot_of(n.nodeid, self.ncap)
        cdef size_t j
        while self.nodes[i] != n:
            i = (i + 1) & mask
        j = i
        while True:
            j = (j + 1) & mask
            if self.nodes[j] == NULL:
                break
            if _cyclic_between(i, _slot_of(self.nodes[j].nodeid, self.ncap), j):
                continue
            self.nodes[i] = self.nodes[j]
            i = j
        self.nodes[i] = NULL
        self.ncount -= 1

    # ------------------------------------------------------------ name map
    cdef PathSlot *_find(self, const char *path) noexcept nogil:
        cdef uint64_t h = _path_hash(path, strlen(path))
        cdef size_t i = <size_t>(h & (self.pcap - 1))
        while self.slots[i].node != NULL:
            if self.slots[i].hash == h and strcmp(self.slots[i].key, path) == 0:
                return &self.slots[i]
            i = (i + 1) & (self.pcap - 1)
        return NULL

    cdef bint _resize_slots(self, size_t cap) noexcept nogil:
        cdef PathSlot *old = self.slots
        cdef size_t oldcap = self.pcap
        cdef size_t i, j
        cdef PathSlot *new = <PathSlot *>calloc(cap, sizeof(PathSlot))
        if new == NULL:
            return False
        for i in range(oldcap):
            if old[i].node != NULL:
                j = <size_t>(old[i].hash & (cap - 1))
                while new[j].node != NULL:
                    j = (j + 1) & (cap - 1)
                new[j] = old[i]
        self.slots = new
        self.pcap = cap
        free(old)
        return True

    cdef void _put_name(self, Node *n, const char *key) noexcept nogil:
        """Name ``key`` (one of ``n``'s own strings) -> ``n``, replacing any entry."""
        cdef PathSlot *s = self._find(key)
        if s != NULL:
            s.node = n
            s.key = key
            return
        if (self.pcount + 1) * 10 > self.pcap * 7:
            self._resize_slots(self.pcap * 2)
        cdef uint64_t h = _path_hash(key, strlen(key))
        cdef size_t i = <size_t>(h & (self.pcap - 1))
        while self.slots[i].node != NULL:
            i = (i + 1) & (self.pcap - 1)
        self.slots[i].hash = h
        self.slots[i].node = n
        self.slots[i].key = key
        self.pcount += 1

    cdef void _del_slot(self, PathSlot *s) noexcept nogil:
        cdef size_t mask = self.pcap - 1
        cdef size_t i = <size_t>(s - self.slots)
        cdef size_t j = i
        while True:
            j = (j + 1) & mask
            if self.slots[j].node == NULL:
                break
            if _cyclic_between(i, <size_t>(self.slots[j].hash & mask), j):
                continue
            self.slots[i] = self.slots[j]
            i = j
        self.slots[i].node = NULL
        self.slots[i].key = NULL
        self.pcount -= 1

    # ------------------------------------------------------------ bind/unbind
    cdef void _bind(self, Node *n, const char *path) noexcept nogil:
        """Make ``path`` name ``n`` (its newest name), unbinding its old owner."""
        cdef PathSlot *s = self._find(path)
        if s != NULL and s.node != n:
            self._unbind(path)
        _make_newest(n, path)
        self._put_name(n, n.path)

    cdef void _unbind(self, const char *path) noexcept nogil:
        """``path`` no longer names its node. A node keeps its last name (fd-backed
        calls on an unlinked open file still find it) but forgets its identity:
        filesystems reuse inode numbers at once, and the next file with this
        (st_dev, st_ino) is another object."""
        cdef PathSlot *s = self._find(path)
        if s == NULL:
            return
        cdef Node *n = s.node
        self._del_slot(s)
        if not _drop_name(n, path):
            n.has_ident = 0

    cdef void _drop(self, Node *n) noexcept nogil:
        cdef PathSlot *s = self._find(n.path)
        cdef uint32_t i
        if s != NULL and s.node == n:
            self._del_slot(s)
        for i in range(n.nlinks):
            s = self._find(n.links[i])
            if s != NULL and s.node == n:
                self._del_slot(s)
        self._del_node(n)
        _free_node(n)
        if self.peak > 4096 and self.ncount < self.peak // 4:
            self._shrink()

    cdef void _shrink(self) noexcept nogil:
        """After the kernel forgot most of a big walk: right-size both maps and
        hand the freed heap back."""
        cdef size_t cap = MIN_CAP
        while cap * 7 < self.ncount * 20:
            cap *= 2
        self._resize_nodes(cap)
        cap = MIN_CAP
        while cap * 7 < self.pcount * 20:
            cap *= 2
        self._resize_slots(cap)
        self.peak = self.ncount
        malloc_trim(0)


cdef class NodeTable(NodeMaps):
    """Every nodeid the kernel holds (see the module docstring)."""

    def __cinit__(self):
        self.fhs = {}
        self.never_forget = False

    # ------------------------------------------------------------ for the C session
    cdef uint64_t remember_c(self, uint64_t ino, const char *path, bint has_ident, uint64_t dev,
                             uint64_t st_ino, bint isdir, bint may_replace, bint *replaced) noexcept nogil:
        """Count one kernel lookup of ``path`` answered with ``ino`` (mutex held).

        Returns the nodeid (0: out of memory). A name already bound to this
        very object (same identity) answers the nodeid the kernel holds for
        it, whatever ``ino`` is now: a renamed directory's path hash, or a
        number derived for it earlier, must not give one object two nodeids.
        If ``ino`` is held for a *different* object at a different name (a renamed directory's path hash
        reused, two branches with the same passthrough inode), a fresh number is
        derived so the kernel never merges two objects. ``replaced``: the same
        name now holds a different object under the same number, and the
        kernel's cached data of it must go; without ``may_replace`` that case
        returns 0 with nothing changed (the caller cannot notify the kernel).
        """
        cdef uint64_t salt = 0
        cdef Node *n = NULL
        cdef char *salted = NULL
        cdef size_t plen = strlen(path)
        cdef int digits
        cdef PathSlot *bound = self._find(path)
        replaced[0] = False
        if bound != NULL and has_ident and bound.node.has_ident and bound.node.dev == dev \
                and bound.node.ino == st_ino:
            n = bound.node
            self._make_newest_and_count(n, path)
            return n.nodeid
        while True:
            n = self.node(ino)
            if n == NULL:
                n = self._new(ino, path, has_ident, dev, st_ino, isdir)
                if n == NULL:
                    free(salted)
                    return 0
                break
            if n.has_ident == has_ident and (not has_ident or (n.dev == dev and n.ino == st_ino)):
                break
            if _name(n, path) != NULL:
                if not may_replace:
                    free(salted)
                    return 0
                n.has_ident = <uint8_t>has_ident
                n.dev = dev
                n.ino = st_ino
                n.isdir = <uint8_t>isdir
                n.has_seen = 0
                replaced[0] = True
                break
            salt += 1
            if salted == NULL:
                salted = <char *>malloc(plen + 24)
                if salted == NULL:
                    return 0
                memcpy(salted, path, plen)
                salted[plen] = 0
            digits = _decimal(salted + plen + 1, salt)
            ino = _path_hash(salted, plen + 1 + <size_t>digits)
        free(salted)
        self._make_newest_and_count(n, path)
        return ino

    cdef void _make_newest_and_count(self, Node *n, const char *path) noexcept nogil:
        self._bind(n, path)
        n.nlookup += 1

    cdef void forget_c(self, uint64_t nodeid, uint64_t count) noexcept nogil:
        cdef Node *n = self.node(nodeid)
        if n == NULL or nodeid == ROOT:
            return
        n.nlookup -= <int64_t>count
        if n.nlookup <= 0 and n.nfh == 0 and not self.never_forget:
            self._drop(n)

    # ------------------------------------------------------------ Python API
    def remember(self, uint64_t ino, relpath: str, ident, bint isdir=False):
        """Count one kernel lookup of ``relpath`` answered with ``ino``: (nodeid, replaced).
        ``ident``: inodes.identity(st_dev, st_ino), or None."""
        cdef bytes p = _enc(relpath)
        cdef bint has_ident = ident is not None
        cdef uint64_t dev = (ident >> 64) & 0xFFFFFFFFFFFFFFFF if has_ident else 0
        cdef uint64_t st_ino = ident & 0xFFFFFFFFFFFFFFFF if has_ident else 0
        cdef bint replaced[1]  # out-parameter, set by remember_c
        cdef uint64_t got
        self.lock()
        got = self.remember_c(ino, PyBytes_AS_STRING(p), has_ident, dev, st_ino, isdir, True, replaced)
        self.unlock()
        if got == 0:
            raise MemoryError()
        return got, replaced[0]

    def forget(self, uint64_t nodeid, uint64_t count):
        self.lock()
        self.forget_c(nodeid, count)
        self.unlock()

    def relpath(self, uint64_t nodeid) -> str:
        """The newest name of ``nodeid``; ESTALE for a nodeid never given out (or forgotten)."""
        cdef bytes p = None
        self.lock()
        cdef Node *n = self.node(nodeid)
        if n != NULL:
            p = n.path
        self.unlock()
        if p is None:
            raise OSError(errno.ESTALE, "stale inode")
        return _dec(p)

    def get_path(self, uint64_t nodeid, default: str) -> str:
        try:
            return self.relpath(nodeid)
        except OSError:
            return default

    def paths(self, uint64_t nodeid) -> tuple:
        """Every name of ``nodeid``, newest first."""
        cdef uint32_t i
        cdef list out = []
        cdef list names
        cdef bytes p
        self.lock()
        cdef Node *n = self.node(nodeid)
        if n != NULL:
            out.append(<bytes>n.path)
            for i in range(n.nlinks):
                out.append(<bytes>n.links[i])
        self.unlock()
        if not out:
            raise OSError(errno.ESTALE, "stale inode")
        names = []
        for p in out:
            names.append(_dec(p))
        return tuple(names)

    def nodeids(self) -> list:
        cdef size_t i
        cdef list out = []
        self.lock()
        for i in range(self.ncap):
            if self.nodes[i] != NULL:
                out.append(self.nodes[i].nodeid)
        self.unlock()
        return out

    def __len__(self):
        return <Py_ssize_t>self.ncount

    def swap_seen(self, uint64_t nodeid, uint64_t value):
        """Record the stamp() the kernel now has for ``nodeid``; the one before (None: none).
        ESTALE for an unknown nodeid."""
        cdef object before = None
        self.lock()
        cdef Node *n = self.node(nodeid)
        if n != NULL:
            if n.has_seen:
                before = n.seen
            n.seen = value
            n.has_seen = 1
        self.unlock()
        if n == NULL:
            raise OSError(errno.ESTALE, "stale inode")
        return before

    def unlinked(self, relpath: str):
        cdef bytes p = _enc(relpath)
        self.lock()
        self._unbind(PyBytes_AS_STRING(p))
        self.unlock()

    def exchanged(self, a: str, b: str):
        """RENAME_EXCHANGE swapped what ``a`` and ``b`` name (subtrees included)."""
        cdef str tmp = "//exchange"  # no relpath holds "//"
        self.renamed(a, tmp)
        self.renamed(b, a)
        self.renamed(tmp, b)

    def renamed(self, old: str, new: str):
        """Point the node at ``old`` (and, for a directory, all below it) to ``new``."""
        cdef bytes o = _enc(old)
        cdef bytes w = _enc(new)
        self.lock()
        try:
            self._renamed(PyBytes_AS_STRING(o), PyBytes_AS_STRING(w))
        finally:
            self.unlock()

    cdef int _renamed(self, const char *old, const char *new) except -1:
        if self._rename_node(old, new):
            self._move_below(old, new)
        return 0

    cdef bint _rename_node(self, const char *old, const char *new) noexcept nogil:
        """Point the node named ``old`` at ``new`` (the lock held): True if it is a
        directory, whose names below still have to move (:meth:`_move_below`)."""
        cdef PathSlot *s = self._find(old)
        cdef Node *n
        if s == NULL:
            self._unbind(new)  # whatever was at the target is gone
            return False
        n = s.node
        self._del_slot(s)
        _rename_name(n, old, new)
        self._bind(n, new)
        return n.isdir != 0

    cdef int _move_below(self, const char *old, const char *new) except -1:
        """Every name under directory ``old/`` now starts with ``new/``."""
        cdef size_t olen = strlen(old)
        cdef size_t i
        cdef list moved = []  # (node address, old name) pairs, collected before the map changes
        cdef tuple item
        for i in range(self.pcap):
            if (self.slots[i].node != NULL and strncmp(self.slots[i].key, old, olen) == 0
                    and self.slots[i].key[olen] == 47):  # "/"
                moved.append((<size_t>self.slots[i].node, <bytes>self.slots[i].key))
        cdef bytes prefix = <bytes>new
        cdef bytes p
        cdef bytes q
        cdef Node *child
        cdef PathSlot *s
        for item in moved:
            s = self._find(<bytes>item[1])
            if s != NULL:
                self._del_slot(s)
        for item in moved:
            child = <Node *><size_t>item[0]
            p = <bytes>item[1]
            q = prefix + p[<Py_ssize_t>olen:]
            _rename_name(child, p, q)
            self._put_name(child, _name(child, q))
        return 0

    def add_fh(self, uint64_t nodeid, uint64_t fh):
        self.lock()
        cdef Node *n = self.node(nodeid)
        if n != NULL:
            n.nfh += 1
        self.unlock()
        if n == NULL:
            raise OSError(errno.ESTALE, "stale inode")
        self.fhs.setdefault(nodeid, set()).add(fh)

    def drop_fh(self, uint64_t nodeid, uint64_t fh):
        cdef object held = self.fhs.get(nodeid)
        if held is None or fh not in held:
            return
        held.discard(fh)
        if not held:
            del self.fhs[nodeid]
        self.lock()
        cdef Node *n = self.node(nodeid)
        if n != NULL:
            n.nfh -= 1
            if n.nlookup <= 0 and n.nfh == 0 and not self.never_forget:
                self._drop(n)
        self.unlock()

    def ident(self, uint64_t nodeid):
        """The identity ``nodeid`` was last looked up with (inodes.identity), or None."""
        cdef object out = None
        self.lock()
        cdef Node *n = self.node(nodeid)
        if n != NULL and n.has_ident:
            out = (<object>n.dev << 64) | n.ino
        self.unlock()
        return out

    def any_fh(self, uint64_t nodeid):
        """Some open Python handle of ``nodeid``, or None."""
        cdef object held = self.fhs.get(nodeid)
        return next(iter(held)) if held else None

    def has_fh(self, uint64_t nodeid) -> bool:
        """Whether ``nodeid`` is open: by Python (any_fh names one) or by the
        kernel session's compiled OPEN (counted in Node.nfh only)."""
        if nodeid in self.fhs:
            return True
        self.lock()
        cdef Node *n = self.node(nodeid)
        cdef bint open_ = n != NULL and n.nfh > 0
        self.unlock()
        return open_


cdef inline bytes _enc(str relpath):
    return relpath.encode("utf-8", "surrogateescape")


cdef inline str _dec(bytes p):
    return p.decode("utf-8", "surrogateescape")


def stamp_of(uint64_t size, long long mtime_ns):
    """What tells a regular file's cached pages stale (size and mtime) as one number."""
    return stamp(size, mtime_ns)
