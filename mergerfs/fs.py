"""The union filesystem's logic: every operation, on relpaths.

Operations pick branches through the configured policy of their function,
act on the branch paths and raise ``OSError`` on failure; they know nothing
about FUSE (the adapter maps nodeids/handles to relpaths and errors to replies).

Threading: operations run concurrently (the adapter has released llfuse's
lock) in worker threads that already carry the caller's identity
(:mod:`mergerfs.ugid`). Each operation reads :attr:`FileSystem.snap` once at
its top, so a runtime reconfiguration never shows it half a config.
"""

from __future__ import annotations

import errno
import logging
import os
import stat as S
import threading
import time
from typing import NamedTuple

from mergerfs import _fastpath, inodes, policies, ugid
from mergerfs.branches import Branch, expand
from mergerfs.probe import Probe, RequestProbe
from mergerfs.errors import Aggregate, oserror

log = logging.getLogger("mergerfs")

#: Shown alone in the pool root when no branch is usable (the reference does the same).
ERROR_ENTRY = "error: no valid mergerfs branch found, check config"
#: Hidden per-branch directory used by ``rename-exdev`` symlink modes.
EXDEV_DIR = ".mergerfs_rename_exdev"

RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2  # renameat2(2) flags
#: ioctls passed to the branch file (the inode-flag family chattr/lsattr use);
#: anything else answers ENOTTY as on a filesystem without them.
IOCTLS = frozenset({0x80086601, 0x40086602, 0x80087601, 0x40087602, 0x801C581F, 0x401C5820})
_OPEN_STRIP = os.O_CREAT | os.O_EXCL | os.O_NOCTTY | getattr(os, "O_DIRECT", 0)
_ACCMODE = os.O_ACCMODE
#: Seconds a branch's directory listing may take before the listing goes without it.
LIST_TIMEOUT = 5.0


def dirname(relpath: str) -> str:
    head = relpath.rpartition("/")[0]
    return head or "/"


def join(parent: str, name: str) -> str:
    return "/" + name if parent == "/" else parent + "/" + name


class Snapshot(NamedTuple):
    """Config and the branch set it expands to, swapped together."""

    cfg: object
    branches: tuple[Branch, ...]


class Handle:
    """An open pool file: the branch file's raw fd and where it lives."""

    __slots__ = ("fd", "branch", "relpath", "flags", "lock")

    def __init__(self, fd: int, branch: Branch, relpath: str, flags: int) -> None:
        self.fd = fd
        self.branch = branch
        self.relpath = relpath
        self.flags = flags
        self.lock = threading.Lock()  # serialises moveonenospc against other writers


class DirHandle:
    """An open pool directory. ``fd`` is the directory on the first branch that
    has it: fstat/fchmod on a removed-but-open directory keep working."""

    __slots__ = ("fd", "relpath", "entries")

    def __init__(self, fd: int, relpath: str) -> None:
        self.fd = fd
        self.relpath = relpath
        self.entries: list[tuple[bytes, int, int]] | None = None


def _moveonenospc_policy(value) -> str | None:
    if value in (None, False, "false"):
        return None
    if value in (True, "true"):
        return "mfs"
    return str(value)


def _list_one(path: str) -> tuple[list, int]:
    """One branch directory's listing (``readdir_merge`` rows) and its st_dev."""
    rows = _fastpath.readdir_merge((path,))
    return rows, os.stat(path).st_dev


