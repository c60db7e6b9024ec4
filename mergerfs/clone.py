"""Copies that keep metadata, for every place that moves data between branches.

:func:`clonefile`: a file copied to a temporary name beside its target, given
the source's owner, mode, xattrs and times, then renamed over the target
(moveonenospc, ``link-cow``, the tools' mover). :func:`clonepath`: a
directory path recreated on another branch, each directory a copy of its
source (creates, rename and link, moveonenospc, the tools).

Stateless; any thread. The caller chooses the identity (the daemon moves
files as root, the tools as whoever runs them).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as S
from collections.abc import Callable

from mergerfs import _fastpath
from mergerfs.branches import Branch
from mergerfs.errors import oserror

CHUNK = 1 << 20


def copy_xattrs(src: str, dst: str) -> None:
    """Best effort: a branch without xattr support must not fail a clone or move."""
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for name in names:
        try:
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
        except OSError:
            pass


def copy_data(src: int, dst: int, size: int, each: Callable[[bytes], None] | None = None) -> None:
    """``size`` bytes from fd ``src`` to fd ``dst`` (same offsets), in the kernel
    where it can. ``each(chunk)``: see every chunk written (the data then
    passes through here)."""
    off = 0
    while off < size:
        n = 0
        if each is None:
            try:
                n = os.copy_file_range(src, dst, size - off, off, off)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
        if n == 0:
            chunk = _fastpath.pread(src, min(CHUNK, size - off), off)
            if not chunk:
                break
            n = _fastpath.pwrite(dst, chunk, off)
            if each is not None:
                each(chunk)
        off += n


def clonefile(
    src: int,
    st: os.stat_result,
    tmp: str,
    dst: str,
    xattrs_from: str,
    each: Callable[[bytes], None] | None = None,
    check: Callable[[int], None] | None = None,
) -> None:
    """Copy the open file ``src`` (``st``: its stat) to ``tmp``, give the copy
    ``st``'s owner, mode and times and ``xattrs_from``'s xattrs, and rename it
    to ``dst``. ``each``: see :func:`copy_data`; ``check(fd)`` may refuse the
    finished copy (raise) before the rename. ``tmp`` is gone after a failure."""
    out = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            copy_data(src, out, st.st_size, each)
            os.fchown(out, st.st_uid, st.st_gid)
            copy_xattrs(xattrs_from, tmp)  # while still 0600: a non-root owner may set user.* xattrs
            os.fchmod(out, S.S_IMODE(st.st_mode))  # after the chown, which dropped setuid/setgid
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
            if check is not None:
                check(out)
        finally:
            os.close(out)
        os.rename(tmp, dst)
    except BaseException:
        remove_quietly(tmp)
        raise


def clonepath(
    dst: Branch,
    relpath: str,
    source: Callable[[str], tuple[Branch, os.stat_result]],
    probe,
    privileged: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> None:
    """Create ``relpath`` and its missing parents on branch ``dst``, each a copy
    (mode, owner, xattrs, times) of the directory ``source(relpath)`` names as
    ``(branch, stat)``. ``probe`` (``exists``, ``forget``) says what ``dst``
    has; ``privileged()`` wraps the creation of each directory."""
    if relpath == "/" or probe.exists(dst, relpath):
        return
    clonepath(dst, relpath.rpartition("/")[0] or "/", source, probe, privileged)
    src, st = source(relpath)
    if not S.S_ISDIR(st.st_mode):
        raise oserror(errno.ENOTDIR)
    path = dst.full(relpath)
    with privileged():
        try:
            os.mkdir(path, S.S_IMODE(st.st_mode))
        except FileExistsError:
            return
        os.lchown(path, st.st_uid, st.st_gid)
        os.chmod(path, S.S_IMODE(st.st_mode))  # mkdir applied the umask / dropped setgid
        copy_xattrs(src.full(relpath), path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    probe.forget(dst, relpath)


def remove_quietly(path: str) -> None:
    """Remove a file or an empty directory if it is there."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            os.rmdir(path)
        else:
            os.unlink(path)
    except OSError:
        pass
