"""Facts of the FUSE wire protocol (fuse_kernel.h 7.45) the session speaks:
struct layouts, flags, opcodes, and how one message is framed. No state, so
every other module of the session may import it."""

from __future__ import annotations

import enum
import errno
import os
import struct

KERNEL_VERSION, KERNEL_MINOR = 7, 45
IN_HEADER = struct.Struct("<IIQQIIIHH")  # len opcode unique nodeid uid gid pid total_extlen padding
OUT_HEADER = struct.Struct("<IiQ")
ENTRY_OUT = struct.Struct("<QQQQII88x")  # a negative entry; positive ones come from _kernel.entry_out
OPEN_OUT = struct.Struct("<QIi")
KSTATFS = struct.Struct("<QQQQQIIII24x")
DIRENT = struct.Struct("<QQII")
INIT_OUT = struct.Struct("<IIIIHHIIHHIIH22x")
SETATTR_IN = struct.Struct("<IIQQQQQQIIIIIIII")
ATTR_OUT = struct.Struct("<QI4xQQQqqqIIIIIIIIII")  # attr_valid attr_valid_nsec, fuse_attr (times signed)
STATX_IN = struct.Struct("<IIQII")  # getattr_flags reserved fh sx_flags sx_mask
# fuse_statx_out: attr_valid attr_valid_nsec flags spare[2], then fuse_statx: mask blksize
# attributes nlink uid gid mode ino size blocks attributes_mask, atime btime ctime mtime
# (fuse_sx_time: sec nsec), rdev major minor, dev major minor, spare
STATX_OUT = struct.Struct("<QII16xIIQIIIH2xQQQQ" + "qI4x" * 4 + "IIII112x")

# init flags (fuse_init_in.flags | flags2 << 32)
ASYNC_READ, POSIX_LOCKS, ATOMIC_O_TRUNC, EXPORT_SUPPORT = 1 << 0, 1 << 1, 1 << 3, 1 << 4
BIG_WRITES, AUTO_INVAL_DATA, DO_READDIRPLUS, READDIRPLUS_AUTO = 1 << 5, 1 << 12, 1 << 13, 1 << 14
ASYNC_DIO, WRITEBACK_CACHE, PARALLEL_DIROPS = 1 << 15, 1 << 16, 1 << 18
POSIX_ACL, MAX_PAGES, CACHE_SYMLINKS, HANDLE_KILLPRIV_V2, INIT_EXT = 1 << 20, 1 << 22, 1 << 23, 1 << 28, 1 << 30
DIRECT_IO_ALLOW_MMAP, PASSTHROUGH, OVER_IO_URING = 1 << 36, 1 << 37, 1 << 41
# open reply flags
FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE, FOPEN_CACHE_DIR = 1 << 0, 1 << 1, 1 << 3
FOPEN_NOFLUSH, FOPEN_PARALLEL_DIRECT_WRITES, FOPEN_PASSTHROUGH = 1 << 5, 1 << 6, 1 << 7
# setattr valid bits
FATTR_MODE, FATTR_UID, FATTR_GID, FATTR_SIZE = 1, 2, 4, 8
FATTR_ATIME, FATTR_MTIME, FATTR_FH, FATTR_ATIME_NOW, FATTR_MTIME_NOW = 16, 32, 64, 128, 256
FATTR_KILL_SUIDGID = 2048
WRITE_KILL_SUIDGID = 4  # fuse_write_in.write_flags
OPEN_KILL_SUIDGID = 1  # fuse_open_in.open_flags
GETATTR_FH = 1  # fuse_getattr_in/fuse_statx_in.getattr_flags: fh names an open file
NOTIFY_INVAL_INODE, NOTIFY_INC_EPOCH = 2, 8  # notification codes (INC_EPOCH: protocol 7.44)
PAGE = 4096


class Op(enum.IntEnum):
    """FUSE opcodes (fuse_kernel.h 7.45) this session decodes."""

    LOOKUP = 1
    FORGET = 2
    GETATTR = 3
    SETATTR = 4
    READLINK = 5
    SYMLINK = 6
    MKNOD = 8
    MKDIR = 9
    UNLINK = 10
    RMDIR = 11
    RENAME = 12
    LINK = 13
    OPEN = 14
    READ = 15
    WRITE = 16
    STATFS = 17
    RELEASE = 18
    FSYNC = 20
    SETXATTR = 21
    GETXATTR = 22
    LISTXATTR = 23
    REMOVEXATTR = 24
    FLUSH = 25
    INIT = 26
    OPENDIR = 27
    READDIR = 28
    RELEASEDIR = 29
    FSYNCDIR = 30
    ACCESS = 34
    CREATE = 35
    INTERRUPT = 36
    DESTROY = 38
    IOCTL = 39
    BATCH_FORGET = 42
    FALLOCATE = 43
    READDIRPLUS = 44
    RENAME2 = 45
    LSEEK = 46
    COPY_FILE_RANGE = 47
    SYNCFS = 50
    TMPFILE = 51
    STATX = 52
    COPY_FILE_RANGE_64 = 53


#: Requests the kernel expects no reply to.
NO_REPLY = frozenset({Op.FORGET, Op.BATCH_FORGET, Op.INTERRUPT})
#: Requests answered without acting as their caller: a release only closes (and
#: is often sent late, from whichever task dropped the file), so it must not make
#: a worker stop acting as the caller it served last (the compiled path's _as_caller).
NO_CALLER = NO_REPLY | {Op.RELEASE, Op.RELEASEDIR}


def cstr(body: bytes, start: int = 0) -> tuple[bytes, int]:
    """The NUL-terminated name at ``start`` and the offset just past it."""
    end = body.index(b"\0", start)
    return body[start:end], end + 1


def rdev_decode(rdev: int) -> int:
    return os.makedev((rdev >> 8) & 0xFFF, (rdev & 0xFF) | ((rdev >> 12) & 0xFFF00))


def frame(unique: int, error: int, payload: bytes = b"") -> bytes:
    """One message to the kernel: out header (``error`` is -errno in a reply,
    the notification code with ``unique`` 0) and payload."""
    return OUT_HEADER.pack(OUT_HEADER.size + len(payload), error, unique) + payload


def send(fd: int, message: bytes) -> None:
    """Write a reply; an interrupted request or a gone connection is no error."""
    try:
        os.write(fd, message)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ENODEV, errno.EBADF):
            raise


class Request:
    """The decoded header of one request (the body stays bytes)."""

    __slots__ = ("opcode", "unique", "nodeid", "uid", "gid", "pid")

    def __init__(self, data: bytes) -> None:
        (_, self.opcode, self.unique, self.nodeid, self.uid, self.gid, self.pid, _, _) = IN_HEADER.unpack_from(data)
