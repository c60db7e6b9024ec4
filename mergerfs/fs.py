"""The union filesystem's logic: every operation, on relpaths.

Operations pick branches through the configured policy of their function,
act on the branch paths and raise ``OSError`` on failure; they know nothing
about FUSE (the request layer maps nodeids/handles to relpaths, a transport
errors to replies). Each group of operations is a module of
:mod:`mergerfs.ops`; :class:`FileSystem` puts them together.

Threading: operations run concurrently in worker threads that already carry
the caller's identity (:mod:`mergerfs.ugid`). Each operation reads
:attr:`FileSystem.snap` once at its top, so a runtime reconfiguration never
shows it half a config.
"""

from __future__ import annotations

from mergerfs.clone import copy_xattrs
from mergerfs.ops.attrs import AttrOps
from mergerfs.ops.core import (
    ERROR_ENTRY,
    EXDEV_DIR,
    UNNAMED,
    DirHandle,
    Handle,
    Snapshot,
    dirname,
    is_unnamed,
    join,
    synthetic_stat,
)
from mergerfs.ops.create import CreateOps
from mergerfs.ops.getattr import GetattrOps, Statx
from mergerfs.ops.io import IOCTLS, IoOps
from mergerfs.ops.link import LinkOps
from mergerfs.ops.open import OpenOps
from mergerfs.ops.readdir import ReaddirOps
from mergerfs.ops.remove import RemoveOps
from mergerfs.ops.rename import RENAME_EXCHANGE, RENAME_NOREPLACE, RenameOps
from mergerfs.ops.statfs import StatfsOps
from mergerfs.ops.xattr import XattrOps
from mergerfs.probe import RequestProbe

__all__ = [
    "ERROR_ENTRY",
    "EXDEV_DIR",
    "IOCTLS",
    "RENAME_EXCHANGE",
    "RENAME_NOREPLACE",
    "UNNAMED",
    "DirHandle",
    "FileSystem",
    "Handle",
    "RequestProbe",
    "Snapshot",
    "Statx",
    "copy_xattrs",
    "dirname",
    "is_unnamed",
    "join",
    "synthetic_stat",
]


class FileSystem(
    GetattrOps, OpenOps, RenameOps, LinkOps, CreateOps, RemoveOps, AttrOps, XattrOps, ReaddirOps, StatfsOps, IoOps
):
    """Every operation of the pool (``FileSystem(cfg)``; ``reconfigure(cfg)`` swaps the config)."""
