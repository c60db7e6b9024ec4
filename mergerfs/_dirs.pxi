# Included by _kernel.pyx after _metadata.pxi: OPENDIR, READDIR, RELEASEDIR and
# FSYNCDIR of the plain case without the GIL (the set_fast ``readdir`` flag:
# a first-found search, READDIRPLUS off). The C handles live in their own fh
# space (DIR_TAG set), so they never meet Python's dir handle numbers; each
# holds its directory's merged listing as packed fuse_dirent records, read
# anew at offset 0 as ops/readdir.py does (or the kept copy of the last one,
# while no branch's directory changed: _listing.pxi), and the directory on the
# first branch holding it, opened as the caller (ops/core.DirHandle's fd).
#
# What differs from the Python path: no lane and no deadline. Each branch is
# listed inline by the worker (as the C LOOKUP's lstat already touches it), so
# a hung branch hangs that READDIR instead of being left out after
# ops/readdir.LIST_TIMEOUT. Everything else (names, order, d_type, the inodecalc
# numbers, ".", ".." and the root's hidden names left out, errors, the root's
# error entry) is what ops/readdir.py produces.

cdef extern from "<sys/stat.h>" nogil:
    int c_stat "stat"(const char *path, stat_t *buf)
    int c_fstatat "fstatat"(int dirfd, const char *path, stat_t *buf, int flags)
    int c_fchmod "fchmod"(int fd, unsigned int mode)
    int c_futimens "futimens"(int fd, const timespec *times)

cdef extern from "<unistd.h>" nogil:
    int c_fchown "fchown"(int fd, unsigned int owner, unsigned int group)
    int c_fsync "fsync"(int fd)
    int c_fdatasync "fdatasync"(int fd)

from libc.errno cimport EBADF, ENOMEM, ENOTDIR, ENAMETOOLONG

cdef enum:
    GETDENTS_BUF = 1 << 16
    DT_DIR = 4
    LISTED_MAX = 16  # listings the cache keeps (_listing.pxi)

cpdef enum:
    # the bit that marks a kernel fh as a C directory handle (Python's fh numbers never reach it)
    DIR_FH_BIT = 63
cdef uint64_t C_DIR_TAG = 1ULL << DIR_FH_BIT

#: ops/core.ERROR_ENTRY: the root's only entry while no branch root is a directory.
cdef const char *ERROR_ENTRY = b"error: no valid mergerfs branch found, check config"

cdef struct linux_dirent64:  # what getdents64 returns, d_name at offset 19
    uint64_t d_ino
    int64_t d_off
    uint16_t d_reclen
    uint8_t d_type
    char d_name[1]

cdef struct fuse_fsync_in:
    uint64_t fh
    uint32_t fsync_flags
    uint32_t padding


cdef struct DirList:
    pthread_mutex_t mu  # one READDIR/FSYNCDIR of this handle at a time (two workers may share it)
    uint64_t nodeid
    int users           # requests holding it now (under DirTable.mu)
    bint closed         # RELEASEDIR came: the last user frees it
    int fd              # the directory on the first branch holding it
    FastConfig *cfg     # the config it was opened under (a reference): used if the current one is not plain
    char *rel           # its relpath as opened (NUL-terminated)
    size_t rellen
    char *prefix        # rel + "/" ("/" for the root): what path-hashed inode numbers hash before a name
    size_t plen
    char *recs          # the listing: fuse_dirent records, 8-byte aligned
    size_t used
    size_t cap
    size_t *offs        # offs[i]: where record i starts; offs[count] == used
    size_t count
    size_t ocap
    uint64_t *hash      # open addressing over the names: (tag << 32) | record index + 1, 0 empty
    size_t hcap
    bint listed
    bint complete       # every branch was read to its end or has no such directory (_listing.pxi)


cdef struct BranchDir:  # one branch's directory as a listing found it (_listing.pxi)
    int err             # 0, or why it is not there (lstat's errno)
    uint64_t dev
    uint64_t ino
    int64_t mtime
    int64_t ctime


cdef struct Listed:     # a merged listing kept for the next OPENDIR of its directory (_listing.pxi)
    char *rel           # NULL: a free entry
    size_t rellen
    uint32_t uid        # listed as this caller
    uint32_t gid
    uint64_t groups     # (its supplementary groups' hash, _groups_key)
    uint64_t gen        # under this config (FastConfig.gen)
    BranchDir *dirs     # each branch's directory when it was listed (nbranches of them)
    int nbranches
    char *recs
    size_t used
    size_t *offs
    size_t count
    uint64_t last       # when it was last used (DirTable.clock)


