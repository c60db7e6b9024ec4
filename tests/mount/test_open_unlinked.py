"""An open fd stays fully usable after its path is unlinked or renamed away (as natively)."""

from __future__ import annotations

import os
import stat

import pytest

from .helpers import compare, is_reference

OPTS = "cache.files=off,cache.attr=0,cache.entry=0,cache.negative_entry=0,category.create=ff"


def _fd_ops(fd: int) -> tuple:
    out = []
    s = os.fstat(fd)
    out.append((stat.filemode(s.st_mode), s.st_size, s.st_nlink))
    out.append(os.pread(fd, 5, 0))
    out.append(os.pwrite(fd, b"NEW", 2))
    out.append(os.pread(fd, 20, 0))
    os.ftruncate(fd, 4)
    out.append(os.fstat(fd).st_size)
    os.fchmod(fd, 0o600)
    out.append(stat.filemode(os.fstat(fd).st_mode))
    os.utime(fd, ns=(3_000_000_000, 4_000_000_000))
    s = os.fstat(fd)
    out.append((s.st_atime_ns, s.st_mtime_ns))
    os.fchown(fd, 321, 654)
    s = os.fstat(fd)
    out.append((s.st_uid, s.st_gid))
    os.fsync(fd)
    out.append(os.pread(fd, 20, 0))
    return tuple(out)


def _scenario(root: str, how: str) -> tuple:
    p = os.path.join(root, "f")
    with open(p, "wb") as f:
        f.write(b"hello world")
    fd = os.open(p, os.O_RDWR)
    try:
        if how == "unlink":
            os.unlink(p)
        elif how == "rename":
            os.rename(p, os.path.join(root, "g"))
        elif how == "rename_over":
            with open(os.path.join(root, "h"), "wb") as f:
                f.write(b"other")
            os.rename(os.path.join(root, "h"), p)
        res = _fd_ops(fd)
        return res, sorted(os.listdir(root))
    finally:
        os.close(fd)


@pytest.mark.parametrize("how", ["unlink", "rename", "rename_over"])
def test_fd_survives(mount_pool, native, how):
    p = mount_pool(options=OPTS)
    compare(lambda: _scenario(p.mnt, how), lambda: _scenario(native, how))


def test_unlinked_file_data_visible_via_rename_path(mount_pool, native):
    """Writes through an fd whose path was renamed land in the renamed file."""
    p = mount_pool(options=OPTS)

    def run(root):
        fd = os.open(os.path.join(root, "a"), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            os.rename(os.path.join(root, "a"), os.path.join(root, "b"))
            os.write(fd, b"after-rename")
        finally:
            os.close(fd)
        with open(os.path.join(root, "b"), "rb") as f:
            return f.read()

    compare(lambda: run(p.mnt), lambda: run(native))


@pytest.mark.xfail(
    condition=is_reference(),
    strict=True,
    reason="2.33.5 answers ESTALE on an fd of a removed directory; native keeps it usable",
)
def test_unlinked_dir_fd(mount_pool, native):
    """fstat/fchmod on an fd of a removed directory; listdir of it is empty."""
    p = mount_pool(options=OPTS)

    def run(root):
        d = os.path.join(root, "d")
        os.mkdir(d)
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.rmdir(d)
            s = os.fstat(fd)
            os.fchmod(fd, 0o700)
            return stat.filemode(s.st_mode), stat.filemode(os.fstat(fd).st_mode), os.listdir(fd)
        finally:
            os.close(fd)

    compare(lambda: run(p.mnt), lambda: run(native))
