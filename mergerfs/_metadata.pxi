# The metadata requests the session answers without the GIL (included by
# _kernel.pyx after Session): FORGET/BATCH_FORGET, and LOOKUP/GETATTR/STATX/GETXATTR
# of the plain case, a first-found search of the branches with lstat. Anything else
# (an error other than ENOENT, a path longer than PATH_MAX, an open file, the
# control file, "." and "..", a name the root answers specially) returns
# False, untouched, and the Python session answers it.

cdef struct FastConfig:
    int refs            # workers using it now; freed when 0 and replaced
    uint64_t gen        # which set_fast made it (listings cached under it: _listing.pxi)
    int nbranches
    char **branches     # branch roots in order ("" for "/")
    size_t *lens
    bint *readonly      # branch mode RO: left out of actions
    int calc            # inodecalc as _fastpath's code
    uint64_t entry_valid
    uint64_t attr_valid
    uint64_t negative_valid
    int actions         # ACT_* funcs whose action policy is epall: SETATTR of them here
    bint getxattr       # GETXATTR too (xattr=passthrough, first-found getxattr)
    bint capability     # security.capability is read from the branch (security-capability=true)
    bint posix_acl      # system.posix_acl_* are read from the branch (posix-acl=true)
    bint creds_fixed    # the daemon cannot switch identity: every caller is served as itself
    bint pid_bound      # proxy-ioprio: credentials are per calling thread, not per user
    bint readdir        # OPENDIR/READDIR here too (_dirs.pxi): plain listings, no READDIRPLUS
    uint64_t *root_devs # each branch root's st_dev when set, if all are local filesystems (else NULL)
    uint32_t dir_flags  # OPENDIR's open flags (cache.readdir: FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE)
    bint opens          # OPEN/RELEASE here (_files.pxi): open policy ff, no nullrw, per-process caching...
    bint link_cow       # a write open may have to break a hard link first (Python)
    bint dropcache      # dropcacheonclose
    uint32_t fopen_rd   # the open reply's FOPEN_* flags for a read-only open,
    uint32_t fopen_wr   # for a write open,
    uint32_t fopen_keep  # and added when the file did not change behind the kernel's back
    int create_pick     # CREATE here (_create.pxi, with opens and root_devs): PICK_* of func.create, 0: Python
    int mkdir_pick      # MKDIR likewise, func.mkdir's
    bint *creatable     # branch mode RW (RO and NC take no new entries)
    uint64_t *minfree   # each branch's minfreespace (bytes)


cdef struct Caller:
    uint32_t uid        # whose credentials this worker thread carries now
    uint32_t gid
    uint32_t pid
    int64_t since       # when they were set (ns): a caller's groups are re-read after a second, as ugid does
    bint valid
    uint64_t rng        # the worker's random state (the random create policies)


cdef inline void _carry(Caller *w, const fuse_in_header *h) noexcept nogil:
    """This worker now acts as ``h``'s caller."""
    w.uid = h.uid
    w.gid = h.gid
    w.pid = h.pid
    w.since = _clock_ns(CLOCK_MONOTONIC_COARSE)
    w.valid = True


cdef void _free_config(FastConfig *c) noexcept nogil:
    cdef int i
    for i in range(c.nbranches):
        free(c.branches[i])
    free(c.branches)
    free(c.lens)
    free(c.readonly)
    free(c.root_devs)
    free(c.creatable)
    free(c.minfree)
    free(c)


cdef FastConfig *_acquire(Session s) noexcept nogil:
    cdef FastConfig *c
    pthread_mutex_lock(&s.fast_mu)
    c = s.fast
    if c != NULL:
        c.refs += 1
    pthread_mutex_unlock(&s.fast_mu)
    return c


cdef void _release(Session s, FastConfig *c) noexcept nogil:
    pthread_mutex_lock(&s.fast_mu)
    c.refs -= 1
    if c.refs == 0 and c != s.fast:
        _free_config(c)
    pthread_mutex_unlock(&s.fast_mu)


