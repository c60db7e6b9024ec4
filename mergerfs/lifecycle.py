"""Mount lifecycle: checks, daemonising, the FUSE loop, signals, unmount.

Without ``-f`` the process forks; the parent waits on a pipe and exits 0 only
after the child's mount has answered a ``stat`` (so ``mount -a`` and scripts
can use the pool right away), or prints the child's one-line error and exits
1. The FUSE loop runs in a helper thread so the main thread stays free for
signals: SIGTERM/SIGINT unmount (the loop then ends and we exit 0), SIGUSR1
re-expands branch globs, SIGHUP and SIGUSR2 are logged and change nothing: as
with 2.42, a daemon started from fstab or a shell must outlive a hangup.

Logging (``log-level``, default info): syslog (LOG_DAEMON, ``/dev/log``) when
daemonised, stderr with ``-f``, or ``log.file`` (which then also receives the
request trace of ``debug``). A daemon never keeps the caller's stdio (a
``$(mergerfs ...)`` or a pipe would wait for it), so without a syslog socket
or a log file its log is dropped. Only lifecycle events and problems are logged, never
single requests; ``-d`` adds libfuse's per-request trace on stderr.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import threading
import time

from mergerfs import bdi, mounts
from mergerfs.branches import expand, invalid_branches

log = logging.getLogger("mergerfs")

#: Request workers when threads=0 (either transport). Python code runs on one core whatever the core
#: count, so more workers only fight over the GIL: 4 KiB O_DIRECT reads from 4
#: jobs ran 42k IOPS with 16 workers, 80-95k with 4 (reference 115k); 4 still
#: overlaps blocking I/O on different disks. benchmarks/README.md has the numbers.
DEFAULT_THREADS = 4
MAX_THREADS = 256  # each worker is an OS thread with its own stack: no runaway values


def worker_count(threads: int) -> int:
    """Request workers for ``threads``: 0 = default, -N = cores / N (as upstream), capped."""
    if threads == 0:
        return DEFAULT_THREADS
    if threads < 0:
        threads = (os.cpu_count() or 1) // -threads
    return min(max(threads, 2), MAX_THREADS)


class MountError(Exception):
    """A problem that stops the mount; its text is the one line the user sees."""


def is_mountpoint(path: str) -> bool:
    return mounts.mounted_at(os.path.realpath(path)) is not None


def mounted_device(path: str) -> str | None:
    """``major:minor`` of the filesystem mounted at ``path`` (resolved: it is not
    resolved here, so a daemon may ask about its own mount), or None."""
    m = mounts.mounted_at(path)
    return m.dev if m is not None else None


def check(cfg) -> None:
    """Everything that can be refused before forking, as MountError."""
    mnt = cfg.mountpoint
    if not mnt:
        raise MountError("no mountpoint given")
    if cfg["lazy-umount-mountpoint"] and is_mountpoint(mnt):
        pass  # unmounted before we mount, even if dead (a crashed daemon's answers ENOTCONN)
    elif not os.path.exists(mnt):
        raise MountError(f"mountpoint {mnt} does not exist")
    elif not os.path.isdir(mnt):
        raise MountError(f"mountpoint {mnt} is not a directory")
    elif is_mountpoint(mnt):
        raise MountError(f"mountpoint {mnt} is already a mount point")
    if not os.path.exists("/dev/fuse"):
        raise MountError("/dev/fuse does not exist (is the fuse module loaded?)")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK) and not _have_fusermount():
        raise MountError("permission denied opening /dev/fuse")


def _have_fusermount() -> bool:
    return any(
        os.access(os.path.join(d, "fusermount"), os.X_OK) for d in os.environ.get("PATH", "/usr/bin:/bin").split(":")
    )


def _fsname(cfg, branches) -> str:
    """Explicit ``fsname``, else the branch paths minus their common prefix,
    as the reference does (``/srv/alpha:/srv/beta`` -> ``alpha:beta``)."""
    name = cfg["fsname"]
    if name:
        return name
    paths = [b.path for b in branches]
    if len(paths) < 2:
        return paths[0] if paths else "mergerfs"
    cut = _common_prefix_len(paths)
    return ":".join(p[cut:] for p in paths)


def _common_prefix_len(paths: list[str]) -> int:
    """How many leading characters every path shares, compared character by
    character, not by component, exactly as the reference's fsname
    (``/srv/disk1:/srv/disk2`` -> ``1:2``); 0 when the first path is a prefix
    of all the others (the reference then shows the paths whole)."""
    first, rest = paths[0], paths[1:]
    for n, c in enumerate(first):
        if any(n >= len(p) or p[n] != c for p in rest):
            return n
    return 0


def fuse_options(cfg, branches) -> set[str]:
    # uid=/gid=/umask= are libfuse's high-level options: the adapter applies them.
    opts = {o for o in cfg.fuse_options if o.partition("=")[0] not in ("uid", "gid", "umask")}
    opts.discard("use_ino")
    if cfg["kernel-permissions-check"]:
        opts.add("default_permissions")
    else:
        opts.discard("default_permissions")
    if not any(o.startswith("fsname=") for o in opts):
        opts.add("fsname=" + _fsname(cfg, branches).replace(",", "\\,"))
    if not any(o.startswith("subtype=") for o in opts):
        opts.add("subtype=mergerfs")
    if os.geteuid() == 0:
        # As 2.42: root mounts for everyone (the kernel still checks permissions);
        # a pool root mounted from fstab is meant for the users of the machine.
        opts.add("allow_other")
    return opts


def _wait_for_branches(cfg, branches) -> None:
    """branches-mount-timeout: wait until no branch is on the mountpoint's filesystem
    (the disks are mounted), as upstream does: by ``st_dev``, before we mount."""
    timeout = cfg["branches-mount-timeout"]
    if not timeout:
        return
    mnt_dev = os.stat(cfg.mountpoint).st_dev
    deadline = time.monotonic() + timeout
    while True:
        pending = []
        for b in branches:
            try:
                if os.stat(b.path).st_dev == mnt_dev:
                    pending.append(b.path)
            except OSError:
                pending.append(b.path)
        if not pending:
            return
        if time.monotonic() >= deadline:
            msg = f"branches not mounted after {timeout}s: {', '.join(pending)}"
            if cfg["branches-mount-timeout-fail"]:
                raise MountError(msg)
            log.warning(msg)
            return
        time.sleep(0.5)


SYSLOG_SOCKET = "/dev/log"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _log_level(cfg, debug: bool = False) -> str:
    return "debug" if debug or cfg["debug"] else cfg["log-level"]


def _setup_logging(foreground: bool, level: str, log_file: str = "") -> None:
    """Route the ``mergerfs`` logger: ``log_file`` if given, else stderr in the
    foreground, else syslog if there is one. A daemon's fd 2 (where the request
    trace goes) becomes the log file too."""
    root = logging.getLogger("mergerfs")
    for old in root.handlers:
        old.close()
    root.handlers.clear()
    root.propagate = False
    root.setLevel(LEVELS[level])
    h: logging.Handler | None = None
    problem = ""
    if log_file:
        try:
            fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError as e:
            log_file, problem = "", f"cannot open log.file {log_file}: {e.strerror}"
        else:
            if not foreground:
                os.dup2(fd, 2, inheritable=True)  # libfuse's trace, faults printed by Python
            h = logging.StreamHandler(os.fdopen(fd, "a", buffering=1, encoding="utf-8", errors="backslashreplace"))
            h.setFormatter(logging.Formatter("%(asctime)s mergerfs[%(process)d]: %(levelname)s: %(message)s"))
    if not log_file and not foreground:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2, inheritable=True)  # no longer a log file's
        os.close(null)
    if not log_file and not foreground and os.path.exists(SYSLOG_SOCKET):
        from logging.handlers import SysLogHandler  # noqa: PLC0415 - ~1.3 MiB a daemon without syslog never needs

        try:
            h = SysLogHandler(SYSLOG_SOCKET, facility=SysLogHandler.LOG_DAEMON)
            h.setFormatter(logging.Formatter("mergerfs[%(process)d]: %(message)s"))
        except OSError:
            h = None
    if foreground and not log_file:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("mergerfs: %(levelname)s: %(message)s"))
    root.addHandler(h or logging.NullHandler())
    if problem:
        root.warning(problem)


def run(cfg, foreground: bool = False, debug: bool = False) -> int:
    """Mount and serve until unmounted. Returns the process exit code."""
    try:
        check(cfg)
        branches = expand(cfg["branches"], cfg["minfreespace"])
        for problem in invalid_branches(branches):
            print(f"mergerfs: warning: {problem}", file=sys.stderr)
        if not branches or len(invalid_branches(branches)) == len(branches):
            print("mergerfs: warning: no valid branch found; the pool shows an error entry", file=sys.stderr)
    except MountError as e:
        print(f"mergerfs: {e}", file=sys.stderr)
        return 1
    level = _log_level(cfg, debug)
    if foreground:
        _setup_logging(True, level, cfg["log.file"])
        return _serve(
            cfg, lambda msg: None if msg == "ok" else print(f"mergerfs: {msg}", file=sys.stderr), debug, foreground=True
        )
    return _daemonize(cfg, level)


def set_priority(nice: int) -> None:
    """scheduling-priority: the nice value of every thread (Linux's is per thread;
    threads started later inherit it). Raising it needs no privilege, lowering does."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError as e:
            log.warning("scheduling-priority=%d: %s", nice, e.strerror)
            return


