# The action-category requests the session answers without the GIL (included
# by _kernel.pyx after _metadata.pxi), for the funcs whose policy is epall:
# SETATTR by path (chmod, chown, utimens), UNLINK, RMDIR, and RENAME of a file
# whose new parent is already on every branch that holds the source. One
# action filter (_eligible, as Python's), any success wins (as Python's
# Aggregate). As in _metadata.pxi, anything else returns False with nothing
# changed, and the Python session answers it.

cdef extern from "<sys/stat.h>" nogil:
    int c_chmod "chmod"(const char *path, unsigned int mode)
    int utimensat(int dirfd, const char *path, const timespec *times, int flags)
    bint S_ISLNK(unsigned int mode)
    long UTIME_NOW
    long UTIME_OMIT

cdef extern from "<unistd.h>" nogil:
    int lchown(const char *path, unsigned int owner, unsigned int group)
    int c_unlink "unlink"(const char *path)
    int c_rmdir "rmdir"(const char *path)

from mergerfs._fastpath cimport statvfs_t, c_statvfs, ST_RDONLY

cdef struct fuse_setattr_in:
    uint32_t valid
    uint32_t padding
    uint64_t fh
    uint64_t size
    uint64_t lock_owner
    uint64_t atime
    uint64_t mtime
    uint64_t ctime
    uint32_t atimensec
    uint32_t mtimensec
    uint32_t ctimensec
    uint32_t mode
    uint32_t unused4
    uint32_t uid
    uint32_t gid
    uint32_t unused5

cdef enum:
    FATTR_MODE = 1
    FATTR_UID = 2
    FATTR_GID = 4
    FATTR_ATIME = 16
    FATTR_MTIME = 32
    FATTR_ATIME_NOW = 128
    FATTR_MTIME_NOW = 256
    FATTR_CTIME = 1024
    FATTR_KILL_SUIDGID = 2048
    # what the compiled SETATTR does: no fh, no size (truncate), the rest by path
    FATTR_PLAIN = FATTR_MODE | FATTR_UID | FATTR_GID | FATTR_ATIME | FATTR_MTIME | FATTR_ATIME_NOW \
        | FATTR_MTIME_NOW | FATTR_CTIME | FATTR_KILL_SUIDGID

cpdef enum:
    # FastConfig.actions: these funcs' action policy is epall (set_fast's ``actions``)
    ACT_CHMOD = 1
    ACT_CHOWN = 2
    ACT_UTIMENS = 4
    ACT_UNLINK = 8
    ACT_RMDIR = 16
    ACT_RENAME = 32


cdef int _eligible(FastConfig *c, int i, const char *rel, size_t rellen, char *full, stat_t *st) noexcept nogil:
    """The action filter for branch ``i`` (as Python's): 1 if it holds ``rel``
    (its lstat in ``st``, its path in ``full``) and may be written (mode and
    mount); 0 if not; -1 for anything Python must judge."""
    cdef statvfs_t vfs
    if c.readonly[i]:
        return 0
    # is it here, then is its filesystem writable
    if not _on_branch(c, i, rel, rellen, full):
        return -1
    if c_lstat(full, st) != 0:
        return 0 if errno == ENOENT else -1
    if c_statvfs(_root(c, i), &vfs) != 0:
        return -1
    return 0 if vfs.f_flag & ST_RDONLY else 1


cdef void _times(const fuse_setattr_in *a, timespec *times) noexcept nogil:
    """SETATTR's atime/mtime as utimensat's pair (UTIME_OMIT, UTIME_NOW)."""
    times[0].tv_sec = <long>a.atime
    times[0].tv_nsec = a.atimensec
    times[1].tv_sec = <long>a.mtime
    times[1].tv_nsec = a.mtimensec
    if not a.valid & FATTR_ATIME:
        times[0].tv_nsec = UTIME_OMIT
    elif a.valid & FATTR_ATIME_NOW:
        times[0].tv_nsec = UTIME_NOW
    if not a.valid & FATTR_MTIME:
        times[1].tv_nsec = UTIME_OMIT
    elif a.valid & FATTR_MTIME_NOW:
        times[1].tv_nsec = UTIME_NOW


