# OPEN and RELEASE of the plain case without the GIL (included by _kernel.pyx
# after _metadata.pxi). The compiled OPEN searches first-found, opens the branch
# file as the caller, counts the open in the node table and gives it a slot it
# owns (SLOT_C): READ/WRITE/FLUSH use its fd as any other's, and its RELEASE
# closes it here. Nothing in Python knows of such an open until a Python request
# needs its handle: then kernel/base.py adopts it (Session.claim/adopted), the
# slot becomes Python's and so does its RELEASE. Anything the C path does not
# recognise (an open Python must decide: link-cow, kill-suidgid, per-process
# caching; a search error; not a regular file) returns False, untouched, and
# the Python session answers it.
#
# Passthrough lives here too, for every open (C's, and Python's through
# Session.add/add_c/remove): the rules of the per-node backing id
# (_pt_acquire/_pt_release), kept in the node table's Node under pt_mu.

cdef extern from "<fcntl.h>" nogil:
    int posix_fadvise(int fd, off_t offset, off_t length, int advice)
    int POSIX_FADV_DONTNEED

cdef extern from "<stdio.h>" nogil:
    int snprintf(char *s, size_t n, const char *fmt, ...)

cdef enum:
    FUSE_OPEN_KILL_SUIDGID = 1  # fuse_open_in.open_flags: an O_TRUNC open without CAP_FSETID


# ---------------------------------------------------------------- passthrough
cdef int32_t _backing_file(int devfd, int bfd) noexcept nogil:
    """Register branch file ``bfd`` for passthrough, reopened read-write as root
    when the file allows it: later opens of the inode (any mode) share this one.
    Its backing id, or -errno."""
    cdef char path[32]
    cdef long prev
    cdef int rw
    cdef int32_t backing
    snprintf(path, sizeof(path), "/proc/self/fd/%d", bfd)
    prev = syscall(SYS_setfsuid, 0)  # the worker may act as a caller: root for this open only
    rw = c_open(path, O_RDWR | O_CLOEXEC)
    syscall(SYS_setfsuid, prev)
    if rw < 0:
        rw = c_dup(bfd)
        if rw < 0:
            return -errno
    backing = _backing_open(devfd, rw)
    c_close(rw)
    return backing


cdef void _pt_log(int32_t backing, int err) noexcept with gil:
    """A refused BACKING_OPEN (``backing`` 0) or BACKING_CLOSE, logged (from a worker too)."""
    try:
        if backing:
            log.warning("passthrough backing %d close: %s", backing, os.strerror(err))
        else:  # as non-root, or on a branch the kernel cannot stack on
            log.info("passthrough refused (%s): normal I/O", os.strerror(err))
    except:  # logging failed: nothing to tell it to (a bare except: Cython sees it swallows all)
        pass


cdef Node *_pt_node(Session s, uint64_t nodeid) noexcept nogil:
    """``nodeid``'s node (pt_mu held): it stays while the open being counted is in its nfh."""
    cdef Node *n
    s.table.lock()
    n = s.table.node(nodeid)
    s.table.unlock()
    return n


cdef int32_t _pt_acquire(Session s, uint64_t nodeid, int bfd, uint32_t flags, uint8_t *pt) noexcept nogil:
    """The passthrough decision for an open of ``nodeid`` (branch file ``bfd``,
    open ``flags``; already counted in the node's nfh): the backing id it
    shares, or 0 for normal I/O; ``pt``: how it is counted (release it with
    _pt_release). Every passthrough open of one inode must share its backing
    file (the kernel refuses another with EBUSY), and an inode open without
    passthrough cannot get one (ETXTBSY): the first open decides, by its access
    mode; once a backing exists, every open shares it (it was opened
    read-write). A refused ioctl means normal I/O, never a failed open; EPERM
    (not root) turns passthrough off for the session."""
    cdef Node *n
    cdef int32_t backing = 0
    cdef int32_t got = 0
    pt[0] = PT_NONE
    if not s.pt_on:
        return 0
    pthread_mutex_lock(&s.pt_mu)
    n = _pt_node(s, nodeid)
    if n != NULL:
        if n.backing == 0 and n.ncached == 0 and s.pt_modes & ((<uint32_t>1) << (flags & <uint32_t>O_ACCMODE)):
            got = _backing_file(s.devfd, bfd)
            if got > 0:
                n.backing = got
            elif got == -EPERM:
                s.pt_modes = 0
        if n.backing:
            n.npass += 1
            backing = n.backing
            pt[0] = PT_SHARED
        else:
            n.ncached += 1
            pt[0] = PT_CACHED
    pthread_mutex_unlock(&s.pt_mu)
    if got < 0:
        _pt_log(0, -got)
    return backing


