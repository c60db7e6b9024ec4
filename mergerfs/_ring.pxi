# FUSE over io_uring (included by _kernel.pyx after _files.pxi): requests come
# as completions of ring entries registered per queue (one queue per possible
# CPU; the kernel picks the caller's CPU's), and one io_uring_enter both commits
# a reply and fetches the next request: no read() and write() per request, and
# the worker answers on its caller's CPU. INIT, FORGET and INTERRUPT still come
# through read() on /dev/fuse (a `serve` worker), notifications go through
# write() as before.
#
# A request arrives split: fuse_in_header in the entry's header, the op's first
# argument in op_in, the rest in the payload buffer. It is put back together in
# place, right before the payload (each payload buffer has HEADROOM bytes in
# front), so the handlers see the same contiguous request as from read(), and
# a WRITE's data is not copied. A request without payload starts OUT_HDR bytes
# before the payload, so a reply written after its header (READ's data, a
# listing) already is where the kernel takes it from. Replies go through _send:
# in a ring worker (fd RING_FD) into the current entry.
#
# The ring is driven by raw syscalls (io_uring_setup/io_uring_enter, no
# liburing): one submitter per ring, 128-byte SQEs (the FUSE command lives in
# the SQE's 80-byte command area).

cdef extern from *:
    """
    #include <linux/io_uring.h>
    #include <sys/mman.h>
    #include <sys/syscall.h>

    typedef struct {
        int fd;
        unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
        unsigned *cq_head, *cq_tail, *cq_mask;
        struct io_uring_cqe *cqes;
        char *sqes;
        void *sq_map, *cq_map;
        size_t sq_len, cq_len, sqes_len;
        unsigned pending;  /* SQEs queued since the last enter */
    } mfs_ring;

    /* Set up a ring of ``entries`` 128-byte SQEs: 0, or -errno. */
    static int mfs_ring_open(mfs_ring *r, unsigned entries) {
        struct io_uring_params p;
        memset(r, 0, sizeof(*r));
        memset(&p, 0, sizeof(p));
        p.flags = IORING_SETUP_SQE128;
        r->fd = (int)syscall(__NR_io_uring_setup, entries, &p);
        if (r->fd < 0)
            return -errno;
        r->sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
        r->cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
        if (p.features & IORING_FEAT_SINGLE_MMAP && r->cq_len > r->sq_len)
            r->sq_len = r->cq_len;
        r->sq_map = mmap(NULL, r->sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
                         IORING_OFF_SQ_RING);
        if (r->sq_map == MAP_FAILED)
            goto fail;
        if (p.features & IORING_FEAT_SINGLE_MMAP) {
            r->cq_map = r->sq_map;
        } else {
            r->cq_map = mmap(NULL, r->cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
                             IORING_OFF_CQ_RING);
            if (r->cq_map == MAP_FAILED)
                goto fail;
        }
        r->sqes_len = p.sq_entries * 128;
        r->sqes = mmap(NULL, r->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
                       IORING_OFF_SQES);
        if (r->sqes == MAP_FAILED)
            goto fail;
        r->sq_head = (unsigned *)((char *)r->sq_map + p.sq_off.head);
        r->sq_tail = (unsigned *)((char *)r->sq_map + p.sq_off.tail);
        r->sq_mask = (unsigned *)((char *)r->sq_map + p.sq_off.ring_mask);
        r->sq_array = (unsigned *)((char *)r->sq_map + p.sq_off.array);
        r->cq_head = (unsigned *)((char *)r->cq_map + p.cq_off.head);
        r->cq_tail = (unsigned *)((char *)r->cq_map + p.cq_off.tail);
        r->cq_mask = (unsigned *)((char *)r->cq_map + p.cq_off.ring_mask);
        r->cqes = (struct io_uring_cqe *)((char *)r->cq_map + p.cq_off.cqes);
        return 0;
    fail:;
        int err = errno;
        if (r->sq_map && r->sq_map != MAP_FAILED) munmap(r->sq_map, r->sq_len);
        if (r->cq_map && r->cq_map != MAP_FAILED && r->cq_map != r->sq_map) munmap(r->cq_map, r->cq_len);
        close(r->fd);
        r->fd = -1;
        return -err;
    }

    static void mfs_ring_close(mfs_ring *r) {
        if (r->fd < 0)
            return;
        munmap(r->sqes, r->sqes_len);
        if (r->cq_map != r->sq_map) munmap(r->cq_map, r->cq_len);
        munmap(r->sq_map, r->sq_len);
        close(r->fd);
        r->fd = -1;
    }

    /* Queue a FUSE ring command on /dev/fuse fd ``devfd`` (registering ``iov``,
       two buffers, or committing ``commit_id``), tagged ``tag``. */
    static void mfs_ring_fuse(mfs_ring *r, int devfd, unsigned cmd_op, const void *iov, uint64_t tag,
                              uint16_t qid, uint64_t commit_id) {
        unsigned tail = *r->sq_tail;
        unsigned i = tail & *r->sq_mask;
        struct io_uring_sqe *sqe = (struct io_uring_sqe *)(r->sqes + (size_t)i * 128);
        uint64_t *cmd;
        memset(sqe, 0, 128);
        sqe->opcode = IORING_OP_URING_CMD;
        sqe->fd = devfd;
        sqe->cmd_op = cmd_op;
        if (iov) {
            sqe->addr = (uint64_t)(uintptr_t)iov;
            sqe->len = 2;
        }
        sqe->user_data = tag;
        cmd = (uint64_t *)((char *)sqe + 48);  /* struct fuse_uring_cmd_req: flags, commit_id, qid */
        cmd[0] = 0;
        cmd[1] = commit_id;
        *(uint16_t *)&cmd[2] = qid;
        r->sq_array[i] = i;
        __atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
        r->pending++;
    }

    /* Submit what is queued and wait for ``wait`` completions: >= 0, or -errno. */
    static int mfs_ring_enter(mfs_ring *r, unsigned wait) {
        int n = (int)syscall(__NR_io_uring_enter, r->fd, r->pending, wait, wait ? IORING_ENTER_GETEVENTS : 0,
                             NULL, 0);
        if (n < 0)
            return -errno;
        r->pending -= (unsigned)n < r->pending ? (unsigned)n : r->pending;
        return n;
    }

    /* Whether a completion is waiting. */
    static int mfs_ring_ready(mfs_ring *r) {
        return *r->cq_head != __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
    }

    /* The next completion (its tag and result), consumed: 1, or 0 if none. */
    static int mfs_ring_next(mfs_ring *r, uint64_t *tag, int *res) {
        unsigned head = *r->cq_head;
        struct io_uring_cqe *c;
        if (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE))
            return 0;
        c = &r->cqes[head & *r->cq_mask];
        *tag = c->user_data;
        *res = c->res;
        __atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
        return 1;
    }

    /* The entry a ring worker is answering: where _send puts the reply. */
    typedef struct {
        char *hdr;       /* struct fuse_uring_req_header */
        char *payload;
        int replied;
    } mfs_ring_cur;
    static __thread mfs_ring_cur *mfs_cur;
    static void mfs_set_cur(mfs_ring_cur *c) { mfs_cur = c; }
    static mfs_ring_cur *mfs_get_cur(void) { return mfs_cur; }
    """
    ctypedef struct mfs_ring:
        pass
    ctypedef struct mfs_ring_cur:
        char *hdr
        char *payload
        int replied
    int mfs_ring_open(mfs_ring *r, unsigned entries) noexcept nogil
    void mfs_ring_close(mfs_ring *r) noexcept nogil
    void mfs_ring_fuse(mfs_ring *r, int devfd, unsigned cmd_op, const void *iov, uint64_t tag,
                       uint16_t qid, uint64_t commit_id) noexcept nogil
    int mfs_ring_enter(mfs_ring *r, unsigned wait) noexcept nogil
    int mfs_ring_next(mfs_ring *r, uint64_t *tag, int *res) noexcept nogil
    int mfs_ring_ready(mfs_ring *r) noexcept nogil
    void mfs_set_cur(mfs_ring_cur *c) noexcept nogil
    mfs_ring_cur *mfs_get_cur() noexcept nogil