cdef bint _act(FastConfig *c, const char *rel, size_t rellen, int op, const fuse_setattr_in *a) noexcept nogil:
    """epall: apply ``op`` on every branch holding ``rel`` that is not read-only
    (by mode or mount). Any success wins (as Python's Aggregate): True once one
    branch succeeded, whatever the others answer. Before that, anything but a
    plain "not here" returns False with nothing changed, and Python does the
    whole request and judges the errors."""
    cdef char full[PATH_MAX]
    cdef stat_t st
    cdef timespec times[2]
    cdef int i
    cdef int rc
    cdef int here
    cdef int done = 0
    for i in range(c.nbranches):
        here = _eligible(c, i, rel, rellen, full, &st)
        if here <= 0:
            if here < 0 and not done:
                return False
            continue
        if op == ACT_UNLINK:
            rc = c_unlink(full)
        elif op == ACT_RMDIR:
            rc = c_rmdir(full)
        elif op == ACT_CHMOD:
            rc = c_chmod(full, a.mode & 0o7777)
        elif op == ACT_CHOWN:
            rc = lchown(full, a.uid if a.valid & FATTR_UID else <unsigned int>-1,
                        a.gid if a.valid & FATTR_GID else <unsigned int>-1)
        else:
            _times(a, times)
            rc = utimensat(AT_FDCWD, full, times, AT_SYMLINK_NOFOLLOW)
        if rc != 0:
            if done:
                continue
            return False
        done += 1
    return done > 0


cdef bint _setattr(Session s, Caller *w, int fd, char *buf) noexcept nogil:
    cdef fuse_in_header *h = <fuse_in_header *>buf
    cdef fuse_setattr_in *a = <fuse_setattr_in *>(buf + IN_HDR)
    cdef char rel[PATH_MAX]
    cdef char full[PATH_MAX]
    cdef ssize_t rellen
    cdef stat_t st
    cdef bint ok = False
    cdef int found
    cdef unsigned int mode
    cdef attr_reply out
    if a.valid & ~(<uint32_t>FATTR_PLAIN):
        return False
    cdef FastConfig *c = _acquire(s)
    if c == NULL:
        return False
    found = _node_search(s, c, w, h, rel, &rellen, &st, full)
    if found == 0 and not (S_ISLNK(st.st_mode) and a.valid & FATTR_MODE):
        ok = True
        if a.valid & FATTR_MODE:
            ok = c.actions & ACT_CHMOD and _act(c, rel, <size_t>rellen, ACT_CHMOD, a)
        if ok and a.valid & (FATTR_UID | FATTR_GID):
            ok = c.actions & ACT_CHOWN and _act(c, rel, <size_t>rellen, ACT_CHOWN, a)
        if ok and a.valid & (FATTR_ATIME | FATTR_MTIME):
            ok = c.actions & ACT_UTIMENS and _act(c, rel, <size_t>rellen, ACT_UTIMENS, a)
        ok = ok and _search(c, rel, <size_t>rellen, &st, full) == 0
    memset(&out, 0, sizeof(out))
    out.a.attr_valid = c.attr_valid
    _release(s, c)
    if found == ENOENT:  # removed: an open C directory handle of it still answers
        return _answer_open_dir(s, fd, buf, IN_HDR + sizeof(fuse_setattr_in), out.a.attr_valid)
    if not ok:
        return False
    mode = st.st_mode
    if a.valid & FATTR_KILL_SUIDGID and not a.valid & FATTR_MODE and S_ISREG(mode) and (
            mode & 0o4000 or (mode & 0o2000 and mode & 0o10)):
        return False  # setuid/setgid to drop as native would: Python (its chown already stands)
    _saw(s.table, h.nodeid, &st)
    _fill_attr_c(&out.a.attr, h.nodeid, &st)
    _reply(fd, h.unique, &out, sizeof(out))
    return True


cdef extern from "<dirent.h>" nogil:
    ctypedef struct DIR:
        pass
    struct dirent:
        char d_name[256]
    DIR *opendir(const char *name)
    dirent *readdir(DIR *dirp)
    int closedir(DIR *dirp)

cdef extern from "<stdio.h>" nogil:
    int c_rename "rename"(const char *old, const char *new)

