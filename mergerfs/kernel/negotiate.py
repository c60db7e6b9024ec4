"""The INIT exchange: the first request on a new mount, answered before any
worker runs, with what both the running kernel and the config want."""

from __future__ import annotations

import errno
import logging
import os
import struct
from typing import NamedTuple

from mergerfs import _kernel
from mergerfs.kernel.protocol import (
    ASYNC_DIO,
    ASYNC_READ,
    ATOMIC_O_TRUNC,
    AUTO_INVAL_DATA,
    BIG_WRITES,
    CACHE_SYMLINKS,
    DIRECT_IO_ALLOW_MMAP,
    DO_READDIRPLUS,
    EXPORT_SUPPORT,
    HANDLE_KILLPRIV_V2,
    IN_HEADER,
    INIT_EXT,
    INIT_OUT,
    KERNEL_MINOR,
    KERNEL_VERSION,
    MAX_PAGES,
    OVER_IO_URING,
    PAGE,
    PARALLEL_DIROPS,
    PASSTHROUGH,
    POSIX_ACL,
    READDIRPLUS_AUTO,
    WRITEBACK_CACHE,
    Op,
    Request,
    frame,
    send,
)

log = logging.getLogger("mergerfs")

#: O_ACCMODE values each ``passthrough.io`` setting passes through.
_PASSTHROUGH_MODES = {
    "ro": frozenset({os.O_RDONLY}),
    "wo": frozenset({os.O_WRONLY}),
    "rw": frozenset({os.O_RDONLY, os.O_WRONLY, os.O_RDWR}),
}


class Negotiated(NamedTuple):
    minor: int  # the protocol minor both sides speak
    max_write: int
    passthrough: frozenset[int] | None  # O_ACCMODE values passed through, None: no passthrough
    uring: bool  # requests come over io_uring (kernel/ring workers), but INIT, FORGET and INTERRUPT


def negotiate(devfd: int, cfg) -> Negotiated:
    """Read the kernel's INIT from ``devfd`` and answer it."""
    data = os.read(devfd, 1 << 16)
    h = Request(data)
    if h.opcode != Op.INIT:
        raise OSError(errno.EPROTO, f"expected INIT, got opcode {h.opcode}")
    major, minor, max_readahead, flags = struct.unpack_from("<IIII", data, IN_HEADER.size)
    if major != KERNEL_VERSION:
        # a newer major: tell it ours and fail; an older one we cannot speak
        send(devfd, frame(h.unique, 0, struct.pack("<II", KERNEL_VERSION, KERNEL_MINOR).ljust(24, b"\0")))
        raise OSError(errno.EPROTO, f"kernel FUSE protocol {major}.{minor} unsupported")
    if flags & INIT_EXT and len(data) >= IN_HEADER.size + 20:
        flags |= struct.unpack_from("<I", data, IN_HEADER.size + 16)[0] << 32
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
    if cfg["fuse-io-uring"] and flags & OVER_IO_URING and _kernel.ring_possible():
        # asked only when rings can be made here: once agreed, the kernel holds
        # every request until each CPU's queue has an entry registered
        want |= OVER_IO_URING
    got = want & flags
    agreed = min(minor, KERNEL_MINOR)
    passthrough = None
    if got & PASSTHROUGH:
        passthrough = _PASSTHROUGH_MODES[pt]
    elif pt != "off":
        log.warning("passthrough.io=%s: the kernel does not offer passthrough; normal I/O", pt)
    max_write = pages * PAGE
    out = INIT_OUT.pack(
        KERNEL_VERSION,
        agreed,
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
    send(devfd, frame(h.unique, 0, out if agreed >= 23 else out[:24]))
    log.debug("INIT: kernel %d.%d offered %#x, negotiated %#x, max_write %d", major, minor, flags, got, max_write)
    return Negotiated(agreed, max_write, passthrough, bool(got & OVER_IO_URING))


def _max_pages_limit() -> int:
    """The largest request the fuse module allows, in pages (its sysctl)."""
    try:
        with open("/proc/sys/fs/fuse/max_pages_limit") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 256
