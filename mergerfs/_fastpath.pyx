# cython: language_level=3, boundscheck=False, wraparound=False
"""The data path: pread/pwrite loops, the readdir merge, per-thread credentials.

Threading: callers (the FUSE adapter) have already released llfuse's global
lock for the whole request; this module additionally drops the GIL around
every blocking syscall, so reads and writes of different requests overlap.
Syscall-shaped on purpose: no policy or config here. errno is turned into
OSError once, at the ``def`` boundary.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from libc.errno cimport errno, EINTR
from libc.stdint cimport uint64_t, uint8_t
from posix.types cimport off_t, uid_t, gid_t

import os

cdef extern from "<unistd.h>" nogil:
    ssize_t c_pread "pread"(int fd, void *buf, size_t count, off_t offset)
    ssize_t c_pwrite "pwrite"(int fd, const void *buf, size_t count, off_t offset)
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


def pread(int fd, size_t size, off_t offset):
    """Read up to ``size`` bytes at ``offset``; shorter only at end of file."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef char *buf = PyBytes_AS_STRING(out)
    cdef size_t done = 0
    cdef ssize_t n = 0
    cdef int err = 0
    with nogil:
        while done < size:
            n = c_pread(fd, buf + done, size - done, offset + <off_t>done)
            if n > 0:
                done += <size_t>n
            elif n == 0:
                break
            elif errno == EINTR:
                continue
            else:
                err = errno
                break
    if err and done == 0:
        raise OSError(err, os.strerror(err))
    if done != size:
        # Resize in place; the object is ours alone, so this is safe.
        out = out[:done]
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
    cdef size_t done = 0
    cdef ssize_t n = 0
    cdef int err = 0
    try:
        with nogil:
            while done < size:
                n = c_pwrite(fd, buf + done, size - done, offset + <off_t>done)
                if n >= 0:
                    done += <size_t>n
                    if n == 0:
                        break
                elif errno == EINTR:
                    continue
                else:
                    err = errno
                    break
    finally:
        PyBuffer_Release(&view)
    if err and done == 0:
        raise OSError(err, os.strerror(err))
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
    cdef list batch
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
                seen.add(name)
                out.append((name, ent.d_type, ent.d_ino, idx))
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


def hash64(bytes data):
    """FNV-1a 64 with a final avalanche mix: stable across runs and machines."""
    cdef uint64_t h = 0xcbf29ce484222325ULL
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(data)
    cdef Py_ssize_t i, n = len(data)
    with nogil:
        for i in range(n):
            h ^= p[i]
            h *= 0x100000001b3ULL
        h ^= h >> 33
        h *= 0xff51afd7ed558ccdULL
        h ^= h >> 33
        h *= 0xc4ceb9fe1a85ec53ULL
        h ^= h >> 33
    return h


def limit_malloc_arenas(int n):
    """Cap glibc's per-thread malloc arenas: 16 llfuse workers would otherwise
    each keep freed memory of their own (a daemon meant to run for months)."""
    mallopt(M_ARENA_MAX, n)


def trim_heap():
    """Give freed heap memory back to the kernel (after a big inode-table shrink)."""
    with nogil:
        malloc_trim(0)