cdef void _pt_release(Session s, uint64_t nodeid, uint8_t pt) noexcept nogil:
    """An open counted by _pt_acquire is gone (before its nfh count goes); the
    last one sharing the backing id closes it (the kernel has let go of it for
    this inode by the time it sends that RELEASE)."""
    cdef Node *n
    cdef int32_t backing = 0
    cdef int err
    if pt == PT_NONE:
        return
    pthread_mutex_lock(&s.pt_mu)
    n = _pt_node(s, nodeid)
    if n != NULL:
        if pt == PT_CACHED:
            if n.ncached:
                n.ncached -= 1
        elif n.npass:
            n.npass -= 1
            if n.npass == 0:
                backing = n.backing
                n.backing = 0
    pthread_mutex_unlock(&s.pt_mu)
    if backing:
        err = _backing_close(s.devfd, backing)
        if err:
            _pt_log(backing, -err)


cdef inline uint32_t _pt_flags(uint32_t oflags, int32_t backing) noexcept nogil:
    """An open reply's FOPEN flags once the open has its backing: the kernel's
    I/O on the branch file, no page cache of ours to keep nor direct I/O."""
    if backing:
        return (oflags & ~(<uint32_t>(FOPEN_DIRECT_IO | FOPEN_KEEP_CACHE))) | FOPEN_PASSTHROUGH
    return oflags


cdef bytes _open_out(uint32_t fh, uint32_t oflags, int32_t backing):
    """fuse_open_out of an open Python registered (Session.add/add_c)."""
    cdef fuse_open_out o
    memset(&o, 0, sizeof(o))
    o.fh = fh
    o.open_flags = _pt_flags(oflags, backing)
    o.backing_id = backing
    return PyBytes_FromStringAndSize(<char *>&o, sizeof(o))


cdef bint _opened_c(NodeTable t, uint64_t nodeid, uint64_t seen, bint *changed) noexcept nogil:
    """Count a C-owned open of ``nodeid`` (Node.nfh; the Python fh set holds only
    Python's) and record what the kernel now has of it, as the request layer's
    _freshen: ``changed`` if the file changed since the kernel last saw it.
    False if the node is gone."""
    cdef Node *n
    t.lock()
    n = t.node(nodeid)
    if n != NULL:
        changed[0] = not n.has_seen or n.seen != seen
        n.seen = seen
        n.has_seen = 1
        n.nfh += 1
    t.unlock()
    return n != NULL


cdef void _drop_c_fh(NodeTable t, uint64_t nodeid) noexcept nogil:
    """A C-owned open of ``nodeid`` is gone (closed, or a Python handle replaced it)."""
    cdef Node *n
    t.lock()
    n = t.node(nodeid)
    if n != NULL and n.nfh > 0:
        n.nfh -= 1
        if n.nlookup <= 0 and n.nfh == 0 and not t.never_forget:
            t._drop(n)
    t.unlock()


cdef uint32_t _own(Session s, FastConfig *c, int bfd, int at, uint64_t nodeid, uint32_t flags,
                   uint8_t pt) noexcept nogil:
    """Slot the open ``bfd`` as C-owned, keeping the reference to ``c`` (0: table full)."""
    cdef uint32_t i
    pthread_mutex_lock(&s.slots_mu)
    i = s._alloc()
    if i:
        s.slots[i].fd = bfd
        s.slots[i].pt = pt
        s.slots[i].pyfh = 0
        s.slots[i].owner = SLOT_C
        s.slots[i].branch = at
        s.slots[i].flags = flags
        s.slots[i].nodeid = nodeid
        s.slots[i].cfg = c  # until RELEASE or adoption
    pthread_mutex_unlock(&s.slots_mu)
    return i


cdef uint32_t _add_c(Session s, int bfd, uint64_t nodeid, const char *root, size_t rootlen,
                     uint32_t flags, int32_t *backing) noexcept nogil:
    """Session.add_c: an open Python made (CREATE) becomes C-owned, with its
    passthrough ``backing`` decided here (0: none)."""
    cdef int at = -1
    cdef int k
    cdef uint32_t i
    cdef uint8_t pt[1]  # out-parameter of _pt_acquire
    cdef Node *n
    cdef FastConfig *c = _acquire(s)
    if c == NULL:
        return 0
    if c.opens:
        for k in range(c.nbranches):
            if c.lens[k] == rootlen and memcmp(c.branches[k], root, rootlen) == 0:
                at = k
                break
    if at >= 0:
        s.table.lock()
        n = s.table.node(nodeid)
        if n != NULL:
            n.nfh += 1
        s.table.unlock()
        if n != NULL:
            backing[0] = _pt_acquire(s, nodeid, bfd, flags, pt)
            i = _own(s, c, bfd, at, nodeid, flags, pt[0])
            if i:
                return i
            _pt_release(s, nodeid, pt[0])
            backing[0] = 0
            _drop_c_fh(s.table, nodeid)
    _release(s, c)
    return 0


