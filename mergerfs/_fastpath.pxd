from libc.stdint cimport uint8_t, uint64_t


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