cdef struct fuse_rename_in:
    uint64_t newdir


cdef ssize_t _child(Session s, uint64_t parent, const char *name, size_t room, char *rel) noexcept nogil:
    """``parent``'s relpath joined with the NUL-terminated ``name`` (at most
    ``room`` bytes) into ``rel``: its length, or -1 (no name, unknown parent,
    too long)."""
    cdef size_t namelen = strnlen(name, room)
    if namelen == 0 or namelen >= room:
        return -1
    return _relpath(s.table, parent, name, namelen, rel, NULL)


cdef bint _forget_name(Session s, const char *rel) noexcept nogil:
    s.table.lock()
    s.table._unbind(rel)  # the name no longer names its node (which keeps it for open fds)
    s.table.unlock()
    return True


cdef bint _unlink(Session s, Caller *w, int fd, char *buf, ssize_t n) noexcept nogil:
    cdef fuse_in_header *h = <fuse_in_header *>buf
    cdef char rel[PATH_MAX]
    cdef ssize_t rellen
    cdef bint ok = False
    cdef FastConfig *c = _acquire(s)
    if c == NULL:
        return False
    if c.actions & ACT_UNLINK:
        rellen = _child(s, h.nodeid, buf + IN_HDR, <size_t>(n - IN_HDR), rel)
        ok = rellen > 0 and _as_caller(c, w, h) and _act(c, rel, <size_t>rellen, ACT_UNLINK, NULL)
    _release(s, c)
    if not ok:
        return False
    _forget_name(s, rel)
    _reply_error(fd, h.unique, 0)
    return True


cdef bint _empty_everywhere(FastConfig *c, const char *rel, size_t rellen) noexcept nogil:
    """Whether every branch RMDIR would act on holds ``rel`` as an empty
    directory, or not as a directory at all (Python refuses ENOTEMPTY if any
    copy has entries: removing only the empty ones would report success while
    the directory is still there). False also for anything unusual."""
    cdef char full[PATH_MAX]
    cdef stat_t st
    cdef DIR *d
    cdef dirent *e
    cdef int i
    cdef int here
    cdef bint empty
    for i in range(c.nbranches):
        here = _eligible(c, i, rel, rellen, full, &st)
        if here < 0:
            return False
        if here == 0 or not S_ISDIR(st.st_mode):
            continue
        d = opendir(full)
        if d == NULL:
            return False
        empty = True
        while empty:
            e = readdir(d)
            if e == NULL:
                break
            empty = e.d_name[0] == 46 and (e.d_name[1] == 0 or (e.d_name[1] == 46 and e.d_name[2] == 0))  # . ..
        closedir(d)
        if not empty:
            return False
    return True


cdef bint _rmdir(Session s, Caller *w, int fd, char *buf, ssize_t n) noexcept nogil:
    cdef fuse_in_header *h = <fuse_in_header *>buf
    cdef char rel[PATH_MAX]
    cdef ssize_t rellen
    cdef bint ok = False
    cdef FastConfig *c = _acquire(s)
    if c == NULL:
        return False
    if c.actions & ACT_RMDIR:
        rellen = _child(s, h.nodeid, buf + IN_HDR, <size_t>(n - IN_HDR), rel)
        ok = (rellen > 0 and _as_caller(c, w, h) and _empty_everywhere(c, rel, <size_t>rellen)
              and _act(c, rel, <size_t>rellen, ACT_RMDIR, NULL))
    _release(s, c)
    if not ok:
        return False
    _forget_name(s, rel)
    _reply_error(fd, h.unique, 0)
    return True


cdef void _remove_quietly(const char *path) noexcept nogil:
    """Remove a file or an empty directory if it is there (as clone.remove_quietly)."""
    cdef stat_t st
    if c_lstat(path, &st) != 0:
        return
    if S_ISDIR(st.st_mode):
        c_rmdir(path)
    else:
        c_unlink(path)


