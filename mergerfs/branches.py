"""Branches: parsing the ``BRANCHES`` string, glob expansion, branch paths.

The tuple of :class:`Branch` that :func:`expand` builds is immutable;
reconfiguration builds a new one and swaps it in, so an operation that read
the snapshot once at its top sees one consistent branch set. What the branch
filesystems say about themselves is :mod:`mergerfs.probe`'s.
"""

from __future__ import annotations

import glob
import os
import re
from typing import NamedTuple

MODES = ("RW", "RO", "NC")

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([BKMGT]?)\s*$", re.IGNORECASE)
_SIZE_MULT = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``SIZE`` value: integer with optional B/K/M/G/T suffix (powers of 1024)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"invalid size {text!r}")
    return int(m.group(1)) * _SIZE_MULT[m.group(2).upper()]


def format_size(value: int) -> str:
    """Shortest exact spelling of a size (4294967296 -> ``4G``)."""
    for suffix in ("T", "G", "M", "K"):
        mult = _SIZE_MULT[suffix]
        if value and value % mult == 0:
            return f"{value // mult}{suffix}"
    return str(value)


class BranchSpec(NamedTuple):
    """One ``PATH[=MODE[,MINFREESPACE]]`` entry as the user wrote it (PATH may be a glob)."""

    pattern: str
    mode: str = "RW"
    minfreespace: int | None = None  # None: use the global minfreespace

    def format(self) -> str:
        text = f"{self.pattern}={self.mode}"
        if self.minfreespace is not None:
            text += f",{format_size(self.minfreespace)}"
        return text


def parse_branch_spec(entry: str) -> BranchSpec:
    """Parse one branch entry; raises ValueError with a user-facing message."""
    if not entry.strip():
        raise ValueError("empty branch path")
    path, sep, rest = entry.rpartition("=")
    if sep and not path.strip():
        raise ValueError(f"empty branch path in {entry!r}")
    if not sep:
        return BranchSpec(entry)
    mode_text, _, mfs_text = rest.partition(",")
    mode = mode_text.strip().upper()
    if mode not in MODES:
        # '=' may legitimately appear in a path: only treat it as a mode marker
        # when what follows looks like one.
        if "," not in rest and not mode_text.isalpha():
            return BranchSpec(entry)
        raise ValueError(f"invalid branch mode {mode_text!r} in {entry!r}")
    mfs = parse_size(mfs_text) if mfs_text else None
    return BranchSpec(path, mode, mfs)


def parse_branches(text: str) -> list[BranchSpec]:
    """``:``-separated branch list. An empty entry beside real ones (``/a::/b``,
    ``/a:``) is refused, as 2.42 does; all empty (``''``, ``:``) is no branch."""
    entries = text.split(":")
    if all(not e.strip() for e in entries):
        return []
    return [parse_branch_spec(e) for e in entries]


def check_runtime(specs: list[BranchSpec]) -> None:
    """What a runtime branches write must satisfy (ValueError otherwise): absolute
    paths only (the daemon's cwd means nothing to the caller) and at least one
    branch that is a directory now (else the pool would show only its error entry)."""
    for s in specs:
        if not s.pattern.startswith("/"):
            raise ValueError(f"relative branch path {s.pattern!r}")
    if not any(os.path.isdir(s.pattern) for s in expand_specs(specs)):
        raise ValueError("no valid branch")


def format_branches(specs: list[BranchSpec]) -> str:
    return ":".join(s.format() for s in specs)


