# The pread/pwrite loops, included by both compiled modules (one text, two
# copies of machine code): EINTR retried, short transfers continued, an error
# after some bytes reported as the short count, as the kernel does.

cdef extern from "<unistd.h>" nogil:
    ssize_t c_pread "pread"(int fd, void *buf, size_t count, off_t offset)
    ssize_t c_pwrite "pwrite"(int fd, const void *buf, size_t count, off_t offset)


cdef size_t pread_full(int fd, char *buf, size_t size, off_t offset, int *err) noexcept nogil:
    """Bytes read into ``buf`` (fewer only at end of file or on an error, in ``err``)."""
    cdef size_t done = 0
    cdef ssize_t n
    err[0] = 0
    while done < size:
        n = c_pread(fd, buf + done, size - done, offset + <off_t>done)
        if n > 0:
            done += <size_t>n
        elif n == 0:
            break
        elif errno != EINTR:
            err[0] = errno
            break
    return done


cdef size_t pwrite_full(int fd, const char *buf, size_t size, off_t offset, int *err) noexcept nogil:
    """Bytes written from ``buf`` (fewer only on an error, in ``err``)."""
    cdef size_t done = 0
    cdef ssize_t n
    err[0] = 0
    while done < size:
        n = c_pwrite(fd, buf + done, size - done, offset + <off_t>done)
        if n > 0:
            done += <size_t>n
        elif n == 0:
            break
        elif errno != EINTR:
            err[0] = errno
            break
    return done