def _daemonize(cfg, level: str) -> int:
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        os.close(w)
        chunks = []
        while chunk := os.read(r, 4096):
            chunks.append(chunk)
        os.close(r)
        msg = b"".join(chunks).decode(errors="replace").strip()
        if msg == "ok":
            return 0
        os.waitpid(pid, 0)
        print(f"mergerfs: {msg or 'mount failed'}", file=sys.stderr)
        return 1
    os.close(r)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    _setup_logging(False, level, cfg["log.file"])

    def notify(msg: str) -> None:
        nonlocal w
        if w >= 0:
            os.write(w, msg.encode())
            os.close(w)
            w = -1

    code = _serve(cfg, notify)
    os._exit(code)


def transport_for(cfg, fs):
    """The transport ``fuse-binding`` names: nothing else knows which one is in use."""
    if cfg["fuse-binding"] == "llfuse":
        from mergerfs.llfuse_transport import Transport  # noqa: PLC0415 - only when chosen

        return Transport(fs)
    from mergerfs.kernel import KernelTransport  # noqa: PLC0415

    return KernelTransport(fs)


def _serve(cfg, notify, debug: bool = False, foreground: bool = False) -> int:
    """Mount, report readiness through ``notify('ok')`` (or the error), run the loop."""
    from mergerfs import _fastpath  # noqa: PLC0415 - keep `mergerfs -h` fast
    from mergerfs.fs import FileSystem  # noqa: PLC0415

    os.umask(0)  # modes from the kernel already carry the caller's umask
    set_priority(cfg["scheduling-priority"])
    _fastpath.limit_malloc_arenas(2)  # before the workers start
    mnt = os.path.abspath(cfg.mountpoint)
    try:
        if cfg["lazy-umount-mountpoint"] and is_mountpoint(mnt):
            unmount(mnt)
        fs = FileSystem(cfg)
        _wait_for_branches(cfg, fs.snap.branches)
        transport = transport_for(cfg, fs)
        opts = fuse_options(cfg, fs.snap.branches)
        if debug or cfg["debug"]:
            opts.add("debug")  # libfuse's per-request trace on stderr, like the reference's -d
        transport.mount(mnt, opts)
    except (MountError, RuntimeError, OSError) as e:
        notify(str(e) if isinstance(e, MountError) else f"mount failed: {e}")
        return 1
    transport.req.table.never_forget = cfg["never-forget-nodes"]

    def readahead(c) -> None:
        paths = [b.path for b in fs.snap.branches]
        bdi.set_readahead(c["readahead"], mnt, paths, pool_default=getattr(transport, "request_kib", 0))

    def follow(old, new) -> None:
        """What lives outside the snapshot follows runtime changes."""
        if (old["readahead"], old["branches"]) != (new["readahead"], new["branches"]):
            readahead(new)
        if [old[k] for k in ("log.file", "debug", "log-level")] != [new[k] for k in ("log.file", "debug", "log-level")]:
            _setup_logging(foreground, _log_level(new, debug), new["log.file"])

    fs.listeners.append(follow)

    # Our workers read and process (2.42's process-thread-count=-1 model): a
    # read-thread-count given alone sizes them, else threads does.
    threads = worker_count(cfg["read-thread-count"] or cfg["threads"])
    # The control file reads back what the mount resolved, as the reference's does.
    cfg.values.update(fsname=_fsname(cfg, fs.snap.branches), threads=threads)
    failure: list[BaseException] = []

    def loop() -> None:
        try:
            transport.serve(threads)
        except BaseException as e:  # noqa: BLE001 - reported below, the mount is torn down
            failure.append(e)

    t = threading.Thread(target=loop, name="fuse-loop", daemon=True)
    t.start()
    # readahead once the kernel's INIT is answered: INIT sets the pool's bdi itself
    threading.Thread(
        target=_report_ready,
        args=(mnt, notify, t, lambda: readahead(cfg)),
        daemon=True,
    ).start()

    def stop(signum, frame) -> None:
        log.info("signal %d: unmounting %s", signum, mnt)
        unmount(mnt)

    def refresh(signum, frame) -> None:
        # llfuse itself pthread_kill()s its workers with SIGUSR1 when the session
        # ends; only a live mount's SIGUSR1 comes from the user.
        if not t.is_alive() or not is_mountpoint(mnt):
            return
        fs.refresh()
        log.info("signal %d: branches now %s", signum, ":".join(b.path for b in fs.snap.branches))

    def keep(signum, frame) -> None:
        log.info("signal %d: ignored (the pool stays mounted)", signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    for sig in (signal.SIGHUP, signal.SIGUSR2):
        signal.signal(sig, keep)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, refresh)
    while t.is_alive():
        t.join(0.2)
    transport.close()
    if failure:
        log.error("FUSE loop failed: %r", failure[0])
        notify(f"FUSE loop failed: {failure[0]}")
        return 1
    log.info("unmounted %s", mnt)
    return 0