class Branch(NamedTuple):
    """A concrete branch root after glob expansion.

    ``minfreespace`` is resolved (per-branch value or the global one) when the
    snapshot is built, so policies need no config.
    """

    path: str
    mode: str = "RW"
    minfreespace: int = 4 << 30

    def join(self, relpath: str) -> str:
        """``relpath`` (``/``-prefixed, relative to the pool root) on this branch, as
        text: what users are shown. It may exceed PATH_MAX; syscalls take :meth:`full`."""
        if relpath == "/":
            return self.path
        return relpath if self.path == "/" else self.path + relpath

    def full(self, relpath: str) -> str:
        """A path naming ``relpath`` on this branch that every syscall accepts.

        Normally :meth:`join`. A path the kernel accepted inside the pool may not
        fit PATH_MAX once the branch root is prefixed; it is then reached through
        its parent directory, opened with :meth:`at`, as ``/proc/self/fd/N/NAME``
        (one short path, so every ``os`` call works unchanged, and lookups stay the
        caller's: each component is still searched with the thread's credentials).
        The fd stays open while the returned string lives: bind it to a name for
        the duration of the call. Raises the OSError opening the parent gives
        (ENOENT, ENOTDIR, EACCES...), which the full path would have given too.
        """
        path = self.join(relpath)
        if len(path) < _SURELY_SHORT or len(os.fsencode(path)) < PATH_MAX:
            return path
        fd, name = self.at(relpath)
        return FdPath(f"/proc/self/fd/{fd}/{name}", fd)

    def at(self, relpath: str) -> tuple[int, str]:
        """(O_PATH fd of ``relpath``'s parent directory on this branch, last component).

        The parent is opened in pieces of under PATH_MAX each, every piece
        relative to the previous one. The caller closes the fd.
        """
        head, _, name = self.join(relpath).rpartition("/")
        fd = -1
        piece = b"/"  # the first piece is absolute, the later ones relative to it
        try:
            for part in os.fsencode(head).strip(b"/").split(b"/"):
                if len(piece) + len(part) + 1 >= PATH_MAX:
                    fd = _open_dir(piece, fd)
                    piece = b""
                piece = piece + b"/" + part if piece not in (b"", b"/") else piece + part
            fd = _open_dir(piece, fd)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        return fd, name

    @property
    def ro(self) -> bool:
        return self.mode == "RO"

    @property
    def nc(self) -> bool:
        return self.mode == "NC"


#: The kernel's limit on a path handed to a syscall, terminating NUL included.
PATH_MAX = 4096
_SURELY_SHORT = PATH_MAX // 4  # chars: even 4-byte UTF-8 each stays under PATH_MAX
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


def _open_dir(piece: bytes, parent: int) -> int:
    """Open ``piece`` relative to ``parent`` (absolute if -1), closing ``parent``."""
    try:
        return os.open(piece, _DIR_FLAGS, dir_fd=None if parent < 0 else parent)
    finally:
        if parent >= 0:
            os.close(parent)


class FdPath(str):
    """A ``/proc/self/fd/N/NAME`` path that owns fd N: closed when the string is freed."""

    fd: int

    def __new__(cls, text: str, fd: int) -> FdPath:
        self = super().__new__(cls, text)
        self.fd = fd
        return self

    def __del__(self) -> None:
        os.close(self.fd)


def _normalize(path: str) -> str:
    path = os.path.abspath(path)
    return path.rstrip("/") or "/"


def expand_specs(specs: list[BranchSpec]) -> list[BranchSpec]:
    """One spec per concrete branch: globs expanded (sorted; a pattern matching
    nothing contributes nothing), duplicates dropped, per-branch settings kept.

    A plain path that does not exist is kept: it simply answers ENOENT until the
    disk appears, which is what a NAS with a late disk needs.
    """
    out: list[BranchSpec] = []
    seen: set[str] = set()
    for spec in specs:
        if glob.has_magic(spec.pattern):
            paths = sorted(p for p in glob.glob(spec.pattern) if os.path.isdir(p))
        else:
            paths = [spec.pattern]
        for p in paths:
            p = _normalize(p)
            if p not in seen:
                seen.add(p)
                out.append(BranchSpec(p, spec.mode, spec.minfreespace))
    return out


def expand(specs: list[BranchSpec], global_minfreespace: int) -> tuple[Branch, ...]:
    """The concrete branches, each with its minfreespace resolved."""
    return tuple(
        Branch(s.pattern, s.mode, global_minfreespace if s.minfreespace is None else s.minfreespace)
        for s in expand_specs(specs)
    )


def invalid_branches(branches: tuple[Branch, ...]) -> list[str]:
    """Human-readable problems with branch roots (missing, not a directory)."""
    problems = []
    for b in branches:
        if not os.path.exists(b.path):
            problems.append(f"branch {b.path} does not exist")
        elif not os.path.isdir(b.path):
            problems.append(f"branch {b.path} is not a directory")
    return problems