cdef extern from "<sys/uio.h>" nogil:
    cdef struct iovec:
        void *iov_base
        size_t iov_len

cdef enum:
    RING_FD = -2            # the fd a ring worker's handlers reply "to" (_send)
    RING_HDR = 288          # sizeof(struct fuse_uring_req_header)
    RING_IN_OUT = 0         # its parts' offsets
    RING_OP_IN = 128
    RING_OP_IN_SZ = 128
    RING_COMMIT_ID = 264    # struct fuse_uring_ent_in_out (at 256: flags, commit_id, payload_sz)
    RING_PAYLOAD_SZ = 272
    RING_CMD_REGISTER = 1
    RING_CMD_COMMIT_AND_FETCH = 2
    HEADROOM = 256          # in front of each payload: the request put back together


cdef void _send(int fd, const void *msg, size_t size) noexcept nogil:
    """Send a reply (``msg``: fuse_out_header first): write() to /dev/fuse, or
    in a ring worker into the entry being answered."""
    cdef mfs_ring_cur *cur
    cdef const char *body
    if fd != RING_FD:
        c_write(fd, msg, size)
        return
    cur = mfs_get_cur()
    memcpy(cur.hdr + RING_IN_OUT, msg, OUT_HDR)
    body = <const char *>msg + OUT_HDR
    if body != cur.payload and size > OUT_HDR:
        memmove(cur.payload, body, size - OUT_HDR)
    (<uint32_t *>(cur.hdr + RING_PAYLOAD_SZ))[0] = <uint32_t>(size - OUT_HDR)
    cur.replied = 1


