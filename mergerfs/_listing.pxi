# Included by _kernel.pyx after _dirs.pxi: building a C directory handle's
# merged listing. Each branch's directory is read with getdents64, each name
# kept once (first branch wins, an open-addressing set of the names), and
# packed as the fuse_dirent records READDIR copies out; the numbers are the
# inodecalc of _fastpath, as ops/readdir.py gives them.
#
# The last listings are kept (DirTable.cache) and given to the next listing of
# the same directory by the same caller under the same config, if no branch's
# directory changed in between: each is stat'ed, and any entry created,
# removed or renamed in it moves its ctime. A listing is kept only when every
# directory's ctime was over LISTED_QUIET_NS old before it was read, so a
# change after it gets a different ctime even where timestamps are coarse
# (jiffies, or seconds on ext2/3 and FAT). A hit costs a stat per branch and a
# copy instead of reading every branch's directory again.


cdef inline fuse_dirent *_rec(DirList *d, size_t i) noexcept nogil:
    """Record ``i``; its name follows it."""
    return <fuse_dirent *>(d.recs + d.offs[i])


cdef uint64_t *_hash_slot(DirList *d, const char *name, size_t n, uint64_t tag) noexcept nogil:
    """The slot holding ``name`` (``tag``: the top half of its hash), or the
    empty slot where it goes. A slot keeps the tag beside the record index, so
    a probe past another name reads no record unless their tags agree."""
    cdef size_t mask = d.hcap - 1
    cdef size_t k = <size_t>tag & mask
    cdef uint64_t e
    cdef fuse_dirent *r
    while d.hash[k]:
        e = d.hash[k]
        if e >> 32 == tag:
            r = _rec(d, (e & 0xFFFFFFFFULL) - 1)
            if r.namelen == n and memcmp(<char *>(r + 1), name, n) == 0:
                break
        k = (k + 1) & mask
    return &d.hash[k]


cdef inline uint64_t _name_tag(const char *name, size_t n) noexcept nogil:
    return _path_hash(name, n) >> 32


cdef bint _hash_grow(DirList *d) noexcept nogil:
    """Keep the table at most half full (every slot moved by its tag: no name hashed again)."""
    cdef size_t cap = d.hcap * 2 if d.hcap else 1024
    cdef uint64_t *t = <uint64_t *>calloc(cap, sizeof(uint64_t))
    cdef size_t i, k
    cdef size_t mask = cap - 1
    if t == NULL:
        return False
    for i in range(d.hcap):
        if d.hash[i]:
            k = <size_t>(d.hash[i] >> 32) & mask
            while t[k]:
                k = (k + 1) & mask
            t[k] = d.hash[i]
    free(d.hash)
    d.hash = t
    d.hcap = cap
    return True


cdef int _add(DirList *d, const char *name, size_t n, uint32_t dtype, uint64_t ino, uint64_t *slot,
              uint64_t tag) noexcept nogil:
    """Append one record (and its name to the table, at ``slot`` with its ``tag``, if given): 0 or ENOMEM."""
    cdef size_t rec = (sizeof(fuse_dirent) + n + 7) & ~(<size_t>7)
    cdef size_t cap
    cdef char *p
    cdef size_t *o
    cdef fuse_dirent *r
    if d.used + rec > d.cap:
        cap = d.cap * 2 if d.cap else 1 << 16
        while cap < d.used + rec:
            cap *= 2
        p = <char *>realloc(d.recs, cap)
        if p == NULL:
            return ENOMEM
        d.recs = p
        d.cap = cap
    if d.count + 2 > d.ocap:
        cap = d.ocap * 2 if d.ocap else 1024
        o = <size_t *>realloc(d.offs, cap * sizeof(size_t))
        if o == NULL:
            return ENOMEM
        d.offs = o
        d.ocap = cap
    if d.count >= 0xFFFFFFF0U:
        return ENOMEM
    r = <fuse_dirent *>(d.recs + d.used)
    r.ino = ino
    r.off = d.count + 1  # the cookie: the index of the next record (as pack_dirents numbers them)
    r.namelen = <uint32_t>n
    r.type = dtype
    memcpy(d.recs + d.used + sizeof(fuse_dirent), name, n)
    memset(d.recs + d.used + sizeof(fuse_dirent) + n, 0, rec - sizeof(fuse_dirent) - n)
    d.offs[d.count] = d.used
    d.used += rec
    d.count += 1
    d.offs[d.count] = d.used
    if slot != NULL:
        slot[0] = (tag << 32) | <uint64_t>d.count
    return 0


