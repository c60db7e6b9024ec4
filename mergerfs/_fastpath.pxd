from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t


# The inodecalc rule, shared with the compiled session and node table.
cdef uint64_t _calc(int mode, const uint8_t *head, size_t hlen, const uint8_t *tail, size_t tlen,
                    bint isdir, uint64_t dev, uint64_t ino) noexcept nogil


cdef inline uint64_t _path_hash(const char *p, size_t n) noexcept nogil:
    """A name's or relpath's hash for the C tables (node table, listings): inodecalc's path hash."""
    return _calc(1, <const uint8_t *>p, n, NULL, 0, 0, 0, 0)  # 1: CALC_PATH


cdef struct Space:
    # statvfs facts of one branch filesystem, in bytes, and its root's st_dev
    uint64_t dev
    uint64_t available   # f_bavail * f_frsize: what an unprivileged writer can use
    uint64_t used        # (f_blocks - f_bfree) * f_frsize
    uint64_t total       # f_blocks * f_frsize
    bint readonly        # mounted read-only (ST_RDONLY)


# One stat and one statvfs of ``path``: 0, or the errno. The create policies'
# facts, for Python (space) and the compiled CREATE/MKDIR alike.
cdef int space_of(const char *path, Space *out) noexcept nogil


# The system records both compiled modules read (declared once).
cdef extern from "<sys/statvfs.h>" nogil:
    struct statvfs_t "statvfs":
        unsigned long f_frsize
        unsigned long f_blocks
        unsigned long f_bfree
        unsigned long f_bavail
        unsigned long f_flag
    int c_statvfs "statvfs"(const char *path, statvfs_t *buf)
    unsigned long ST_RDONLY

cdef extern from "<sys/stat.h>" nogil:
    struct statx_timestamp:
        int64_t tv_sec
        uint32_t tv_nsec
    struct statx_t "statx":
        uint32_t stx_mask
        uint32_t stx_blksize
        uint64_t stx_attributes
        uint32_t stx_nlink
        uint32_t stx_uid
        uint32_t stx_gid
        uint16_t stx_mode
        uint64_t stx_ino
        uint64_t stx_size
        uint64_t stx_blocks
        uint64_t stx_attributes_mask
        statx_timestamp stx_atime
        statx_timestamp stx_btime
        statx_timestamp stx_ctime
        statx_timestamp stx_mtime
        uint32_t stx_rdev_major
        uint32_t stx_rdev_minor
        uint32_t stx_dev_major
        uint32_t stx_dev_minor
    int c_statx "statx"(int dirfd, const char *path, int flags, unsigned int mask, statx_t *buf)
