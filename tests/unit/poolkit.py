"""Kernel-free pools for the unit tier: a :class:`mergerfs.fs.FileSystem` over
temporary branch directories, a plain directory as the native oracle, and the
few syscalls ``os`` lacks (for the oracle side, independent of ``_fastpath``).

Nothing here mounts FUSE. :func:`tmpfs` mounts small tmpfs branches (ENOSPC,
per-device statfs) and skips the test where mounting is not allowed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mergerfs import ugid
from mergerfs.cli import parse_argv
from mergerfs.fs import FileSystem

_libc = ctypes.CDLL(None, use_errno=True)
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
_libc.linkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
AT_FDCWD = -100
AT_SYMLINK_FOLLOW = 0x400
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02


def _check(rc: int) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def renameat2(old: str, new: str, flags: int) -> None:
    """The native oracle's renameat2(2), straight from libc."""
    _check(_libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags))


def link_fd(fd: int, new: str) -> None:
    """linkat(AT_FDCWD, "/proc/self/fd/FD", AT_FDCWD, new, AT_SYMLINK_FOLLOW): an
    O_TMPFILE file's name, as tools give it (os.link would call link(2))."""
    _check(_libc.linkat(AT_FDCWD, f"/proc/self/fd/{fd}".encode(), AT_FDCWD, os.fsencode(new), AT_SYMLINK_FOLLOW))


def fallocate(fd: int, mode: int, off: int, length: int) -> None:
    _check(_libc.fallocate(fd, mode, off, length))


def err_of(fn: Callable[..., Any], *args: Any, **kw: Any) -> int:
    """The errno ``fn`` fails with, 0 if it succeeds."""
    try:
        fn(*args, **kw)
    except OSError as e:
        return e.errno or -1
    return 0


def outcome(fn: Callable[..., Any], *args: Any, **kw: Any) -> tuple[str, Any]:
    """``("ok", result)`` or ``("err", errno name)``: comparable across pool and native."""
    try:
        return "ok", fn(*args, **kw)
    except OSError as e:
        return "err", errno.errorcode.get(e.errno or 0, str(e.errno))


def make_config(branches: list[str], options: str = "", mountpoint: str = "/nonexistent-mnt"):
    """A config as ``mergerfs -o OPTIONS BRANCHES MOUNTPOINT`` parses it.

    ``minfreespace=0`` comes first (the 4G default would refuse small test
    filesystems); ``options`` may override it."""
    opts = "minfreespace=0" + ("," + options if options else "")
    cfg, *_ = parse_argv(["-o", opts, ":".join(branches), mountpoint])
    return cfg


class Pool:
    """A FileSystem over branch directories, and a native directory beside it."""

    def __init__(self, root: str, n: int = 2, options: str = "", branches: list[str] | None = None) -> None:
        self.root = root
        if branches is None:
            branches = [os.path.join(root, f"b{i}") for i in range(n)]
            for b in branches:
                os.makedirs(b, exist_ok=True)
        self.branches = branches
        self.native = os.path.join(root, "native")
        os.makedirs(self.native, exist_ok=True)
        self.options = options
        self.cfg = make_config(branches, options, os.path.join(root, "mnt"))
        self.fs = FileSystem(self.cfg)

    # -- branch side
    def b(self, i: int, rel: str = "/") -> str:
        """``rel`` on branch ``i``."""
        return self.branches[i] + ("" if rel == "/" else rel)

    def n(self, rel: str = "/") -> str:
        """``rel`` in the native directory."""
        return self.native + ("" if rel == "/" else rel)

    def where(self, rel: str) -> list[int]:
        """Indexes of the branches holding ``rel``."""
        return [i for i in range(len(self.branches)) if os.path.lexists(self.b(i, rel))]

    def put(self, i: int, rel: str, data: bytes | None = b"", mode: int | None = None) -> str:
        """Create ``rel`` on branch ``i`` (a directory if ``data`` is None), parents included."""
        path = self.b(i, rel)
        if data is None:
            os.makedirs(path, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        if mode is not None:
            os.chmod(path, mode)
        return path

    def both(self, rel: str, data: bytes | None = b"", branches: tuple[int, ...] = (0,)) -> None:
        """Create ``rel`` on the given branches and natively (same data)."""
        for i in branches:
            self.put(i, rel, data)
        native = self.n(rel)
        if data is None:
            os.makedirs(native, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(native), exist_ok=True)
            with open(native, "wb") as f:
                f.write(data)

    def content(self, rel: str) -> bytes:
        """The pool file's bytes, read through open/read/release."""
        h = self.fs.open(rel, os.O_RDONLY)
        try:
            out = b""
            while True:
                chunk = self.fs.read(h, len(out), 1 << 16)
                if not chunk:
                    return out
                out += chunk
        finally:
            self.fs.release(h)

    def wipe(self) -> None:
        """Empty every branch and the native directory (one pool, many examples)."""
        for d in [*self.branches, self.native]:
            for name in os.listdir(d):
                p = os.path.join(d, name)
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p)
                else:
                    os.unlink(p)