def _report_ready(mnt: str, notify, loop: threading.Thread, then=lambda: None) -> None:
    """Tell the waiting parent we're live once the mount answers a stat."""
    for _ in range(600):
        if not loop.is_alive():
            return
        if is_mountpoint(mnt):
            try:
                os.stat(mnt)
            except OSError as e:
                # Any errno but "not connected" is an answer (func.getattr=erofs...).
                if e.errno in (errno.ENOTCONN, errno.ECONNABORTED):
                    time.sleep(0.05)
                    continue
            then()
            notify("ok")
            log.info("mounted %s", mnt)
            return
        time.sleep(0.05)
    notify("mount did not answer within 30s")


def unmount(mnt: str) -> None:
    """Lazy unmount: the kernel ends our session; open files keep working until closed.
    Root detaches it itself; others ask fusermount3 (a daemon then needs no subprocess)."""
    if os.geteuid() == 0:
        from mergerfs import _kernel  # noqa: PLC0415 - compiled; only where a pool is unmounted

        try:
            _kernel.umount_lazy(mnt)
            return
        except OSError:
            pass  # not a mount point, or a namespace that forbids it: let the tools say
    import subprocess  # noqa: PLC0415

    for cmd in (["fusermount3", "-u", "-z", mnt], ["fusermount", "-u", "-z", mnt], ["umount", "-l", mnt]):
        try:
            if subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
                return
        except OSError:
            continue
