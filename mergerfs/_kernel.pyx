# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The FUSE kernel session's compiled core: the worker loop on ``/dev/fuse``
and the requests it answers without the GIL.

Each worker thread owns one (cloned) ``/dev/fuse`` fd and one request buffer,
reused for every request and its reply. READ, WRITE and FLUSH of an open file
are answered here from the handle table (kernel fh -> branch fd) with the GIL
released for the whole request; so are FORGET/BATCH_FORGET, and LOOKUP and
GETATTR of a known nodeid, and SETATTR/UNLINK/RMDIR/RENAME under epall, while
the config allows the plain case (first-found search, no symlink following or
attribute overrides): the node table
(:mod:`mergerfs._nodes`), a branch search with lstat and inodecalc, all in C.
OPENDIR, READDIR, RELEASEDIR and FSYNCDIR of the plain case are answered here
too (``_dirs.pxi``): directory handles of their own (a tagged fh), each holding
its merged listing as packed dirent records, over local filesystems only (a
compiled listing has no deadline for a hung branch). Every other request, and
every case the C path does not recognise, is handed,
as bytes, to the Python session (:mod:`mergerfs.kernel.transport`), which decides and
replies. OPEN and RELEASE of the plain case are answered here too (``_files.pxi``),
passthrough included: such an open is C-owned (its slot holds the fd, branch,
flags, nodeid and passthrough share, and Python has no handle for it) until a
Python request needs its handle and adopts it (``claim``/``adopted``, driven by
kernel/base.py). CREATE and MKDIR are answered here too when the create policy
picks one branch by space or chance (``_create.pxi``). One worker polls for the
next request before it sleeps (``fuse-busy-poll``, ``_await``). When INIT
agreed FUSE over io_uring, ring workers take the requests instead
(``_ring.pxi``: ``serve_ring``), answered by the same ``_answer`` and replied
through the same ``_send``; a ``/dev/fuse`` worker stays for FORGET and
INTERRUPT. Passthrough's
per-inode backing id is decided and released
here for every open, Python's too (``add``/``add_c``/``remove``): one set of
rules, kept in the node table's nodes under ``pt_mu``. The handle table is changed
under ``slots_mu`` (allocation, release, adoption: by the C OPEN/RELEASE without
the GIL and by Python's open/release with it; nothing Python runs while it is
held) and read without it: the kernel sends no READ/WRITE on a handle after
RELEASE, nor a RELEASE while a request on the handle is in flight.
Protocol facts: FUSE 7.45 (declared here, not taken from the installed header).
"""

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from libc.string cimport memcmp, memcpy, memmove, memset, strlen
from libc.errno cimport errno, EINTR, EAGAIN, ENOENT, ENODEV, ENOSPC, EDQUOT, EPERM, EIO, ENOMEM, ENOTCONN
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.stdlib cimport malloc, free, calloc, realloc
from posix.types cimport off_t
from posix.time cimport timespec
from posix.types cimport time_t

from mergerfs._fastpath cimport _calc, _path_hash
from mergerfs._nodes cimport Node, NodeTable, PathSlot, stamp, pthread_mutex_t, pthread_mutex_init, pthread_mutex_lock, \
    pthread_mutex_unlock, pthread_mutex_destroy

cdef object logging, os, log  # module globals the C code reaches directly
import logging
import os

cdef extern from "<unistd.h>" nogil:
    ssize_t c_read "read"(int fd, void *buf, size_t count)
    ssize_t c_write "write"(int fd, const void *buf, size_t count)
    int c_dup "dup"(int fd)
    int c_close "close"(int fd)
    long syscall(long number, ...)

cdef extern from "<sys/syscall.h>" nogil:
    long SYS_getdents64
    long SYS_getgroups
    long SYS_setfsuid

include "_io.pxi"

cdef extern from "<fcntl.h>" nogil:
    int _fcntl "fcntl"(int fd, int cmd, ...)
    int F_GETFL, F_SETFL, O_NONBLOCK

cdef extern from "<sched.h>" nogil:
    int sched_yield()

cdef extern from "<time.h>" nogil:
    int clock_gettime(int clk, timespec *ts)
    int CLOCK_MONOTONIC
    int CLOCK_REALTIME
    int CLOCK_MONOTONIC_COARSE


cdef inline int64_t _ts_ns(timespec t) noexcept nogil:
    return <int64_t>t.tv_sec * 1000000000 + t.tv_nsec


cdef inline int64_t _clock_ns(int clk) noexcept nogil:
    cdef timespec ts
    clock_gettime(clk, &ts)
    return _ts_ns(ts)


cdef ssize_t _await(int fd, char *buf, size_t size, int64_t poll_ns, int fl, bint *polling) noexcept nogil:
    """Read the next request into ``buf``: its size, or -1 with errno. With
    ``poll_ns``, keep reading without sleeping for up to that long first (the
    fd O_NONBLOCK; ``polling`` tracks it, ``fl`` its flags without): a worker
    already on a CPU answers at once, where a sleeping one costs the caller a
    wakeup of the daemon (tens of microseconds on a VM) per request. Between
    reads the CPU is offered to anything else runnable (sched_yield)."""
    cdef int64_t start
    cdef ssize_t n = -1
    if poll_ns > 0:
        if not polling[0]:
            _fcntl(fd, F_SETFL, fl | O_NONBLOCK)
            polling[0] = True
        start = _clock_ns(CLOCK_MONOTONIC)
        while True:
            n = c_read(fd, buf, size)
            if n >= 0 or errno != EAGAIN:
                return n
            if _clock_ns(CLOCK_MONOTONIC) - start > poll_ns:
                break
            sched_yield()
    if polling[0]:
        _fcntl(fd, F_SETFL, fl)
        polling[0] = False
    return c_read(fd, buf, size)


cdef extern from "<sys/ioctl.h>" nogil:
    int c_ioctl "ioctl"(int fd, unsigned long request, ...)

cdef extern from "<string.h>" nogil:
    size_t strnlen(const char *s, size_t maxlen)

cdef extern from *:
    """
    #define MFS_COUNT(p) ((void)__atomic_fetch_add((p), 1, __ATOMIC_RELAXED))
    #define MFS_LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
    """
    void MFS_COUNT(uint64_t *p) noexcept nogil
    uint64_t MFS_LOAD(uint64_t *p) noexcept nogil

cdef extern from "<sys/stat.h>" nogil:
    cdef struct stat_t "stat":
        unsigned long long st_dev
        unsigned long long st_ino
        unsigned long long st_nlink
        unsigned int st_mode
        unsigned int st_uid
        unsigned int st_gid
        unsigned long long st_rdev
        long long st_size
        long long st_blksize
        long long st_blocks
        timespec st_atim
        timespec st_mtim
        timespec st_ctim
    int c_lstat "lstat"(const char *path, stat_t *buf)
    int c_fstat "fstat"(int fd, stat_t *buf)

cdef extern from "<fcntl.h>" nogil:
    int c_open "open"(const char *path, int flags, ...)
    int O_CREAT, O_EXCL, O_NOCTTY, O_DIRECT, O_CLOEXEC, O_ACCMODE, O_RDONLY, O_RDWR, O_DIRECTORY

cdef extern from "<sys/xattr.h>" nogil:
    ssize_t lgetxattr(const char *path, const char *name, void *value, size_t size)
    bint S_ISDIR(unsigned int mode)
    bint S_ISREG(unsigned int mode)

cdef extern from "<sys/mount.h>" nogil:
    int c_mount "mount"(const char *source, const char *target, const char *fstype,
                        unsigned long flags, const void *data)
    int c_umount2 "umount2"(const char *target, int flags)
    int MNT_DETACH

log = logging.getLogger("mergerfs")

include "_protocol.pxi"


cdef enum:
    MAX_SLOTS = 1 << 20  # handles open at once (virtual memory only until used)
    MAX_OPCODE = 64      # the counters' size: every opcode of 7.45 is below

cdef enum:
    SLOT_PYTHON = 0
    SLOT_C = 1
    SLOT_ADOPTING = 2

cdef struct write_reply:
    fuse_out_header h
    fuse_write_out w

cdef enum:  # Slot.pt: how an open counts in its node's passthrough share (_files.pxi)
    PT_NONE = 0    # not at all (no passthrough in the session, no fd, or no node)
    PT_CACHED = 1  # an open without passthrough (Node.ncached)
    PT_SHARED = 2  # an open on the node's backing (Node.npass)

cdef struct Slot:
    int fd          # branch fd answered in C; -1: the Python session answers
    uint8_t pt      # PT_NONE, PT_CACHED or PT_SHARED (released with the slot, whoever owns it)
    uint64_t pyfh   # the request layer's handle number (0 while C owns the open)
    # an open the compiled OPEN made (_files.pxi) and its RELEASE closes, until Python adopts it
    uint8_t owner   # SLOT_PYTHON, SLOT_C or SLOT_ADOPTING
    int branch      # SLOT_C: the branch's index in cfg
    uint32_t flags  # SLOT_C: the open's flags
    uint64_t nodeid  # the node it counts as an open handle of (0: a Python open with no fd)
    FastConfig *cfg  # SLOT_C: the config it was opened under (a reference)


cdef class Session:
    """One mounted FUSE connection: the handle table and the worker loop.

    ``slow`` is called (with the GIL) as ``slow(request_bytes)`` for every
    request the C path does not answer; it returns the whole reply (bytes) or
    None (no reply), and never raises.
    """

    cdef readonly int devfd
    cdef readonly size_t bufsize
    cdef size_t write_in_size
    cdef Slot *slots
    cdef uint32_t *free_slots
    cdef uint32_t nfree
    cdef uint32_t next_slot
    cdef public object slow
    cdef public object inval  # inval(nodeid): queue the kernel's invalidation of a nodeid (any thread)
    cdef public int64_t busy_poll_ns  # how long the polling worker reads on without sleeping (0: never)
    cdef uint64_t by_others  # requests the other workers got: the poller's sign of concurrent callers
    cdef public bint trace  # every request to ``slow`` (-d): no C path
    cdef readonly NodeTable table
    cdef FastConfig *fast  # NULL: LOOKUP/GETATTR go to Python
    cdef uint64_t answered[2][MAX_OPCODE]  # requests per opcode: [0] compiled, [1] Python
    cdef uint64_t came[2]  # requests per way in: [0] over io_uring (_ring.pxi), [1] read()
    cdef pthread_mutex_t fast_mu
    cdef uint64_t fast_gen  # configs made so far (FastConfig.gen)
    cdef DirTable *dirs  # the C directory handles (_dirs.pxi)
    cdef pthread_mutex_t slots_mu  # allocating, freeing and handing over slots
    # passthrough (_files.pxi): every open is counted in its node's share while
    # pt_on (INIT agreed it); pt_modes: the O_ACCMODE values (as bits 1 << mode)
    # that get a new backing (0 once the kernel refused one with EPERM). pt_mu
    # guards pt_modes and the nodes' backing/npass/ncached; taken before the
    # node table's mutex, never with the GIL wanted.
    cdef bint pt_on
    cdef uint32_t pt_modes
    cdef pthread_mutex_t pt_mu

    def __cinit__(self, int devfd, NodeTable table):
        self.devfd = devfd
        self.table = table
        pthread_mutex_init(&self.fast_mu, NULL)
        pthread_mutex_init(&self.slots_mu, NULL)
        pthread_mutex_init(&self.pt_mu, NULL)
        self.bufsize = 1 << 17
        self.write_in_size = sizeof(fuse_write_in)
        self.slots = <Slot *>calloc(MAX_SLOTS, sizeof(Slot))
        self.free_slots = <uint32_t *>calloc(MAX_SLOTS, sizeof(uint32_t))
        self.dirs = _dirs_new()
        if self.slots == NULL or self.free_slots == NULL or self.dirs == NULL:
            raise MemoryError()
        self.next_slot = 1  # fh 0 is never handed out
        self.nfree = 0

    def __dealloc__(self):
        free(self.slots)
        free(self.free_slots)
        _dirs_free(self)  # before the config its handles may hold
        if self.fast != NULL:
            _free_config(self.fast)

    def set_fast(self, branches, readonly=(), int calc=0, uint64_t entry=0, uint64_t attr=0,
                 uint64_t negative=0, int actions=0, bint getxattr=False, bint capability=False,
                 bint posix_acl=False, bint creds_fixed=False, bint pid_bound=False, root_devs=None,
                 bint readdir=False, uint32_t dir_flags=0, opens=None, creatable=(), minfree=(),
                 int create=0, int mkdir=0):
        """Let the C path answer LOOKUP/GETATTR over ``branches`` (their roots as
        bytes, in order; ``readonly``: which have mode RO) with this inodecalc
        code and these cache timeouts, SETATTR of the ``actions`` (ACT_* bits)
        whose policy is epall, GETXATTR if ``getxattr``; with ``root_devs``
        (each branch root's st_dev while they are local filesystems) OPENDIR/READDIR
        if ``readdir`` (opened with ``dir_flags``); OPEN/RELEASE if ``opens``
        (fopen_rd, fopen_wr, fopen_keep, dropcache, link_cow: see FastConfig),
        and with both CREATE and MKDIR by the ``create``/``mkdir`` PICK_* codes
        (``creatable``: branch mode RW; ``minfree``: minfreespace, per branch);
        None: none of it."""
        cdef FastConfig *c = NULL
        cdef FastConfig *old
        cdef bytes b
        cdef int i
        cdef size_t count, blen
        if branches is not None:
            c = <FastConfig *>calloc(1, sizeof(FastConfig))
            if c == NULL:
                raise MemoryError()
            count = <size_t>len(branches) + 1
            c.branches = <char **>calloc(count, sizeof(char *))
            c.lens = <size_t *>calloc(count, sizeof(size_t))
            c.readonly = <bint *>calloc(count, sizeof(bint))
            c.creatable = <bint *>calloc(count, sizeof(bint))
            c.minfree = <uint64_t *>calloc(count, sizeof(uint64_t))
            if c.branches == NULL or c.lens == NULL or c.readonly == NULL or c.creatable == NULL \
                    or c.minfree == NULL:
                _free_config(c)
                raise MemoryError()
            for i, b in enumerate(branches):
                if b == b"/":
                    b = b""  # "/" + relpath: the relpath itself
                blen = <size_t>len(b)
                c.branches[i] = <char *>malloc(blen + 1)
                if c.branches[i] == NULL:
                    _free_config(c)
                    raise MemoryError()
                memcpy(c.branches[i], <const char *>b, blen + 1)
                c.lens[i] = blen
                c.readonly[i] = i < len(readonly) and readonly[i]
                c.creatable[i] = i < len(creatable) and creatable[i]
                c.minfree[i] = minfree[i] if i < len(minfree) else 0
                c.nbranches = i + 1
            c.calc = calc
            self.fast_gen += 1
            c.gen = self.fast_gen
            c.actions = actions
            c.entry_valid = entry
            c.attr_valid = attr
            c.negative_valid = negative
            c.getxattr = getxattr
            c.capability = capability
            c.posix_acl = posix_acl
            c.creds_fixed = creds_fixed
            c.pid_bound = pid_bound
            if root_devs is not None and len(root_devs) == c.nbranches:
                c.root_devs = <uint64_t *>calloc(count, sizeof(uint64_t))
                if c.root_devs == NULL:
                    _free_config(c)
                    raise MemoryError()
                for i in range(c.nbranches):
                    c.root_devs[i] = root_devs[i]
                c.readdir = readdir
                if opens is not None:
                    c.create_pick = create
                c.mkdir_pick = mkdir
            c.dir_flags = dir_flags
            if opens is not None:
                c.opens = True
                c.fopen_rd, c.fopen_wr, c.fopen_keep, c.dropcache, c.link_cow = opens
        pthread_mutex_lock(&self.fast_mu)
        old = self.fast
        self.fast = c
        if old != NULL and old.refs == 0:
            _free_config(old)
        pthread_mutex_unlock(&self.fast_mu)

    def configure(self, size_t max_write, int minor):
        """After INIT: buffers hold the largest request, WRITE's header has its minor's size."""
        self.bufsize = max(<size_t>(1 << 13), IN_HDR + sizeof(fuse_write_in) + max_write + 4096)
        self.write_in_size = sizeof(fuse_write_in) if minor >= 9 else 24

    def counts(self):
        """Requests served so far: {opcode: (answered compiled, answered by Python)}."""
        cdef int op
        cdef dict out = {}
        for op in range(MAX_OPCODE):
            if self.answered[0][op] or self.answered[1][op]:
                out[op] = (self.answered[0][op], self.answered[1][op])
        return out

    def ways_in(self):
        """Requests so far (INIT aside) that came (over io_uring, through read())."""
        return MFS_LOAD(&self.came[0]), MFS_LOAD(&self.came[1])

    # ------------------------------------------------------------ handles
    cdef uint32_t _alloc(self) noexcept nogil:
        """A free slot (slots_mu held); 0 if the table is full."""
        cdef uint32_t i = 0
        if self.nfree:
            self.nfree -= 1
            i = self.free_slots[self.nfree]
        elif self.next_slot < MAX_SLOTS:
            i = self.next_slot
            self.next_slot += 1
        return i

    cdef void _free(self, uint64_t fh) noexcept nogil:
        """Slot ``fh`` is free again (slots_mu held)."""
        memset(&self.slots[fh], 0, sizeof(Slot))
        self.slots[fh].fd = -1
        self.free_slots[self.nfree] = <uint32_t>fh
        self.nfree += 1

    def passthrough(self, modes):
        """After INIT: ``modes``, the O_ACCMODE values whose opens get passthrough
        (None: the kernel agreed to none). Set before any open."""
        cdef uint32_t bits = 0
        cdef object m
        for m in modes or ():
            bits |= (<uint32_t>1) << (<uint32_t>m & 3)
        pthread_mutex_lock(&self.pt_mu)
        self.pt_on = modes is not None
        self.pt_modes = bits
        pthread_mutex_unlock(&self.pt_mu)

    def add(self, uint64_t pyfh, int fd, uint64_t nodeid, uint32_t flags, uint32_t open_flags):
        """A new kernel fh for request-layer handle ``pyfh``, an open of
        ``nodeid`` with ``flags`` (``fd``: its branch fd; -1: no C path, no
        passthrough): the OPEN reply's fuse_open_out, ``open_flags`` (FOPEN_*)
        with passthrough's when the open gets its node's backing."""
        cdef uint32_t i
        cdef uint8_t pt[1]  # out-parameter of _pt_acquire
        cdef int32_t backing = 0
        pt[0] = PT_NONE
        if fd >= 0:
            with nogil:  # it may wait for another open registering a backing
                backing = _pt_acquire(self, nodeid, fd, flags, pt)
        pthread_mutex_lock(&self.slots_mu)
        i = self._alloc()
        if i:
            self.slots[i].fd = fd
            self.slots[i].pt = pt[0]
            self.slots[i].pyfh = pyfh
            self.slots[i].nodeid = nodeid
            self.slots[i].owner = SLOT_PYTHON
        pthread_mutex_unlock(&self.slots_mu)
        if not i:
            with nogil:
                _pt_release(self, nodeid, pt[0])
            raise OSError(23, "too many open files in the pool")  # ENFILE
        return _open_out(i, open_flags, backing)

    def pyfh(self, uint64_t fh):
        """The request-layer handle of kernel fh ``fh`` (0 if none, or the open is C's: see claim)."""
        if fh == 0 or fh >= self.next_slot:
            return 0
        return self.slots[fh].pyfh

    def remove(self, uint64_t fh):
        """Free kernel fh ``fh`` (its passthrough share released): its
        request-layer handle (0: none, or not Python's)."""
        cdef uint64_t pyfh = 0
        cdef uint64_t nodeid = 0
        cdef uint8_t pt = PT_NONE
        if fh == 0 or fh >= self.next_slot:
            return 0
        pthread_mutex_lock(&self.slots_mu)
        if self.slots[fh].owner == SLOT_PYTHON and self.slots[fh].pyfh != 0:
            pyfh, pt, nodeid = self.slots[fh].pyfh, self.slots[fh].pt, self.slots[fh].nodeid
            self._free(fh)
        pthread_mutex_unlock(&self.slots_mu)
        if pt != PT_NONE:
            with nogil:
                _pt_release(self, nodeid, pt)
        return pyfh

    def add_c(self, int fd, uint64_t nodeid, bytes root, uint32_t flags, uint32_t open_flags):
        """Hand open branch fd ``fd`` (of ``nodeid``, on branch ``root``, opened
        with ``flags``) to the C path as if the compiled OPEN had made it
        (passthrough decided as there): (its kernel fh, the OPEN reply's
        fuse_open_out as ``add`` gives it), or (0, b"") with nothing changed
        if the config does not let C own opens now."""
        cdef bytes r = b"" if root == b"/" else root
        cdef const char *rp = PyBytes_AS_STRING(r)
        cdef size_t rlen = <size_t>len(r)
        cdef int32_t backing[1]  # out-parameter of _add_c
        cdef uint32_t i
        if self.trace:
            return 0, b""  # -d: every request through Python
        with nogil:  # it may wait for another open registering a backing
            i = _add_c(self, fd, nodeid, rp, rlen, flags, backing)
        if not i:
            return 0, b""
        return i, _open_out(i, open_flags, backing[0])

    def claim(self, uint64_t fh):
        """Take over the C-owned open ``fh`` (adoption, kernel/base.py): (fd,
        nodeid, branch root, flags), the slot now waiting for its Python
        handle (``adopted``); None if ``fh`` is not a C-owned open (a C
        RELEASE took it first, or it is Python's). Its RELEASE is no longer
        answered in C."""
        cdef Slot *sl
        cdef FastConfig *c = NULL
        cdef int fd = -1
        cdef int branch = 0
        cdef uint32_t flags = 0
        cdef uint64_t nodeid = 0
        if fh == 0 or fh >= self.next_slot:
            return None
        pthread_mutex_lock(&self.slots_mu)  # no Python object made while held
        sl = &self.slots[fh]
        if sl.owner == SLOT_C:
            sl.owner = SLOT_ADOPTING
            c = sl.cfg
            sl.cfg = NULL
            fd, branch, flags, nodeid = sl.fd, sl.branch, sl.flags, sl.nodeid
        pthread_mutex_unlock(&self.slots_mu)
        if c == NULL:
            return None
        cdef bytes root = PyBytes_FromStringAndSize(c.branches[branch], <Py_ssize_t>c.lens[branch]) or b"/"
        _release(self, c)  # the reference the open held
        return fd, nodeid, root, flags

    def adopted(self, uint64_t fh, uint64_t pyfh):
        """Claimed ``fh`` now belongs to request-layer handle ``pyfh`` (the node
        table counts it among the Python handles); 0: the adoption failed and
        the fd is closed, the slot freed."""
        cdef uint64_t nodeid = 0
        cdef int fd = -1
        cdef uint8_t pt = PT_NONE
        pthread_mutex_lock(&self.slots_mu)
        if self.slots[fh].owner == SLOT_ADOPTING:
            nodeid = self.slots[fh].nodeid
            if pyfh:  # its passthrough share goes with it: Python's RELEASE releases it (remove)
                self.slots[fh].owner = SLOT_PYTHON
                self.slots[fh].pyfh = pyfh
            else:
                fd = self.slots[fh].fd
                pt = self.slots[fh].pt
                self._free(fh)
        pthread_mutex_unlock(&self.slots_mu)
        if nodeid:
            if fd >= 0:
                c_close(fd)
            if pt != PT_NONE:
                with nogil:
                    _pt_release(self, nodeid, pt)
            _drop_c_fh(self.table, nodeid)  # the C count; a Python one replaced it

    def c_fhs(self, nodeid=None, root=None):
        """The kernel fhs whose open C owns now, of node ``nodeid`` and/or on branch ``root`` (bytes)."""
        cdef list out = []
        cdef uint64_t i
        cdef size_t k
        cdef size_t count = 0
        cdef bint by_node = nodeid is not None
        cdef uint64_t node = nodeid if by_node else 0
        cdef bytes r = None if root is None else (b"" if root == b"/" else root)
        cdef const char *rp = NULL if r is None else PyBytes_AS_STRING(r)
        cdef size_t rlen = 0 if r is None else <size_t>len(r)
        cdef FastConfig *c
        cdef uint64_t *found = <uint64_t *>malloc(sizeof(uint64_t) * self.next_slot)
        if found == NULL:
            raise MemoryError()
        pthread_mutex_lock(&self.slots_mu)  # no Python object made while held
        i = 0
        while i + 1 < self.next_slot:
            i += 1
            if self.slots[i].owner != SLOT_C or (by_node and self.slots[i].nodeid != node):
                continue
            c = self.slots[i].cfg
            k = <size_t>self.slots[i].branch
            if rp != NULL and (c.lens[k] != rlen or memcmp(c.branches[k], rp, rlen) != 0):
                continue
            found[count] = i
            count += 1
        pthread_mutex_unlock(&self.slots_mu)
        for k in range(count):
            out.append(found[k])
        free(found)
        return out

    # ------------------------------------------------------------ the loop
    def serve(self, int fd, bint poller=False):
        """Answer requests on ``fd`` until the connection ends (unmount: ENODEV).
        The ``poller`` (one worker, on an fd of its own) waits for the next
        request polling for ``busy_poll_ns`` before it sleeps (_await), unless
        the other workers got requests while it answered its last one: callers
        run concurrently then, every worker has work and the CPU a poll would
        take is theirs. (A request another worker gets while the poller polls
        is only a race the woken sleeper won.)"""
        cdef char *buf = <char *>malloc(self.bufsize)
        cdef int fl = _fcntl(fd, F_GETFL, 0) & ~O_NONBLOCK
        cdef bint polling = False
        cdef uint64_t others_seen = 0
        cdef ssize_t n
        cdef int err = 0
        cdef Caller caller
        memset(&caller, 0, sizeof(caller))
        caller.rng = <uint64_t>_clock_ns(CLOCK_MONOTONIC) ^ <uint64_t>(<size_t>&caller)
        if buf == NULL:
            raise MemoryError()
        try:
            with nogil:
                while True:
                    if poller:
                        n = _await(fd, buf, self.bufsize, self.busy_poll_ns if MFS_LOAD(
                            &self.by_others) == others_seen else 0, fl, &polling)
                        others_seen = MFS_LOAD(&self.by_others)  # from here until the next wait
                    else:
                        n = _await(fd, buf, self.bufsize, 0, fl, &polling)
                        if n > 0:
                            MFS_COUNT(&self.by_others)
                    if n < 0:
                        err = errno
                        if err == EINTR or err == EAGAIN or err == ENOENT:
                            continue  # ENOENT: the request was interrupted before we read it
                        break
                    if n >= <ssize_t>IN_HDR:
                        MFS_COUNT(&self.came[1])
                        self._answer(&caller, fd, buf, n)
        finally:
            free(buf)
        if err != ENODEV:
            raise OSError(err, os.strerror(err))

    def serve_ring(self, int qid, int depth, bint poller=False):
        """Answer requests of queue ``qid`` over io_uring (``_ring.pxi``) with
        ``depth`` entries until the connection ends; a ``poller`` polls for the
        next one (``busy_poll_ns``) before it sleeps."""
        cdef Caller caller
        cdef int err
        memset(&caller, 0, sizeof(caller))
        caller.rng = <uint64_t>_clock_ns(CLOCK_MONOTONIC) ^ <uint64_t>(<size_t>&caller)
        with nogil:
            err = _ring_serve(self, <uint16_t>qid, depth, poller, &caller)
        if err:
            raise OSError(err, os.strerror(err))

    cdef void _answer(self, Caller *w, int fd, char *buf, ssize_t n) noexcept nogil:
        """One request (``n`` bytes in ``buf``, reused for its reply): in C if
        it can be, else by the Python session; the reply sent to ``fd``."""
        cdef fuse_in_header h = (<fuse_in_header *>buf)[0]
        if self._hot(w, fd, buf, n):
            if h.opcode < MAX_OPCODE:
                MFS_COUNT(&self.answered[0][h.opcode])
            return
        if h.opcode < MAX_OPCODE:
            MFS_COUNT(&self.answered[1][h.opcode])
        with gil:
            try:
                n = self._python(buf, n)
            except BaseException:  # a bug of the session: logged, the worker goes on
                log.exception("request dispatch failed")
                n = 0
        if h.uid != NO_UID and h.opcode != FUSE_FORGET and h.opcode != FUSE_BATCH_FORGET \
                and h.opcode != FUSE_INTERRUPT and h.opcode != FUSE_RELEASE \
                and h.opcode != FUSE_RELEASEDIR:  # Python switched to this caller (NO_CALLER)
            _carry(w, &h)
        if n > 0:  # the reply, written without the GIL
            _send(fd, buf, <size_t>n)

    cdef ssize_t _python(self, char *buf, ssize_t n) except -1:
        """Hand the request to the Python session; its reply is copied back
        into ``buf`` (the GIL is not needed again to send it). Returns its size."""
        cdef const char *p
        cdef Py_ssize_t size
        cdef object reply = self.slow(PyBytes_FromStringAndSize(buf, n))
        if reply is None:
            return 0
        size = len(<bytes>reply)
        if <size_t>size > self.bufsize:
            log.error("reply of %d bytes exceeds the buffer: dropped", size)
            return 0
        p = PyBytes_AS_STRING(reply)
        memcpy(buf, p, <size_t>size)
        return size

    cdef bint _hot(self, Caller *w, int fd, char *buf, ssize_t n) noexcept nogil:
        cdef fuse_in_header *h = <fuse_in_header *>buf
        if self.trace:
            return False
        if h.opcode == FUSE_LOOKUP:
            return _lookup(self, w, fd, buf, n)
        if h.opcode == FUSE_GETATTR and n >= <ssize_t>(IN_HDR + sizeof(fuse_getattr_in)):
            return _getattr(self, w, fd, buf)
        if h.opcode == FUSE_STATX and n >= <ssize_t>(IN_HDR + sizeof(fuse_statx_in)):
            return _statx(self, w, fd, buf)
        if h.opcode == FUSE_FORGET or h.opcode == FUSE_BATCH_FORGET:
            return _forget(self, buf, n)
        if h.opcode == FUSE_SETATTR and n >= <ssize_t>(IN_HDR + sizeof(fuse_setattr_in)):
            return _setattr(self, w, fd, buf)
        if h.opcode == FUSE_UNLINK:
            return _unlink(self, w, fd, buf, n)
        if h.opcode == FUSE_RMDIR:
            return _rmdir(self, w, fd, buf, n)
        if h.opcode == FUSE_RENAME:
            return _rename(self, w, fd, buf, n)
        if h.opcode == FUSE_GETXATTR and n > <ssize_t>(IN_HDR + 8):
            return _getxattr(self, w, fd, buf, n)
        if h.opcode == FUSE_READ:
            return self._read(fd, buf, h.unique)
        if h.opcode == FUSE_WRITE:
            return self._write(fd, buf, n, h.unique)
        if h.opcode == FUSE_FLUSH:
            return self._flush(fd, buf, h.unique)
        if FUSE_OPENDIR <= h.opcode <= FUSE_FSYNCDIR:
            return _dirs_hot(self, w, fd, buf, n)
        if h.opcode == FUSE_OPEN:
            return _open(self, w, fd, buf, n)
        if h.opcode == FUSE_RELEASE:
            return _release_fh(self, fd, buf, n)
        if h.opcode == FUSE_CREATE:
            return _create(self, w, fd, buf, n)
        if h.opcode == FUSE_MKDIR:
            return _mkdir(self, w, fd, buf, n)
        return False

    cdef inline int _fd(self, uint64_t fh) noexcept nogil:
        if fh == 0 or fh >= self.next_slot:
            return -1
        return self.slots[fh].fd

    cdef bint _read(self, int fd, char *buf, uint64_t unique) noexcept nogil:
        cdef fuse_read_in *r = <fuse_read_in *>(buf + IN_HDR)
        cdef int bfd = self._fd(r.fh)
        cdef size_t size = r.size
        cdef off_t off = <off_t>r.offset
        cdef size_t done
        cdef int err[1]  # out-parameter, set by pread_full
        if bfd < 0 or size + OUT_HDR > self.bufsize:
            return False
        # the request is consumed: its buffer takes the reply
        done = pread_full(bfd, buf + OUT_HDR, size, off, err)
        if err[0] and done == 0:
            _reply_error(fd, unique, err[0])
            return True
        _reply(fd, unique, buf, OUT_HDR + done)
        return True

    cdef bint _write(self, int fd, char *buf, ssize_t n, uint64_t unique) noexcept nogil:
        cdef fuse_write_in *w = <fuse_write_in *>(buf + IN_HDR)
        cdef int bfd = self._fd(w.fh)
        cdef const char *data = buf + IN_HDR + self.write_in_size
        cdef size_t size = w.size
        cdef off_t off = <off_t>w.offset
        cdef size_t done
        cdef int err[1]  # out-parameter, set by pwrite_full
        if bfd < 0 or IN_HDR + self.write_in_size + size > <size_t>n or w.write_flags & 4:
            return False  # 4: FUSE_WRITE_KILL_SUIDGID, setuid/setgid to drop first (Python)
        done = pwrite_full(bfd, data, size, off, err)
        if err[0] and done == 0:
            if err[0] == ENOSPC or err[0] == EDQUOT:
                return False  # moveonenospc is a decision: the Python session's
            _reply_error(fd, unique, err[0])
            return True
        cdef write_reply out
        out.w.size = <uint32_t>done
        out.w.padding = 0
        _reply(fd, unique, &out, sizeof(write_reply))
        return True

    cdef bint _flush(self, int fd, char *buf, uint64_t unique) noexcept nogil:
        cdef fuse_flush_in *f = <fuse_flush_in *>(buf + IN_HDR)
        cdef int bfd = self._fd(f.fh)
        cdef int d
        cdef int err = 0
        if bfd < 0:
            return False
        # close() of a duplicate reports deferred write errors (NFS) and keeps our fd
        d = c_dup(bfd)
        if d < 0 or c_close(d) < 0:
            err = errno
        _reply_error(fd, unique, err)
        return True


cdef void _reply(int fd, uint64_t unique, void *msg, size_t size) noexcept nogil:
    """Send a success reply: ``msg`` starts with its fuse_out_header, filled in here."""
    cdef fuse_out_header *o = <fuse_out_header *>msg
    o.len = <uint32_t>size
    o.error = 0
    o.unique = unique
    _send(fd, msg, size)


cdef void _reply_error(int fd, uint64_t unique, int err) noexcept nogil:
    cdef fuse_out_header o
    o.len = OUT_HDR
    o.error = -err
    o.unique = unique
    _send(fd, &o, OUT_HDR)


include "_wire.pxi"
include "_metadata.pxi"
include "_actions.pxi"
include "_dirs.pxi"
include "_listing.pxi"
include "_files.pxi"
include "_create.pxi"
include "_ring.pxi"