cdef bint _as_caller(FastConfig *c, const Caller *w, const fuse_in_header *h) noexcept nogil:
    """Whether this worker already acts as the request's caller (Python set its
    credentials for an earlier request of the same caller, under a second ago).
    If not, Python answers this request and switches them (ugid.switch): the
    next request of this caller on this worker takes the C path."""
    if c.creds_fixed:
        return True
    return w.valid and h.uid != NO_UID and w.uid == h.uid and w.gid == h.gid and (
        w.pid == h.pid or (h.uid == 0 and h.gid == 0 and not c.pid_bound)
    ) and _clock_ns(CLOCK_MONOTONIC_COARSE) - w.since < 1000000000


cdef struct Facts:
    uint32_t nfh        # open handles of the node
    bint has_ident      # its identity on the branch, when known
    uint64_t dev
    uint64_t ino


cdef inline bint _same_object(const Facts *f, const stat_t *st) noexcept nogil:
    """A node with open handles may be answered by its path only while the path
    still names the object the handles hold (else the fd is the truth: Python)."""
    return f.nfh == 0 or (f.has_ident and f.dev == st.st_dev and f.ino == st.st_ino)


cdef ssize_t _relpath(NodeTable t, uint64_t nodeid, const char *name, size_t namelen, char *out,
                      Facts *facts) noexcept nogil:
    """``nodeid``'s relpath (joined with ``name`` if given) into ``out`` (PATH_MAX):
    its length, or -1 (unknown nodeid, too long, or a name no path has: Python's).
    ``facts``, if given: the node's. A name starting with "//" is a placeholder
    (an unnamed O_TMPFILE file, fs.UNNAMED; the table's exchange name): a branch
    search would collapse the "//" and might find a real file."""
    cdef Node *n
    cdef size_t plen
    cdef ssize_t rv = -1
    t.lock()
    n = t.node(nodeid)
    if n != NULL and n.path[0] == 47 and n.path[1] == 47:  # "//"
        n = NULL
    if n != NULL and facts != NULL:
        facts.nfh = n.nfh
        facts.has_ident = n.has_ident
        facts.dev = n.dev
        facts.ino = n.ino
    if n != NULL:
        plen = strlen(n.path)
        if name == NULL:
            if plen < PATH_MAX:
                memcpy(out, n.path, plen + 1)
                rv = <ssize_t>plen
        elif plen + 1 + namelen < PATH_MAX:
            if plen == 1:  # the root: "/name"
                plen = 0
            memcpy(out, n.path, plen)
            out[plen] = 47  # "/"
            memcpy(out + plen + 1, name, namelen)
            out[plen + 1 + namelen] = 0
            rv = <ssize_t>(plen + 1 + namelen)
    t.unlock()
    return rv


cdef inline size_t _parent_len(const char *rel, size_t rellen) noexcept nogil:
    """How much of ``rel`` is its parent's relpath (1: the root, "/")."""
    while rellen > 0 and rel[rellen - 1] != 47:  # "/"
        rellen -= 1
    return rellen - 1 if rellen > 1 else 1


cdef bint _on_branch(FastConfig *c, int i, const char *rel, size_t rellen, char *full) noexcept nogil:
    """``rel`` on branch ``i`` as a path in ``full`` (PATH_MAX); for "/" the
    branch root itself, as given (no trailing "/"). False if it does not fit."""
    cdef size_t bl = c.lens[i]
    if bl + rellen >= PATH_MAX:
        return False
    memcpy(full, c.branches[i], bl)
    if rellen == 1 and bl:
        full[bl] = 0
    else:
        memcpy(full + bl, rel, rellen + 1)
    return True