cdef struct DirTable:
    pthread_mutex_t mu
    DirList **slots
    uint32_t *free      # slot indexes free for reuse
    uint32_t nfree
    uint32_t next       # slots[0:next] have been handed out
    uint32_t cap
    pthread_mutex_t cmu  # the listing cache (_listing.pxi):
    Listed cache[LISTED_MAX]
    size_t cache_bytes
    uint64_t clock


cdef DirTable *_dirs_new() noexcept nogil:
    cdef DirTable *t = <DirTable *>calloc(1, sizeof(DirTable))
    if t != NULL:
        pthread_mutex_init(&t.mu, NULL)
        pthread_mutex_init(&t.cmu, NULL)
    return t


cdef void _dirlist_free(Session s, DirList *d) noexcept nogil:
    if d.fd >= 0:
        c_close(d.fd)
    if d.cfg != NULL:
        _release(s, d.cfg)
    pthread_mutex_destroy(&d.mu)
    free(d.rel)
    free(d.prefix)
    free(d.recs)
    free(d.offs)
    free(d.hash)
    free(d)


cdef void _dirs_free(Session s) noexcept nogil:
    """Session dealloc: every handle still open (before the session's own config is freed)."""
    cdef DirTable *t = s.dirs
    cdef uint32_t i
    cdef int k
    if t == NULL:
        return
    for i in range(t.next):
        if t.slots[i] != NULL:
            _dirlist_free(s, t.slots[i])
    free(t.slots)
    free(t.free)
    for k in range(LISTED_MAX):
        _listed_free(t, &t.cache[k])
    pthread_mutex_destroy(&t.mu)
    pthread_mutex_destroy(&t.cmu)
    free(t)
    s.dirs = NULL


cdef uint64_t _dirs_put(DirTable *t, DirList *d) noexcept nogil:
    """A new tagged fh for ``d``; 0 if the table cannot grow."""
    cdef uint32_t i
    cdef uint32_t cap
    cdef DirList **slots
    cdef uint32_t *fr
    pthread_mutex_lock(&t.mu)
    if t.nfree:
        t.nfree -= 1
        i = t.free[t.nfree]
    else:
        if t.next == t.cap:
            cap = 64
            if t.cap:
                cap = t.cap << 1
            if cap > (1U << 30):
                pthread_mutex_unlock(&t.mu)
                return 0
            slots = <DirList **>realloc(t.slots, cap * sizeof(DirList *))
            if slots != NULL:
                t.slots = slots
            fr = <uint32_t *>realloc(t.free, cap * sizeof(uint32_t))
            if fr != NULL:
                t.free = fr
            if slots == NULL or fr == NULL:
                pthread_mutex_unlock(&t.mu)
                return 0
            t.cap = cap
        i = t.next
        t.next += 1
    t.slots[i] = d
    pthread_mutex_unlock(&t.mu)
    return C_DIR_TAG | i


cdef DirList *_dirs_get(DirTable *t, uint64_t fh, bint take) noexcept nogil:
    """The handle ``fh`` names, counted as used (give it back with _dirs_done);
    ``take``: also removed from the table (RELEASEDIR). NULL if none."""
    cdef uint64_t i = fh & ~C_DIR_TAG
    cdef DirList *d = NULL
    pthread_mutex_lock(&t.mu)
    if i < t.next:
        d = t.slots[i]
    if d != NULL:
        d.users += 1
        if take:
            d.closed = True
            t.slots[i] = NULL
            t.free[t.nfree] = <uint32_t>i
            t.nfree += 1
    pthread_mutex_unlock(&t.mu)
    return d


cdef void _dirs_done(Session s, DirList *d) noexcept nogil:
    cdef bint last
    pthread_mutex_lock(&s.dirs.mu)
    d.users -= 1
    last = d.closed and d.users == 0
    pthread_mutex_unlock(&s.dirs.mu)
    if last:
        _dirlist_free(s, d)


cdef bint _fits(FastConfig *c, size_t rellen) noexcept nogil:
    """Every branch's path of the directory fits PATH_MAX (else Python: Branch.full)."""
    cdef int i
    for i in range(c.nbranches):
        if c.lens[i] + rellen >= PATH_MAX:
            return False
    return True


cdef inline const char *_root(FastConfig *c, int i) noexcept nogil:
    """Branch ``i``'s root as a path ("/" is kept as "")."""
    if c.lens[i]:
        return c.branches[i]
    return b"/"


