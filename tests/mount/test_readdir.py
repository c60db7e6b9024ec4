"""readdir through the pool: merged names, first branch wins, d_type, scale, hidden control file."""

from __future__ import annotations

import os
import stat
import time

import pytest

OPTS = "cache.files=off,cache.attr=0,cache.entry=0,cache.negative_entry=0"


def test_merged_listing_dedup_first_wins(mount_pool):
    p = mount_pool(
        options=OPTS,
        layout=[
            {"same": b"first", "only1": b"1", "d/": None, "d/x": b"x"},
            {"same": b"second-longer", "only2": b"22", "d/": None, "d/y": b"y"},
            {"same": b"third!!!!!!!!!!!!!!!!!", "only3": b"333", "d/": None, "d/x": b"other"},
        ],
    )
    names = os.listdir(p.mnt)
    assert sorted(names) == ["d", "only1", "only2", "only3", "same"]
    assert len(names) == len(set(names))
    assert sorted(os.listdir(p.path("d"))) == ["x", "y"]
    assert os.stat(p.path("same")).st_size == len(b"first")
    with open(p.path("same"), "rb") as f:
        assert f.read() == b"first"
    with open(p.path("d/x"), "rb") as f:
        assert f.read() == b"x"
    assert os.stat(p.path("only3")).st_size == 3


def test_dir_on_later_branch_only(mount_pool):
    p = mount_pool(options=OPTS, layout=[{}, {}, {"deep/": None, "deep/z": b"z"}])
    assert os.listdir(p.path("deep")) == ["z"]


def test_d_type_without_stat(mount_pool):
    p = mount_pool(options=OPTS, layout=[{"f": b"", "d/": None}, {}, {}])
    os.symlink("f", p.branch_path(1, "l"))
    os.mkfifo(p.branch_path(2, "fifo"))
    got = {
        e.name: (e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False), e.is_symlink())
        for e in os.scandir(p.mnt)
    }
    assert got == {
        "f": (False, True, False),
        "d": (True, False, False),
        "l": (False, False, True),
        "fifo": (False, False, False),
    }
    # scandir's d_type must agree with lstat
    for e in os.scandir(p.mnt):
        mode = os.lstat(e.path).st_mode
        assert e.is_dir(follow_symlinks=False) == stat.S_ISDIR(mode)
        assert e.is_symlink() == stat.S_ISLNK(mode)


def test_control_file_hidden_but_statable(pool):
    assert ".mergerfs" not in os.listdir(pool.mnt)
    assert ".mergerfs" not in [e.name for e in os.scandir(pool.mnt)]
    s = os.stat(os.path.join(pool.mnt, ".mergerfs"))
    assert stat.S_ISREG(s.st_mode)


def test_listing_after_changes(pool):
    for n in ("a", "b", "c"):
        open(pool.path(n), "w").close()
    os.unlink(pool.path("b"))
    os.rename(pool.path("c"), pool.path("z"))
    assert sorted(os.listdir(pool.mnt)) == ["a", "z"]


def test_empty_dir_lists_nothing(pool):
    os.mkdir(pool.path("e"))
    assert os.listdir(pool.path("e")) == []


def test_readdir_enotdir(pool):
    open(pool.path("f"), "w").close()
    with pytest.raises(NotADirectoryError):
        os.listdir(pool.path("f"))


@pytest.mark.slow
def test_100k_entries(mount_pool, tmp_path):
    """100k names split over 3 branches (with overlap) list exactly once each."""
    p = mount_pool(options=OPTS)
    n = 100_000
    for i, b in enumerate(p.branches):
        d = os.path.join(b, "big")
        os.mkdir(d)
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            # branch i holds names i*n/3 .. (i+1)*n/3 + 100 (100 overlapping names)
            lo, hi = i * n // 3, min(n, (i + 1) * n // 3 + 100)
            for k in range(lo, hi):
                os.close(os.open(f"f{k:06d}", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
        finally:
            os.close(fd)
    t = time.monotonic()
    names = os.listdir(p.path("big"))
    took = time.monotonic() - t
    assert len(names) == n
    assert len(set(names)) == n
    assert took < 60, f"listing 100k took {took:.1f}s"
