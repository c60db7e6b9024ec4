"""The embeddable API: ``mergerfs.mount(...) -> Pool`` as a NAS service would use it."""

from __future__ import annotations

import os

import pytest

import mergerfs
from mergerfs.lifecycle import MountError, is_mountpoint

from .helpers import is_reference, pid_alive

pytestmark = pytest.mark.skipif(is_reference(), reason="our Python API")


def test_mount_serves_and_unmounts(tmp_path):
    a, b, mnt = tmp_path / "a", tmp_path / "b", tmp_path / "mnt"
    for d in (a, b, mnt):
        d.mkdir()
    (b / "f").write_bytes(b"data")
    with mergerfs.mount([str(a), str(b)], str(mnt), {"minfreespace": "0", "category.create": "ff"}) as pool:
        assert pool.running and is_mountpoint(str(mnt))
        assert (mnt / "f").read_bytes() == b"data"
        (mnt / "g").write_bytes(b"new")
        assert (a / "g").read_bytes() == b"new"
        pid = pool.pid
    assert not is_mountpoint(str(mnt))
    assert not pid_alive(pid)
    assert not pool.running and pool.wait(0)


def test_daemon_exits_when_unmounted_from_outside(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pool = mergerfs.mount(str(tmp_path), str(mnt), "minfreespace=0")
    try:
        os.system(f"umount {mnt}")
        assert pool.wait(10), "daemon outlived its mount"
    finally:
        pool.unmount()


@pytest.mark.parametrize(
    "branches, mnt, options, message",
    [
        ("{t}", "{t}/missing", "", "mountpoint {t}/missing does not exist"),
        ("{t}", "{t}/mnt", "category.create=best", "invalid value for option 'category.create': 'best'"),
        ("{t}", "{t}/mnt", "nosuchoption=1", "invalid option 'nosuchoption'"),
    ],
)
def test_errors_are_the_cli_lines(tmp_path, branches, mnt, options, message):
    (tmp_path / "mnt").mkdir()
    t = str(tmp_path)
    with pytest.raises(MountError) as e:
        mergerfs.mount(branches.format(t=t), mnt.format(t=t), options)
    assert str(e.value) == message.format(t=t)
    assert not is_mountpoint(mnt.format(t=t))
