"""unlink, rmdir: action functions removing the entry from every branch the
policy picks."""

from __future__ import annotations

import errno
import os

from mergerfs.errors import oserror
from mergerfs.ops.core import Core
from mergerfs.probe import RequestProbe


class RemoveOps(Core):
    def unlink(self, relpath: str) -> None:
        self._acting(self.snap, "unlink", relpath, os.unlink)

    def rmdir(self, relpath: str) -> None:
        """Refuse with ENOTEMPTY if the directory has entries on any branch we
        would remove it from: removing only the empty copies would report
        success while the directory is still there (native says ENOTEMPTY)."""
        snap = self.snap
        for b in self._select(snap, "rmdir", relpath, RequestProbe(self.probe)):
            try:
                with os.scandir(b.full(relpath)) as it:
                    if next(it, None) is not None:
                        raise oserror(errno.ENOTEMPTY)
            except (NotADirectoryError, FileNotFoundError):
                pass
        self._acting(snap, "rmdir", relpath, os.rmdir)