cdef bint _hidden_at_root(const char *name, size_t n) noexcept nogil:
    """ops/readdir._HIDDEN: the control file and rename-exdev's parking directory."""
    return (n == 9 and memcmp(name, b".mergerfs", 9) == 0) or (
        n == 22 and memcmp(name, b".mergerfs_rename_exdev", 22) == 0)


cdef int _list_branch(FastConfig *c, DirList *d, int bfd, char *scratch) noexcept nogil:
    """Append the names of one branch's directory (``bfd``) not listed yet: 0,
    -1 (its fstat failed: errno) or -2 (out of memory). A read error ends this
    branch's listing, as libc's readdir() does for readdir_merge."""
    cdef stat_t st
    cdef stat_t est
    cdef long got
    cdef long pos
    cdef linux_dirent64 *ent
    cdef uint32_t dtype
    cdef const char *name
    cdef size_t n
    cdef uint64_t *slot
    cdef uint64_t tag
    cdef bint root = d.rellen == 1
    if c_fstat(bfd, &st) != 0:
        return -1
    while True:
        got = syscall(SYS_getdents64, bfd, scratch, <unsigned int>GETDENTS_BUF)
        if got <= 0:
            if got < 0:
                d.complete = False
            return 0
        pos = 0
        while pos < got:
            ent = <linux_dirent64 *>(scratch + pos)  # the kernel aligns them to 8 bytes
            dtype = ent.d_type
            name = ent.d_name
            pos += ent.d_reclen
            n = strnlen(name, <size_t>ent.d_reclen - 19)
            if name[0] == 46 and (n == 1 or (n == 2 and name[1] == 46)):  # "." and ".."
                continue
            if root and _hidden_at_root(name, n):
                continue
            if (d.count + 1) * 2 > d.hcap and not _hash_grow(d):
                return -2
            tag = _name_tag(name, n)
            slot = _hash_slot(d, name, n, tag)
            if slot[0]:
                continue  # an earlier branch's
            if dtype == 0:  # DT_UNKNOWN (some filesystems): ask the branch; gone meanwhile: left out
                if c_fstatat(bfd, name, &est, AT_SYMLINK_NOFOLLOW) != 0:
                    continue
                dtype = (est.st_mode & 0o170000) >> 12
            if _add(d, name, n, dtype, _calc(c.calc, <const uint8_t *>d.prefix, d.plen, <const uint8_t *>name, n,
                                             dtype == DT_DIR, st.st_dev, ent.d_ino), slot, tag) != 0:
                return -2


cdef bint _any_branch_root(FastConfig *c) noexcept nogil:
    cdef stat_t st
    cdef int i
    for i in range(c.nbranches):
        if c_stat(_root(c, i), &st) == 0 and S_ISDIR(st.st_mode):
            return True
    return False