cdef int _search_at(FastConfig *c, const char *rel, size_t rellen, stat_t *st, char *full) noexcept nogil:
    """First-found: the index (>= 0) of the first branch holding ``rel``, its
    lstat in ``st`` and its full path in ``full`` (PATH_MAX); -ENOENT if none
    holds it; -1 for anything Python must judge."""
    cdef int i
    for i in range(c.nbranches):
        if not _on_branch(c, i, rel, rellen, full):
            return -1
        if c_lstat(full, st) == 0:
            return i
        if errno != ENOENT:
            return -1
    return -ENOENT


cdef inline int _search(FastConfig *c, const char *rel, size_t rellen, stat_t *st, char *full) noexcept nogil:
    """_search_at without the index: 0 (found), ENOENT, or -1."""
    cdef int at = _search_at(c, rel, rellen, st, full)
    return 0 if at >= 0 else (ENOENT if at == -ENOENT else -1)


cdef int _node_search(Session s, FastConfig *c, Caller *w, const fuse_in_header *h, char *rel,
                      ssize_t *rellen, stat_t *st, char *full) noexcept nogil:
    """GETATTR's first-found search for the node ``h`` names, as its caller: 0
    (found, and the very object the node knows), ENOENT (on no branch), or -1
    (Python's). Its relpath in ``rel``/``rellen``."""
    cdef Facts facts
    cdef int found
    rellen[0] = _relpath(s.table, h.nodeid, NULL, 0, rel, &facts)
    if rellen[0] <= 0 or not _as_caller(c, w, h):
        return -1
    found = _search(c, rel, <size_t>rellen[0], st, full)
    if found == 0 and not _same_object(&facts, st):
        return -1
    return found


cdef void _fill_attr_c(fuse_attr *a, uint64_t ino, const stat_t *st) noexcept nogil:
    cdef unsigned long long rdev = st.st_rdev
    cdef unsigned int major = <unsigned int>(((rdev >> 8) & 0xfffULL) | ((rdev >> 32) & ~0xfffULL))
    cdef unsigned int minor = <unsigned int>((rdev & 0xffULL) | ((rdev >> 12) & ~0xffULL))
    a.ino = ino
    a.size = <uint64_t>st.st_size
    a.blocks = <uint64_t>st.st_blocks
    a.atime = <uint64_t>st.st_atim.tv_sec
    a.atimensec = <uint32_t>st.st_atim.tv_nsec
    a.mtime = <uint64_t>st.st_mtim.tv_sec
    a.mtimensec = <uint32_t>st.st_mtim.tv_nsec
    a.ctime = <uint64_t>st.st_ctim.tv_sec
    a.ctimensec = <uint32_t>st.st_ctim.tv_nsec
    a.mode = st.st_mode
    a.nlink = <uint32_t>st.st_nlink
    a.uid = st.st_uid
    a.gid = st.st_gid
    # the kernel decodes fuse_attr.rdev with new_decode_dev
    a.rdev = <uint32_t>((minor & 0xffU) | (major << 8) | ((minor & ~0xffU) << 12))
    a.blksize = <uint32_t>st.st_blksize
    a.flags = 0


cdef void _saw(NodeTable t, uint64_t nodeid, const stat_t *st) noexcept nogil:
    """Record the (size, mtime) the kernel now has of a regular file (it drops
    stale pages itself: FUSE_AUTO_INVAL_DATA is required for this path)."""
    cdef Node *n
    if not S_ISREG(st.st_mode):
        return
    t.lock()
    n = t.node(nodeid)
    if n != NULL:
        n.seen = stamp(<uint64_t>st.st_size, _ts_ns(st.st_mtim))
        n.has_seen = 1
    t.unlock()


cdef struct entry_reply:
    fuse_out_header h
    fuse_entry_out e

cdef struct attr_reply:
    fuse_out_header h
    fuse_attr_out a


