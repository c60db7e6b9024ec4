"""Fixtures for the real-mount tier: pools mounted with MERGERFS_CMD, a native oracle dir."""

from __future__ import annotations

import errno
import os
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from mergerfs import mounts

from .helpers import (
    FSTYPE,
    Pool,
    abort_connection,
    daemon_pid,
    mount,
    pid_alive,
    set_enable_uring,
    unmount,
    wait_until,
)

HERE = os.path.dirname(os.path.abspath(__file__))
_STARTED: set[int] = set()  # daemon PIDs this session started
STALE_AGE = 1800  # a foreign pytest basetemp older than this is abandoned
# A test whose pool hangs gets its FUSE connections aborted after this many seconds.
WATCHDOG = float(os.environ.get("MERGERFS_TEST_WATCHDOG", "180"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mount: needs /dev/fuse and root; mounts a pool")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


FUSE_DEVICE = "/dev/fuse"


def fuse_unavailable(device: str = FUSE_DEVICE) -> str | None:
    """Why no pool can be mounted on this machine, or None if ``device`` opens."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"{device} cannot be opened ({e.strerror}): mount tests need FUSE (modprobe fuse)"
    try:
        if not stat.S_ISCHR(os.fstat(fd).st_mode):
            return f"{device} is not a character device: mount tests need FUSE"
    finally:
        os.close(fd)
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    ours = [item for item in items if str(item.fspath).startswith(HERE)]
    if not ours:
        return
    why = fuse_unavailable()  # once per session, not once per test
    for item in ours:
        item.add_marker(pytest.mark.mount)
        if why:
            item.add_marker(pytest.mark.skip(reason=why))


def _pool_mounts() -> list[str]:
    return [m.mountpoint for m in mounts.mounts() if m.fstype == FSTYPE]


def _sweep(pred: Callable[[str], bool]) -> None:
    for mnt in _pool_mounts():
        if not pred(mnt):
            continue
        pid = daemon_pid(mnt)
        unmount(mnt)
        if pid and pid in _STARTED and not wait_until(lambda pid=pid: not pid_alive(pid), 5):
            os.kill(pid, signal.SIGKILL)


def _dead(mnt: str) -> bool:
    try:
        os.stat(mnt)
        return False
    except OSError as e:
        return e.errno == errno.ENOTCONN


def _pytest_root() -> str:
    return f"/tmp/pytest-of-{os.environ.get('USER') or os.getuid()}"


#: enable_uring before this session set it (MERGERFS_IO_URING=1: the suite's io_uring tier)
_URING_BEFORE: list[str] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    """Sweep pools left by earlier, killed runs (dead daemons or abandoned basetemps).
    With MERGERFS_IO_URING=1, have the kernel offer FUSE over io_uring for the
    session (restored at its end): our pools then take requests over it. The
    tests then run on one CPU: their requests all come on one queue, whose
    worker acts as their caller as the only worker of threads=1 does (the tests
    that count compiled answers rely on it); test_io_uring.py uses every queue."""
    if os.environ.get("MERGERFS_IO_URING") == "1":
        before = set_enable_uring("Y")
        if before is None:
            print("MERGERFS_IO_URING=1: this kernel has no fuse enable_uring: the tier runs over /dev/fuse")
        else:
            _URING_BEFORE.append(before)
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    roots = {_pytest_root(), "/tmp/pytest-of-root"}

    def stale(mnt: str) -> bool:
        if not any(mnt.startswith(r + "/") for r in roots):
            return False
        if _dead(mnt):
            return True
        base = "/".join(mnt.split("/")[:4])  # /tmp/pytest-of-X/pytest-N
        try:
            return time.time() - os.stat(base).st_mtime > STALE_AGE
        except OSError:
            return True

    _sweep(stale)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Unmount anything still mounted under this session's basetemp; stop our daemons."""
    try:
        base = str(session.config._tmp_path_factory.getbasetemp())  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a private pytest API: whatever fails, there is no basetemp
        base = None
    if base:
        _sweep(lambda m: m.startswith(base + "/"))
    for pid in list(_STARTED):
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for before in _URING_BEFORE:
        set_enable_uring(before)


def _populate(branch: str, layout: dict[str, bytes | None]) -> None:
    """``layout``: relpath -> bytes (file) or None (dir); 'x/' also means a dir."""
    for rel, data in layout.items():
        p = os.path.join(branch, rel.strip("/"))
        if data is None or rel.endswith("/"):
            os.makedirs(p, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)


@pytest.fixture
def mount_pool(tmp_path) -> Iterator[Callable[..., Pool]]:
    """Factory: ``mount_pool(n=3, options='', branches=None, layout=None) -> Pool``.

    ``layout`` is a list (one dict per branch) of relpath -> bytes|None to
    create on the branches before mounting.  Every pool is unmounted at teardown.
    """
    pools: list[Pool] = []
    count = [0]

    def factory(
        n: int = 3,
        options: str = "",
        branches: list[str] | None = None,
        layout: list[dict[str, bytes | None]] | None = None,
    ) -> Pool:
        k = count[0]
        count[0] += 1
        if branches is None:
            branches = []
            for i in range(n):
                b = tmp_path / f"p{k}b{i + 1}"
                b.mkdir()
                branches.append(str(b))
        for b, lay in zip(branches, layout or []):
            _populate(b, lay)
        mnt = tmp_path / f"p{k}mnt"
        p = mount(branches, str(mnt), options)
        pools.append(p)
        if p.pid:
            _STARTED.add(p.pid)
        return p

    def watchdog() -> None:
        # Killing the daemon closes /dev/fuse: calls hung in it fail with ENOTCONN.
        for p in pools:
            abort_connection(p.mnt)
            if p.pid and pid_alive(p.pid):
                os.kill(p.pid, signal.SIGKILL)

    timer = threading.Timer(WATCHDOG, watchdog)
    timer.daemon = True
    timer.start()
    yield factory
    timer.cancel()
    for p in pools:
        unmount(p.mnt)
        if p.pid and not wait_until(lambda p=p: not pid_alive(p.pid), 10):
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _STARTED.discard(p.pid)


@pytest.fixture
def pool(mount_pool) -> Pool:
    """A default 3-branch pool, no options."""
    return mount_pool()


@pytest.fixture
def native(tmp_path) -> str:
    """A plain directory: the oracle for POSIX behaviour."""
    d = tmp_path / "native"
    d.mkdir()
    return str(d)
