"""chmod, chown, truncate, utimens (action functions, on every branch the
policy picks) and their f* variants on an open file."""

from __future__ import annotations

import os

from mergerfs.ops.core import Core, Handle


class AttrOps(Core):
    def chmod(self, relpath: str, mode: int) -> None:
        self._acting(self.snap, "chmod", relpath, lambda p: os.chmod(p, mode))

    def chown(self, relpath: str, uid: int, gid: int) -> None:
        self._acting(self.snap, "chown", relpath, lambda p: os.chown(p, uid, gid, follow_symlinks=False))

    def truncate(self, relpath: str, size: int) -> None:
        self._acting(self.snap, "truncate", relpath, lambda p: os.truncate(p, size))

    def utimens(self, relpath: str, atime_ns: int | None, mtime_ns: int | None, now_hint: bool = False) -> None:
        """Set times; ``None`` leaves that time unchanged (UTIME_OMIT)."""
        self._acting(self.snap, "utimens", relpath, lambda p: _utimens(p, atime_ns, mtime_ns, now_hint))

    def fgetattr(self, h: Handle) -> os.stat_result:
        return os.fstat(h.fd)

    def fchmod(self, h: Handle, mode: int) -> None:
        os.fchmod(h.fd, mode)

    def fchown(self, h: Handle, uid: int, gid: int) -> None:
        os.fchown(h.fd, uid, gid)

    def ftruncate(self, h: Handle, size: int) -> None:
        os.ftruncate(h.fd, size)

    def futimens(self, h: Handle, atime_ns: int | None, mtime_ns: int | None, now_hint: bool = False) -> None:
        _utimens(h.fd, atime_ns, mtime_ns, now_hint)


def _utimens(target, atime_ns: int | None, mtime_ns: int | None, now_hint: bool = False) -> None:
    """utimens; a ``None`` time is UTIME_OMIT (kept from the current stat).

    ``now_hint``: the request may have been UTIME_NOW for both times (llfuse
    hands us the clock reading instead). If explicit times are refused to a
    non-owner, retry as "now", which only needs write access, as natively.
    """
    if atime_ns is None or mtime_ns is None:
        st = os.stat(target) if isinstance(target, int) else os.lstat(target)
        atime_ns = st.st_atime_ns if atime_ns is None else atime_ns
        mtime_ns = st.st_mtime_ns if mtime_ns is None else mtime_ns
    follow = isinstance(target, int)
    try:
        os.utime(target, ns=(atime_ns, mtime_ns), follow_symlinks=follow)
    except PermissionError:
        if not now_hint:
            raise
        os.utime(target, None, follow_symlinks=follow)
