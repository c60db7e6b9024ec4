"""The kernel transport (``fuse-binding=kernel``, the default): our own FUSE
session on ``/dev/fuse``, without libfuse.

Mounting (mount(2) as root, ``fusermount3`` with the ``_FUSE_COMMFD`` fd
handoff otherwise), INIT negotiated from what the running kernel offers, one
worker thread per cloned fd. READ/WRITE/FLUSH of open files are answered by
the compiled loop (:mod:`mergerfs._kernel`) without the GIL; every other
request arrives here as bytes, is decoded once, handed to the binding-neutral
:class:`~mergerfs.requests.Requests` layer and answered exactly once (FORGET,
BATCH_FORGET and INTERRUPT get no reply).

Threading: workers call :meth:`KernelTransport.dispatch` concurrently, each
already acting as the caller (fsuid/fsgid/groups). Change notifications are
queued to one notifier thread: a notification can block until the kernel is
done with the inode, and no handler may wait on that.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import queue
import stat as S
import struct
import sys
import threading
import time

from mergerfs import _kernel, inodes, ugid
from mergerfs.lifecycle import mounted_device, unmount
from mergerfs.requests import DIRECT, KEEP, Requests

log = logging.getLogger("mergerfs")

# ------------------------------------------------------------------ protocol
KERNEL_VERSION, KERNEL_MINOR = 7, 45
IN_HEADER = struct.Struct("<IIQQIIIHH")  # len opcode unique nodeid uid gid pid total_extlen padding
OUT_HEADER = struct.Struct("<IiQ")
ENTRY_OUT = struct.Struct("<QQQQII88x")  # a negative entry; positive ones come from _kernel.entry_out
OPEN_OUT = struct.Struct("<QIi")
KSTATFS = struct.Struct("<QQQQQIIII24x")
DIRENT = struct.Struct("<QQII")
INIT_OUT = struct.Struct("<IIIIHHIIHHIIH22x")
SETATTR_IN = struct.Struct("<IIQQQQQQIIIIIIII")

# init flags (fuse_init_in.flags | flags2 << 32)
ASYNC_READ, POSIX_LOCKS, ATOMIC_O_TRUNC, EXPORT_SUPPORT = 1 << 0, 1 << 1, 1 << 3, 1 << 4
BIG_WRITES, AUTO_INVAL_DATA, DO_READDIRPLUS, READDIRPLUS_AUTO = 1 << 5, 1 << 12, 1 << 13, 1 << 14
ASYNC_DIO, WRITEBACK_CACHE, PARALLEL_DIROPS = 1 << 15, 1 << 16, 1 << 18
POSIX_ACL, MAX_PAGES, CACHE_SYMLINKS, HANDLE_KILLPRIV_V2, INIT_EXT = 1 << 20, 1 << 22, 1 << 23, 1 << 28, 1 << 30
DIRECT_IO_ALLOW_MMAP, PASSTHROUGH = 1 << 36, 1 << 37
# open reply flags
FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE, FOPEN_CACHE_DIR = 1 << 0, 1 << 1, 1 << 3
FOPEN_NOFLUSH, FOPEN_PARALLEL_DIRECT_WRITES, FOPEN_PASSTHROUGH = 1 << 5, 1 << 6, 1 << 7
# setattr valid bits
FATTR_MODE, FATTR_UID, FATTR_GID, FATTR_SIZE = 1, 2, 4, 8
FATTR_ATIME, FATTR_MTIME, FATTR_FH, FATTR_ATIME_NOW, FATTR_MTIME_NOW = 16, 32, 64, 128, 256
FATTR_KILL_SUIDGID = 2048
WRITE_KILL_SUIDGID = 4  # fuse_write_in.write_flags
OPEN_KILL_SUIDGID = 1  # fuse_open_in.open_flags
NOTIFY_INVAL_INODE = 2
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
    COPY_FILE_RANGE_64 = 53


_NO_REPLY = frozenset({Op.FORGET, Op.BATCH_FORGET, Op.INTERRUPT})
#: The compiled actions: SETATTR's chmod, chown and utimens, and UNLINK (each when its policy is epall).
_ACTIONS = (_kernel.ACT_CHMOD, _kernel.ACT_CHOWN, _kernel.ACT_UTIMENS, _kernel.ACT_UNLINK)

# mount(2) flags for the generic options
_MS = {"ro": 1, "nosuid": 2, "nodev": 4, "noexec": 8, "sync": 16, "dirsync": 128, "noatime": 1024}
_MS_UNSET = {"rw": "ro", "suid": "nosuid", "dev": "nodev", "exec": "noexec", "async": "sync", "atime": "noatime"}


def _cstr(body: bytes, start: int = 0) -> tuple[bytes, int]:
    end = body.index(b"\0", start)
    return body[start:end], end + 1


def _rdev_decode(rdev: int) -> int:
    return os.makedev((rdev >> 8) & 0xFFF, (rdev & 0xFF) | ((rdev >> 12) & 0xFFF00))


def _frame(unique: int, error: int, payload: bytes = b"") -> bytes:
    """One message to the kernel: out header (``error`` is -errno in a reply,
    the notification code with ``unique`` 0) and payload."""
    return OUT_HEADER.pack(OUT_HEADER.size + len(payload), error, unique) + payload


def _send(fd: int, message: bytes) -> None:
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


class _Notifier:
    """Kernel cache invalidations, written by one thread of their own."""

    def __init__(self) -> None:
        self.fd = -1
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self, fd: int) -> None:
        self.fd = fd
        self._thread = threading.Thread(target=self._run, name="fuse-notify", daemon=True)
        self._thread.start()

    def inval_inode(self, ino: int) -> None:
        if self.fd >= 0:
            self._queue.put(ino)

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)

    def _run(self) -> None:
        while (ino := self._queue.get()) is not None:
            try:
                os.write(self.fd, _frame(0, NOTIFY_INVAL_INODE, struct.pack("<Qqq", ino, 0, 0)))
            except OSError as e:  # ENOENT: the kernel does not hold it any more
                if e.errno in (errno.ENODEV, errno.EBADF):
                    return


class KernelTransport:
    """Mount, serve until unmounted, close: the shape lifecycle.py drives."""

    def __init__(self, fs) -> None:
        self.fs = fs
        self.notifier = _Notifier()
        self.req = Requests(fs, self.notifier, auto_inval=True)
        self.cfg = fs.snap.cfg
        self.devfd = -1
        self.mnt = ""
        self.device: str | None = None
        self.debug = False
        self.session: _kernel.Session | None = None
        self.minor = 0
        self._passthrough: int | None = None  # O_ACCMODE values passed through, once INIT allows
        self._backing: dict[int, list[int]] = {}  # nodeid -> [backing id, opens]
        self._cached_opens: dict[int, int] = {}  # nodeid -> opens without passthrough
        self._pt_lock = threading.Lock()
        self._handlers = {
            Op.LOOKUP: self._lookup,
            Op.FORGET: self._forget,
            Op.BATCH_FORGET: self._batch_forget,
            Op.GETATTR: self._getattr,
            Op.SETATTR: self._setattr,
            Op.READLINK: self._readlink,
            Op.SYMLINK: self._symlink,
            Op.MKNOD: self._mknod,
            Op.MKDIR: self._mkdir,
            Op.UNLINK: self._unlink,
            Op.RMDIR: self._rmdir,
            Op.RENAME: self._rename,
            Op.RENAME2: self._rename2,
            Op.LINK: self._link,
            Op.OPEN: self._open,
            Op.READ: self._read,
            Op.WRITE: self._write,
            Op.STATFS: self._statfs,
            Op.RELEASE: self._release,
            Op.FSYNC: self._fsync,
            Op.SETXATTR: self._setxattr,
            Op.GETXATTR: self._getxattr,
            Op.LISTXATTR: self._listxattr,
            Op.REMOVEXATTR: self._removexattr,
            Op.FLUSH: self._flush,
            Op.OPENDIR: self._opendir,
            Op.READDIR: self._readdir,
            Op.READDIRPLUS: self._readdirplus,
            Op.RELEASEDIR: self._releasedir,
            Op.FSYNCDIR: self._fsyncdir,
            Op.ACCESS: self._access,
            Op.CREATE: self._create,
            Op.INTERRUPT: self._ignore,
            Op.DESTROY: self._empty,
            Op.IOCTL: self._ioctl,
            Op.FALLOCATE: self._fallocate,
            Op.LSEEK: self._lseek,
            Op.COPY_FILE_RANGE: self._copy_file_range,
            Op.COPY_FILE_RANGE_64: self._copy_file_range,
            Op.SYNCFS: self._syncfs,
            Op.INIT: self._empty,
        }

    # ------------------------------------------------------------ lifecycle
    def mount(self, mnt: str, opts: set[str]) -> None:
        # Resolved now: once mounted, resolving it would ask this very daemon.
        self.mnt = mnt = os.path.realpath(mnt)
        generic = dict(o.partition("=")[::2] for o in opts)
        fsname = generic.pop("fsname", "mergerfs").replace("\\,", ",")
        subtype = generic.pop("subtype", "mergerfs")
        if os.geteuid() == 0:
            self.devfd = self._mount_root(mnt, fsname, subtype, generic)
        else:
            self.devfd = self._mount_fusermount(mnt, fsname, subtype, opts)
        self.device = mounted_device(mnt)
        self.session = _kernel.Session(self.devfd, self.req.table)
        self.session.slow = self.dispatch
        self.session.trace = self.debug = "debug" in generic
        self._init()
        self._fast_path()
        self.fs.listeners.append(self._fast_path)
        self.notifier.start(self.devfd)

    def _mount_root(self, mnt: str, fsname: str, subtype: str, generic: dict) -> int:
        flags = _MS["nosuid"] | _MS["nodev"]  # as libfuse, unless suid/dev are asked for
        data = []
        for k, v in generic.items():
            if k in _MS:
                flags |= _MS[k]
            elif k in _MS_UNSET:
                flags &= ~_MS[_MS_UNSET[k]]
            elif k in ("allow_other", "default_permissions"):
                data.append(k)
            elif k in ("max_read", "blksize"):
                data.append(f"{k}={v}")
        st = os.stat(mnt)
        fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        data[:0] = [
            f"fd={fd}",
            f"rootmode={S.S_IFMT(st.st_mode):o}",
            f"user_id={os.getuid()}",
            f"group_id={os.getgid()}",
        ]
        try:
            _kernel.mount(fsname, mnt, "fuse." + subtype, flags, ",".join(data))
        except OSError:
            os.close(fd)
            raise
        return fd

    def _mount_fusermount(self, mnt: str, fsname: str, subtype: str, opts: set[str]) -> int:
        """Non-root: fusermount3 mounts and hands the /dev/fuse fd back over a socket."""
        import socket  # noqa: PLC0415 - only this path: each costs the daemon ~0.7 MiB
        import subprocess  # noqa: PLC0415

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        keep = [o for o in opts if not o.startswith(("fsname=", "subtype="))]
        keep += [f"fsname={fsname}", f"subtype={subtype}"]
        try:
            env = dict(os.environ, _FUSE_COMMFD=str(theirs.fileno()))
            proc = subprocess.run(
                ["fusermount3", "-o", ",".join(keep), "--", mnt],
                env=env,
                pass_fds=(theirs.fileno(),),
                stderr=subprocess.PIPE,
                check=False,
            )
            theirs.close()
            if proc.returncode != 0:
                raise OSError(errno.EPERM, proc.stderr.decode(errors="replace").strip() or "fusermount3 failed")
            _, fds, _, _ = socket.recv_fds(ours, 1, 1)
            if not fds:
                raise OSError(errno.EIO, "fusermount3 handed back no /dev/fuse fd")
            os.set_inheritable(fds[0], False)
            return fds[0]
        finally:
            ours.close()
            theirs.close()

    def _init(self) -> None:
        """Answer the kernel's INIT with what both sides support."""
        data = os.read(self.devfd, 1 << 16)
        h = Request(data)
        if h.opcode != Op.INIT:
            raise OSError(errno.EPROTO, f"expected INIT, got opcode {h.opcode}")
        major, minor, max_readahead, flags = struct.unpack_from("<IIII", data, IN_HEADER.size)
        if major != KERNEL_VERSION:
            # a newer major: tell it ours and fail; an older one we cannot speak
            _send(self.devfd, _frame(h.unique, 0, struct.pack("<II", KERNEL_VERSION, KERNEL_MINOR).ljust(24, b"\0")))
            raise OSError(errno.EPROTO, f"kernel FUSE protocol {major}.{minor} unsupported")
        if flags & INIT_EXT and len(data) >= IN_HEADER.size + 20:
            flags |= struct.unpack_from("<I", data, IN_HEADER.size + 16)[0] << 32
        cfg = self.cfg
        pages = max(1, min(cfg["fuse-msg-size"], _max_pages_limit()))
        want = ATOMIC_O_TRUNC | BIG_WRITES | AUTO_INVAL_DATA | PARALLEL_DIROPS | MAX_PAGES | ASYNC_DIO | INIT_EXT
        if cfg["async-read"]:
            want |= ASYNC_READ
        if cfg["export-support"]:
            want |= EXPORT_SUPPORT
        if cfg["posix-acl"]:
            want |= POSIX_ACL
        if cfg["cache.symlinks"]:
            want |= CACHE_SYMLINKS
        if cfg["readdirplus"]:
            want |= DO_READDIRPLUS | READDIRPLUS_AUTO
        if cfg["direct-io-allow-mmap"]:
            want |= DIRECT_IO_ALLOW_MMAP
        if cfg["handle-killpriv-v2"]:
            # we clear setuid/setgid when the kernel flags a write, truncate or
            # O_TRUNC open; otherwise it sends a SETATTR of its own first
            want |= HANDLE_KILLPRIV_V2
        pt = cfg["passthrough.io"]
        if pt != "off":
            want |= PASSTHROUGH
        elif cfg["cache.writeback"]:
            want |= WRITEBACK_CACHE  # the kernel refuses both at once
        got = want & flags
        self.minor = min(minor, KERNEL_MINOR)
        if got & PASSTHROUGH:
            self._passthrough = {"ro": {os.O_RDONLY}, "wo": {os.O_WRONLY}, "rw": {os.O_RDONLY, os.O_WRONLY, os.O_RDWR}}[
                pt
            ]
        elif pt != "off":
            log.warning("passthrough.io=%s: the kernel does not offer passthrough; normal I/O", pt)
        max_write = pages * PAGE
        out = INIT_OUT.pack(
            KERNEL_VERSION,
            self.minor,
            max_readahead,
            got & 0xFFFFFFFF,
            64,
            48,
            max_write,
            1,
            pages,
            0,
            got >> 32,
            cfg["passthrough.max-stack-depth"] if got & PASSTHROUGH else 0,
            0,
        )
        _send(self.devfd, _frame(h.unique, 0, out if self.minor >= 23 else out[:24]))
        assert self.session is not None
        self.session.configure(max_write, self.minor)
        log.debug("INIT: kernel %d.%d offered %#x, negotiated %#x, max_write %d", major, minor, flags, got, max_write)

    def _fast_path(self, *_changed) -> None:
        """Let the compiled loop answer LOOKUP, GETATTR, GETXATTR, SETATTR and
        UNLINK while the config has the plain shape it implements: a first-found
        search, epall actions, and attributes reported as the branch's lstat
        gives them (no symlink following, symlinkify or uid/gid/umask
        overrides). Otherwise Python answers them. Called again after every
        config change."""
        assert self.session is not None
        cfg = self.fs.snap.cfg
        plain = (
            cfg.policy("getattr") == "ff"
            and cfg["follow-symlinks"] == "never"
            and not cfg["symlinkify"]
            and self.req.force is None
        )
        if not plain:
            self.session.set_fast(None)
            return
        entry, attr, negative = self.req.timeouts()
        branches = self.fs.snap.branches
        epall = [cfg.policy(func) == "epall" for func in ("chmod", "chown", "utimens", "unlink")]
        self.session.set_fast(
            [os.fsencode(b.path) for b in branches],
            [b.mode == "RO" for b in branches],
            inodes.mode_code(cfg["inodecalc"]),
            entry,
            attr,
            negative,
            actions=sum(bit for bit, on in zip(_ACTIONS, epall) if on),
            getxattr=cfg["xattr"] == "passthrough" and cfg.policy("getxattr") == "ff",
            capability=cfg["security-capability"],
            posix_acl=cfg["posix-acl"],
            creds_fixed=not ugid.acts_as_caller(),
            pid_bound=cfg["proxy-ioprio"],
        )

    def serve(self, workers: int) -> None:
        """Run ``workers`` threads, one per (cloned) fd, until the mount goes away."""
        assert self.session is not None
        fds = [self.devfd]
        for _ in range(workers - 1):
            try:
                fds.append(_kernel.clone_fd(self.devfd))
            except OSError:
                fds.append(self.devfd)  # no /dev/fuse access (fusermount): share the fd
        errors: list[BaseException] = []

        def work(fd: int) -> None:
            try:
                self.session.serve(fd)
            except OSError as e:
                if e.errno not in (errno.ENODEV, errno.EBADF):
                    errors.append(e)

        threads = [threading.Thread(target=work, args=(fd,), name=f"fuse-{i}", daemon=True) for i, fd in enumerate(fds)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for fd in set(fds) - {self.devfd}:
            os.close(fd)
        if errors:
            raise errors[0]

    def close(self) -> None:
        self.notifier.stop()
        # Only our own mount: after lazy-umount-mountpoint another pool may sit there.
        if self.devfd >= 0 and self.device and mounted_device(self.mnt) == self.device:
            unmount(self.mnt)
        if self.devfd >= 0:
            os.close(self.devfd)
            self.devfd = -1

    # ------------------------------------------------------------ replies
    def dispatch(self, data: bytes) -> bytes | None:
        """Decode, act as the caller, answer: the whole reply, or None (no
        reply). Never raises."""
        h = Request(data)
        if self.debug:  # libfuse's -d trace, which scripts and users grep
            name = Op(h.opcode).name if h.opcode in self._handlers else "?"
            print(
                f"unique: {h.unique}, opcode: {name} ({h.opcode}), nodeid: {h.nodeid}, "
                f"insize: {len(data)}, pid: {h.pid}",
                file=sys.stderr,
                flush=True,
            )
        handler = self._handlers.get(h.opcode, self._enosys)
        try:
            # every request with a caller, answered or not: the compiled loop
            # takes this thread's identity to be the last such request's
            if h.uid != 0xFFFFFFFF and h.opcode not in _NO_REPLY:
                ugid.switch(h.uid, h.gid, h.pid)
            payload = handler(h, data[IN_HEADER.size :])
        except OSError as e:
            err = e.errno or errno.EIO
        except Exception:
            log.exception("unexpected error in opcode %d (nodeid %d)", h.opcode, h.nodeid)
            err = errno.EIO
        else:
            if h.opcode in _NO_REPLY:
                return None
            return _frame(h.unique, 0, payload or b"")
        return None if h.opcode in _NO_REPLY else _frame(h.unique, -err)

    # ------------------------------------------------------------ encoding
    def _entry_out(self, ino: int, st, cacheable: bool = True) -> bytes:
        entry, attr, _ = self.req.timeouts()
        if not cacheable:
            entry = attr = 0
        return _kernel.entry_out(ino, st, entry, attr)

    def _attr_out(self, ino: int, st) -> bytes:
        return _kernel.attr_out(ino, st, self.req.timeouts()[1])

    def _pyfh(self, fh: int) -> int:
        assert self.session is not None
        return self.session.pyfh(fh)

    # ------------------------------------------------------------ handlers
    @staticmethod
    def _ignore(h, body):
        return None

    @staticmethod
    def _empty(h, body):
        return b""

    @staticmethod
    def _enosys(h, body):
        raise OSError(errno.ENOSYS, "not implemented")

    def _lookup(self, h, body):
        try:
            return self._entry_out(*self.req.lookup(h.nodeid, body[:-1]))
        except OSError as e:
            neg = self.req.timeouts()[2]
            if e.errno == errno.ENOENT and neg:
                return ENTRY_OUT.pack(0, 0, neg, 0, 0, 0)
            raise

    def _forget(self, h, body):
        self.req.forget(h.nodeid, struct.unpack_from("<Q", body)[0])

    def _batch_forget(self, h, body):
        (count,) = struct.unpack_from("<I", body)
        for i in range(count):
            ino, n = struct.unpack_from("<QQ", body, 8 + 16 * i)
            self.req.forget(ino, n)

    def _getattr(self, h, body):
        flags, _, fh = struct.unpack_from("<IIQ", body)
        return self._attr_out(h.nodeid, self.req.getattr(h.nodeid, self._pyfh(fh) if flags & 1 else None))

    def _setattr(self, h, body):
        (valid, _, fh, size, _, atime, mtime, _, atimensec, mtimensec, _, mode, _, uid, gid, _) = (
            SETATTR_IN.unpack_from(body)
        )
        now = time.time_ns()
        at = now if valid & FATTR_ATIME_NOW else atime * 1_000_000_000 + atimensec
        mt = now if valid & FATTR_MTIME_NOW else mtime * 1_000_000_000 + mtimensec
        st = self.req.setattr(
            h.nodeid,
            self._pyfh(fh) if valid & FATTR_FH else None,
            mode=mode if valid & FATTR_MODE else None,
            uid=uid if valid & FATTR_UID else None,
            gid=gid if valid & FATTR_GID else None,
            size=size if valid & FATTR_SIZE else None,
            atime=at if valid & FATTR_ATIME else None,
            mtime=mt if valid & FATTR_MTIME else None,
            now_hint=bool(valid & FATTR_ATIME_NOW and valid & FATTR_MTIME_NOW),
            kill_priv=bool(valid & FATTR_KILL_SUIDGID),
        )
        return self._attr_out(h.nodeid, st)

    def _readlink(self, h, body):
        return self.req.readlink(h.nodeid)

    def _symlink(self, h, body):
        name, i = _cstr(body)
        target, _ = _cstr(body, i)
        return self._entry_out(*self.req.symlink(h.nodeid, name, target))

    def _mknod(self, h, body):
        mode, rdev = struct.unpack_from("<II", body)
        name, _ = _cstr(body, 16 if self.minor >= 12 else 8)
        return self._entry_out(*self.req.mknod(h.nodeid, name, mode, _rdev_decode(rdev)))

    def _mkdir(self, h, body):
        mode, _ = struct.unpack_from("<II", body)
        return self._entry_out(*self.req.mkdir(h.nodeid, _cstr(body, 8)[0], mode))

    def _unlink(self, h, body):
        self.req.unlink(h.nodeid, body[:-1])

    def _rmdir(self, h, body):
        self.req.rmdir(h.nodeid, body[:-1])

    def _rename(self, h, body):
        (newdir,) = struct.unpack_from("<Q", body)
        old, i = _cstr(body, 8)
        new, _ = _cstr(body, i)
        self.req.rename(h.nodeid, old, newdir, new)

    def _rename2(self, h, body):
        newdir, flags = struct.unpack_from("<QI", body)
        old, i = _cstr(body, 16)
        new, _ = _cstr(body, i)
        self.req.rename(h.nodeid, old, newdir, new, flags)

    def _link(self, h, body):
        (oldnodeid,) = struct.unpack_from("<Q", body)
        ino, st, cacheable = self.req.link(oldnodeid, h.nodeid, _cstr(body, 8)[0])
        return self._entry_out(ino, st, cacheable)

    # ------------------------------------------------------------ files
    def _opened(self, nodeid: int, pyfh: int, cache: int, flags: int) -> bytes:
        """Register an open file with the compiled loop; the open reply."""
        assert self.session is not None
        cfg = self.fs.snap.cfg
        fd = -1 if cfg["nullrw"] else self.req.fd(pyfh)
        if cache == DIRECT:
            oflags = FOPEN_DIRECT_IO | (FOPEN_PARALLEL_DIRECT_WRITES if cfg["parallel-direct-writes"] else 0)
        else:
            oflags = FOPEN_KEEP_CACHE if cache == KEEP else 0
        flush = cfg["flush-on-close"]
        if flush == "never" or (flush == "opened-for-write" and flags & os.O_ACCMODE == os.O_RDONLY):
            oflags |= FOPEN_NOFLUSH
        backing = self._backing_for(nodeid, fd, flags) if fd >= 0 else 0
        if backing:
            oflags = (oflags & ~(FOPEN_DIRECT_IO | FOPEN_KEEP_CACHE)) | FOPEN_PASSTHROUGH
        try:
            fh = self.session.add(pyfh, fd, 1 if backing else 0)
        except OSError:
            self._drop_backing(nodeid, bool(backing))
            self.req.release(pyfh)
            raise
        return OPEN_OUT.pack(fh, oflags, backing)

    def _backing_for(self, nodeid: int, fd: int, flags: int) -> int:
        """A passthrough backing id for this open, or 0 for normal I/O. Every
        passthrough open of one inode must share its backing file (the kernel
        refuses a second), and an inode open without passthrough cannot get it."""
        with self._pt_lock:
            held = self._backing.get(nodeid)
            if held is None and (
                self._passthrough is None
                or flags & os.O_ACCMODE not in self._passthrough
                or self._cached_opens.get(nodeid)
            ):
                self._cached_opens[nodeid] = self._cached_opens.get(nodeid, 0) + 1
                return 0
            if held is None:
                try:
                    backing = self._backing_file(fd)
                except OSError as e:
                    # As non-root (or on a branch the kernel cannot stack on), the
                    # ioctl is refused: normal I/O, never a failed open.
                    log.info("passthrough refused (%s): normal I/O", os.strerror(e.errno or 0))
                    self._passthrough = None if e.errno == errno.EPERM else self._passthrough
                    self._cached_opens[nodeid] = self._cached_opens.get(nodeid, 0) + 1
                    return 0
                held = self._backing[nodeid] = [backing, 0]
            held[1] += 1
            return held[0]

    def _backing_file(self, fd: int) -> int:
        """Register the branch file for passthrough, opened read-write when the
        file allows it: later opens of the inode (any mode) share this one."""
        try:
            with ugid.as_root():
                rw = os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            rw = os.dup(fd)
        try:
            return _kernel.backing_open(self.devfd, rw)
        finally:
            os.close(rw)

    def _drop_backing(self, nodeid: int, passthrough: bool) -> None:
        with self._pt_lock:
            if not passthrough:
                n = self._cached_opens.get(nodeid, 0) - 1
                if n > 0:
                    self._cached_opens[nodeid] = n
                else:
                    self._cached_opens.pop(nodeid, None)
                return
            held = self._backing.get(nodeid)
            if held is None:
                return
            held[1] -= 1
            if held[1] > 0:
                return
            del self._backing[nodeid]
        try:
            _kernel.backing_close(self.devfd, held[0])
        except OSError as e:
            log.warning("passthrough backing %d close: %s", held[0], os.strerror(e.errno or 0))

    def _open(self, h, body):
        flags, open_flags = struct.unpack_from("<II", body)
        pyfh, cache = self.req.open(h.nodeid, flags, h.pid)
        if open_flags & OPEN_KILL_SUIDGID:  # an O_TRUNC open by a user without CAP_FSETID
            self.req.kill_priv(pyfh)
        return self._opened(h.nodeid, pyfh, cache, flags)

    def _create(self, h, body):
        flags, mode, _, _ = struct.unpack_from("<IIII", body)
        pyfh, ino, st, cache = self.req.create(h.nodeid, _cstr(body, 16)[0], mode, flags, h.pid)
        return self._entry_out(ino, st) + self._opened(ino, pyfh, cache, flags)

    def _read(self, h, body):
        fh, off, size = struct.unpack_from("<QQI", body)
        return self.req.read(self._pyfh(fh), off, size)

    def _write(self, h, body):
        fh, off, size, flags = struct.unpack_from("<QQII", body)
        start = 40 if self.minor >= 9 else 24
        if flags & WRITE_KILL_SUIDGID:
            self.req.kill_priv(self._pyfh(fh))
        n = self.req.write(self._pyfh(fh), off, memoryview(body)[start : start + size])
        return struct.pack("<II", n, 0)

    def _flush(self, h, body):
        self.req.flush(self._pyfh(struct.unpack_from("<Q", body)[0]))

    def _release(self, h, body):
        (fh,) = struct.unpack_from("<Q", body)
        assert self.session is not None
        pyfh, passthrough = self.session.remove(fh)
        if not pyfh:
            raise OSError(errno.EBADF, "unknown handle")
        self._drop_backing(h.nodeid, bool(passthrough))
        self.req.release(pyfh)

    def _fsync(self, h, body):
        fh, flags = struct.unpack_from("<QI", body)
        self.req.fsync(self._pyfh(fh), bool(flags & 1))

    def _fallocate(self, h, body):
        fh, off, length, mode = struct.unpack_from("<QQQI", body)
        self.req.fallocate(self._pyfh(fh), mode, off, length)

    def _lseek(self, h, body):
        fh, off, whence = struct.unpack_from("<QqI", body)
        return struct.pack("<q", self.req.lseek(self._pyfh(fh), off, whence))

    def _copy_file_range(self, h, body):
        fh_in, off_in, _, fh_out, off_out, length, flags = struct.unpack_from("<QQQQQQQ", body)
        n = self.req.copy_file_range(
            self._pyfh(fh_in), off_in, self._pyfh(fh_out), off_out, min(length, 1 << 30), flags
        )
        return struct.pack("<Q", n) if h.opcode == Op.COPY_FILE_RANGE_64 else struct.pack("<II", n, 0)

    def _ioctl(self, h, body):
        fh, flags, cmd, _, in_size, out_size = struct.unpack_from("<QIIQII", body)
        if flags & (1 << 4):  # FUSE_IOCTL_DIR
            raise OSError(errno.ENOTTY, "no directory ioctls")
        result, out = self.req.ioctl(self._pyfh(fh), cmd, body[32 : 32 + in_size], out_size)
        return struct.pack("<iIII", result, 0, 0, 0) + out

    # ------------------------------------------------------------ dirs
    def _opendir(self, h, body):
        fh = self.req.opendir(h.nodeid)
        oflags = FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE if self.fs.snap.cfg["cache.readdir"] else 0
        return OPEN_OUT.pack(fh, oflags, 0)

    def _readdir(self, h, body):
        fh, off, size = struct.unpack_from("<QQI", body)
        return _kernel.pack_dirents(self.req.readdir(fh, off), off, size)

    def _readdirplus(self, h, body):
        fh, off, size = struct.unpack_from("<QQI", body)
        entries = self.req.readdir(fh, off)
        used = 0
        count = 0
        for i in range(off, len(entries)):  # how many fit: each one found counts a lookup
            rec = ENTRY_OUT.size + 24 + len(entries[i][0])
            rec += -rec % 8
            if used + rec > size:
                break
            used += rec
            count += 1
        out = []
        for nxt, name, dtype, ino, st in self.req.readdirplus(fh, off, count):
            rec = ENTRY_OUT.size + 24 + len(name)
            pad = -rec % 8
            if st is None:
                out.append(ENTRY_OUT.pack(0, 0, 0, 0, 0, 0))
                out.append(DIRENT.pack(0, nxt, len(name), dtype))
            else:
                out.append(self._entry_out(ino, st))
                out.append(DIRENT.pack(ino, nxt, len(name), S.S_IFMT(st.st_mode) >> 12))
            out.append(name + b"\0" * pad)
        return b"".join(out)

    def _releasedir(self, h, body):
        self.req.releasedir(struct.unpack_from("<Q", body)[0])

    def _fsyncdir(self, h, body):
        fh, flags = struct.unpack_from("<QI", body)
        self.req.fsyncdir(fh, bool(flags & 1))

    def _statfs(self, h, body):
        v = self.req.statfs(h.nodeid)
        return KSTATFS.pack(
            v["f_blocks"],
            v["f_bfree"],
            v["f_bavail"],
            v["f_files"],
            v["f_ffree"],
            v["f_bsize"],
            v["f_namemax"],
            v["f_frsize"],
            0,
        )

    def _access(self, h, body):
        self.req.access(h.nodeid, struct.unpack_from("<I", body)[0])

    def _syncfs(self, h, body):
        self.req.syncfs()

    # ------------------------------------------------------------ xattrs
    def _setxattr(self, h, body):
        size, flags = struct.unpack_from("<II", body)
        name, i = _cstr(body, 8)
        self.req.setxattr(h.nodeid, name, body[i : i + size], flags)

    def _getxattr(self, h, body):
        (size,) = struct.unpack_from("<I", body)
        return self._sized(size, self.req.getxattr(h.nodeid, _cstr(body, 8)[0]))

    def _listxattr(self, h, body):
        (size,) = struct.unpack_from("<I", body)
        return self._sized(size, b"".join(n + b"\0" for n in self.req.listxattr(h.nodeid)))

    @staticmethod
    def _sized(size: int, value: bytes) -> bytes:
        """A size probe (0) gets the length; a short buffer ERANGE."""
        if size == 0:
            return struct.pack("<II", len(value), 0)
        if len(value) > size:
            raise OSError(errno.ERANGE, "buffer too small")
        return value

    def _removexattr(self, h, body):
        self.req.removexattr(h.nodeid, body[:-1])


def _max_pages_limit() -> int:
    try:
        with open("/proc/sys/fs/fuse/max_pages_limit") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 256