cdef bint _lookup(Session s, Caller *w, int fd, char *buf, ssize_t n) noexcept nogil:
    cdef fuse_in_header *h = <fuse_in_header *>buf
    cdef const char *name = buf + IN_HDR
    cdef size_t namelen = strnlen(name, <size_t>(n - IN_HDR))
    cdef char rel[PATH_MAX]
    cdef char full[PATH_MAX]
    cdef ssize_t rellen
    cdef stat_t st
    cdef int found
    cdef uint64_t nodeid = 0
    cdef bint replaced[1]  # out-parameter of remember_c (always False here: see may_replace)
    cdef entry_reply out
    if namelen == 0 or namelen >= <size_t>(n - IN_HDR) or (name[0] == 46 and (  # "."
            namelen == 1 or (namelen == 2 and name[1] == 46))):
        return False
    cdef FastConfig *c = _acquire(s)
    if c == NULL:
        return False
    rellen = _relpath(s.table, h.nodeid, name, namelen, rel, NULL)
    found = -1
    if rellen > 0 and not (h.nodeid == ROOT_ID and _is_control(name, namelen)) and _as_caller(c, w, h):
        found = _search(c, rel, <size_t>rellen, &st, full)
    if found == 0:
        s.table.lock()
        nodeid = s.table.remember_c(
            _calc(c.calc, <const uint8_t *>rel, <size_t>rellen, NULL, 0, S_ISDIR(st.st_mode), st.st_dev, st.st_ino),
            rel, True, st.st_dev, st.st_ino, S_ISDIR(st.st_mode), False, replaced)
        s.table.unlock()
    # a miss below the root is plain; the root's may be special (the error entry)
    cdef bint missing = found == ENOENT and h.nodeid != ROOT_ID
    memset(&out, 0, sizeof(out))
    out.e.entry_valid = c.negative_valid if missing else c.entry_valid
    out.e.attr_valid = 0 if missing else c.attr_valid
    _release(s, c)
    if missing:
        if out.e.entry_valid == 0:
            _reply_error(fd, h.unique, ENOENT)
            return True
    elif nodeid == 0:
        return False
    else:
        _saw(s.table, nodeid, &st)
        out.e.nodeid = nodeid
        _fill_attr_c(&out.e.attr, nodeid, &st)
    _reply(fd, h.unique, &out, sizeof(out))
    return True


cdef bint _is_control(const char *name, size_t namelen) noexcept nogil:
    return namelen == 9 and memcmp(name, b".mergerfs", 9) == 0


cdef bint _getattr(Session s, Caller *w, int fd, char *buf) noexcept nogil:
    cdef fuse_in_header *h = <fuse_in_header *>buf
    cdef fuse_getattr_in *g = <fuse_getattr_in *>(buf + IN_HDR)
    cdef char rel[PATH_MAX]
    cdef char full[PATH_MAX]
    cdef ssize_t rellen
    cdef stat_t st
    cdef int found
    cdef attr_reply out
    if g.getattr_flags & FUSE_GETATTR_FH:
        return _getattr_fh(s, fd, buf)  # an open file: its fd is the truth (_files.pxi)
    cdef FastConfig *c = _acquire(s)
    if c == NULL:
        return False
    found = _node_search(s, c, w, h, rel, &rellen, &st, full)
    memset(&out, 0, sizeof(out))
    out.a.attr_valid = c.attr_valid
    _release(s, c)
    if found == ENOENT:  # removed: an open C directory handle of it still answers
        return _answer_open_dir(s, fd, buf, IN_HDR + sizeof(fuse_getattr_in), out.a.attr_valid)
    if found != 0:
        return False
    _saw(s.table, h.nodeid, &st)
    _fill_attr_c(&out.a.attr, h.nodeid, &st)
    _reply(fd, h.unique, &out, sizeof(out))
    return True


# STATX: GETATTR's search, then statx(2) of the branch path for the birth time
# (ops/getattr.py statx is the same for every configuration).
from mergerfs._fastpath cimport statx_t, statx_timestamp, c_statx

cdef extern from "<fcntl.h>" nogil:
    int AT_FDCWD
    int AT_SYMLINK_NOFOLLOW

cdef extern from "<sys/sysmacros.h>" nogil:
    unsigned long long makedev(unsigned int major, unsigned int minor)

