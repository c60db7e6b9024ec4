# CREATE and MKDIR of the common create policies without the GIL (included by
# _kernel.pyx after _files.pxi). The policy modules in mergerfs/policies are the
# definition; this is their single-branch picks (ff, mfs, lfs, lus, lup, pfrd,
# rand and their ep forms) over the same filter (_filter.eligible: mode, the
# parent on the branch for ep, statvfs, read-only, minfreespace), and
# tests/unit/test_create_pick.py holds the two equal. Only over local
# filesystems whose roots are still where they were when the config was set
# (no deadline needed; a branch whose filesystem went away is Python's "gone").
# Anything else returns False untouched and Python answers: no branch
# qualifies (Python names the error), the parent is missing on the picked branch
# (clonepath), the open or mkdir fails (EROFS marks the branch read-only and
# re-runs the policy; every error is answered as Python answers it).

from mergerfs._fastpath cimport Space, space_of

cpdef enum:
    # FastConfig.create_pick / mkdir_pick: how a branch is picked (0: Python's),
    # plus PICK_EP for the path-preserving forms
    PICK_FIRST = 1
    PICK_MOST_FREE = 2
    PICK_LEAST_FREE = 3
    PICK_LEAST_USED = 4
    PICK_LEAST_USED_PCT = 5
    PICK_WEIGHTED = 6
    PICK_RANDOM = 7
    PICK_EP = 16

cdef enum:
    MAX_PICK_BRANCHES = 64  # more branches than this: Python picks

cdef struct fuse_create_in:
    uint32_t flags
    uint32_t mode
    uint32_t umask
    uint32_t open_flags

cdef struct fuse_mkdir_in:
    uint32_t mode
    uint32_t umask

cdef struct create_reply:
    fuse_out_header h
    fuse_entry_out e
    fuse_open_out o

cdef extern from "<sys/stat.h>" nogil:
    int c_mkdir "mkdir"(const char *path, unsigned int mode)


cdef inline double _draw(Caller *w) noexcept nogil:
    """A random number in [0, 1) from the worker's own state (splitmix64): the
    random picks' draw, as Probe.random is Python's."""
    cdef uint64_t z
    w.rng += 0x9E3779B97F4A7C15ULL
    z = w.rng
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return <double>((z ^ (z >> 31)) >> 11) / 9007199254740992.0  # 53 bits / 2**53


cdef int _choose(int pick, const Space *sp, int ncand, double r) noexcept nogil:
    """Which of ``ncand`` (>= 1) candidates, their facts in ``sp`` in branch
    order, ``pick`` takes (policies/_filter.py's picks); ``r``: the random picks' draw."""
    cdef int j
    cdef int k = 0
    cdef double key, total, acc
    cdef double best = 0
    if pick == PICK_RANDOM:  # random_one
        k = <int>(r * ncand)
        if k >= ncand:
            k = ncand - 1
        return k
    if pick == PICK_WEIGHTED:  # weighted_by_free
        total = 0
        for j in range(ncand):
            total += <double>sp[j].available
        if total <= 0:
            return 0
        acc = 0
        for j in range(ncand):
            acc += <double>sp[j].available
            if r * total < acc:
                return j
        return ncand - 1
    if pick == PICK_FIRST:
        return 0
    for j in range(ncand):  # lowest(key): ties keep branch order
        if pick == PICK_MOST_FREE:
            key = -<double>sp[j].available
        elif pick == PICK_LEAST_FREE:
            key = <double>sp[j].available
        elif pick == PICK_LEAST_USED:
            key = <double>sp[j].used
        else:  # PICK_LEAST_USED_PCT
            key = <double>sp[j].used / <double>sp[j].total if sp[j].total else 1.0
        if j == 0 or key < best:
            k, best = j, key
    return k


def choose(int pick, spaces, double r=0.0):
    """_choose from Python (tests hold it equal to the policy modules): the
    index ``pick`` takes among ``spaces``, (available, used, total) per candidate."""
    cdef Space sp[MAX_PICK_BRANCHES]
    cdef int j
    cdef int n = <int>len(spaces)
    if not 0 < n <= MAX_PICK_BRANCHES:
        raise ValueError("1 to %d candidates" % MAX_PICK_BRANCHES)
    for j in range(n):
        sp[j].available, sp[j].used, sp[j].total = spaces[j]
    return _choose(pick, sp, n, r)


