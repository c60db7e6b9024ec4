# Included by _kernel.pyx: what crosses /dev/fuse besides the worker loop: the
# device ioctls, mount(2)/umount2(2), and the reply records Python hands back
# (READDIR's dirents, entry and attribute replies, packed through the C path's
# one attribute filler).

# ---------------------------------------------------------------- device calls
def clone_fd(int devfd):
    """A new ``/dev/fuse`` fd reading requests of ``devfd``'s connection."""
    cdef int fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    cdef uint32_t master[1]  # the ioctl reads it through its address
    cdef int err
    master[0] = <uint32_t>devfd
    if c_ioctl(fd, IOC_CLONE, master) != 0:
        err = errno
        os.close(fd)
        raise OSError(err, os.strerror(err))
    return fd


cdef int32_t _backing_open(int devfd, int fd) noexcept nogil:
    """Register branch ``fd`` for passthrough: its backing id (> 0), or -errno
    (EPERM as non-root)."""
    cdef fuse_backing_map m
    m.fd = fd
    m.flags = 0
    m.padding = 0
    cdef int rv = c_ioctl(devfd, IOC_BACKING_OPEN, &m)
    return rv if rv > 0 else -errno


cdef int _backing_close(int devfd, int32_t backing) noexcept nogil:
    """Unregister a backing id: 0, or -errno."""
    cdef uint32_t b[1]  # the ioctl reads it through its address
    b[0] = <uint32_t>backing
    return -errno if c_ioctl(devfd, IOC_BACKING_CLOSE, b) != 0 else 0


def mount(source, target, fstype, unsigned long flags, data):
    """mount(2) (the FUSE connection is named by ``fd=`` in ``data``)."""
    cdef bytes s = os.fsencode(source)
    cdef bytes t = os.fsencode(target)
    cdef bytes f = os.fsencode(fstype)
    cdef bytes d = os.fsencode(data)
    if c_mount(s, t, f, flags, <const char *>d) != 0:
        raise OSError(errno, os.strerror(errno))


def umount_lazy(target):
    """umount2(MNT_DETACH) (root): the kernel ends the session; open files keep working."""
    cdef bytes t = os.fsencode(target)
    cdef const char *path = t
    cdef int rv
    with nogil:
        rv = c_umount2(path, MNT_DETACH)
    if rv != 0:
        raise OSError(errno, os.strerror(errno))


cdef struct fuse_dirent:
    uint64_t ino
    uint64_t off
    uint32_t namelen
    uint32_t type


def pack_dirents(list entries, Py_ssize_t off, size_t size):
    """READDIR's reply: ``entries[off:]`` as ``fuse_dirent`` records (8-byte
    aligned, each entry's offset the index after it) while they fit ``size``."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>size)
    cdef char *p = PyBytes_AS_STRING(out)
    cdef size_t used = 0
    cdef size_t rec
    cdef Py_ssize_t i = off
    cdef size_t namelen
    cdef bytes name
    cdef object entry
    cdef fuse_dirent *d
    while i < len(entries):
        entry = entries[i]
        name = <bytes>entry[0]
        namelen = <size_t>len(name)
        rec = (sizeof(fuse_dirent) + namelen + 7) & ~(<size_t>7)
        if used + rec > size:
            break
        d = <fuse_dirent *>(p + used)
        d.ino = <uint64_t>entry[2]
        d.off = <uint64_t>(i + 1)
        d.namelen = <uint32_t>namelen
        d.type = <uint32_t>entry[1]
        memcpy(p + used + sizeof(fuse_dirent), PyBytes_AS_STRING(name), namelen)
        memset(p + used + sizeof(fuse_dirent) + namelen, 0, rec - sizeof(fuse_dirent) - namelen)
        used += rec
        i += 1
    return out[:<Py_ssize_t>used]


cdef inline void _split(long long v, timespec *ts) noexcept:
    """ns -> (sec, nsec), rounding down for times before 1970 (cdivision truncates)."""
    cdef long long s = v // 1000000000
    if v < 0 and s * 1000000000 != v:
        s -= 1
    ts.tv_sec = <time_t>s
    ts.tv_nsec = <long>(v - s * 1000000000)


cdef void _fill_attr(fuse_attr *a, uint64_t ino, object st) except *:
    """From an os.stat_result, through the one filler of the C path."""
    cdef stat_t c
    c.st_dev = st.st_dev
    c.st_ino = st.st_ino
    c.st_nlink = st.st_nlink
    c.st_mode = st.st_mode
    c.st_uid = st.st_uid & 0xFFFFFFFF
    c.st_gid = st.st_gid & 0xFFFFFFFF
    c.st_rdev = st.st_rdev
    c.st_size = st.st_size
    c.st_blksize = st.st_blksize
    c.st_blocks = st.st_blocks
    _split(st.st_atime_ns, &c.st_atim)
    _split(st.st_mtime_ns, &c.st_mtim)
    _split(st.st_ctime_ns, &c.st_ctim)
    _fill_attr_c(a, ino, &c)


def entry_out(uint64_t nodeid, st, uint64_t entry_valid, uint64_t attr_valid):
    """fuse_entry_out for a LOOKUP-like reply (``st``: an os.stat_result)."""
    cdef fuse_entry_out e
    memset(&e, 0, sizeof(e))
    e.nodeid = nodeid
    e.entry_valid = entry_valid
    e.attr_valid = attr_valid
    _fill_attr(&e.attr, nodeid, st)
    return PyBytes_FromStringAndSize(<char *>&e, sizeof(e))


def attr_out(uint64_t nodeid, st, uint64_t attr_valid):
    """fuse_attr_out for GETATTR/SETATTR."""
    cdef fuse_attr_out o
    memset(&o, 0, sizeof(o))
    o.attr_valid = attr_valid
    _fill_attr(&o.attr, nodeid, st)
    return PyBytes_FromStringAndSize(<char *>&o, sizeof(o))