cdef enum:
    STATX_CARRIED = 0xFFF          # STATX_BASIC_STATS | STATX_BTIME: what fuse_statx carries
    STATX_SYNC_TYPE = 0x6000       # AT_STATX_FORCE_SYNC | AT_STATX_DONT_SYNC
    STATX_BRANCH_ONLY = 0x202000   # STATX_ATTR_MOUNT_ROOT | STATX_ATTR_DAX: the branch's mount, not ours

cdef struct fuse_sx_time:
    int64_t tv_sec
    uint32_t tv_nsec
    int32_t reserved

cdef struct fuse_statx:
    uint32_t mask
    uint32_t blksize
    uint64_t attributes
    uint32_t nlink
    uint32_t uid
    uint32_t gid
    uint16_t mode
    uint16_t spare0
    uint64_t ino
    uint64_t size
    uint64_t blocks
    uint64_t attributes_mask
    fuse_sx_time atime
    fuse_sx_time btime
    fuse_sx_time ctime
    fuse_sx_time mtime
    uint32_t rdev_major
    uint32_t rdev_minor
    uint32_t dev_major
    uint32_t dev_minor
    uint64_t spare2[14]

cdef struct statx_reply:
    fuse_out_header h
    uint64_t attr_valid
    uint32_t attr_valid_nsec
    uint32_t flags
    uint64_t spare[2]
    fuse_statx sx


cdef inline void _sx_time(fuse_sx_time *t, const statx_timestamp *x) noexcept nogil:
    t.tv_sec = x.tv_sec
    t.tv_nsec = x.tv_nsec


cdef bint _statx(Session s, Caller *w, int fd, char *buf) noexcept nogil:
    """STATX of the plain case: GETATTR's first-found search, then statx(2) of
    that branch path (no symlink followed), the inode number the nodeid, as
    kernel/entries.py answers it. Anything else (an fh, an open file whose path
    moved on, a miss, an error, the file replaced between the two calls) is Python's."""
    cdef fuse_in_header *h = <fuse_in_header *>buf
    cdef fuse_statx_in *g = <fuse_statx_in *>(buf + IN_HDR)
    cdef char rel[PATH_MAX]
    cdef char full[PATH_MAX]
    cdef ssize_t rellen
    cdef stat_t st
    cdef statx_t x
    cdef int found
    cdef uint64_t attr_valid
    cdef statx_reply out
    if g.getattr_flags & FUSE_GETATTR_FH:
        return False
    cdef FastConfig *c = _acquire(s)
    if c == NULL:
        return False
    found = _node_search(s, c, w, h, rel, &rellen, &st, full)
    attr_valid = c.attr_valid
    _release(s, c)
    if found != 0:
        return False
    if c_statx(AT_FDCWD, full, AT_SYMLINK_NOFOLLOW | <int>(g.sx_flags & STATX_SYNC_TYPE), STATX_CARRIED, &x) != 0:
        return False
    if x.stx_ino != st.st_ino or makedev(x.stx_dev_major, x.stx_dev_minor) != st.st_dev:
        return False  # replaced between the lstat and the statx
    _saw(s.table, h.nodeid, &st)
    memset(&out, 0, sizeof(out))
    out.attr_valid = attr_valid
    out.sx.mask = x.stx_mask & STATX_CARRIED
    out.sx.blksize = x.stx_blksize
    out.sx.attributes = x.stx_attributes & ~(<uint64_t>STATX_BRANCH_ONLY)
    out.sx.nlink = x.stx_nlink
    out.sx.uid = x.stx_uid
    out.sx.gid = x.stx_gid
    out.sx.mode = x.stx_mode
    out.sx.ino = h.nodeid
    out.sx.size = x.stx_size
    out.sx.blocks = x.stx_blocks
    out.sx.attributes_mask = x.stx_attributes_mask & ~(<uint64_t>STATX_BRANCH_ONLY)
    _sx_time(&out.sx.atime, &x.stx_atime)
    _sx_time(&out.sx.btime, &x.stx_btime)
    _sx_time(&out.sx.ctime, &x.stx_ctime)
    _sx_time(&out.sx.mtime, &x.stx_mtime)
    out.sx.rdev_major = x.stx_rdev_major
    out.sx.rdev_minor = x.stx_rdev_minor
    _reply(fd, h.unique, &out, sizeof(out))
    return True