cdef bint _parent_on(FastConfig *c, int i, const char *rel, size_t rellen) noexcept nogil:
    """Whether ``rel``'s parent directory is on branch ``i`` (a rename can land there as is)."""
    cdef char parent[PATH_MAX]
    cdef char full[PATH_MAX]
    cdef stat_t st
    cdef size_t plen = _parent_len(rel, rellen)
    if plen == 1:
        return True  # the branch root
    memcpy(parent, rel, plen)
    parent[plen] = 0
    return _on_branch(c, i, parent, plen, full) and c_lstat(full, &st) == 0 and S_ISDIR(st.st_mode)


cdef bint _rename_all(FastConfig *c, const char *old, size_t oldlen, const char *new, size_t newlen) noexcept nogil:
    """epall rename of a non-directory: on every branch that holds ``old`` and
    may be written (the sources); then, as Python does, ``new`` removed where
    ``old`` was not (an older ``new`` there would shadow the moved file) and
    ``old`` removed where its rename failed. Any success wins. Before the first
    change, anything Python must decide (no source, a directory, a new parent
    missing on a source: cloning it or EXDEV is a create-policy decision, a
    failed rename: its errno, rename-exdev) returns False."""
    cdef char fold[PATH_MAX]
    cdef char fnew[PATH_MAX]
    cdef stat_t st
    cdef int here[64]
    cdef int i
    cdef int sources = 0
    cdef int done = 0
    if c.nbranches > 64:
        return False
    for i in range(c.nbranches):  # decide everything before the first change
        here[i] = _eligible(c, i, old, oldlen, fold, &st)
        if here[i] < 0 or (here[i] and (S_ISDIR(st.st_mode) or not _parent_on(c, i, new, newlen))):
            return False
        if not _on_branch(c, i, new, newlen, fnew):
            return False
        sources += here[i]
    if sources == 0:
        return False
    for i in range(c.nbranches):
        if not here[i]:
            continue
        _on_branch(c, i, old, oldlen, fold)
        _on_branch(c, i, new, newlen, fnew)
        if c_rename(fold, fnew) == 0:
            done += 1
        elif not done:
            return False  # nothing changed yet: Python judges this branch's errno
        else:
            here[i] = -1  # failed after a success: its old name goes
    for i in range(c.nbranches):
        if here[i] == 1:
            continue
        if here[i] == 0:
            _on_branch(c, i, new, newlen, fnew)
            _remove_quietly(fnew)
        else:
            _on_branch(c, i, old, oldlen, fold)
            _remove_quietly(fold)
    return True


cdef bint _rename(Session s, Caller *w, int fd, char *buf, ssize_t n) noexcept nogil:
    cdef fuse_in_header *h = <fuse_in_header *>buf
    cdef const char *oldname = buf + IN_HDR + sizeof(fuse_rename_in)
    cdef size_t room = <size_t>(n - IN_HDR) - sizeof(fuse_rename_in)
    cdef size_t oldsize
    cdef char old[PATH_MAX]
    cdef char new[PATH_MAX]
    cdef ssize_t oldlen
    cdef ssize_t newlen = -1
    cdef PathSlot *held
    cdef bint ok = False
    if n <= <ssize_t>(IN_HDR + sizeof(fuse_rename_in)):
        return False
    cdef FastConfig *c = _acquire(s)
    if c == NULL:
        return False
    oldlen = _child(s, h.nodeid, oldname, room, old)
    if oldlen > 0:
        oldsize = strnlen(oldname, room) + 1
        newlen = _child(s, (<fuse_rename_in *>(buf + IN_HDR)).newdir, oldname + oldsize, room - oldsize, new)
    if (c.actions & ACT_RENAME and oldlen > 0 and newlen > 0 and _as_caller(c, w, h)
            and not _is_control(old + 1, <size_t>oldlen - 1) and not _is_control(new + 1, <size_t>newlen - 1)):
        s.table.lock()
        held = s.table._find(old)
        ok = held == NULL or not held.node.isdir  # a directory's names below move too: Python's
        s.table.unlock()
        ok = ok and _rename_all(c, old, <size_t>oldlen, new, <size_t>newlen)
    _release(s, c)
    if not ok:
        return False
    s.table.lock()
    s.table._rename_node(old, new)  # not a directory (checked above; the kernel holds both parents)
    s.table.unlock()
    _reply_error(fd, h.unique, 0)
    return True
