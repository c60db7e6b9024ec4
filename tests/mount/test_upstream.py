"""Issue 12: 2.42 behaviour users moving from a current mergerfs rely on, checked on a
real mount of ours and, where the behaviour is observable, of the 2.42 binary too."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator

import pytest

try:
    from .branchfs import mount_pool_cmd
    from .helpers import REFERENCE_42, daemon_pid, err_of, kill_quietly, pool_cmd, unmount
except ImportError:
    from branchfs import mount_pool_cmd
    from helpers import REFERENCE_42, daemon_pid, err_of, kill_quietly, pool_cmd, unmount

P = "user.mergerfs."
HAVE_42 = os.path.exists(REFERENCE_42)
#: ours always; 2.42 where it is installed
IMPLS = ["ours"] + (["2.42"] if HAVE_42 else [])


@contextlib.contextmanager
def mounted(impl: str, branches: list[str], options: str = "") -> Iterator[str]:
    """A pool of ``impl`` over ``branches``; unmounted (and 2.42's daemon killed) always."""
    cmd = pool_cmd() if impl == "ours" else [REFERENCE_42]
    opts = ",".join(o for o in ("minfreespace=0", options) if o)
    mnt = tempfile.mkdtemp(prefix="mfs12-", dir="/tmp")
    pid = None
    try:
        mount_pool_cmd(cmd, branches, mnt, opts)
        pid = daemon_pid(mnt)
        yield mnt
    finally:
        unmount(mnt)
        kill_quietly(pid)
        with contextlib.suppress(OSError):
            os.rmdir(mnt)


@pytest.mark.parametrize("impl", IMPLS)
def test_xattr_noattr_refuses_every_xattr_call(tmp_path, impl):
    b = tmp_path / "b"
    b.mkdir()
    (b / "f").write_text("x")
    os.setxattr(b / "f", "user.old", b"1")
    with mounted(impl, [str(b)], "xattr=noattr") as mnt:
        f = os.path.join(mnt, "f")
        assert err_of(os.setxattr, f, "user.new", b"v") == errno.ENODATA
        assert err_of(os.getxattr, f, "user.old") == errno.ENODATA
        assert err_of(os.removexattr, f, "user.old") == errno.ENODATA
        assert [x for x in os.listxattr(f) if x.startswith("user.")] == []
    assert os.listxattr(b / "f") == ["user.old"]  # nothing written, nothing removed