cdef bint _forget(Session s, char *buf, ssize_t n) noexcept nogil:
    cdef fuse_in_header *h = <fuse_in_header *>buf
    cdef fuse_batch_forget_in *b
    cdef fuse_forget_one *one
    cdef uint32_t i
    s.table.lock()
    if h.opcode == FUSE_FORGET:
        s.table.forget_c(h.nodeid, (<fuse_forget_in *>(buf + IN_HDR)).nlookup)
    else:
        b = <fuse_batch_forget_in *>(buf + IN_HDR)
        one = <fuse_forget_one *>(buf + IN_HDR + sizeof(fuse_batch_forget_in))
        for i in range(b.count):
            if <char *>(one + i + 1) > buf + n:
                break
            s.table.forget_c(one[i].nodeid, one[i].nlookup)
    s.table.unlock()
    return True


cdef struct fuse_getxattr_in:
    uint32_t size
    uint32_t padding

cdef struct getxattr_reply:
    fuse_out_header h
    uint32_t size       # fuse_getxattr_out: the value's size, asked with size 0
    uint32_t padding


cdef bint _xattr_plain(FastConfig *c, const char *name, size_t namelen) noexcept nogil:
    """A name read straight from the branch (not the control keys, nor one the config gates)."""
    if namelen >= 14 and memcmp(name, b"user.mergerfs.", 14) == 0:
        return False
    if not c.capability and namelen == 19 and memcmp(name, b"security.capability", 19) == 0:
        return False
    if not c.posix_acl and namelen >= 17 and memcmp(name, b"system.posix_acl_", 17) == 0:
        return False
    return True


cdef bint _getxattr(Session s, Caller *w, int fd, char *buf, ssize_t n) noexcept nogil:
    cdef fuse_in_header *h = <fuse_in_header *>buf
    cdef uint32_t size = (<fuse_getxattr_in *>(buf + IN_HDR)).size
    cdef const char *inname = buf + IN_HDR + sizeof(fuse_getxattr_in)
    cdef size_t namelen = strnlen(inname, <size_t>(n - IN_HDR) - sizeof(fuse_getxattr_in))
    cdef char name[256]
    cdef char rel[PATH_MAX]
    cdef char full[PATH_MAX]
    cdef ssize_t rellen
    cdef stat_t st
    cdef int found = -1
    cdef ssize_t got
    cdef uint64_t unique = h.unique
    cdef getxattr_reply out
    if namelen == 0 or namelen > 255 or namelen >= <size_t>(n - IN_HDR) - sizeof(fuse_getxattr_in) \
            or OUT_HDR + <size_t>size > s.bufsize:
        return False
    memcpy(name, inname, namelen + 1)  # the reply overwrites the request
    cdef FastConfig *c = _acquire(s)
    if c == NULL:
        return False
    if c.getxattr and _xattr_plain(c, name, namelen):
        rellen = _relpath(s.table, h.nodeid, NULL, 0, rel, NULL)
        if rellen > 0 and _as_caller(c, w, h):
            found = _search(c, rel, <size_t>rellen, &st, full)
    _release(s, c)
    if found != 0:
        return False
    got = lgetxattr(full, name, buf + OUT_HDR if size else NULL, size)
    if got < 0:
        _reply_error(fd, unique, errno)
        return True
    if size == 0:
        out.size = <uint32_t>got
        out.padding = 0
        _reply(fd, unique, &out, sizeof(out))
    else:
        _reply(fd, unique, buf, OUT_HDR + <size_t>got)
    return True
