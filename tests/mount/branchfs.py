"""Real branches for mount tests: tmpfs filesystems of chosen sizes, plus a tiny pool mounter.

Each tmpfs is its own device, so free space (mfs/lfs/lus) is deterministic and
cross-branch renames really are cross-device.  Everything mounted here is
unmounted in ``finally`` blocks; nothing is shared between processes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence

from mergerfs import mounts

try:
    from .helpers import REFERENCE, REPO, cmd_env, err_of, is_reference, pool_cmd, unmount
except ImportError:  # rootdir-less collection
    from helpers import REFERENCE, REPO, cmd_env, err_of, is_reference, pool_cmd, unmount  # noqa: F401 - re-exported

MiB = 1024 * 1024


class MountError(RuntimeError):
    """The pool command exited non-zero (e.g. rejected an option); carries its stderr."""


def ours_importable() -> bool:
    """Whether ``python -m mergerfs -v`` from the repo works yet."""
    r = subprocess.run([sys.executable, "-m", "mergerfs", "-v"], env=cmd_env(), capture_output=True, timeout=30)
    return r.returncode == 0


def _mounted(path: str) -> str | None:
    """Filesystem type mounted exactly at ``path``, else None."""
    m = mounts.mounted_at(os.path.realpath(path))
    return m.fstype if m is not None else None


# -- branches ---------------------------------------------------------------


def mount_tmpfs(path: str, size_mb: float, *, ro: bool = False) -> str:
    """Mount a fresh tmpfs of ``size_mb`` MiB on ``path`` (created)."""
    os.makedirs(path, exist_ok=True)
    opts = f"size={int(size_mb * 1024)}k,mode=0755" + (",ro" if ro else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", path], check=True)
    return path


def remount_ro(path: str) -> None:
    subprocess.run(["mount", "-o", "remount,ro", path], check=True)


def umount_branch(path: str) -> None:
    """Unmount a branch tmpfs (lazily if busy); never raises."""
    for _ in range(50):
        if _mounted(path) is None:
            return
        r = subprocess.run(["umount", path], capture_output=True)
        if r.returncode == 0:
            return
        time.sleep(0.05)
    subprocess.run(["umount", "-l", path], capture_output=True)


def fill(branch: str, mb: float, name: str = ".fill") -> str:
    """Occupy ``mb`` MiB on the branch with a real file (tmpfs counts written pages)."""
    p = os.path.join(branch, name)
    chunk = b"\xa5" * MiB
    remaining = int(mb * MiB)
    with open(p, "wb") as f:
        while remaining > 0:
            n = min(remaining, MiB)
            f.write(chunk[:n])
            remaining -= n
    return p


def avail(branch: str) -> int:
    st = os.statvfs(branch)
    return st.f_bavail * st.f_frsize


def used(branch: str) -> int:
    st = os.statvfs(branch)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


@contextlib.contextmanager
def tmpfs_branches(sizes_mb: Sequence[float], *, ro: Sequence[int] = (), prefix: str = "mfsbr") -> Iterator[list[str]]:
    """Yield branch paths, one tmpfs each of the given sizes; indexes in ``ro`` remounted read-only.

    To seed a read-only branch, leave it out of ``ro`` and call :func:`remount_ro` later.
    """
    top = tempfile.mkdtemp(prefix=prefix + "-", dir="/tmp")
    paths: list[str] = []
    try:
        for i, size in enumerate(sizes_mb):
            p = os.path.join(top, f"b{i}")
            mount_tmpfs(p, size)
            paths.append(p)
        for i in ro:
            remount_ro(paths[i])
        yield paths
    finally:
        for p in paths:
            umount_branch(p)
        for p in paths:
            with contextlib.suppress(OSError):
                os.rmdir(p)
        with contextlib.suppress(OSError):
            os.rmdir(top)


# -- pool -------------------------------------------------------------------


def mount_pool_cmd(
    cmd: Sequence[str], branches: Sequence[str], mnt: str, options: str | Sequence[str] = "", timeout: float = 20.0
) -> None:
    """Run ``cmd -o OPTIONS BRANCHES MNT`` (it daemonises) and wait for the FUSE mount.

    ``branches`` entries may carry ``=MODE,MINFREESPACE`` suffixes.  Raises
    :class:`MountError` when the command fails, with its stderr.
    """
    os.makedirs(mnt, exist_ok=True)
    opts = options if isinstance(options, str) else ",".join(o for o in options if o)
    argv = list(cmd) + (["-o", opts] if opts else []) + [":".join(branches), mnt]
    r = subprocess.run(argv, env=cmd_env(), capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        if _mounted(mnt):
            unmount(mnt)
        raise MountError(f"{' '.join(argv)} -> rc={r.returncode}: {r.stderr.strip()}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (_mounted(mnt) or "").startswith("fuse"):
            try:
                os.stat(mnt)
            except OSError as e:
                if e.errno == errno.ENOTCONN:  # the daemon died right after mounting
                    unmount(mnt)
                    raise MountError(f"{' '.join(argv)}: daemon gone after mount") from e
            return
        time.sleep(0.02)
    unmount(mnt)
    raise MountError(f"{' '.join(argv)}: mount did not appear within {timeout}s")


@contextlib.contextmanager
def pool(
    branches: Sequence[str],
    options: str | Sequence[str] = "",
    cmd: Sequence[str] | None = None,
    skip_reject: bool = False,
) -> Iterator[str]:
    """Mount a pool over ``branches`` with the command under test; always unmounted.

    ``skip_reject``: if the *reference* rejects the options (an upstream-only
    option or policy), skip the test instead of failing.
    """
    import pytest

    cmd = pool_cmd() if cmd is None else list(cmd)
    mnt = tempfile.mkdtemp(prefix="mfspool-", dir="/tmp")
    try:
        try:
            mount_pool_cmd(cmd, branches, mnt, options)
        except MountError as e:
            if skip_reject and is_reference(cmd):
                pytest.skip(f"reference 2.33.5 rejects this: {e}")
            raise
        yield mnt
    finally:
        unmount(mnt)
        with contextlib.suppress(OSError):
            os.rmdir(mnt)


def tree(branch: str) -> dict[str, int]:
    """relpath -> st_mode of every entry under a branch (lstat; excludes the root)."""
    out: dict[str, int] = {}
    for root, dirs, files in os.walk(branch):
        for name in dirs + files:
            p = os.path.join(root, name)
            out["/" + os.path.relpath(p, branch)] = os.lstat(p).st_mode
    return out


def where(branches: Sequence[str], relpath: str) -> list[int]:
    """Indexes of the branches holding ``relpath`` (lexists)."""
    rel = relpath.lstrip("/")
    return [i for i, b in enumerate(branches) if os.path.lexists(os.path.join(b, rel))]
