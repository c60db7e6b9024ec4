# The FUSE protocol records and numbers the session reads and writes (included
# by _kernel.pyx): FUSE 7.45 as ../shared/reference/fuse_kernel-7.45.h gives
# them, declared here rather than taken from the installed (older) header.
# Records only one include uses live beside its handlers.

cdef struct fuse_in_header:
    uint32_t len
    uint32_t opcode
    uint64_t unique
    uint64_t nodeid
    uint32_t uid
    uint32_t gid
    uint32_t pid
    uint16_t total_extlen
    uint16_t padding

cdef struct fuse_out_header:
    uint32_t len
    int32_t error
    uint64_t unique

cdef struct fuse_read_in:
    uint64_t fh
    uint64_t offset
    uint32_t size
    uint32_t read_flags
    uint64_t lock_owner
    uint32_t flags
    uint32_t padding

cdef struct fuse_write_in:
    uint64_t fh
    uint64_t offset
    uint32_t size
    uint32_t write_flags
    uint64_t lock_owner
    uint32_t flags
    uint32_t padding

cdef struct fuse_write_out:
    uint32_t size
    uint32_t padding

cdef struct fuse_flush_in:
    uint64_t fh
    uint32_t unused
    uint32_t padding
    uint64_t lock_owner

cdef struct fuse_backing_map:
    int32_t fd
    uint32_t flags
    uint64_t padding

cdef struct fuse_forget_in:
    uint64_t nlookup

cdef struct fuse_batch_forget_in:
    uint32_t count
    uint32_t dummy

cdef struct fuse_forget_one:
    uint64_t nodeid
    uint64_t nlookup

cdef struct fuse_getattr_in:
    uint32_t getattr_flags
    uint32_t dummy
    uint64_t fh

cdef struct fuse_statx_in:
    uint32_t getattr_flags
    uint32_t reserved
    uint64_t fh
    uint32_t sx_flags
    uint32_t sx_mask

cdef struct fuse_open_in:
    uint32_t flags
    uint32_t open_flags

cdef struct fuse_open_out:
    uint64_t fh
    uint32_t open_flags
    int32_t backing_id

cdef enum:  # fuse_open_out.open_flags the compiled opens set
    FOPEN_DIRECT_IO = 1 << 0
    FOPEN_KEEP_CACHE = 1 << 1
    FOPEN_PASSTHROUGH = 1 << 7

cdef struct open_reply:
    fuse_out_header h
    fuse_open_out o

cdef struct fuse_release_in:  # RELEASE and RELEASEDIR
    uint64_t fh
    uint32_t flags
    uint32_t release_flags
    uint64_t lock_owner

cdef enum:
    FUSE_LOOKUP = 1
    FUSE_FORGET = 2
    FUSE_GETATTR = 3
    FUSE_SETATTR = 4
    FUSE_MKDIR = 9
    FUSE_UNLINK = 10
    FUSE_RMDIR = 11
    FUSE_RENAME = 12
    FUSE_OPEN = 14
    FUSE_READ = 15
    FUSE_WRITE = 16
    FUSE_RELEASE = 18
    FUSE_GETXATTR = 22
    FUSE_FLUSH = 25
    FUSE_OPENDIR = 27
    FUSE_READDIR = 28
    FUSE_RELEASEDIR = 29
    FUSE_FSYNCDIR = 30
    FUSE_CREATE = 35
    FUSE_INTERRUPT = 36
    FUSE_BATCH_FORGET = 42
    FUSE_STATX = 52
    FUSE_GETATTR_FH = 1
    IN_HDR = 40   # sizeof(fuse_in_header)
    OUT_HDR = 16  # sizeof(fuse_out_header)
    PATH_MAX = 4096
    ROOT_ID = 1
    NO_UID = 0xFFFFFFFF

cdef struct fuse_attr:
    uint64_t ino
    uint64_t size
    uint64_t blocks
    uint64_t atime
    uint64_t mtime
    uint64_t ctime
    uint32_t atimensec
    uint32_t mtimensec
    uint32_t ctimensec
    uint32_t mode
    uint32_t nlink
    uint32_t uid
    uint32_t gid
    uint32_t rdev
    uint32_t blksize
    uint32_t flags

cdef struct fuse_entry_out:
    uint64_t nodeid
    uint64_t generation
    uint64_t entry_valid
    uint64_t attr_valid
    uint32_t entry_valid_nsec
    uint32_t attr_valid_nsec
    fuse_attr attr

cdef struct fuse_attr_out:
    uint64_t attr_valid
    uint32_t attr_valid_nsec
    uint32_t dummy
    fuse_attr attr


# _IOR/_IOW(229, nr, size): the FUSE device ioctls
cdef unsigned long IOC_CLONE = 0x8004E500          # _IOR(229, 0, uint32_t)
cdef unsigned long IOC_BACKING_OPEN = 0x4010E501   # _IOW(229, 1, struct fuse_backing_map)
cdef unsigned long IOC_BACKING_CLOSE = 0x4004E502  # _IOW(229, 2, uint32_t)
