from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t


cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_init(pthread_mutex_t *m, const void *attr)
    int pthread_mutex_lock(pthread_mutex_t *m)
    int pthread_mutex_unlock(pthread_mutex_t *m)
    int pthread_mutex_destroy(pthread_mutex_t *m)


cdef struct Node:
    uint64_t nodeid
    int64_t nlookup     # lookups the kernel has not forgotten yet
    uint64_t dev        # identity on the branch (st_dev, st_ino) when has_ident
    uint64_t ino
    uint64_t seen       # stamp() of the (size, mtime) last told to the kernel, when has_seen
    char *path          # newest name (a relpath, NUL-terminated, owned)
    char **links        # older names of a hard-linked file, newest first (owned), or NULL
    uint32_t nlinks
    uint32_t nfh        # open handles, Python's and the compiled OPEN's (they keep the node after its last FORGET)
    # Passthrough (guarded by the kernel session's pt_mu, not the table's mutex;
    # the node lives while they count, each open being counted in nfh too):
    int32_t backing     # the backing id every passthrough open of the node shares (0: none)
    uint32_t npass      # opens using it: the last one released closes it
    uint32_t ncached    # opens without passthrough: while any, no open gets one
    uint8_t has_ident
    uint8_t isdir
    uint8_t has_seen


cdef struct PathSlot:
    uint64_t hash
    Node *node          # NULL: an empty slot
    const char *key     # one of node's names (borrowed: the node owns it)


cdef inline uint64_t stamp(uint64_t size, int64_t mtime_ns) noexcept nogil:
    """What tells a regular file's cached pages stale: its size and mtime, as one number."""
    cdef uint64_t h = size * 0x9E3779B97F4A7C15ULL
    h ^= <uint64_t>mtime_ns + 0x632BE59BD9B4E019ULL + (h << 6) + (h >> 2)
    return h


cdef class NodeMaps:
    cdef pthread_mutex_t mu
    cdef Node **nodes       # open addressing on nodeid
    cdef size_t ncap
    cdef size_t ncount
    cdef PathSlot *slots    # open addressing on a name's hash
    cdef size_t pcap
    cdef size_t pcount
    cdef size_t peak

    cdef void lock(self) noexcept nogil
    cdef bint _resize_nodes(self, size_t cap) noexcept nogil
    cdef Node *_new(self, uint64_t nodeid, const char *path, bint has_ident, uint64_t dev, uint64_t ino,
                    bint isdir) noexcept nogil
    cdef void _del_node(self, Node *n) noexcept nogil
    cdef PathSlot *_find(self, const char *path) noexcept nogil
    cdef bint _resize_slots(self, size_t cap) noexcept nogil
    cdef void _put_name(self, Node *n, const char *key) noexcept nogil
    cdef void _del_slot(self, PathSlot *s) noexcept nogil
    cdef void _bind(self, Node *n, const char *path) noexcept nogil
    cdef void _unbind(self, const char *path) noexcept nogil
    cdef void _drop(self, Node *n) noexcept nogil
    cdef void _shrink(self) noexcept nogil
    cdef void unlock(self) noexcept nogil
    cdef Node *node(self, uint64_t nodeid) noexcept nogil


cdef class NodeTable(NodeMaps):
    cdef public bint never_forget
    cdef dict fhs           # nodeid -> set of open fh numbers (Python's only; all are counted in Node.nfh)

    cdef void _make_newest_and_count(self, Node *n, const char *path) noexcept nogil
    cdef int _renamed(self, const char *old, const char *new) except -1
    cdef bint _rename_node(self, const char *old, const char *new) noexcept nogil
    cdef int _move_below(self, const char *old, const char *new) except -1
    cdef uint64_t remember_c(self, uint64_t ino, const char *path, bint has_ident, uint64_t dev,
                             uint64_t st_ino, bint isdir, bint may_replace, bint *replaced) noexcept nogil
    cdef void forget_c(self, uint64_t nodeid, uint64_t count) noexcept nogil
