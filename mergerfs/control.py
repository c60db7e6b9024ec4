"""The runtime control interface: ``MOUNTPOINT/.mergerfs`` and ``user.mergerfs.*`` xattrs.

Config keys come straight from the option table (:mod:`mergerfs.options`),
so every option is readable here in the text form ``-o`` accepts. A change is
applied to a copy of the config and swapped in whole, or not at all.
Per-path keys (basepath, relpath, fullpath, allpaths) work on any pool path.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable

from mergerfs import COMPAT_VERSION, options
from mergerfs.branches import check_runtime, expand_specs, format_branches, parse_branches
from mergerfs.errors import oserror
from mergerfs.lanes import Stalled

NAME = ".mergerfs"
PREFIX = "user.mergerfs."
PATH_KEYS = ("basepath", "relpath", "fullpath", "allpaths")
COMMANDS = ("cmd.gc", "cmd.gc1", "cmd.invalidate-all-nodes")
#: Read-only, not listed (listxattr stays the reference's): branches creates now
#: leave out, one ``PATH: REASON`` per line (see :meth:`Control.unavailable`).
UNAVAILABLE = "branches-unavailable"
#: Read-only key (ours): the requests served so far, ``OPCODE COMPILED PYTHON`` per
#: line: how many each path answered (the kernel session; the llfuse transport has none).
REQUESTS = "requests"
XATTR_SIZE_MAX = 65536  # the kernel's limit: a longer value could never be read back


class Control:
    def __init__(self, fs, invalidate_all=None) -> None:
        self.fs = fs
        self._invalidate_all = invalidate_all or (lambda: None)
        self._lock = threading.Lock()  # one reconfiguration at a time
        #: the transport's request counts ({opcode name: (compiled, Python)}), if it keeps them
        self.counts: Callable[[], dict[str, tuple[int, int]]] | None = None

    # ------------------------------------------------------------- the file
    def listxattr(self) -> list[str]:
        cfg = self.fs.snap.cfg
        # 2.42's listing: one sorted list, informational keys included (``mount``
        # and ``srcmounts`` still read, unlisted, as 2.42 does)
        return [PREFIX + k for k in sorted([*cfg.keys(), "version", "pid"])]

    def getxattr(self, name: str) -> bytes:
        key = self._key(name)
        cfg = self.fs.snap.cfg
        if key == "version":
            return COMPAT_VERSION.encode()
        if key == "pid":
            return str(os.getpid()).encode()
        if key == "mount":
            return os.fsencode(cfg.mountpoint or "")
        if key == UNAVAILABLE:
            return "".join(f"{p}: {why}\n" for p, why in self.unavailable().items()).encode("utf-8", "surrogateescape")
        if key == REQUESTS and self.counts is not None:
            return "".join(f"{op} {c} {py}\n" for op, (c, py) in sorted(self.counts().items())).encode()
        if key in COMMANDS:
            raise oserror(errno.ENODATA)
        try:
            opt = options.lookup(key)
        except options.OptionError:
            raise oserror(errno.ENODATA) from None
        if opt.name == "branches":  # as the reference: the expanded list
            specs = expand_specs(cfg["branches"])
            text = ":".join(s.pattern for s in specs) if key == "srcmounts" else format_branches(specs)
        else:
            text = cfg.format(opt.name)
        return text.encode("utf-8", "surrogateescape")

    def setxattr(self, name: str, value: bytes) -> None:
        key = self._key(name)
        text = value.decode("utf-8", "surrogateescape").rstrip("\0")
        if key in COMMANDS:
            if key == "cmd.invalidate-all-nodes":
                self._invalidate_all()
            return  # gc: Python's allocator needs no nudging
        if key in ("version", "pid", "mount", UNAVAILABLE, REQUESTS):
            raise oserror(errno.EROFS)
        try:
            opt = options.lookup(key)
        except options.OptionError:
            raise oserror(errno.ENODATA) from None
        if not opt.runtime:
            raise oserror(errno.EROFS)
        with self._lock:
            cfg = self.fs.snap.cfg.copy()
            try:
                if opt.name == "branches":
                    text = _edit_branches(format_branches(expand_specs(cfg["branches"])), text)
                cfg.apply(opt.name, text)
                if opt.name == "branches":
                    check_runtime(cfg["branches"])
                if len(cfg.format(opt.name).encode("utf-8", "surrogateescape")) > XATTR_SIZE_MAX:
                    raise ValueError("would not fit in an xattr value: unreadable afterwards")
            except (options.OptionError, ValueError):
                raise oserror(errno.EINVAL) from None
            self.fs.reconfigure(cfg)

    def unavailable(self) -> dict[str, str]:
        """Branches probed now (each bounded by the statvfs deadline): those whose
        filesystem went away ("filesystem gone") or that do not answer ("not
        answering"). A missing branch directory is not listed: it is visible as such."""
        fs = self.fs
        out = {}
        for b in fs.snap.branches:
            try:
                if fs.probe.check(b):
                    out[b.path] = "filesystem gone"
            except Stalled:
                out[b.path] = "not answering"
            except OSError:
                pass
        return out

    @staticmethod
    def _key(name: str) -> str:
        if not name.startswith(PREFIX):
            raise oserror(errno.ENODATA)
        return name[len(PREFIX) :]

    # ------------------------------------------------------ per-path keys
    def path_getxattr(self, relpath: str, name: str) -> bytes:
        """``user.mergerfs.{basepath,relpath,fullpath,allpaths}`` of a pool path."""
        key = self._key(name)
        if key not in PATH_KEYS:
            raise oserror(errno.ENODATA)
        if key == "relpath":
            return os.fsencode(relpath)
        base, holders = self.fs.basepaths(relpath)
        if key == "basepath":
            return os.fsencode(base.path)
        if key == "fullpath":
            return os.fsencode(base.join(relpath))
        return b"\0".join(os.fsencode(b.join(relpath)) for b in holders)


def _edit_branches(current: str, text: str) -> str:
    """Apply the ``+<`` ``+>`` ``+`` ``-`` ``-<`` ``->`` forms to the branch list."""
    specs = parse_branches(current)
    if text.startswith("+<"):
        return format_branches(parse_branches(text[2:]) + specs)
    if text.startswith("+>"):
        return format_branches(specs + parse_branches(text[2:]))
    if text.startswith("+"):
        return format_branches(specs + parse_branches(text[1:]))
    if text == "-<":
        return format_branches(specs[1:])
    if text == "->":
        return format_branches(specs[:-1])
    if text.startswith("-"):
        drop = {s.pattern.rstrip("/") or "/" for s in parse_branches(text[1:])}
        return format_branches([s for s in specs if (s.pattern.rstrip("/") or "/") not in drop])
    return text
