# cython: language_level=3, boundscheck=False, wraparound=False
"""The data path: pread/pwrite loops, the readdir merge, per-thread credentials.

Threading: callers (the FUSE adapter) have already released llfuse's global
lock for the whole request; this module additionally drops the GIL around
every blocking syscall, so reads and writes of different requests overlap.
Syscall-shaped on purpose: no policy or config here. errno is turned into
OSError once, at the ``def`` boundary.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from libc.errno cimport errno, EINTR
from libc.stdint cimport int64_t, uint16_t, uint32_t, uint64_t, uint8_t
from posix.types cimport off_t, uid_t, gid_t

cdef object os  # a module global the C code reaches directly
import os

include "_io.pxi"

cdef extern from "<unistd.h>" nogil:
    long syscall(long number, ...)

cdef extern from "<sys/syscall.h>":
    long SYS_setfsuid
    long SYS_setfsgid
    long SYS_setgroups

cdef extern from "<malloc.h>" nogil:
    int malloc_trim(size_t pad)
    int mallopt(int param, int value)
    int M_ARENA_MAX

cdef extern from "<dirent.h>" nogil:
    ctypedef struct DIR
    struct dirent:
        unsigned long d_ino
        unsigned char d_type
        char d_name[256]
    DIR *opendir(const char *name)
    dirent *readdir(DIR *dirp)
    int closedir(DIR *dirp)
    int dirfd(DIR *dirp)

cdef extern from "<sys/stat.h>" nogil:
    struct stat:
        unsigned long st_dev
        unsigned int st_mode
    int c_stat "stat"(const char *path, stat *buf)
    int fstatat(int dirfd, const char *pathname, stat *buf, int flags)

cdef extern from "<fcntl.h>" nogil:
    int AT_SYMLINK_NOFOLLOW


def pread(int fd, size_t size, off_t offset):
    """Read up to ``size`` bytes at ``offset``; shorter only at end of file."""
    if size > <size_t>PY_SSIZE_T_MAX:
        raise OverflowError("size too large")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>size)
    cdef char *buf = PyBytes_AS_STRING(out)
    cdef size_t done
    cdef int err[1]  # out-parameter, set by pread_full
    with nogil:
        done = pread_full(fd, buf, size, offset, err)
    if err[0] and done == 0:
        raise OSError(err[0], os.strerror(err[0]))
    if done != size:
        out = out[:<Py_ssize_t>done]
    return out


def pwrite(int fd, data, off_t offset):
    """Write all of ``data`` at ``offset``; returns the count written.

    If an error strikes after some bytes went out, the count so far is
    returned (a short write, as the kernel would report); an error before
    any byte raises OSError.
    """
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    cdef const char *buf = <const char *>view.buf
    cdef size_t size = <size_t>view.len
    cdef size_t done
    cdef int err[1]  # out-parameter, set by pwrite_full
    try:
        with nogil:
            done = pwrite_full(fd, buf, size, offset, err)
    finally:
        PyBuffer_Release(&view)
    if err[0] and done == 0:
        raise OSError(err[0], os.strerror(err[0]))
    return done


def readdir_merge(paths):
    """Merge directory listings: ``[(name, d_type, d_ino, branch_index)]``.

    Each name once, the first branch (in order) wins; ``.``/``..`` skipped.
    A directory that cannot be opened is skipped; if none can, the first
    errno is raised.
    """
    cdef list out = []
    cdef set seen = set()
    cdef DIR *d
    cdef dirent *ent
    cdef bytes bpath
    cdef bytes name
    cdef int first_err = 0
    cdef bint opened = False
    cdef int idx
    cdef const char *cpath
    cdef object path
    cdef stat st
    cdef int rv
    cdef unsigned char dtype
    for idx, path in enumerate(paths):
        bpath = os.fsencode(path)
        cpath = bpath
        with nogil:
            d = opendir(cpath)
        if d == NULL:
            if not first_err:
                first_err = errno
            continue
        opened = True
        try:
            while True:
                with nogil:
                    ent = readdir(d)
                if ent == NULL:
                    break
                if ent.d_name[0] == b'.' and (ent.d_name[1] == 0 or (ent.d_name[1] == b'.' and ent.d_name[2] == 0)):
                    continue
                name = ent.d_name
                if name in seen:
                    continue
                dtype = ent.d_type
                if dtype == 0:  # DT_UNKNOWN (some filesystems): ask the branch
                    with nogil:
                        rv = fstatat(dirfd(d), ent.d_name, &st, AT_SYMLINK_NOFOLLOW)
                    if rv != 0:
                        continue  # vanished meanwhile
                    dtype = (st.st_mode & 0o170000) >> 12
                seen.add(name)
                out.append((name, dtype, ent.d_ino, idx))
        finally:
            closedir(d)
    if not opened:
        raise OSError(first_err, os.strerror(first_err))
    return out


def set_creds(uid_t uid, gid_t gid, groups):
    """Act as ``uid``/``gid`` with ``groups`` for filesystem access, in this thread only.

    Raw syscalls: glibc's setgroups() would change every thread of the process.
    """
    cdef gid_t gl[256]
    cdef int n = 0
    cdef gid_t g
    for g in groups:
        if n >= 256:
            break
        gl[n] = g
        n += 1
    cdef long rv
    with nogil:
        rv = syscall(SYS_setgroups, n, gl)
    if rv != 0:
        raise OSError(errno, os.strerror(errno))
    with nogil:
        syscall(SYS_setfsgid, gid)
        syscall(SYS_setfsuid, uid)
    # setfs*id return the previous id and never fail loudly: verify.
    with nogil:
        rv = syscall(SYS_setfsuid, <uid_t>-1)
    if <uid_t>rv != uid:
        raise OSError(1, "setfsuid failed")


cdef inline uint64_t _fnv_feed(uint64_t h, const uint8_t *p, size_t n) noexcept nogil:
    """FNV-1a 64 over ``p``, continuing from state ``h`` (so a path hashes in pieces)."""
    cdef size_t i
    for i in range(n):
        h ^= p[i]
        h *= 0x100000001b3ULL
    return h


cdef inline uint64_t _fnv_mix(uint64_t h) noexcept nogil:
    """The final avalanche mix."""
    h ^= h >> 33
    h *= 0xff51afd7ed558ccdULL
    h ^= h >> 33
    h *= 0xc4ceb9fe1a85ec53ULL
    h ^= h >> 33
    return h


cdef uint64_t _FNV_BASIS = 0xcbf29ce484222325ULL


cdef inline uint64_t _fix(uint64_t v) noexcept nogil:
    # 0 is invalid and 1 is the root's nodeid: never hand those out.
    return v if v > 1 else v + 2


cpdef enum:
    # inodecalc modes as codes; | CALC_32 for the 32-bit variants
    CALC_PASSTHROUGH = 0
    CALC_PATH = 1
    CALC_DEVINO = 2
    CALC_HYBRID = 3
    CALC_32 = 4


cdef uint64_t _calc(int mode, const uint8_t *head, size_t hlen, const uint8_t *tail, size_t tlen,
                    bint isdir, uint64_t dev, uint64_t ino) noexcept nogil:
    """The st_ino rule of every inodecalc mode (the one place it is written).
    The relpath is ``head`` + ``tail``: a listing hashes its prefix and each
    name without joining them."""
    cdef uint8_t buf[16]
    cdef int i
    cdef int base = mode & 3
    cdef uint64_t v
    if base == CALC_PASSTHROUGH:
        return _fix(ino)
    if base == CALC_PATH or (base == CALC_HYBRID and isdir):
        v = _fix(_fnv_mix(_fnv_feed(_fnv_feed(_FNV_BASIS, head, hlen), tail, tlen)))
    else:
        for i in range(8):  # little-endian (st_dev, st_ino): stable across machines
            buf[i] = (dev >> (8 * i)) & 0xFF
            buf[8 + i] = (ino >> (8 * i)) & 0xFF
        v = _fix(_fnv_mix(_fnv_feed(_FNV_BASIS, buf, 16)))
    return _fix(v & 0xFFFFFFFFULL) if mode & CALC_32 else v


def hash64(bytes data not None):
    """FNV-1a 64 with a final avalanche mix: stable across runs and machines."""
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(data)
    cdef size_t n = <size_t>len(data)
    cdef uint64_t h
    with nogil:
        h = _fnv_mix(_fnv_feed(_FNV_BASIS, p, n))
    return h


def inode_calc(int mode, bytes relpath not None, bint isdir, uint64_t dev, uint64_t ino):
    """st_ino for one entry (``mode``: a CALC_* code)."""
    cdef size_t n = <size_t>len(relpath)
    return _calc(mode, <const uint8_t *>PyBytes_AS_STRING(relpath), n, NULL, 0, isdir, dev, ino)


def readdir_inodes(list listings not None, bytes parent not None, list devs not None, int mode,
                   hidden=()):
    """Each branch's listing (``readdir_merge`` rows; None: not listed) merged
    into ``[(name, d_type, st_ino)]`` under ``mode``: each name once, the first
    branch's wins, none of ``hidden``.

    ``parent`` is the directory's relpath as bytes, ``devs`` each branch's
    st_dev (path-hashed names are ``parent/name``)."""
    cdef list out = []
    cdef set seen = set(hidden)
    cdef bytes prefix = b"/" if parent == b"/" else parent + b"/"
    cdef const uint8_t *cprefix = <const uint8_t *>PyBytes_AS_STRING(prefix)
    cdef size_t plen = <size_t>len(prefix)
    cdef object rows
    cdef tuple row
    cdef bytes bname
    cdef unsigned char dtype
    cdef uint64_t dev
    cdef uint64_t ino
    cdef object idx  # a Python int: devs[idx] stays bounds-checked (boundscheck is off)
    for idx in range(len(listings)):
        rows = listings[idx]
        if rows is None:
            continue
        dev = devs[idx]
        for row in <list>rows:
            bname = <bytes>row[0]
            if bname in seen:
                continue
            seen.add(bname)
            dtype = row[1]
            ino = _calc(mode, cprefix, plen, <const uint8_t *>PyBytes_AS_STRING(bname), <size_t>len(bname),
                        dtype == 4, dev, <uint64_t>row[2])  # 4: DT_DIR
            out.append((bname, dtype, ino))
    return out


def limit_malloc_arenas(int n):
    """Cap glibc's per-thread malloc arenas: 16 llfuse workers would otherwise
    each keep freed memory of their own (a daemon meant to run for months)."""
    mallopt(M_ARENA_MAX, n)


def trim_heap():
    """Give freed heap memory back to the kernel (after a big inode-table shrink)."""
    with nogil:
        malloc_trim(0)


cdef extern from "<fcntl.h>" nogil:
    int c_fallocate "fallocate"(int fd, int mode, off_t offset, off_t len)
    int AT_FDCWD

cdef extern from "<stdio.h>" nogil:
    int c_renameat2 "renameat2"(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
                                unsigned int flags)

cdef extern from "<unistd.h>" nogil:
    int c_syncfs "syncfs"(int fd)


cdef _check(int rv, int err):
    if rv != 0:
        raise OSError(err, os.strerror(err))


def fallocate(int fd, int mode, off_t offset, off_t length):
    """fallocate(2) with every mode (os.posix_fallocate knows only mode 0)."""
    cdef int rv
    cdef int err
    with nogil:
        rv = c_fallocate(fd, mode, offset, length)
        while rv != 0 and errno == EINTR:
            rv = c_fallocate(fd, mode, offset, length)
        err = errno
    _check(rv, err)


def renameat2(old, new, unsigned int flags):
    """renameat2(2) with RENAME_NOREPLACE / RENAME_EXCHANGE (os.rename has no flags)."""
    cdef bytes bold = os.fsencode(old)
    cdef bytes bnew = os.fsencode(new)
    cdef const char *cold = bold
    cdef const char *cnew = bnew
    cdef int rv
    with nogil:
        rv = c_renameat2(AT_FDCWD, cold, AT_FDCWD, cnew, flags)
    _check(rv, errno)


def syncfs(int fd):
    """syncfs(2): flush the whole filesystem holding ``fd``."""
    cdef int rv
    with nogil:
        rv = c_syncfs(fd)
    _check(rv, errno)


cdef extern from "<sys/syscall.h>":
    long SYS_ioprio_get
    long SYS_ioprio_set


def ioprio_get(int pid):
    """The I/O priority of thread/process ``pid`` (ioprio_get(2)), -1 if unknown."""
    return syscall(SYS_ioprio_get, 1, pid)  # IOPRIO_WHO_PROCESS


def ioprio_set(int prio):
    """Give the calling thread I/O priority ``prio``; True if it took."""
    return syscall(SYS_ioprio_set, 1, 0, prio) == 0


cdef int space_of(const char *path, Space *out) noexcept nogil:
    cdef stat st
    cdef statvfs_t vfs
    if c_stat(path, &st) != 0 or c_statvfs(path, &vfs) != 0:
        return errno
    out.dev = st.st_dev
    out.available = <uint64_t>vfs.f_bavail * vfs.f_frsize
    out.used = <uint64_t>(vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize
    out.total = <uint64_t>vfs.f_blocks * vfs.f_frsize
    out.readonly = (vfs.f_flag & ST_RDONLY) != 0
    return 0


def space(path):
    """``(st_dev, available, used, total, read-only)`` of the filesystem at
    ``path`` (bytes: f_bavail, f_blocks - f_bfree, f_blocks times f_frsize):
    one stat and one statvfs without the GIL, the create policies' hot path
    (os.stat + os.statvfs build two result objects to read five numbers)."""
    cdef bytes b = os.fsencode(path)
    cdef const char *c = b
    cdef Space sp = Space(0, 0, 0, 0, False)
    cdef int err
    if b"\0" in b:  # a hostile branches= value: no such path
        raise OSError(2, os.strerror(2), path)
    with nogil:
        err = space_of(c, &sp)
    if err:
        raise OSError(err, os.strerror(err), path)
    return (sp.dev, sp.available, sp.used, sp.total, bool(sp.readonly))


cdef extern from "<fcntl.h>" nogil:
    int AT_EMPTY_PATH


cdef object _ns(statx_timestamp t):
    """A statx time in ns, as a Python int (no overflow for any tv_sec)."""
    return (<object>t.tv_sec) * 1000000000 + t.tv_nsec


def statx(target, int flags, unsigned int mask):
    """statx(2), which Python 3.11's os lacks (the birth time is only there).

    ``target``: a path, or an open fd (``AT_EMPTY_PATH``, as os.stat takes an
    fd). ``(mask, blksize, attributes, nlink, uid, gid, mode, ino, size,
    blocks, attributes_mask, atime_ns, btime_ns, ctime_ns, mtime_ns,
    rdev_major, rdev_minor, dev_major, dev_minor)``, struct statx's order."""
    cdef int at = AT_FDCWD
    cdef bint isfd = isinstance(target, int)
    cdef bytes b = b""
    cdef const char *c
    cdef statx_t sx
    cdef int rv
    cdef int err = 0
    if isfd:
        at = target
        flags |= AT_EMPTY_PATH
    else:
        b = os.fsencode(target)
        if b"\0" in b:
            raise ValueError("embedded null byte")
    c = b
    with nogil:
        rv = c_statx(at, c, flags, mask, &sx)
        if rv != 0:
            err = errno
    if rv != 0:
        raise OSError(err, os.strerror(err)) if isfd else OSError(err, os.strerror(err), target)
    return (sx.stx_mask, sx.stx_blksize, sx.stx_attributes, sx.stx_nlink, sx.stx_uid, sx.stx_gid, sx.stx_mode,
            sx.stx_ino, sx.stx_size, sx.stx_blocks, sx.stx_attributes_mask, _ns(sx.stx_atime), _ns(sx.stx_btime),
            _ns(sx.stx_ctime), _ns(sx.stx_mtime), sx.stx_rdev_major, sx.stx_rdev_minor, sx.stx_dev_major,
            sx.stx_dev_minor)