cdef bint _open(Session s, Caller *w, int fd, char *buf, ssize_t n) noexcept nogil:
    cdef fuse_in_header *h = <fuse_in_header *>buf
    cdef fuse_open_in *o = <fuse_open_in *>(buf + IN_HDR)
    cdef char rel[PATH_MAX]
    cdef char full[PATH_MAX]
    cdef ssize_t rellen
    cdef stat_t st
    cdef int at = -1
    cdef int bfd
    cdef int err
    cdef uint32_t i
    cdef uint32_t oflags
    cdef bint changed[1]  # out-parameter of _opened_c
    cdef bint rdonly
    cdef uint8_t pt[1]  # out-parameter of _pt_acquire
    cdef int32_t backing
    cdef open_reply out
    if n < <ssize_t>(IN_HDR + sizeof(fuse_open_in)) or o.open_flags & FUSE_OPEN_KILL_SUIDGID:
        return False
    cdef FastConfig *c = _acquire(s)
    if c == NULL:
        return False
    rdonly = (<int>o.flags & O_ACCMODE) == O_RDONLY
    if c.opens and not (c.link_cow and not rdonly) and _as_caller(c, w, h):
        rellen = _relpath(s.table, h.nodeid, NULL, 0, rel, NULL)
        if rellen > 0:
            at = _search_at(c, rel, <size_t>rellen, &st, full)
    if at < 0 or not S_ISREG(st.st_mode):
        _release(s, c)
        return False
    bfd = c_open(full, (<int>o.flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_DIRECT)) | O_CLOEXEC)
    if bfd < 0:
        err = errno
        _release(s, c)
        _reply_error(fd, h.unique, err)
        return True
    if c_fstat(bfd, &st) != 0 or not _opened_c(
            s.table, h.nodeid, stamp(<uint64_t>st.st_size, _ts_ns(st.st_mtim)),
            changed):
        c_close(bfd)
        _release(s, c)
        return False
    backing = _pt_acquire(s, h.nodeid, bfd, o.flags, pt)
    i = _own(s, c, bfd, at, h.nodeid, o.flags, pt[0])  # keeps the reference _acquire took
    if not i:
        c_close(bfd)
        _pt_release(s, h.nodeid, pt[0])
        _drop_c_fh(s.table, h.nodeid)
        _release(s, c)
        _reply_error(fd, h.unique, 23)  # ENFILE
        return True
    oflags = c.fopen_rd if rdonly else c.fopen_wr
    if not changed[0]:
        oflags |= c.fopen_keep
    memset(&out, 0, sizeof(out))
    out.o.fh = i
    out.o.open_flags = _pt_flags(oflags, backing)
    out.o.backing_id = backing
    _reply(fd, h.unique, &out, sizeof(out))
    return True


cdef bint _release_fh(Session s, int fd, char *buf, ssize_t n) noexcept nogil:
    cdef fuse_in_header *h = <fuse_in_header *>buf
    cdef uint64_t fh
    cdef int bfd = -1
    cdef uint64_t nodeid = 0
    cdef FastConfig *opened = NULL
    cdef FastConfig *c
    cdef bint drop
    cdef uint8_t pt = PT_NONE
    if n < <ssize_t>(IN_HDR + sizeof(fuse_release_in)):
        return False
    fh = (<fuse_release_in *>(buf + IN_HDR)).fh
    if fh == 0 or fh >= s.next_slot:
        return False
    pthread_mutex_lock(&s.slots_mu)
    if s.slots[fh].owner == SLOT_C:
        bfd = s.slots[fh].fd
        nodeid = s.slots[fh].nodeid
        opened = s.slots[fh].cfg
        pt = s.slots[fh].pt
        s._free(fh)
    pthread_mutex_unlock(&s.slots_mu)
    if opened == NULL:
        return False  # Python's open (or being adopted): Python's release
    c = _acquire(s)  # dropcacheonclose as it is now
    drop = c.dropcache if c != NULL else opened.dropcache
    if c != NULL:
        _release(s, c)
    if drop:
        posix_fadvise(bfd, 0, 0, POSIX_FADV_DONTNEED)
    c_close(bfd)
    _pt_release(s, nodeid, pt)
    _drop_c_fh(s.table, nodeid)
    _release(s, opened)
    _reply_error(fd, h.unique, 0)
    return True


cdef bint _getattr_fh(Session s, int fd, char *buf) noexcept nogil:
    """GETATTR naming an open file: the fstat of its branch fd, as Python's
    getattr on a handle (the kernel pins the fh for the request: no RELEASE
    closes the fd meanwhile)."""
    cdef fuse_in_header *h = <fuse_in_header *>buf
    cdef int bfd = s._fd((<fuse_getattr_in *>(buf + IN_HDR)).fh)
    cdef stat_t st
    cdef attr_reply out
    if bfd < 0:
        return False
    cdef FastConfig *c = _acquire(s)
    if c == NULL:
        return False
    memset(&out, 0, sizeof(out))
    out.a.attr_valid = c.attr_valid
    _release(s, c)
    if c_fstat(bfd, &st) != 0:
        return False
    _saw(s.table, h.nodeid, &st)
    _fill_attr_c(&out.a.attr, h.nodeid, &st)
    _reply(fd, h.unique, &out, sizeof(out))
    return True
