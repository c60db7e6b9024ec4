"""Shared plumbing for the pool tools.

- finding a pool: ``fuse.mergerfs`` entries of the mount table, then the control
  file must answer ``user.mergerfs.version``;
- the control file: get/set/list ``user.mergerfs.*`` with os.getxattr/setxattr;
- output: human sizes, a usage bar, a progress bar on stderr when it is a tty,
  ``--json``;
- :func:`transfer`: the one crash-safe copy/move used by balance, dup and
  consolidate (journal -> temp copy -> fsync -> verify -> rename -> unlink).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import fnmatch
import hashlib
import json
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterator, Sequence

from mergerfs import mounts
from mergerfs.branches import Branch, parse_branches, parse_size
from mergerfs.clone import CHUNK, clonefile, clonepath
from mergerfs.probe import Probe, RequestProbe

CTL = ".mergerfs"
PREFIX = "user.mergerfs."
FSTYPE = "fuse.mergerfs"
# Names the tools create on branches; every walk skips them, recovery removes them.
TOOL_PREFIX = ".mergerfs-tools."
JOURNAL = TOOL_PREFIX + "journal"


class ToolError(Exception):
    """A one-line message for the user; the tool exits with ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------ the pool
class Pool:
    """A mounted pool reached through its control file."""

    def __init__(self, mnt: str) -> None:
        self.mnt = mnt
        self.ctl = os.path.join(mnt, CTL)

    def get(self, key: str) -> str:
        return os.getxattr(self.ctl, PREFIX + key).decode("utf-8", "surrogateescape")

    def set(self, key: str, value: str) -> None:
        os.setxattr(self.ctl, PREFIX + key, value.encode("utf-8", "surrogateescape"))

    def keys(self) -> list[str]:
        return sorted(k[len(PREFIX) :] for k in os.listxattr(self.ctl) if k.startswith(PREFIX))

    def options(self) -> dict[str, str]:
        out = {}
        for k in self.keys():
            with contextlib.suppress(OSError):
                out[k] = self.get(k)
        return out

    def branches(self) -> list[Branch]:
        return [Branch(s.pattern, s.mode) for s in parse_branches(self.get("branches"))]

    def relpath(self, path: str) -> str:
        """``/``-prefixed relpath of a path inside the pool."""
        rel = os.path.relpath(os.path.abspath(path), self.mnt)
        return "/" if rel == "." else "/" + rel

    def allpaths(self, path: str) -> list[str]:
        raw = os.getxattr(path, PREFIX + "allpaths")
        return [os.fsdecode(p) for p in raw.split(b"\0") if p]


def find_pool(path: str | None, exact: bool = False) -> Pool:
    """The pool at (``exact``) or containing ``path``; the only one mounted if ``path`` is None."""
    pools = [m for m in mounts.mounts() if m.fstype == FSTYPE]
    if path is None:
        if not pools:
            raise ToolError("no mergerfs pool is mounted (none of type fuse.mergerfs in /proc/mounts)")
        if len(pools) > 1:
            raise ToolError(
                "several mergerfs pools are mounted (" + ", ".join(m.mountpoint for m in pools) + "): pass one"
            )
        mnt = pools[0].mountpoint
    else:
        real = os.path.realpath(path)
        hit = mounts.mounted_at(real, pools) if exact else mounts.holding(real, pools)
        if hit is None:
            raise ToolError(f"{path}: not a mergerfs pool" + ("" if exact else " (nor inside one)"))
        mnt = hit.mountpoint
    pool = Pool(mnt)
    try:
        pool.get("version")
    except OSError as e:
        raise ToolError(f"{mnt}: not a mergerfs pool (control file: {os.strerror(e.errno or 0)})") from None
    return pool


@contextlib.contextmanager
def pool_lock(pool: Pool) -> Iterator[None]:
    """One modifying tool at a time per pool: the journal recovery relies on it."""
    name = hashlib.sha1(os.fsencode(pool.mnt)).hexdigest()[:16]
    d = "/run/lock" if os.access("/run/lock", os.W_OK) else "/tmp"
    path = os.path.join(d, f"mergerfs-tools.{name}.lock")
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(f.fileno()).st_ino != os.stat(path).st_ino:
                raise BlockingIOError  # its holder just finished and removed it: someone else won
        except (BlockingIOError, FileNotFoundError):
            raise ToolError(f"{pool.mnt}: another mergerfs tool is working on this pool") from None
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # while still holding it, so no one can lock the old file


@contextlib.contextmanager
def locked_branches(pool: Pool, acting: bool) -> Iterator[list[Branch]]:
    """The pool's branches under the tools' lock; a tool that will move files
    first finishes or undoes any move a killed tool left (the journal)."""
    with pool_lock(pool):
        branches = pool.branches()
        if acting:
            recover([b.path for b in branches if b.mode != "RO"], say)
        yield branches


# ------------------------------------------------------------------- output
def human(n: float) -> str:
    """1536 -> '1.5K' (powers of 1024, like df -h)."""
    for unit in ("B", "K", "M", "G", "T", "P"):
        if abs(n) < 1024 or unit == "P":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)  # unreachable