cdef int _pick(FastConfig *c, Caller *w, int code, const char *parent, size_t plen, char *full) noexcept nogil:
    """The branch policy ``code`` picks for a new entry in directory ``parent``
    (as policies/_filter.py: the eligible branches in order, then the pick),
    or -1 when Python must decide."""
    cdef int pick = code & ~PICK_EP
    cdef int k
    cdef int ncand = 0
    cdef int idx[MAX_PICK_BRANCHES]
    cdef Space sp[MAX_PICK_BRANCHES]
    cdef stat_t st
    if c.nbranches > MAX_PICK_BRANCHES:
        return -1
    for k in range(c.nbranches):
        if not c.creatable[k]:
            continue
        if code & PICK_EP and (not _on_branch(c, k, parent, plen, full) or c_lstat(full, &st) != 0):
            continue
        if space_of(_root(c, k), &sp[ncand]) != 0:
            continue
        if sp[ncand].dev != c.root_devs[k]:
            return -1  # its filesystem went away, or another is mounted there: Python's judgement
        if sp[ncand].readonly or sp[ncand].available < c.minfree[k]:
            continue
        idx[ncand] = k
        ncand += 1
        if pick == PICK_FIRST:
            break
    if ncand == 0:
        return -1
    return idx[_choose(pick, sp, ncand, _draw(w) if pick == PICK_RANDOM or pick == PICK_WEIGHTED else 0.0)]


cdef int _new_entry(Session s, FastConfig *c, Caller *w, const fuse_in_header *h, const char *name,
                   size_t room, int code, char *rel, char *full) noexcept nogil:
    """The new entry (the NUL-terminated ``name``, at most ``room`` bytes, in
    the directory ``h`` names): its relpath in ``rel`` and the picked branch's
    path of it in ``full``; the branch index (>= 0), or -1 (Python's: see the top)."""
    cdef char parent[PATH_MAX]
    cdef ssize_t rellen
    cdef size_t plen
    cdef int at
    cdef stat_t st
    if code == 0 or c.root_devs == NULL or not _as_caller(c, w, h):
        return -1
    rellen = _child(s, h.nodeid, name, room, rel)
    if rellen <= 0 or _is_control(rel + 1, <size_t>rellen - 1):
        return -1
    plen = _parent_len(rel, <size_t>rellen)
    memcpy(parent, rel, plen)
    parent[plen] = 0
    at = _pick(c, w, code, parent, plen, full)
    if at < 0:
        return -1
    if not code & PICK_EP and (not _on_branch(c, at, parent, plen, full) or c_lstat(full, &st) != 0):
        return -1  # the parent is missing there: clonepath (Python)
    if not _on_branch(c, at, rel, <size_t>rellen, full):
        return -1
    return at


cdef uint64_t _remember_new(Session s, FastConfig *c, const char *rel, size_t rellen, const stat_t *st) noexcept nogil:
    """Count the kernel's reference to a new entry (as requests/core.py _entry):
    its nodeid, 0 if out of memory. A name the table knew for another object is
    rebound and the kernel's cache of the number dropped."""
    cdef bint replaced[1]  # out-parameter of remember_c
    cdef bint isdir = S_ISDIR(st.st_mode)
    cdef uint64_t nodeid
    s.table.lock()
    nodeid = s.table.remember_c(
        _calc(c.calc, <const uint8_t *>rel, rellen, NULL, 0, isdir, st.st_dev, st.st_ino),
        rel, True, st.st_dev, st.st_ino, isdir, True, replaced)
    s.table.unlock()
    if nodeid and replaced[0]:
        _inval_inode(s, nodeid)
    return nodeid


cdef void _inval_inode(Session s, uint64_t nodeid) noexcept with gil:
    """Queue the kernel's invalidation of ``nodeid`` (the notifier thread writes it)."""
    try:
        s.inval(nodeid)  # a queue put (kernel/notifier.py)
    except:  # nothing to tell it to (a bare except: Cython sees it swallows all)
        pass


