"""An open file's data and lifetime: read, write, flush, fsync, release,
fallocate, lseek, copy_file_range, ioctl; fsyncdir and syncfs. A write that
finds its branch full moves the file (:mod:`mergerfs.ops.moveonenospc`)."""

from __future__ import annotations

import errno
import os

from mergerfs import _fastpath
from mergerfs.errors import oserror
from mergerfs.ops.core import Handle
from mergerfs.ops.moveonenospc import MoveOps

#: ioctls passed to the branch file (the inode-flag family chattr/lsattr use);
#: anything else answers ENOTTY as on a filesystem without them.
IOCTLS = frozenset({0x80086601, 0x40086602, 0x80087601, 0x40087602, 0x801C581F, 0x401C5820})


class IoOps(MoveOps):
    def read(self, h: Handle, off: int, size: int) -> bytes:
        if self.snap.cfg["nullrw"]:
            return bytes(size)
        return _fastpath.pread(h.fd, size, off)

    def write(self, h: Handle, off: int, data: bytes) -> int:
        cfg = self.snap.cfg
        if cfg["nullrw"]:
            return len(data)
        try:
            return _fastpath.pwrite(h.fd, data, off)
        except OSError as e:
            return self._moved(h, e, cfg, lambda: _fastpath.pwrite(h.fd, data, off))

    def flush(self, h: Handle) -> None:
        # close() of a duplicate reports deferred write errors (NFS) without
        # giving up our fd: what a close() on the pool file should surface.
        os.close(os.dup(h.fd))

    def fsync(self, h: Handle, datasync: bool) -> None:
        (os.fdatasync if datasync else os.fsync)(h.fd)

    def release(self, h: Handle) -> None:
        if self.snap.cfg["dropcacheonclose"]:
            try:
                os.posix_fadvise(h.fd, 0, 0, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass
        with self._handles_lock:  # see _move: the fd number must not be reused mid-switch
            self.handles.pop(h.fd, None)
            os.close(h.fd)

    def fallocate(self, h: Handle, mode: int, off: int, length: int) -> None:
        try:
            _fastpath.fallocate(h.fd, mode, off, length)
        except OSError as e:
            if mode & 0x02:  # punching a hole frees space: nothing to move for
                raise
            self._moved(h, e, self.snap.cfg, lambda: _fastpath.fallocate(h.fd, mode, off, length))

    def lseek(self, h: Handle, off: int, whence: int) -> int:
        return os.lseek(h.fd, off, whence)

    def copy_file_range(self, src: Handle, off_in: int, dst: Handle, off_out: int, length: int, flags: int) -> int:
        if flags:
            raise oserror(errno.EINVAL)
        return os.copy_file_range(src.fd, dst.fd, length, off_in, off_out)

    def ioctl(self, h: Handle, cmd: int, arg: bytes, out_size: int) -> tuple[int, bytes]:
        """One of :data:`IOCTLS` on the branch file: (result, bytes to copy out)."""
        import fcntl  # noqa: PLC0415 - rare

        if cmd not in IOCTLS:
            raise oserror(errno.ENOTTY)
        buf = bytearray(arg.ljust(max(len(arg), out_size, 4), b"\0"))
        result = fcntl.ioctl(h.fd, cmd, buf, True)
        return result, bytes(buf[:out_size])

    def fsyncdir(self, relpath: str, datasync: bool) -> None:
        self._on_branch_dirs(relpath, os.fdatasync if datasync else os.fsync)

    def syncfs(self) -> None:
        """syncfs(2) of every branch's filesystem."""
        self._on_branch_dirs("/", _fastpath.syncfs)

    def _on_branch_dirs(self, relpath: str, fn) -> None:
        """``fn(fd)`` on ``relpath``'s directory on every branch that has it."""
        for b in self.snap.branches:
            try:
                fd = os.open(b.full(relpath), os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue
            try:
                fn(fd)
            finally:
                os.close(fd)
