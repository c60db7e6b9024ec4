"""opendir, readdir, releasedir: one merged listing of every branch's
directory, each name once (first branch wins), a stalled branch left out."""

from __future__ import annotations

import errno
import os
import stat as S

from mergerfs import _fastpath, inodes
from mergerfs.branches import Branch
from mergerfs.errors import oserror
from mergerfs.ops.core import ERROR_ENTRY, EXDEV_DIR, Core, DirHandle
from mergerfs.probe import RequestProbe

#: Seconds a branch's directory listing may take before the listing goes without it.
LIST_TIMEOUT = 5.0


class ReaddirOps(Core):
    def opendir(self, relpath: str) -> DirHandle:
        snap = self.snap
        try:
            b, st = self._found(snap, "getattr", relpath, RequestProbe(self.probe))
        except OSError as e:
            if relpath == "/" and e.errno == errno.ENOENT:  # no branch: the error entry
                return DirHandle(-1, relpath)
            raise
        if not S.S_ISDIR(st.st_mode):
            raise oserror(errno.ENOTDIR)
        return DirHandle(os.open(b.full(relpath), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), relpath)

    def releasedir(self, dh: DirHandle) -> None:
        if dh.fd >= 0:
            os.close(dh.fd)

    def readdir(self, dh: DirHandle) -> list[tuple[bytes, int, int]]:
        """Merged listing ``(name, d_type, ino)``: each name once, first branch wins."""
        snap = self.snap
        calc = snap.cfg["inodecalc"]
        branches = snap.branches
        rel = dh.relpath
        try:
            listings, devs = self._list(branches, rel)
        except OSError as e:
            # (interrupted: no answer but EINTR, and no further branch call)
            if rel == "/" and not isinstance(e, InterruptedError) and not self._any_branch_root(snap):
                return [(os.fsencode(ERROR_ENTRY), S.S_IFREG >> 12, 2)]
            raise
        hidden = _HIDDEN if rel == "/" else ()
        return _fastpath.readdir_inodes(listings, os.fsencode(rel), devs, inodes.mode_code(calc), hidden)

    def _list(self, branches, rel: str) -> tuple[list, list[int]]:
        """Each branch's listing of ``rel`` (None: not listed), and each
        branch's st_dev of it (devino numbers need it; 0: nothing listed).

        Every listing runs on its branch's lane with :data:`LIST_TIMEOUT`: a
        stalled branch is left out of this listing instead of hanging it. If no
        branch could be listed, the first error is raised."""
        listings = self.probe.lanes.calls(
            [(b.path, _list_one, (_full_or_missing(b, rel),)) for b in branches], LIST_TIMEOUT
        )
        rows: list = []
        devs: list[int] = []
        first_err: BaseException | None = None
        for listing in listings:
            if isinstance(listing, BaseException):
                first_err = first_err or listing
                rows.append(None)
                devs.append(0)
                continue
            rows.append(listing[0])
            devs.append(listing[1])
        if first_err is not None and all(isinstance(x, BaseException) for x in listings):
            raise first_err
        return rows, devs


#: Names the root never lists: the control file and rename-exdev's parking directory.
_HIDDEN = frozenset({b".mergerfs", EXDEV_DIR.encode()})


def _list_one(path: str) -> tuple[list, int]:
    """One branch directory's listing (``readdir_merge`` rows) and its st_dev."""
    rows = _fastpath.readdir_merge((path,))
    return rows, os.stat(path).st_dev


def _full_or_missing(b: Branch, relpath: str) -> str:
    """``b.full(relpath)``, or ``""`` (ENOENT for any syscall) if its parent is not there."""
    try:
        return b.full(relpath)
    except OSError:
        return ""