@contextlib.contextmanager
def opened(fs: FileSystem, rel: str, flags: int = os.O_RDONLY, mode: int | None = None) -> Iterator[Any]:
    """A pool handle (``fs.create`` if ``mode`` is given), released afterwards."""
    h = fs.open(rel, flags) if mode is None else fs.create(rel, flags, mode)
    try:
        yield h
    finally:
        fs.release(h)


def as_user(uid: int, gid: int, fn: Callable[[], Any], groups: tuple[int, ...] | None = None) -> Any:
    """``fn()`` in a fresh thread acting as ``uid:gid`` (mergerfs.ugid, as the
    transports do for a request): its identity dies with the thread."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            if groups is None:
                ugid.switch(uid, gid)
            else:
                ugid.adopt((uid, gid, groups))
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            box["error"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextlib.contextmanager
def tmpfs(*sizes_kib: int) -> Iterator[list[str]]:
    """Fresh tmpfs mounts of the given sizes (KiB); skips the test if mount(8) is refused."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    base = tempfile.mkdtemp(prefix="mfs-unit-tmpfs-")
    mounted: list[str] = []
    try:
        for i, kib in enumerate(sizes_kib):
            path = os.path.join(base, f"t{i}")
            os.mkdir(path)
            r = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={kib}k,mode=0755", "tmpfs", path], capture_output=True
            )
            if r.returncode != 0:
                pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
            mounted.append(path)
        yield mounted
    finally:
        for path in mounted:
            if subprocess.run(["umount", path], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", path], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def slurp(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def touch(path: str) -> None:
    with open(path, "wb"):
        pass


def _entry(path: str) -> tuple:
    """What a branch copy and its native twin must share."""
    st = os.lstat(path)
    xattrs = sorted((k, os.getxattr(path, k, follow_symlinks=False)) for k in os.listxattr(path, follow_symlinks=False))
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(path), xattrs)
    if stat.S_ISDIR(st.st_mode):
        return ("dir", stat.S_IMODE(st.st_mode), xattrs)
    return ("file", stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_nlink, slurp(path), xattrs)


def stale_copies(p: Pool) -> list[str]:
    """Branch entries that disagree with the native tree: a name natively gone, a
    copy with other content or metadata, a regular file on two branches. The
    merged view hides such leftovers until the copy in front goes away."""
    bad = []
    files: dict[str, int] = {}
    for i, root in enumerate(p.branches):
        for dirpath, dirs, names in os.walk(root):
            for name in dirs + names:
                path = os.path.join(dirpath, name)
                rel = path[len(root) :]
                native = p.n(rel)
                if not os.path.lexists(native) or _entry(path) != _entry(native):
                    bad.append(f"branch {i}: {rel}")
                elif stat.S_ISREG(os.lstat(path).st_mode):
                    files[rel] = files.get(rel, 0) + 1
    return bad + [f"{rel} on {k} branches" for rel, k in files.items() if k > 1]