class FileSystem:
    def __init__(self, cfg) -> None:
        self.probe = Probe(cfg["cache.statfs"])
        self.snap = Snapshot(cfg, expand(cfg["branches"], cfg["minfreespace"]))
        self.probe.record(self.snap.branches)
        self._handles_lock = threading.Lock()
        self.handles: dict[int, Handle] = {}
        #: Called with (old cfg, new cfg) after each swap: what lives outside the
        #: snapshot (log file, readahead) follows the control file through these.
        self.listeners: list = []
        ugid.proxy_ioprio = cfg["proxy-ioprio"]

    # ---------------------------------------------------------------- config
    def reconfigure(self, cfg) -> None:
        """Swap in a new config (control file, SIGUSR1): branches re-expanded."""
        old_cfg = self.snap.cfg
        old = self.probe
        if cfg["cache.statfs"] != old_cfg["cache.statfs"]:
            self.probe = Probe(cfg["cache.statfs"], lanes=old.lanes)
        snap = Snapshot(cfg, expand(cfg["branches"], cfg["minfreespace"]))
        self.probe.record(snap.branches, keep=old)
        self.snap = snap
        ugid.proxy_ioprio = cfg["proxy-ioprio"]
        for listener in self.listeners:
            try:
                listener(old_cfg, cfg)
            except Exception:  # noqa: BLE001 - the new config stands; the side effect is logged
                log.exception("applying the new configuration")

    def refresh(self) -> None:
        self.reconfigure(self.snap.cfg)

    # -------------------------------------------------------------- policies
    def _select(self, snap: Snapshot, category: str, func: str, relpath: str, probe: RequestProbe) -> list[Branch]:
        return policies.select(category, snap.cfg.policy(func), snap.branches, relpath, probe)

    def _found(self, snap: Snapshot, func: str, relpath: str, probe: RequestProbe) -> tuple[Branch, os.stat_result]:
        """First branch the search policy of ``func`` picks, with its lstat."""
        if snap.cfg.policy(func) == "ff":  # the common case, without building candidates
            for b in snap.branches:
                st = probe.lstat(b, relpath)
                if st is not None:
                    return b, st
            raise oserror(probe.why_missing(relpath))
        try:
            picked = self._select(snap, "search", func, relpath, probe)
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise oserror(probe.why_missing(relpath)) from None
            raise
        for b in picked:
            st = probe.lstat(b, relpath)
            if st is not None:
                return b, st
        raise oserror(probe.why_missing(relpath))

    def _creating(self, snap: Snapshot, func: str, relpath: str, attempt) -> list:
        """Run ``attempt(branch, probe)`` on each branch the create policy picks.

        A branch that answers EROFS is marked read-only and the policy re-run
        once, as the reference does for filesystems remounted read-only.
        """
        parent = dirname(relpath)
        for retry in (False, True):
            probe = RequestProbe(self.probe)
            targets = self._select(snap, "create", func, parent, probe)
            if func == "create":
                targets = targets[:1]
            agg = Aggregate()
            results = []
            erofs = []
            for b in targets:
                try:
                    self._clonepath(snap, probe, b, parent)
                    results.append(attempt(b, probe))
                    agg.success()
                except OSError as e:
                    if e.errno == errno.EROFS:
                        erofs.append(b)
                    agg.failure(e.errno or errno.EIO)
            if agg.ok or not erofs or retry:
                agg.raise_if_failed()
                return results
            for b in erofs:
                self.probe.mark_readonly(b)
        raise AssertionError("unreachable")

    def _acting(self, snap: Snapshot, func: str, relpath: str, fn) -> None:
        """Apply ``fn(fullpath)`` on every branch the action policy returns; any success wins."""
        probe = RequestProbe(self.probe)
        agg = Aggregate()
        for b in self._select(snap, "action", func, relpath, probe):
            agg.run(lambda: fn(b.full(relpath)))  # full() may fail too: that branch's error
        agg.raise_if_failed()

    # ------------------------------------------------------------ clone path
    def _clonepath(self, snap: Snapshot, probe: RequestProbe, dst: Branch, relpath: str) -> None:
        """Create ``relpath``'s missing directories on ``dst``, copying them from
        where they exist (getattr's search policy): mode, owner, times, xattrs."""
        if relpath == "/" or probe.exists(dst, relpath):
            return
        self._clonepath(snap, probe, dst, dirname(relpath))
        src, st = self._found(snap, "getattr", relpath, probe)
        if not S.S_ISDIR(st.st_mode):
            raise oserror(errno.ENOTDIR)
        path = dst.full(relpath)
        with ugid.as_root():
            try:
                os.mkdir(path, S.S_IMODE(st.st_mode))
            except FileExistsError:
                return
            os.lchown(path, st.st_uid, st.st_gid)
            os.chmod(path, S.S_IMODE(st.st_mode))  # mkdir applied the umask / dropped setgid
            copy_xattrs(src.full(relpath), path)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        probe.forget(dst, relpath)

    # ---------------------------------------------------------------- search
    def getattr(self, relpath: str) -> os.stat_result:
        snap = self.snap
        probe = RequestProbe(self.probe)
        try:
            b, st = self._found(snap, "getattr", relpath, probe)
        except OSError as e:
            if relpath == "/" and e.errno == errno.ENOENT:
                return synthetic_stat(S.S_IFDIR | 0o755, nlink=2)
            if relpath == "/" + ERROR_ENTRY and not self._any_branch_root(snap):
                return synthetic_stat(S.S_IFREG | 0o444)
            raise
        return self._present(snap, b, relpath, st)

    def _any_branch_root(self, snap: Snapshot) -> bool:
        return any(os.path.isdir(b.path) for b in snap.branches)

    def _present(self, snap: Snapshot, b: Branch, relpath: str, st: os.stat_result) -> os.stat_result:
        """Apply ``follow-symlinks`` and ``symlinkify`` to what getattr reports."""
        cfg = snap.cfg
        mode = st.st_mode
        follow = cfg["follow-symlinks"]
        if S.S_ISLNK(mode) and follow != "never":
            try:
                target = os.stat(b.full(relpath))
            except OSError:
                return st
            if (
                follow == "all"
                or (follow == "directory" and S.S_ISDIR(target.st_mode))
                or (follow == "regular" and S.S_ISREG(target.st_mode))
            ):
                return target
            return st
        if cfg["symlinkify"] and S.S_ISREG(mode) and self._symlinkified(cfg, st):
            fields = list(st)
            fields[0] = S.S_IFLNK | 0o777
            fields[6] = len(os.fsencode(b.join(relpath)))
            return os.stat_result(fields)
        return st

    @staticmethod
    def _symlinkified(cfg, st: os.stat_result) -> bool:
        return time.time() - st.st_mtime >= cfg["symlinkify-timeout"]

    def inode_of(self, relpath: str, st: os.stat_result) -> int:
        return inodes.calc(self.snap.cfg["inodecalc"], relpath, st.st_mode, st.st_dev, st.st_ino)

    def access(self, relpath: str, mode: int) -> None:
        snap = self.snap
        b, _ = self._found(snap, "access", relpath, RequestProbe(self.probe))
        if not os.access(b.full(relpath), mode, effective_ids=True):
            raise oserror(errno.EACCES)

    def readlink(self, relpath: str) -> str:
        snap = self.snap
        b, st = self._found(snap, "readlink", relpath, RequestProbe(self.probe))
        if snap.cfg["symlinkify"] and S.S_ISREG(st.st_mode) and self._symlinkified(snap.cfg, st):
            return b.join(relpath)
        return os.readlink(b.full(relpath))

    # ------------------------------------------------------------- open/create
    def open(self, relpath: str, flags: int) -> Handle:
        snap = self.snap
        b, st = self._found(snap, "open", relpath, RequestProbe(self.probe))
        path = b.full(relpath)
        if snap.cfg["link-cow"] and (flags & _ACCMODE) != os.O_RDONLY and S.S_ISREG(st.st_mode) and st.st_nlink > 1:
            _break_link(path, st)
        fd = os.open(path, (flags & ~_OPEN_STRIP) | os.O_CLOEXEC)
        return self._register(Handle(fd, b, relpath, flags))

    def create(self, relpath: str, flags: int, mode: int) -> Handle:
        snap = self.snap
        hack = snap.cfg["nfsopenhack"]
        writable = (flags & _ACCMODE) != os.O_RDONLY
        needs_hack = writable and not (mode & 0o200) and (hack == "all" or (hack == "git" and "/.git/" in relpath))

        def attempt(b: Branch, probe) -> Handle:
            path = b.full(relpath)
            fd = os.open(
                path,
                (flags & ~_OPEN_STRIP) | os.O_CREAT | (flags & os.O_EXCL) | os.O_CLOEXEC,
                (mode | 0o200) if needs_hack else mode,
            )
            if needs_hack:
                os.fchmod(fd, mode)
            return Handle(fd, b, relpath, flags)

        return self._register(self._creating(snap, "create", relpath, attempt)[0])

    def _register(self, h: Handle) -> Handle:
        with self._handles_lock:
            self.handles[h.fd] = h
        return h

    # ----------------------------------------------------------------- create
    def mkdir(self, relpath: str, mode: int) -> None:
        self._creating(self.snap, "mkdir", relpath, lambda b, p: os.mkdir(b.full(relpath), mode))

    def mknod(self, relpath: str, mode: int, rdev: int) -> None:
        self._creating(self.snap, "mknod", relpath, lambda b, p: os.mknod(b.full(relpath), mode, rdev))

    def symlink(self, target: str, relpath: str) -> None:
        self._creating(self.snap, "symlink", relpath, lambda b, p: os.symlink(target, b.full(relpath)))

    # ----------------------------------------------------------------- action
    def unlink(self, relpath: str) -> None:
        self._acting(self.snap, "unlink", relpath, os.unlink)

    def rmdir(self, relpath: str) -> None:
        """Refuse with ENOTEMPTY if the directory has entries on any branch we
        would remove it from: removing only the empty copies would report
        success while the directory is still there (native says ENOTEMPTY)."""
        snap = self.snap
        for b in self._select(snap, "action", "rmdir", relpath, RequestProbe(self.probe)):
            try:
                with os.scandir(b.full(relpath)) as it:
                    if next(it, None) is not None:
                        raise oserror(errno.ENOTEMPTY)
            except (NotADirectoryError, FileNotFoundError):
                pass
        self._acting(snap, "rmdir", relpath, os.rmdir)

    def chmod(self, relpath: str, mode: int) -> None:
        self._acting(self.snap, "chmod", relpath, lambda p: os.chmod(p, mode))

    def chown(self, relpath: str, uid: int, gid: int) -> None:
        self._acting(self.snap, "chown", relpath, lambda p: os.chown(p, uid, gid, follow_symlinks=False))

    def truncate(self, relpath: str, size: int) -> None:
        self._acting(self.snap, "truncate", relpath, lambda p: os.truncate(p, size))

    def utimens(self, relpath: str, atime_ns: int | None, mtime_ns: int | None, now_hint: bool = False) -> None:
        """Set times; ``None`` leaves that time unchanged (UTIME_OMIT)."""
        self._acting(self.snap, "utimens", relpath, lambda p: _utimens(p, atime_ns, mtime_ns, now_hint))

    # --------------------------------------------------------- rename / link
    def rename(self, old: str, new: str, flags: int = 0) -> None:
        """rename(2), or renameat2(2) with RENAME_NOREPLACE / RENAME_EXCHANGE."""
        snap = self.snap
        cfg = snap.cfg
        probe = RequestProbe(self.probe)
        sources = self._select(snap, "action", "rename", old, probe)
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == RENAME_NOREPLACE | RENAME_EXCHANGE:
            raise oserror(errno.EINVAL)
        if flags & RENAME_EXCHANGE:
            return self._exchange(snap, probe, sources, old, new)
        if flags & RENAME_NOREPLACE and any(probe.exists(b, new) for b in snap.branches):
            raise oserror(errno.EEXIST)  # anywhere in the pool, not only where old lives
        src_paths = {b.path for b in sources}
        newparent = dirname(new)
        preserve = cfg.policy("create") in policies.PATH_PRESERVING and not cfg["ignorepponrename"]
        agg = Aggregate()
        remove: list[tuple[Branch, str]] = []
        for b in snap.branches:
            if b.path not in src_paths:
                remove.append((b, new))
                continue
            try:
                self._place_on(snap, probe, b, newparent, preserve, "rename")
                if flags:
                    _fastpath.renameat2(b.full(old), b.full(new), flags)
                else:
                    os.rename(b.full(old), b.full(new))
                agg.success()
            except OSError as e:
                agg.failure(e.errno or errno.EIO)
                remove.append((b, old))
        if not agg.ok and agg.first_error == errno.EXDEV and cfg["rename-exdev"] != "passthrough":
            return self._rename_exdev(snap, sources, old, new)
        agg.raise_if_failed()
        for b, rel in remove:
            try:
                path = b.full(rel)
            except OSError:
                continue  # its parent is not on that branch: nothing to remove
            _remove_quietly(path)

    def _exchange(self, snap: Snapshot, probe: RequestProbe, sources: list[Branch], old: str, new: str) -> None:
        """RENAME_EXCHANGE on every branch holding both names; a pool where no
        branch holds both cannot swap them atomically: EXDEV."""
        both = [b for b in sources if probe.exists(b, new)]
        if not both:
            if not any(probe.exists(b, new) for b in snap.branches):
                raise oserror(errno.ENOENT)
            raise oserror(errno.EXDEV)
        agg = Aggregate()
        for b in both:
            agg.run(lambda p: _fastpath.renameat2(p, b.full(new), RENAME_EXCHANGE), b.full(old))
        agg.raise_if_failed()

    def _place_on(self, snap: Snapshot, probe: RequestProbe, b: Branch, parent: str, preserve: bool, func: str) -> None:
        """Make sure ``parent`` exists on ``b`` before a rename/link lands there.

        Path preserving: only if the create policy would pick ``b`` anyway;
        otherwise the move would have to cross branches: EXDEV.
        """
        if probe.exists(b, parent):
            return
        if preserve:
            try:
                picked = self._select(snap, "create", "create", parent, probe)
            except OSError:
                picked = []
            if b not in picked:
                raise oserror(errno.EXDEV)
        self._clonepath(snap, probe, b, parent)

    def _rename_exdev(self, snap: Snapshot, sources: list[Branch], old: str, new: str) -> None:
        """``rename-exdev=rel-symlink|abs-symlink``: park the file in a hidden
        directory on its own branch and leave a symlink at the new name."""
        b = sources[0]
        hidden = join("/" + EXDEV_DIR, old.lstrip("/"))
        with ugid.as_root():
            os.makedirs(os.path.dirname(b.full(hidden)), exist_ok=True)
        os.rename(b.full(old), b.full(hidden))
        if snap.cfg["rename-exdev"] == "abs-symlink":
            target = self._mountpoint() + hidden
        else:
            target = os.path.relpath(hidden, dirname(new))
        try:
            self.symlink(target, new)
        except OSError:
            os.rename(b.full(hidden), b.full(old))
            raise

    def _mountpoint(self) -> str:
        return (self.snap.cfg.mountpoint or "").rstrip("/")

    def link(self, old: str, new: str) -> None:
        snap = self.snap
        cfg = snap.cfg
        probe = RequestProbe(self.probe)
        sources = self._select(snap, "action", "link", old, probe)
        preserve = cfg.policy("create") in policies.PATH_PRESERVING and not cfg["ignorepponrename"]
        agg = Aggregate()
        for b in sources:
            try:
                self._place_on(snap, probe, b, dirname(new), preserve, "link")
                os.link(b.full(old), b.full(new), follow_symlinks=False)
                agg.success()
            except OSError as e:
                agg.failure(e.errno or errno.EIO)
        mode = cfg["link-exdev"]
        if not agg.ok and agg.first_error == errno.EXDEV and mode != "passthrough":
            b = sources[0]
            if mode == "rel-symlink":
                target = os.path.relpath(old, dirname(new))
            elif mode == "abs-base-symlink":
                target = b.join(old)
            else:  # abs-pool-symlink
                target = self._mountpoint() + old
            return self.symlink(target, new)
        agg.raise_if_failed()

    # ----------------------------------------------------------------- xattrs
    def getxattr(self, relpath: str, name: str) -> bytes:
        cfg = self.snap.cfg
        self._xattr_gate(cfg, name)
        b, _ = self._found(self.snap, "getxattr", relpath, RequestProbe(self.probe))
        return os.getxattr(b.full(relpath), name, follow_symlinks=False)

    def listxattr(self, relpath: str) -> list[str]:
        cfg = self.snap.cfg
        if cfg["xattr"] == "nosys":
            raise oserror(errno.ENOSYS)
        b, _ = self._found(self.snap, "listxattr", relpath, RequestProbe(self.probe))
        if cfg["xattr"] == "noattr":
            return []
        return os.listxattr(b.full(relpath), follow_symlinks=False)

    def setxattr(self, relpath: str, name: str, value: bytes, flags: int = 0) -> None:
        self._xattr_gate(self.snap.cfg, name)
        self._acting(
            self.snap, "setxattr", relpath, lambda p: os.setxattr(p, name, value, flags, follow_symlinks=False)
        )

    def removexattr(self, relpath: str, name: str) -> None:
        self._xattr_gate(self.snap.cfg, name)
        self._acting(self.snap, "removexattr", relpath, lambda p: os.removexattr(p, name, follow_symlinks=False))

    @staticmethod
    def _xattr_gate(cfg, name: str) -> None:
        mode = cfg["xattr"]
        if mode == "nosys":
            raise oserror(errno.ENOSYS)
        if mode == "noattr":  # set included: both references answer ENODATA and write nothing
            raise oserror(errno.ENODATA)
        if name == "security.capability" and not cfg["security-capability"]:
            raise oserror(errno.ENODATA)
        if name.startswith("system.posix_acl_") and not cfg["posix-acl"]:
            raise oserror(errno.EOPNOTSUPP)

    def basepaths(self, relpath: str) -> tuple[Branch, list[Branch]]:
        """(branch getattr picks, every branch holding ``relpath``) for the control xattrs."""
        snap = self.snap
        probe = RequestProbe(self.probe)
        b, _ = self._found(snap, "getattr", relpath, probe)
        return b, [x for x in snap.branches if probe.exists(x, relpath)]

    # ---------------------------------------------------------------- readdir
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
            raw, devs = self._list(branches, rel)
        except OSError:
            if rel == "/" and not self._any_branch_root(snap):
                return [(os.fsencode(ERROR_ENTRY), S.S_IFREG >> 12, 2)]
            raise
        out = _fastpath.readdir_inodes(raw, os.fsencode(rel), devs, inodes.mode_code(calc))
        if rel == "/":
            hidden = {b".mergerfs", EXDEV_DIR.encode()}
            out = [e for e in out if e[0] not in hidden]
        return out

    def _list(self, branches, rel: str) -> tuple[list, list[int]]:
        """Each branch's listing of ``rel`` merged (first branch wins), and each
        branch's st_dev of it (devino numbers need it; 0: nothing listed).

        Every listing runs on its branch's lane with :data:`LIST_TIMEOUT`: a
        stalled branch is left out of this listing instead of hanging it. If no
        branch could be listed, the first error is raised."""
        listings = self.probe.lanes.calls(
            [(b.path, _list_one, (_full_or_missing(b, rel),)) for b in branches], LIST_TIMEOUT
        )
        raw: list = []
        seen: set[bytes] = set()
        devs: list[int] = []
        first_err: BaseException | None = None
        for idx, listing in enumerate(listings):
            if isinstance(listing, BaseException):
                first_err = first_err or listing
                devs.append(0)
                continue
            rows, dev = listing
            devs.append(dev)
            for name, dtype, ino, _ in rows:
                if name not in seen:
                    seen.add(name)
                    raw.append((name, dtype, ino, idx))
        if first_err is not None and all(isinstance(x, BaseException) for x in listings):
            raise first_err
        return raw, devs

    # ----------------------------------------------------------------- statfs
    def statfs(self, relpath: str = "/") -> dict:
        """Pool totals: each filesystem counted once, blocks in the smallest fragment size."""
        snap = self.snap
        cfg = snap.cfg
        ignore = cfg["statfs-ignore"]
        full = cfg["statfs"] == "full"
        seen: set[int] = set()
        rows = []
        probe = self.probe
        paths = [b.full(relpath) if full else b.path for b in snap.branches]
        facts = probe.fsinfos(paths)  # bounded: a stalled branch counts with its last answer
        for b, path, fact in zip(snap.branches, paths, facts):
            if isinstance(fact, BaseException):
                continue
            st, vfs = fact
            if path == b.path and probe.check_gone(b.path, st.st_dev):
                continue  # a bare mountpoint: its parent's filesystem is not the branch's
            if st.st_dev in seen:
                continue
            seen.add(st.st_dev)
            readonly = b.ro or bool(vfs.f_flag & os.ST_RDONLY)
            drop_avail = (ignore == "ro" and (readonly or b.nc)) or (ignore == "nc" and b.nc)
            rows.append((vfs, drop_avail))
        if not rows:
            return dict(
                f_bsize=4096,
                f_frsize=4096,
                f_blocks=0,
                f_bfree=0,
                f_bavail=0,
                f_files=0,
                f_ffree=0,
                f_favail=0,
                f_namemax=255,
            )
        frsize = min(v.f_frsize for v, _ in rows) or 4096
        out = dict(
            f_bsize=min(v.f_bsize for v, _ in rows),
            f_frsize=frsize,
            f_blocks=0,
            f_bfree=0,
            f_bavail=0,
            f_files=0,
            f_ffree=0,
            f_favail=0,
            f_namemax=min(v.f_namemax for v, _ in rows),
        )
        for v, drop_avail in rows:
            scale = v.f_frsize / frsize
            out["f_blocks"] += int(v.f_blocks * scale)
            out["f_bfree"] += int(v.f_bfree * scale)
            if not drop_avail:
                out["f_bavail"] += int(v.f_bavail * scale)
            out["f_files"] += v.f_files
            out["f_ffree"] += v.f_ffree
            out["f_favail"] += v.f_favail
        return out

    # ------------------------------------------------------------ open files
    def read(self, h: Handle, off: int, size: int) -> bytes:
        if self.snap.cfg["nullrw"]:
            return bytes(size)
        return _fastpath.pread(h.fd, size, off)

    def write(self, h: Handle, off: int, data: bytes) -> int:
        cfg = self.snap.cfg
        if cfg["nullrw"]:
            return len(data)
        try:
            return _fastpath.pwrite(h.fd, data, off)
        except OSError as e:
            policy = _moveonenospc_policy(cfg["moveonenospc"])
            if e.errno not in (errno.ENOSPC, errno.EDQUOT) or policy is None:
                raise
            with h.lock:
                self._move(h, policy)
            return _fastpath.pwrite(h.fd, data, off)

    def _move(self, h: Handle, policy: str) -> None:
        """moveonenospc: copy the file to a branch with room, switch every open
        handle of it to the copy (same fd numbers via dup2), drop the original."""
        snap = self.snap
        rel = h.relpath
        others = tuple(b for b in snap.branches if b.path != h.branch.path)
        probe = RequestProbe(self.probe)
        try:
            dst = policies.select("create", policy, others, dirname(rel), probe)[0]
        except OSError:
            raise oserror(errno.ENOSPC) from None
        src_path = h.branch.full(rel)
        dst_path = dst.full(rel)
        tmp = dst.full(join(dirname(rel), f".mergerfs.move.{os.getpid()}.{h.fd}"))
        with ugid.as_root():
            self._clonepath(snap, probe, dst, dirname(rel))
            st = os.fstat(h.fd)
            src = os.open(src_path, os.O_RDONLY | os.O_CLOEXEC) if os.path.exists(src_path) else -1
            try:
                out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                try:
                    _copy_data(src if src >= 0 else h.fd, out, st.st_size)
                    os.fchown(out, st.st_uid, st.st_gid)
                    os.fchmod(out, S.S_IMODE(st.st_mode))
                    copy_xattrs(src_path, tmp)
                    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
                finally:
                    os.close(out)
                os.rename(tmp, dst_path)
            except OSError:
                _remove_quietly(tmp)
                raise
            finally:
                if src >= 0:
                    os.close(src)
            # Under the lock: a concurrent release must not close (and an open
            # reuse) an fd number between our listing it and dup2 onto it.
            with self._handles_lock:
                for x in self.handles.values():
                    if x.branch.path == h.branch.path and x.relpath == rel:
                        fd = os.open(dst_path, (x.flags & ~(_OPEN_STRIP | os.O_TRUNC)) | os.O_CLOEXEC)
                        os.dup2(fd, x.fd)
                        os.close(fd)
                        x.branch = dst
            _remove_quietly(src_path)
        log.info("moveonenospc: moved %s from %s to %s", rel, h.branch.path, dst.path)

    def flush(self, h: Handle) -> None:
        # close() of a duplicate reports deferred write errors (NFS) without
        # giving up our fd: what a close() on the pool file should surface.
        os.close(os.dup(h.fd))

    def fsync(self, h: Handle, datasync: bool) -> None:
        (os.fdatasync if datasync else os.fsync)(h.fd)

    def release(self, h: Handle) -> None:
        if self.snap.cfg["dropcacheonclose"]:
            try:
                os.posix_fadvise(h.fd, 0, 0, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass
        with self._handles_lock:  # see _move: the fd number must not be reused mid-switch
            self.handles.pop(h.fd, None)
            os.close(h.fd)

    def fallocate(self, h: Handle, mode: int, off: int, length: int) -> None:
        try:
            _fastpath.fallocate(h.fd, mode, off, length)
        except OSError as e:
            policy = _moveonenospc_policy(self.snap.cfg["moveonenospc"])
            if e.errno not in (errno.ENOSPC, errno.EDQUOT) or policy is None or mode & 0x02:
                raise  # (punching a hole frees space: nothing to move for)
            with h.lock:
                self._move(h, policy)
            _fastpath.fallocate(h.fd, mode, off, length)

    def lseek(self, h: Handle, off: int, whence: int) -> int:
        return os.lseek(h.fd, off, whence)

    def copy_file_range(self, src: Handle, off_in: int, dst: Handle, off_out: int, length: int, flags: int) -> int:
        if flags:
            raise oserror(errno.EINVAL)
        return os.copy_file_range(src.fd, dst.fd, length, off_in, off_out)

    def ioctl(self, h: Handle, cmd: int, arg: bytes, out_size: int) -> tuple[int, bytes]:
        """One of :data:`IOCTLS` on the branch file: (result, bytes to copy out)."""
        import fcntl  # noqa: PLC0415 - rare

        if cmd not in IOCTLS:
            raise oserror(errno.ENOTTY)
        buf = bytearray(arg.ljust(max(len(arg), out_size, 4), b"\0"))
        result = fcntl.ioctl(h.fd, cmd, buf, True)
        return result, bytes(buf[:out_size])

    def fsyncdir(self, relpath: str, datasync: bool) -> None:
        self._on_branch_dirs(relpath, os.fdatasync if datasync else os.fsync)

    def syncfs(self) -> None:
        """syncfs(2) of every branch's filesystem."""
        self._on_branch_dirs("/", _fastpath.syncfs)

    def _on_branch_dirs(self, relpath: str, fn) -> None:
        """``fn(fd)`` on ``relpath``'s directory on every branch that has it."""
        for b in self.snap.branches:
            try:
                fd = os.open(b.full(relpath), os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue
            try:
                fn(fd)
            finally:
                os.close(fd)

    def fgetattr(self, h: Handle) -> os.stat_result:
        return os.fstat(h.fd)

    def fchmod(self, h: Handle, mode: int) -> None:
        os.fchmod(h.fd, mode)

    def fchown(self, h: Handle, uid: int, gid: int) -> None:
        os.fchown(h.fd, uid, gid)

    def ftruncate(self, h: Handle, size: int) -> None:
        os.ftruncate(h.fd, size)

    def futimens(self, h: Handle, atime_ns: int | None, mtime_ns: int | None, now_hint: bool = False) -> None:
        _utimens(h.fd, atime_ns, mtime_ns, now_hint)


# ------------------------------------------------------------------ helpers
def synthetic_stat(mode: int, nlink: int = 1) -> os.stat_result:
    """A stat for entries that live on no branch (the root with no branch, errors)."""
    now = time.time_ns()
    return os.stat_result(
        (mode, 0, 0, nlink, 0, 0, 0, now // 10**9, now // 10**9, now // 10**9),
        {"st_atime_ns": now, "st_mtime_ns": now, "st_ctime_ns": now, "st_blksize": 4096, "st_blocks": 0, "st_rdev": 0},
    )


def _utimens(target, atime_ns: int | None, mtime_ns: int | None, now_hint: bool = False) -> None:
    """utimens; a ``None`` time is UTIME_OMIT (kept from the current stat).

    ``now_hint``: the request may have been UTIME_NOW for both times (llfuse
    hands us the clock reading instead). If explicit times are refused to a
    non-owner, retry as "now", which only needs write access, as natively.
    """
    if atime_ns is None or mtime_ns is None:
        st = os.stat(target) if isinstance(target, int) else os.lstat(target)
        atime_ns = st.st_atime_ns if atime_ns is None else atime_ns
        mtime_ns = st.st_mtime_ns if mtime_ns is None else mtime_ns
    follow = isinstance(target, int)
    try:
        os.utime(target, ns=(atime_ns, mtime_ns), follow_symlinks=follow)
    except PermissionError:
        if not now_hint:
            raise
        os.utime(target, None, follow_symlinks=follow)


def copy_xattrs(src: str, dst: str) -> None:
    """Best effort: a branch without xattr support must not fail a clone or move."""
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for name in names:
        try:
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
        except OSError:
            pass


def _copy_data(src: int, dst: int, size: int) -> None:
    off = 0
    while off < size:
        try:
            n = os.copy_file_range(src, dst, size - off, off, off)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            n = 0
        if n == 0:
            chunk = _fastpath.pread(src, min(1 << 20, size - off), off)
            if not chunk:
                break
            n = _fastpath.pwrite(dst, chunk, off)
        off += n


def _break_link(path: str, st: os.stat_result) -> None:
    """link-cow: give this name its own copy before it is opened for writing."""
    tmp = f"{path}.mergerfs.cow.{os.getpid()}.{threading.get_ident()}"
    src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, S.S_IMODE(st.st_mode))
        try:
            _copy_data(src, out, st.st_size)
            os.fchown(out, st.st_uid, st.st_gid)
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(out)
        copy_xattrs(path, tmp)
        os.rename(tmp, path)
    except OSError:
        _remove_quietly(tmp)
        raise
    finally:
        os.close(src)


def _full_or_missing(b: Branch, relpath: str) -> str:
    """``b.full(relpath)``, or ``""`` (ENOENT for any syscall) if its parent is not there."""
    try:
        return b.full(relpath)
    except OSError:
        return ""


def _remove_quietly(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            os.rmdir(path)
        else:
            os.unlink(path)
    except OSError:
        pass