def ring_possible():
    """Whether this process may set up the rings FUSE over io_uring needs
    (io_uring allowed, 128-byte SQEs): asked before INIT accepts it, since
    the kernel holds every request until each queue has an entry."""
    cdef mfs_ring r
    if mfs_ring_open(&r, 2) != 0:
        return False
    mfs_ring_close(&r)
    return True


cdef int _ring_wait(mfs_ring *r, int64_t poll_ns) noexcept nogil:
    """Send the queued replies and wait for the next completion: as _await
    does for read(), a ``poll_ns`` poller first watches the completion queue
    without sleeping for that long (yielding the CPU between looks)."""
    cdef int64_t start
    cdef int res
    if poll_ns > 0:
        res = mfs_ring_enter(r, 0)
        if res < 0:
            return res
        start = _clock_ns(CLOCK_MONOTONIC)
        while not mfs_ring_ready(r):
            if _clock_ns(CLOCK_MONOTONIC) - start > poll_ns:
                return mfs_ring_enter(r, 1)
            sched_yield()
        return 0
    return mfs_ring_enter(r, 1)


cdef int _ring_serve(Session s, uint16_t qid, int depth, bint poller, Caller *caller) noexcept nogil:
    """Register ``depth`` entries for queue ``qid`` and answer what they bring
    until the connection ends: 0, or an errno (setup failed: ENOMEM or the
    ring's own). A ``poller`` polls for ``busy_poll_ns`` before it sleeps."""
    cdef mfs_ring r
    cdef mfs_ring_cur cur
    cdef char *hdrs = NULL
    cdef char **mems = NULL
    cdef iovec *iovs = NULL
    cdef size_t paysize = s.bufsize
    cdef int i, res, err = 0, live = 0
    cdef uint64_t tag, commit_id
    cdef uint32_t psz
    cdef fuse_in_header h
    cdef ssize_t oplen, n
    cdef char *hdr
    cdef char *payload
    cdef char *buf
    err = -mfs_ring_open(&r, <unsigned>depth)
    if err:
        return err
    hdrs = <char *>calloc(<size_t>depth, RING_HDR)
    mems = <char **>calloc(<size_t>depth, sizeof(char *))
    iovs = <iovec *>calloc(<size_t>depth * 2, sizeof(iovec))
    if hdrs == NULL or mems == NULL or iovs == NULL:
        err = ENOMEM
    for i in range(depth):
        if err:
            break
        mems[i] = <char *>malloc(HEADROOM + paysize)
        if mems[i] == NULL:
            err = ENOMEM
            break
        iovs[2 * i].iov_base = hdrs + <size_t>i * RING_HDR
        iovs[2 * i].iov_len = RING_HDR
        iovs[2 * i + 1].iov_base = mems[i] + HEADROOM
        iovs[2 * i + 1].iov_len = paysize
        mfs_ring_fuse(&r, s.devfd, RING_CMD_REGISTER, &iovs[2 * i], <uint64_t>i, qid, 0)
        live += 1
    while live > 0 and not err:
        res = _ring_wait(&r, s.busy_poll_ns if poller else 0)  # the replies queued below go with it
        if res < 0:
            if res == -EINTR:
                continue
            err = -res
            break
        while mfs_ring_next(&r, &tag, &res):
            i = <int>tag
            if res < 0:  # ENOTCONN: unmounted (every entry ends so); anything else ends it too
                if res != -ENOTCONN:
                    err = -res
                live -= 1
                continue
            hdr = hdrs + <size_t>i * RING_HDR
            payload = mems[i] + HEADROOM
            memcpy(&h, hdr + RING_IN_OUT, IN_HDR)
            commit_id = (<uint64_t *>(hdr + RING_COMMIT_ID))[0]
            psz = (<uint32_t *>(hdr + RING_PAYLOAD_SZ))[0]
            oplen = <ssize_t>h.len - IN_HDR - <ssize_t>psz
            cur.hdr = hdr
            cur.payload = payload
            cur.replied = 0
            mfs_set_cur(&cur)
            if 0 <= oplen <= RING_OP_IN_SZ and psz <= paysize:
                # put the request back together in front of its payload (see above)
                buf = payload - (OUT_HDR if psz == 0 else IN_HDR + oplen)
                memcpy(buf, &h, IN_HDR)
                memcpy(buf + IN_HDR, hdr + RING_OP_IN, <size_t>oplen)
                n = <ssize_t>h.len
                MFS_COUNT(&s.came[0])
                s._answer(caller, RING_FD, buf, n)
            if not cur.replied:  # malformed, or no reply (none is due over the ring): EIO
                _reply_error(RING_FD, h.unique, EIO)
            mfs_set_cur(NULL)
            mfs_ring_fuse(&r, s.devfd, RING_CMD_COMMIT_AND_FETCH, NULL, tag, qid, commit_id)
    if live > 0:
        # the kernel may still hold entries registered with these buffers (the
        # caller unmounts, which ends them): they and the ring are left as they are
        return err
    mfs_ring_close(&r)
    if mems != NULL:
        for i in range(depth):
            free(mems[i])
    free(mems)
    free(hdrs)
    free(iovs)
    return err