def size_arg(text: str) -> int:
    """argparse type for sizes: 100, 4K, 1.5G."""
    try:
        return parse_size(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (e.g. 100, 4K, 1G)") from None


def bar(fraction: float, width: int = 20) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    full = round(fraction * width)
    return "[" + "#" * full + "-" * (width - full) + "]"


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: int, label: str, quiet: bool = False) -> None:
        self.total, self.label, self.done = max(total, 1), label, 0
        self.on = not quiet and sys.stderr.isatty()
        self._last = 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.on and (now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            frac = self.done / self.total
            sys.stderr.write(f"\r{self.label} {bar(frac, 30)} {frac:4.0%}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.on:
            sys.stderr.write("\n")
            sys.stderr.flush()


def say(line: str) -> None:
    """A result line on stdout, flushed at once (callers may be reading a pipe)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def emit_json(obj: object) -> None:
    say(json.dumps(obj, indent=2))


# -------------------------------------------------------------- the CLI frame
def parser(prog: str, description: str, path: tuple[str, str] | None = None) -> argparse.ArgumentParser:
    """The tool's argument parser; ``path``: (metavar, help) of its pool path argument."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    if path is not None:
        p.add_argument("path", metavar=path[0], help=path[1])
    return p


def add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-i",
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="only files whose name matches (repeatable)",
    )
    p.add_argument(
        "-e",
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="skip files whose name or relpath matches (repeatable)",
    )
    p.add_argument("-s", "--min-size", type=size_arg, default=0, metavar="SIZE")
    p.add_argument("-S", "--max-size", type=size_arg, default=None, metavar="SIZE")


def selected(args: argparse.Namespace, rel: str, size: int) -> bool:
    name = os.path.basename(rel)
    if args.include and not any(fnmatch.fnmatch(name, g) or fnmatch.fnmatch(rel, g) for g in args.include):
        return False
    if any(fnmatch.fnmatch(name, g) or fnmatch.fnmatch(rel, g) for g in args.exclude):
        return False
    return size >= args.min_size and (args.max_size is None or size <= args.max_size)


def run(prog: str, body: Callable[[], int]) -> int:
    """Run a tool's body: ToolError -> one line on stderr; Ctrl-C -> 130."""
    try:
        return body()
    except ToolError as e:
        sys.stderr.write(f"{prog}: {e}\n")
        return e.code
    except KeyboardInterrupt:
        sys.stderr.write(f"\n{prog}: interrupted\n")
        return 130
    except BrokenPipeError:
        return 1


# ------------------------------------------------------------ branch walking
def walk_files(branch: str, reldir: str = "/") -> Iterator[tuple[str, os.stat_result]]:
    """(relpath, lstat) of every regular file under ``branch``+``reldir``, tool files skipped."""
    top = full(branch, reldir)
    with contextlib.suppress(OSError):
        st = os.lstat(top)
        if stat.S_ISREG(st.st_mode):
            yield "/" + reldir.strip("/"), st
    for root, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if not (root == branch and d == CTL))
        for name in sorted(files):
            if name.startswith(TOOL_PREFIX):
                continue
            p = os.path.join(root, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield "/" + os.path.relpath(p, branch), st


def walk_dirs(branch: str, reldir: str = "/") -> Iterator[str]:
    top = os.path.join(branch, reldir.lstrip("/"))
    if os.path.isdir(top) and not os.path.islink(top):
        yield "/" + os.path.relpath(top, branch) if top != branch else "/"
    for root, dirs, _ in os.walk(top):
        dirs.sort()
        for d in dirs:
            yield "/" + os.path.relpath(os.path.join(root, d), branch)


def full(branch: str, rel: str) -> str:
    return os.path.join(branch, rel.lstrip("/")) if rel != "/" else branch


def digest(file: str | int) -> str:
    """SHA-256 of a file, by path or open fd (read from its start)."""
    h = hashlib.sha256()
    if isinstance(file, int):
        off = 0
        while chunk := os.pread(file, CHUNK, off):
            h.update(chunk)
            off += len(chunk)
    else:
        with open(file, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
    return h.hexdigest()


def avail(branch: str) -> int:
    st = os.statvfs(branch)
    return st.f_bavail * st.f_frsize


# ------------------------------------------------------------- the mover
# tests: "STEP:N[:SIGNAL]" sends us SIGNAL (default KILL) at the Nth time we reach STEP
_FAULT = os.environ.get("MERGERFS_TOOLS_FAULT", "")
_fault_count: dict[str, int] = {}


def _crashpoint(step: str) -> None:
    """Fault injection for the crash-safety tests: a signal to ourselves at a chosen step."""
    if not _FAULT:
        return
    parts = _FAULT.split(":")
    want, nth, sig = parts[0], (parts[1:2] or ["1"])[0], (parts[2:3] or ["KILL"])[0]
    if want == step:
        _fault_count[step] = _fault_count.get(step, 0) + 1
        if _fault_count[step] == int(nth):
            os.kill(os.getpid(), getattr(signal, "SIG" + sig))


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_journal(branch: str, entry: dict) -> None:
    path = os.path.join(branch, JOURNAL)
    with open(path + ".new", "w") as f:
        json.dump(entry, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(path + ".new", path)
    _fsync_dir(branch)


def transfer(src_branch: str, dst_branch: str, rel: str, move: bool) -> None:
    """Copy (``move``: and then remove the source of) ``rel`` from one branch to another.

    Crash-safe: a journal on the destination branch names the step in flight,
    the data goes to a temp name beside the target, is fsynced and re-read to
    verify size and SHA-256, then renamed into place; only then is the source
    unlinked. Whatever kills us, :func:`recover` (run at every start, and here
    on any exception) leaves each file present with its content: the temp is
    dropped, or the move is completed if the renamed copy is verified.
    Raises OSError/ToolError; the file is then untouched at its source.
    """
    src_b, dst_b = Branch(src_branch), Branch(dst_branch)
    src, dst = full(src_branch, rel), full(dst_branch, rel)
    st = os.lstat(src)
    if os.path.lexists(dst):
        raise ToolError(f"{rel}: already on {dst_branch}", 1)
    clonepath(dst_b, os.path.dirname(rel), lambda r: (src_b, os.stat(src_b.full(r))), RequestProbe(Probe()))
    tmp = os.path.join(os.path.dirname(dst), f"{TOOL_PREFIX}{os.getpid()}.tmp")
    _write_journal(dst_branch, {"src": src_branch, "dst": dst_branch, "rel": rel, "tmp": tmp, "move": move})
    try:
        _crashpoint("journal")
        h = hashlib.sha256()

        def each(chunk: bytes) -> None:
            h.update(chunk)
            _crashpoint("copy")

        def check(out: int) -> None:
            os.fsync(out)
            if os.fstat(out).st_size != st.st_size or digest(out) != h.hexdigest():
                raise ToolError(f"{rel}: copy on {dst_branch} does not verify", 1)
            now = os.lstat(src)
            if (now.st_size, now.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                raise ToolError(f"{rel}: changed while being copied, left in place", 1)
            _crashpoint("verified")

        fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
        try:
            clonefile(fd, st, tmp, dst, src, each, check)
        finally:
            os.close(fd)
        _fsync_dir(os.path.dirname(dst))
        _crashpoint("renamed")
        if move:
            os.unlink(src)
            _fsync_dir(os.path.dirname(src))
        _crashpoint("unlinked")
    except BaseException:
        with contextlib.suppress(Exception):
            recover([dst_branch])
        raise
    os.unlink(os.path.join(dst_branch, JOURNAL))


def recover(branches: Sequence[str], log: Callable[[str], None] | None = None) -> None:
    """Finish or undo whatever a killed tool left: see :func:`transfer`."""
    for b in branches:
        path = os.path.join(b, JOURNAL)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + ".new")  # a journal write that never completed: nothing started
        try:
            with open(path) as f:
                entry = json.load(f)
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            entry = {}
        rel, tmp = entry.get("rel"), entry.get("tmp")
        if tmp and os.path.lexists(tmp):
            os.unlink(tmp)  # never renamed: the source is intact
            if log:
                log(f"recovered: dropped an unfinished copy of {rel}")
        elif rel and entry.get("move"):
            src, dst = full(entry["src"], rel), full(entry["dst"], rel)
            if os.path.isfile(src) and os.path.isfile(dst):
                if os.path.getsize(src) == os.path.getsize(dst) and digest(src) == digest(dst):
                    os.unlink(src)  # renamed and verified: complete the move
                    if log:
                        log(f"recovered: completed the move of {rel} to {entry['dst']}")
                elif log:
                    log(f"recovered: {rel} differs between {entry['src']} and {entry['dst']}; both kept")
        os.unlink(path)
        _fsync_dir(b)


# ------------------------------------------------------------ shared pieces
def execute_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-e", "--execute", action="store_true", help="make the changes (default: only print what would be done)"
    )


def holders_of(branches: Sequence[Branch], reldir: str) -> dict[str, list[tuple[str, os.stat_result]]]:
    """relpath -> [(branch path, lstat)] for every regular file under ``reldir``, branch order."""
    out: dict[str, list[tuple[str, os.stat_result]]] = {}
    for b in branches:
        for rel, st in walk_files(b.path, reldir):
            out.setdefault(rel, []).append((b.path, st))
    return out


def transfer_all(
    prog: str, work: Sequence[tuple[str, str, str, int]], move: bool, execute: bool, quiet: bool = False
) -> int:
    """Run (or, not ``execute``, only print) [(rel, src, dst, size)] transfers; returns failures."""
    verb = ("moved" if move else "copied") if execute else ("would move" if move else "would copy")
    bar_ = Progress(sum(w[3] for w in work), "moving" if move else "copying", quiet or not execute)
    failed = 0
    for rel, src, dst, size in work:
        if execute:
            try:
                transfer(src, dst, rel, move=move)
            except (OSError, ToolError) as e:
                failed += 1
                sys.stderr.write(f"{prog}: {rel}: {e}\n")
                continue
            bar_.advance(size)
        say(f"{verb} {rel} {src} -> {dst} ({human(size)})")
    bar_.close()
    return failed
