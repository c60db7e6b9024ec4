"""Block device facts from sysfs: ``readahead`` (``read_ahead_kb`` of the pool's
own FUSE device and of each branch's block device). Stateless; any thread."""

from __future__ import annotations

import logging
import os

from mergerfs import mounts

log = logging.getLogger("mergerfs")

SYSFS = "/sys"


def _mount_dev(mountpoint: str) -> str | None:
    """``MAJ:MIN`` of what is mounted at ``mountpoint``, from mountinfo (a stat of
    our own pool from the daemon could wait on itself before the loop runs)."""
    m = mounts.mounted_at(mountpoint)
    return m.dev if m is not None else None


def readahead_files(dev: str) -> list[str]:
    """The ``read_ahead_kb`` file governing device ``MAJ:MIN``: its bdi, or for a
    partition its disk's queue; none for devices without one (tmpfs, overlay)."""
    bdi = f"{SYSFS}/class/bdi/{dev}/read_ahead_kb"
    if os.path.exists(bdi):
        return [bdi]
    disk = f"{SYSFS}/dev/block/{dev}/../queue/read_ahead_kb"
    return [disk] if os.path.exists(disk) else []


def set_readahead(kib: int, mountpoint: str, branch_paths: list[str], pool_default: int = 0) -> list[str]:
    """Write ``kib`` to the pool's and the branches' ``read_ahead_kb``; with 0,
    ``pool_default`` to the pool's alone (the transport's request size: the
    kernel's own 128 KiB window would cut 1 MiB READs into eight), and leave
    the branches. Returns the files written; problems are logged, never raised."""
    if kib <= 0:
        kib, branch_paths = pool_default, []
    if kib <= 0:
        return []
    devs: list[str] = []
    dev = _mount_dev(mountpoint)
    if dev:
        devs.append(dev)
    for p in branch_paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        devs.append(f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    written = []
    for d in dict.fromkeys(devs):
        for path in readahead_files(d):
            try:
                with open(path, "w") as f:
                    f.write(str(kib))
                written.append(path)
            except OSError as e:
                log.warning("readahead: cannot set %s: %s", path, e.strerror)
    return written
