"""The mount table: ``/proc/self/mountinfo`` entries, their fields unescaped.

The kernel writes a space, tab, newline or backslash in a path as an octal
escape (``\\040``); :func:`unescape` is the one place undoing that. Stateless;
any thread.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

MOUNTINFO = "/proc/self/mountinfo"
_ESCAPE = re.compile(r"\\([0-7]{3})")


class Mount(NamedTuple):
    """One mountinfo line (proc(5))."""

    mountpoint: str
    dev: str  # MAJ:MIN
    fstype: str
    source: str
    options: str  # the mount's own options
    super_options: str  # the superblock's (allow_other, user_id=...)


def unescape(field: str) -> str:
    """Undo the kernel's octal escapes (``\\040`` for a space, ...)."""
    return _ESCAPE.sub(lambda m: chr(int(m[1], 8)), field)


def mounts() -> list[Mount]:
    """Every mount this process sees, oldest first (a later mount on the same
    point hides the earlier ones)."""
    out = []
    with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            out.append(
                Mount(
                    unescape(fields[4]),
                    fields[2],
                    fields[sep + 1],
                    unescape(fields[sep + 2]),
                    fields[5],
                    fields[sep + 3] if len(fields) > sep + 3 else "",
                )
            )
    return out


def mounted_at(path: str, table: list[Mount] | None = None) -> Mount | None:
    """The mount visible at ``path`` exactly (not resolved), else None."""
    found = None
    for m in mounts() if table is None else table:
        if m.mountpoint == path:
            found = m
    return found


def holding(path: str, table: list[Mount] | None = None) -> Mount | None:
    """The mount ``path`` (not resolved) lies in: the longest mountpoint above it."""
    best = None
    for m in mounts() if table is None else table:
        mp = m.mountpoint
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and (best is None or len(mp) >= len(best.mountpoint)):
            best = m
    return best


#: Filesystems on a local device or in memory: their syscalls do not hang on a network.
LOCAL_FSTYPES = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "ramfs", "f2fs", "zfs", "bcachefs", "jfs", "reiserfs"}
    | {"nilfs2", "vfat", "exfat", "ntfs3", "hfsplus"}
)


def local_devs(paths: list[str]) -> list[int] | None:
    """Each path's st_dev if every one lies on a :data:`LOCAL_FSTYPES` filesystem,
    else None (a network or FUSE filesystem, or a path that does not stat)."""
    types = {m.dev: m.fstype for m in mounts()}
    devs = []
    for path in paths:
        try:
            dev = os.stat(path).st_dev
        except OSError:
            return None
        if types.get(f"{os.major(dev)}:{os.minor(dev)}") not in LOCAL_FSTYPES:
            return None
        devs.append(dev)
    return devs