cdef bint _create(Session s, Caller *w, int fd, char *buf, ssize_t n) noexcept nogil:
    cdef fuse_in_header *h = <fuse_in_header *>buf
    cdef fuse_create_in *ci = <fuse_create_in *>(buf + IN_HDR)
    cdef char rel[PATH_MAX]
    cdef char full[PATH_MAX]
    cdef ssize_t rellen
    cdef int at, bfd, err
    cdef stat_t st
    cdef uint64_t nodeid
    cdef bint changed[1]  # out-parameter of _opened_c (a new file: nothing cached to keep)
    cdef uint8_t pt[1]  # out-parameter of _pt_acquire
    cdef int32_t backing
    cdef uint32_t i, oflags
    cdef create_reply out
    if n <= <ssize_t>(IN_HDR + sizeof(fuse_create_in)):
        return False
    cdef FastConfig *c = _acquire(s)
    if c == NULL:
        return False
    at = _new_entry(s, c, w, h, buf + IN_HDR + sizeof(fuse_create_in), <size_t>n - IN_HDR - sizeof(fuse_create_in),
                    c.create_pick, rel, full)
    if at < 0:
        _release(s, c)
        return False
    rellen = <ssize_t>strlen(rel)
    bfd = c_open(full, (<int>ci.flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_DIRECT)) | O_CREAT
                 | (<int>ci.flags & O_EXCL) | O_CLOEXEC, ci.mode)
    if bfd < 0:
        _release(s, c)
        return False
    if c_fstat(bfd, &st) != 0:
        err = errno
        c_close(bfd)
        _release(s, c)
        _reply_error(fd, h.unique, err)
        return True
    nodeid = _remember_new(s, c, rel, <size_t>rellen, &st)
    if nodeid == 0 or not _opened_c(
            s.table, nodeid, stamp(<uint64_t>st.st_size, _ts_ns(st.st_mtim)),
            changed):
        c_close(bfd)
        _release(s, c)
        _reply_error(fd, h.unique, 12)  # ENOMEM
        return True
    backing = _pt_acquire(s, nodeid, bfd, ci.flags, pt)
    i = _own(s, c, bfd, at, nodeid, ci.flags, pt[0])  # keeps the reference _acquire took
    memset(&out, 0, sizeof(out))
    out.e.nodeid = nodeid
    out.e.entry_valid = c.entry_valid
    out.e.attr_valid = c.attr_valid
    _fill_attr_c(&out.e.attr, nodeid, &st)
    if not i:  # the entry stands (the kernel counts its lookup); the open fails
        c_close(bfd)
        _pt_release(s, nodeid, pt[0])
        _drop_c_fh(s.table, nodeid)
        _release(s, c)
        _reply_error(fd, h.unique, 23)  # ENFILE
        return True
    oflags = c.fopen_rd if (<int>ci.flags & O_ACCMODE) == O_RDONLY else c.fopen_wr
    if not oflags & FOPEN_DIRECT_IO:
        oflags |= FOPEN_KEEP_CACHE  # a new file: nothing of it cached that could be stale
    out.o.fh = i
    out.o.open_flags = _pt_flags(oflags, backing)
    out.o.backing_id = backing
    _reply(fd, h.unique, &out, sizeof(out))
    return True


cdef bint _mkdir(Session s, Caller *w, int fd, char *buf, ssize_t n) noexcept nogil:
    cdef fuse_in_header *h = <fuse_in_header *>buf
    cdef fuse_mkdir_in *mi = <fuse_mkdir_in *>(buf + IN_HDR)
    cdef char rel[PATH_MAX]
    cdef char full[PATH_MAX]
    cdef ssize_t rellen
    cdef int at
    cdef stat_t st
    cdef uint64_t nodeid
    cdef entry_reply out
    if n <= <ssize_t>(IN_HDR + sizeof(fuse_mkdir_in)):
        return False
    cdef FastConfig *c = _acquire(s)
    if c == NULL:
        return False
    at = _new_entry(s, c, w, h, buf + IN_HDR + sizeof(fuse_mkdir_in), <size_t>n - IN_HDR - sizeof(fuse_mkdir_in),
                    c.mkdir_pick, rel, full)
    if at < 0 or c_mkdir(full, mi.mode) != 0:
        _release(s, c)
        return False
    rellen = <ssize_t>strlen(rel)
    # the entry is what a lookup finds now (first found), as Python's mkdir answers
    if _search(c, rel, <size_t>rellen, &st, full) != 0:
        _on_branch(c, at, rel, <size_t>rellen, full)
        if c_lstat(full, &st) != 0:
            _release(s, c)
            _reply_error(fd, h.unique, errno)
            return True
    memset(&out, 0, sizeof(out))
    out.e.entry_valid = c.entry_valid
    out.e.attr_valid = c.attr_valid
    nodeid = _remember_new(s, c, rel, <size_t>rellen, &st)
    _release(s, c)
    if nodeid == 0:
        _reply_error(fd, h.unique, 12)  # ENOMEM
        return True
    _saw(s.table, nodeid, &st)
    out.e.nodeid = nodeid
    _fill_attr_c(&out.e.attr, nodeid, &st)
    _reply(fd, h.unique, &out, sizeof(out))
    return True
