"""The copies that keep metadata (mergerfs.clone) and the operations built on
them, on real directories without a mount: link-cow and the tools' mover."""

from __future__ import annotations

import errno
import os

import pytest

from mergerfs import clone
from mergerfs.branches import Branch
from mergerfs.probe import Probe, RequestProbe


def _xattr_ok(path) -> bool:
    try:
        os.setxattr(path, "user.probe", b"1")
    except OSError:
        return False
    os.removexattr(path, "user.probe")
    return True


def test_clonefile_keeps_data_mode_times_and_xattrs(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(os.urandom(3 * clone.CHUNK + 17))
    os.chmod(src, 0o640)
    os.utime(src, ns=(1_000_000_000, 2_000_000_000))
    xattrs = _xattr_ok(src)
    if xattrs:
        os.setxattr(src, "user.k", b"v")
    st = os.stat(src)
    seen = []
    fd = os.open(src, os.O_RDONLY)
    try:
        clone.clonefile(fd, st, str(tmp_path / "tmp"), str(tmp_path / "dst"), str(src), seen.append)
    finally:
        os.close(fd)
    dst = tmp_path / "dst"
    assert dst.read_bytes() == src.read_bytes() == b"".join(seen)
    got = os.stat(dst)
    assert (got.st_mode, got.st_uid, got.st_gid, got.st_mtime_ns) == (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)
    assert not (tmp_path / "tmp").exists()
    if xattrs:
        assert os.getxattr(dst, "user.k") == b"v"


def test_clonefile_refused_copy_leaves_nothing(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"data")

    def refuse(fd: int) -> None:
        raise OSError(errno.EIO, "no")

    fd = os.open(src, os.O_RDONLY)
    try:
        with pytest.raises(OSError):
            clone.clonefile(fd, os.stat(src), str(tmp_path / "tmp"), str(tmp_path / "dst"), str(src), check=refuse)
    finally:
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_clonepath_copies_each_missing_directory(tmp_path):
    a, b = Branch(str(tmp_path / "a")), Branch(str(tmp_path / "b"))
    os.makedirs(a.full("/x/y/z"))
    os.makedirs(b.full("/x"))
    os.chmod(a.full("/x/y"), 0o2751)
    os.utime(a.full("/x/y/z"), ns=(5_000_000_000, 6_000_000_000))
    clone.clonepath(b, "/x/y/z", lambda rel: (a, os.lstat(a.full(rel))), RequestProbe(Probe()))
    assert os.stat(b.full("/x/y")).st_mode & 0o7777 == 0o2751
    assert os.stat(b.full("/x/y/z")).st_mtime_ns == 6_000_000_000  # (its parent's changed with it)
    (tmp_path / "a" / "f").write_text("file")
    with pytest.raises(OSError) as e:
        clone.clonepath(b, "/f", lambda rel: (a, os.lstat(a.full(rel))), RequestProbe(Probe()))
    assert e.value.errno == errno.ENOTDIR


def test_link_cow_gives_the_opened_name_its_own_copy(tmp_path):
    from mergerfs.config import Config
    from mergerfs.fs import FileSystem

    branch = tmp_path / "b"
    branch.mkdir()
    (branch / "f").write_text("shared")
    os.link(branch / "f", branch / "g")
    cfg = Config.defaults()
    cfg.apply("branches", str(branch))
    cfg.apply("link-cow", "true")
    fs = FileSystem(cfg)
    h = fs.open("/f", os.O_WRONLY)
    try:
        fs.write(h, 0, b"SHARED")
    finally:
        fs.release(h)
    assert (branch / "f").read_text() == "SHARED"
    assert (branch / "g").read_text() == "shared"
    assert os.stat(branch / "g").st_nlink == 1
    assert sorted(os.listdir(branch)) == ["f", "g"]