cdef int _list(FastConfig *c, DirList *d) noexcept nogil:
    """The merged listing anew: each branch's directory in order, each name once
    (the first branch's), none of the root's hidden names. 0, or the first
    branch's error when no branch could be listed (ops/readdir.ReaddirOps._list)."""
    cdef char full[PATH_MAX]
    cdef char *scratch
    cdef int first_err = 0
    cdef bint any_listed = False
    cdef int i
    cdef int bfd
    cdef int rv
    d.used = 0
    d.count = 0
    d.listed = False
    d.complete = True
    if d.hash != NULL:
        memset(d.hash, 0, d.hcap * sizeof(uint64_t))
    if d.offs == NULL:
        d.offs = <size_t *>malloc(1024 * sizeof(size_t))
        d.ocap = 1024
    scratch = <char *>malloc(GETDENTS_BUF)
    if scratch == NULL or d.offs == NULL:
        free(scratch)
        return ENOMEM
    d.offs[0] = 0
    for i in range(c.nbranches):
        if not _on_branch(c, i, d.rel, d.rellen, full):
            first_err = first_err or ENAMETOOLONG
            d.complete = False
            continue
        bfd = c_open(full, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if bfd < 0:
            first_err = first_err or errno
            d.complete = d.complete and (errno == ENOENT or errno == ENOTDIR)
            continue
        rv = _list_branch(c, d, bfd, scratch)
        if rv == -1:
            first_err = first_err or errno
            d.complete = False
        c_close(bfd)
        if rv == -2:
            free(scratch)
            return ENOMEM
        if rv != 0:
            continue
        any_listed = True
    free(scratch)
    if not any_listed:
        if d.rellen == 1 and not _any_branch_root(c):
            _add(d, ERROR_ENTRY, strlen(ERROR_ENTRY), 0o100000 >> 12, 2, NULL, 0)
        else:
            return first_err or ENOENT
    d.listed = True
    return 0


cdef enum:
    LISTED_BYTES = 2 << 20  # the records (and their offsets) the cache holds at most
cdef int64_t LISTED_QUIET_NS = 5000000000


cdef bint _dir_facts(FastConfig *c, DirList *d, BranchDir *out, int64_t *newest) noexcept nogil:
    """Each branch's directory of ``d`` as it is now (stat: the listing's open
    follows symlinks too), and the newest of their ctimes and mtimes. False if
    one cannot be told: an error other than its absence, or a directory on
    another filesystem than its branch root's (a mount inside a branch, maybe
    one whose ctimes do not follow its entries: only the roots' filesystems
    are known to be local ones, mounts.LOCAL_FSTYPES)."""
    cdef char full[PATH_MAX]
    cdef stat_t st
    cdef int i
    newest[0] = 0
    for i in range(c.nbranches):
        memset(&out[i], 0, sizeof(BranchDir))
        if not _on_branch(c, i, d.rel, d.rellen, full):
            return False
        if c_stat(full, &st) != 0:
            if errno != ENOENT and errno != ENOTDIR:
                return False
            out[i].err = errno
            continue
        if c.root_devs == NULL or st.st_dev != c.root_devs[i]:
            return False
        out[i].dev = st.st_dev
        out[i].ino = st.st_ino
        out[i].mtime = _ts_ns(st.st_mtim)
        out[i].ctime = _ts_ns(st.st_ctim)
        newest[0] = max(newest[0], out[i].mtime, out[i].ctime)
    return True


cdef bint _same_dirs(const BranchDir *a, const BranchDir *b, int n) noexcept nogil:
    cdef int i
    for i in range(n):
        if a[i].err != b[i].err or a[i].dev != b[i].dev or a[i].ino != b[i].ino \
                or a[i].mtime != b[i].mtime or a[i].ctime != b[i].ctime:
            return False
    return True


cdef inline size_t _records_size(size_t used, size_t count) noexcept nogil:
    """What a listing of ``count`` records in ``used`` bytes takes in the cache (records and offsets)."""
    return used + (count + 1) * sizeof(size_t)


cdef void _listed_free(DirTable *t, Listed *e) noexcept nogil:
    if e.rel == NULL:
        return
    t.cache_bytes -= _records_size(e.used, e.count)
    free(e.rel)
    free(e.dirs)
    free(e.recs)
    free(e.offs)
    memset(e, 0, sizeof(Listed))


cdef bint _groups_key(uint64_t *key) noexcept nogil:
    """A hash of this thread's supplementary groups (the caller's, as ugid set
    them with a raw syscall: they are per thread); False if unknown."""
    cdef uint32_t groups[256]
    cdef long n = syscall(SYS_getgroups, 256, groups)
    if n < 0:
        return False
    key[0] = _path_hash(<const char *>groups, <size_t>n * sizeof(uint32_t)) ^ <uint64_t>n
    return True


cdef Listed *_listed_find(DirTable *t, FastConfig *c, DirList *d, uint32_t uid, uint32_t gid,
                          uint64_t groups) noexcept nogil:
    """The kept listing of ``d``'s directory for this caller and config (under t.cmu), or NULL."""
    cdef int i
    cdef Listed *e
    for i in range(LISTED_MAX):
        e = &t.cache[i]
        if e.rel != NULL and e.gen == c.gen and e.uid == uid and e.gid == gid and e.groups == groups \
                and e.rellen == d.rellen and memcmp(e.rel, d.rel, d.rellen) == 0:
            return e
    return NULL


cdef bint _listed_take(DirTable *t, FastConfig *c, DirList *d, uint32_t uid, uint32_t gid, uint64_t groups,
                       const BranchDir *now) noexcept nogil:
    """Copy the kept listing into ``d`` if no branch's directory changed since
    it was read: True. A changed one is dropped."""
    cdef Listed *e
    cdef char *p
    cdef size_t *o
    cdef bint hit = False
    pthread_mutex_lock(&t.cmu)
    e = _listed_find(t, c, d, uid, gid, groups)
    if e != NULL and not _same_dirs(e.dirs, now, c.nbranches):
        _listed_free(t, e)
    elif e != NULL:
        if d.cap < e.used:
            p = <char *>realloc(d.recs, e.used)
            if p != NULL:
                d.recs = p
                d.cap = e.used
        if d.ocap < e.count + 1:
            o = <size_t *>realloc(d.offs, (e.count + 1) * sizeof(size_t))
            if o != NULL:
                d.offs = o
                d.ocap = e.count + 1
        if d.cap >= e.used and d.ocap >= e.count + 1:
            memcpy(d.recs, e.recs, e.used)
            memcpy(d.offs, e.offs, (e.count + 1) * sizeof(size_t))
            d.used = e.used
            d.count = e.count
            d.listed = d.complete = True
            t.clock += 1
            e.last = t.clock
            hit = True
    pthread_mutex_unlock(&t.cmu)
    return hit


cdef void _listed_put(DirTable *t, FastConfig *c, DirList *d, uint32_t uid, uint32_t gid, uint64_t groups,
                      const BranchDir *facts) noexcept nogil:
    """Keep a copy of ``d``'s fresh listing, evicting the least recently used."""
    cdef size_t size = _records_size(d.used, d.count)
    cdef Listed *e
    cdef Listed *free_e = NULL
    cdef int i
    if size > LISTED_BYTES // 2:
        return
    pthread_mutex_lock(&t.cmu)
    e = _listed_find(t, c, d, uid, gid, groups)
    if e != NULL:
        _listed_free(t, e)
    while True:
        free_e = NULL
        e = NULL  # the least recently used
        for i in range(LISTED_MAX):
            if t.cache[i].rel == NULL:
                free_e = &t.cache[i] if free_e == NULL else free_e
            elif e == NULL or t.cache[i].last < e.last:
                e = &t.cache[i]
        if (free_e != NULL and t.cache_bytes + size <= LISTED_BYTES) or e == NULL:
            break
        _listed_free(t, e)
    if free_e == NULL:
        pthread_mutex_unlock(&t.cmu)
        return
    e = free_e
    e.rel = <char *>malloc(d.rellen)
    e.dirs = <BranchDir *>malloc(c.nbranches * sizeof(BranchDir))
    e.recs = <char *>malloc(d.used if d.used else 1)
    e.offs = <size_t *>malloc((d.count + 1) * sizeof(size_t))
    if e.rel == NULL or e.dirs == NULL or e.recs == NULL or e.offs == NULL:
        free(e.rel)
        free(e.dirs)
        free(e.recs)
        free(e.offs)
        memset(e, 0, sizeof(Listed))
        pthread_mutex_unlock(&t.cmu)
        return
    memcpy(e.rel, d.rel, d.rellen)
    e.rellen = d.rellen
    e.uid = uid
    e.gid = gid
    e.groups = groups
    e.gen = c.gen
    memcpy(e.dirs, facts, c.nbranches * sizeof(BranchDir))
    e.nbranches = c.nbranches
    memcpy(e.recs, d.recs, d.used)
    memcpy(e.offs, d.offs, (d.count + 1) * sizeof(size_t))
    e.used = d.used
    e.count = d.count
    t.clock += 1
    e.last = t.clock
    t.cache_bytes += size
    pthread_mutex_unlock(&t.cmu)


cdef int _list_or_cached(Session s, FastConfig *c, DirList *d, uint32_t uid, uint32_t gid) noexcept nogil:
    """``d``'s merged listing anew (_list), or the kept one while it is still
    what _list would read; a complete listing of quiet directories is kept,
    for this caller (uid, gid and groups: what it may read) and config."""
    cdef int64_t start = _clock_ns(CLOCK_REALTIME)
    cdef int64_t newest = 0
    cdef uint64_t groups = 0
    cdef BranchDir *facts = <BranchDir *>malloc(max(c.nbranches, 1) * sizeof(BranchDir))
    cdef bint known = facts != NULL and _groups_key(&groups) and _dir_facts(c, d, facts, &newest)
    cdef int err
    if known and _listed_take(s.dirs, c, d, uid, gid, groups, facts):
        free(facts)
        return 0
    err = _list(c, d)
    if err == 0 and known and d.complete and newest <= start - LISTED_QUIET_NS:
        _listed_put(s.dirs, c, d, uid, gid, groups, facts)
    free(facts)
    return err
