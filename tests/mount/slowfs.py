"""A read-only FUSE directory whose listing is slow: ``python slowfs.py MNT SECONDS NAME...``.

The root holds the empty files NAME...; every opendir waits SECONDS first. Used
as a branch to show that ``func.readdir=cosr|cor`` lists branches concurrently.
Runs in the foreground until unmounted.
"""

from __future__ import annotations

import errno
import stat
import sys
import time

import llfuse


class SlowFS(llfuse.Operations):
    def __init__(self, delay: float, names: list[str]) -> None:
        super().__init__()
        self.delay = delay
        self.names = [n.encode() for n in names]

    def _attr(self, ino: int) -> llfuse.EntryAttributes:
        a = llfuse.EntryAttributes()
        a.st_ino = ino
        a.st_mode = (stat.S_IFDIR | 0o755) if ino == llfuse.ROOT_INODE else (stat.S_IFREG | 0o644)
        a.st_nlink = 2 if ino == llfuse.ROOT_INODE else 1
        a.attr_timeout = a.entry_timeout = 0
        return a

    def getattr(self, inode, ctx=None):
        return self._attr(inode)

    def lookup(self, parent, name, ctx=None):
        if parent == llfuse.ROOT_INODE and name in self.names:
            return self._attr(llfuse.ROOT_INODE + 1 + self.names.index(name))
        raise llfuse.FUSEError(errno.ENOENT)

    def opendir(self, inode, ctx):
        with llfuse.lock_released:
            time.sleep(self.delay)
        return inode

    def readdir(self, fh, off):
        for i, n in enumerate(self.names[off:], off):
            yield n, self._attr(llfuse.ROOT_INODE + 1 + i), i + 1

    def releasedir(self, fh):
        pass

    def statfs(self, ctx):
        s = llfuse.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_namemax = 255
        return s


def main() -> None:
    mnt, delay, names = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    llfuse.init(SlowFS(delay, names), mnt, ["fsname=slowfs", "ro", "allow_other"])
    try:
        llfuse.main(workers=4)
    finally:
        llfuse.close(unmount=False)


if __name__ == "__main__":
    main()