cdef bint _roots_unchanged(FastConfig *c) noexcept nogil:
    """Each branch root still on the filesystem it was on when the config was set
    (local: see mounts.local_devs); a filesystem mounted on one since may be a
    network's, whose listing needs the lanes' deadline (Python)."""
    cdef stat_t st
    cdef int i
    for i in range(c.nbranches):
        if c_stat(_root(c, i), &st) != 0 or st.st_dev != c.root_devs[i]:
            return False
    return True


cdef bint _opendir(Session s, Caller *w, int fd, char *buf) noexcept nogil:
    cdef fuse_in_header *h = <fuse_in_header *>buf
    cdef char rel[PATH_MAX]
    cdef char full[PATH_MAX]
    cdef ssize_t rellen = 0
    cdef stat_t st
    cdef int found = -1
    cdef int dfd
    cdef DirList *d
    cdef open_reply out
    cdef FastConfig *c = _acquire(s)
    if c == NULL:
        return False
    if c.readdir:
        rellen = _relpath(s.table, h.nodeid, NULL, 0, rel, NULL)
        if rellen > 0 and _fits(c, <size_t>rellen) and _as_caller(c, w, h) and _roots_unchanged(c):
            found = _search(c, rel, <size_t>rellen, &st, full)
    if found == ENOENT and h.nodeid != ROOT_ID:  # the root without a branch has its error entry: Python
        _release(s, c)
        _reply_error(fd, h.unique, ENOENT)
        return True
    if found != 0:
        _release(s, c)
        return False
    if not S_ISDIR(st.st_mode):
        _release(s, c)
        _reply_error(fd, h.unique, ENOTDIR)
        return True
    dfd = c_open(full, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if dfd < 0:
        _release(s, c)
        return False  # Python opens it again and answers its error
    d = <DirList *>calloc(1, sizeof(DirList))
    if d != NULL:
        pthread_mutex_init(&d.mu, NULL)
        d.nodeid = h.nodeid
        d.fd = dfd
        d.cfg = c  # the reference is the handle's now
        d.rellen = <size_t>rellen
        d.rel = <char *>malloc(d.rellen + 1)
        d.plen = 1 if rellen == 1 else d.rellen + 1
        d.prefix = <char *>malloc(d.plen)
    if d == NULL or d.rel == NULL or d.prefix == NULL:
        if d == NULL:
            c_close(dfd)
            _release(s, c)
        else:
            _dirlist_free(s, d)
        return False
    memcpy(d.rel, rel, d.rellen + 1)
    memcpy(d.prefix, rel, d.rellen)
    d.prefix[d.plen - 1] = 47  # "/"
    memset(&out, 0, sizeof(out))
    out.o.fh = _dirs_put(s.dirs, d)
    if out.o.fh == 0:
        _dirlist_free(s, d)
        return False
    out.o.open_flags = c.dir_flags
    _reply(fd, h.unique, &out, sizeof(out))
    return True


cdef FastConfig *_dir_config(Session s, DirList *d) noexcept nogil:
    """The current config if it is plain, else the handle's own (a reference: _release it)."""
    cdef FastConfig *c = _acquire(s)
    if c != NULL and c.readdir:
        return c
    if c != NULL:
        _release(s, c)
    pthread_mutex_lock(&s.fast_mu)
    d.cfg.refs += 1
    pthread_mutex_unlock(&s.fast_mu)
    return d.cfg


cdef size_t _dir_answer(Session s, const Caller *w, char *buf, ssize_t n) noexcept nogil:
    """READDIR, RELEASEDIR or FSYNCDIR of a C handle: the reply, header
    included, written over the request in ``buf`` (s.bufsize); its size, or 0:
    the request needs the caller's identity this worker does not act as yet
    (Python switches it and calls back, ``dir_request``). ``w`` NULL: the
    worker acts as the caller."""
    cdef fuse_in_header *h = <fuse_in_header *>buf
    cdef uint64_t unique = h.unique
    cdef uint32_t opcode = h.opcode
    cdef fuse_read_in *r = <fuse_read_in *>(buf + IN_HDR)
    cdef uint64_t off = 0
    cdef size_t size = 0
    cdef uint32_t fsync_flags = 0
    cdef size_t start, end, j
    cdef size_t out = OUT_HDR
    cdef int err = 0
    cdef int i, bfd
    cdef char full[PATH_MAX]
    cdef DirList *d
    cdef FastConfig *c
    cdef fuse_out_header *o
    if opcode == FUSE_READDIR:
        if n < <ssize_t>(IN_HDR + sizeof(fuse_read_in)):
            return 0
        off = r.offset
        size = r.size
    elif opcode == FUSE_RELEASEDIR:
        if n < <ssize_t>(IN_HDR + sizeof(fuse_release_in)):
            return 0
    elif opcode == FUSE_FSYNCDIR:
        if n < <ssize_t>(IN_HDR + sizeof(fuse_fsync_in)):
            return 0
        fsync_flags = (<fuse_fsync_in *>(buf + IN_HDR)).fsync_flags
    else:
        return 0
    d = _dirs_get(s.dirs, r.fh, opcode == FUSE_RELEASEDIR)
    if d == NULL:
        err = EBADF
    elif opcode == FUSE_READDIR:
        pthread_mutex_lock(&d.mu)
        if off == 0 or not d.listed:
            if w != NULL and not _as_caller(d.cfg, w, h):
                pthread_mutex_unlock(&d.mu)
                _dirs_done(s, d)
                return 0
            c = _dir_config(s, d)
            err = _list_or_cached(s, c, d, h.uid, h.gid)
            _release(s, c)
        if err == 0 and off < d.count:
            if size > s.bufsize - OUT_HDR:
                size = s.bufsize - OUT_HDR  # fewer records than asked: the kernel asks again
            start = d.offs[off]
            j = <size_t>off
            while j < d.count and d.offs[j + 1] - start <= size:
                j += 1
            end = d.offs[j]
            memcpy(buf + OUT_HDR, d.recs + start, end - start)
            out += end - start
        pthread_mutex_unlock(&d.mu)
    elif opcode == FUSE_FSYNCDIR:
        if w != NULL and not _as_caller(d.cfg, w, h):
            _dirs_done(s, d)
            return 0
        # ops/io.fsyncdir: the directory on every branch that has it
        c = _dir_config(s, d)
        for i in range(c.nbranches):
            if not _on_branch(c, i, d.rel, d.rellen, full):
                continue
            bfd = c_open(full, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if bfd < 0:
                continue
            if (c_fdatasync(bfd) if fsync_flags & 1 else c_fsync(bfd)) != 0:
                err = errno
            c_close(bfd)
            if err:
                break
        _release(s, c)
    if d != NULL:
        _dirs_done(s, d)
    o = <fuse_out_header *>buf
    o.len = <uint32_t>(OUT_HDR if err else out)
    o.error = -err
    o.unique = unique
    return o.len


cdef DirList *_dir_of_node(DirTable *t, uint64_t nodeid) noexcept nogil:
    """An open C handle of directory ``nodeid``, counted as used (_dirs_done), or NULL."""
    cdef uint32_t i
    cdef DirList *d = NULL
    pthread_mutex_lock(&t.mu)
    for i in range(t.next):
        if t.slots[i] != NULL and t.slots[i].nodeid == nodeid:
            d = t.slots[i]
            d.users += 1
            break
    pthread_mutex_unlock(&t.mu)
    return d


cdef size_t _open_dir_attr(Session s, char *buf, ssize_t n, uint64_t attr_valid) noexcept nogil:
    """GETATTR, or SETATTR of mode/owner/times, of a directory whose path is gone
    while a C handle holds it open: on that handle's fd, as Python does on its
    DirHandle's (fstat, fchmod, fchown, futimens). The reply over the request
    in ``buf``: its size, or 0 (no such handle, or another change)."""
    cdef fuse_in_header *h = <fuse_in_header *>buf
    cdef uint64_t unique = h.unique
    cdef fuse_setattr_in a
    cdef timespec times[2]
    cdef stat_t st
    cdef int err = 0
    cdef DirList *d
    cdef attr_reply *out = <attr_reply *>buf
    memset(&a, 0, sizeof(a))
    if h.opcode == FUSE_SETATTR:
        if n < <ssize_t>(IN_HDR + sizeof(fuse_setattr_in)):
            return 0
        a = (<fuse_setattr_in *>(buf + IN_HDR))[0]
        if a.valid & ~(<uint32_t>FATTR_PLAIN):
            return 0
    elif h.opcode != FUSE_GETATTR:
        return 0
    d = _dir_of_node(s.dirs, h.nodeid)
    if d == NULL:
        return 0
    if a.valid & FATTR_MODE and c_fchmod(d.fd, a.mode & 0o7777) != 0:
        err = errno
    if not err and a.valid & (FATTR_UID | FATTR_GID) and c_fchown(
            d.fd, a.uid if a.valid & FATTR_UID else <unsigned int>-1,
            a.gid if a.valid & FATTR_GID else <unsigned int>-1) != 0:
        err = errno
    if not err and a.valid & (FATTR_ATIME | FATTR_MTIME):
        _times(&a, times)
        if c_futimens(d.fd, times) != 0:
            err = errno
    if not err and c_fstat(d.fd, &st) != 0:
        err = errno
    memset(out, 0, sizeof(attr_reply))
    if not err:
        out.a.attr_valid = attr_valid
        _fill_attr_c(&out.a.attr, h.nodeid, &st)
    _dirs_done(s, d)
    out.h.len = <uint32_t>(OUT_HDR if err else sizeof(attr_reply))
    out.h.error = -err
    out.h.unique = unique
    return out.h.len


cdef bint _answer_open_dir(Session s, int fd, char *buf, size_t n, uint64_t attr_valid) noexcept nogil:
    cdef size_t size = _open_dir_attr(s, buf, <ssize_t>n, attr_valid)
    if size == 0:
        return False
    _send(fd, buf, size)
    return True


def dir_attr(Session s, uint32_t opcode, uint64_t nodeid, bytes body, uint64_t attr_valid):
    """GETATTR/SETATTR that Python found no path for: answered on an open C
    handle of the directory (fuse_attr_out), or None if there is none."""
    cdef size_t blen = <size_t>len(body)
    cdef char buf[256]  # the largest request (SETATTR, 128 bytes) or reply (120)
    cdef size_t size
    cdef fuse_out_header *o = <fuse_out_header *>buf
    memset(buf, 0, sizeof(buf))
    (<fuse_in_header *>buf).opcode = opcode
    (<fuse_in_header *>buf).nodeid = nodeid
    if blen > sizeof(buf) - IN_HDR:
        blen = sizeof(buf) - IN_HDR
    memcpy(buf + IN_HDR, PyBytes_AS_STRING(body), blen)
    with nogil:
        size = _open_dir_attr(s, buf, <ssize_t>(IN_HDR + blen), attr_valid)
    if size == 0:
        return None
    if o.error:
        raise OSError(-o.error, os.strerror(-o.error))
    return PyBytes_FromStringAndSize(buf + OUT_HDR, <Py_ssize_t>(size - OUT_HDR))


cdef bint _dirs_hot(Session s, Caller *w, int fd, char *buf, ssize_t n) noexcept nogil:
    """OPENDIR of the plain case, and the requests on a C directory handle."""
    cdef size_t size
    if (<fuse_in_header *>buf).opcode == FUSE_OPENDIR:
        return _opendir(s, w, fd, buf)
    if n < <ssize_t>(IN_HDR + 8) or not (<uint64_t *>(buf + IN_HDR))[0] & C_DIR_TAG:
        return False
    size = _dir_answer(s, w, buf, n)
    if size == 0:
        return False
    _send(fd, buf, size)
    return True


def dir_request(Session s, uint32_t opcode, bytes body, uint32_t uid, uint32_t gid):
    """A request on a C directory handle that reached Python (the worker did not
    act as its caller yet; Python has switched to it): answered here, in this
    thread, as caller ``uid``/``gid`` (whose kept listing it may use). The
    reply's payload, or OSError."""
    cdef char *buf = <char *>malloc(s.bufsize)
    cdef size_t blen = <size_t>len(body)
    cdef size_t size
    cdef fuse_out_header *o = <fuse_out_header *>buf
    if buf == NULL:
        raise MemoryError()
    try:
        memset(buf, 0, IN_HDR)
        (<fuse_in_header *>buf).opcode = opcode
        (<fuse_in_header *>buf).uid = uid
        (<fuse_in_header *>buf).gid = gid
        if blen > s.bufsize - IN_HDR:
            blen = s.bufsize - IN_HDR
        memcpy(buf + IN_HDR, PyBytes_AS_STRING(body), blen)
        (<fuse_in_header *>buf).len = <uint32_t>(IN_HDR + blen)
        with nogil:
            size = _dir_answer(s, NULL, buf, <ssize_t>(IN_HDR + blen))
        if size == 0:
            raise OSError(22, "not a directory handle request")  # EINVAL
        if o.error:
            raise OSError(-o.error, os.strerror(-o.error))
        return PyBytes_FromStringAndSize(buf + OUT_HDR, <Py_ssize_t>(size - OUT_HDR))
    finally:
        free(buf)
