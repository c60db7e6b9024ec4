"""What the kernel session answers in C without the GIL (RENAME, RMDIR), proven
by its request counts (``user.mergerfs.requests``), with the results native
gives and the branch layout the Python path would leave."""

from __future__ import annotations

import errno
import os

import pytest

from .helpers import counts, err_of, get, is_llfuse, is_reference, put, served

pytestmark = pytest.mark.skipif(is_reference() or is_llfuse(), reason="the kernel session's request counts")
N = 24  # requests per check: a worker's first request of a caller goes to Python


def test_requests_key_is_read_only_and_counts(pool):
    os.mkdir(pool.path("d"))
    before = counts(pool.mnt)
    for i in range(N):
        assert not os.path.exists(pool.path(f"d/missing{i}"))  # a miss at the root is Python's
    compiled, python = served(pool.mnt, before, "LOOKUP", N)
    assert compiled + python >= N
    assert compiled >= N // 2
    assert err_of(os.setxattr, os.path.join(pool.mnt, ".mergerfs"), "user.mergerfs.requests", b"0") == errno.EROFS


def test_rename_on_every_branch_in_c(mount_pool):
    p = mount_pool(3, layout=[{f"d/f{i}": b"one" for i in range(N)}, {}, {f"d/f{i}": b"three" for i in range(N)}])
    before = counts(p.mnt)
    for i in range(N):
        os.rename(p.path(f"d/f{i}"), p.path(f"d/g{i}"))
    compiled, _ = served(p.mnt, before, "RENAME", N)
    assert compiled >= N // 2
    for i in range(N):
        assert p.where(f"d/g{i}") == [0, 2] and p.where(f"d/f{i}") == []
        assert get(p.path(f"d/g{i}")) == b"one"
        assert os.stat(p.path(f"d/g{i}")).st_size == 3


def test_rename_removes_an_older_target_elsewhere(mount_pool):
    """The source lives on branch 2, an older file of the target's name on
    branch 1 (which first-found would show): the rename removes it, as native
    replaces the target."""
    p = mount_pool(2, layout=[{f"t{i}": b"stale" for i in range(N)}, {f"s{i}": b"fresh" for i in range(N)}])
    before = counts(p.mnt)
    for i in range(N):
        os.rename(p.path(f"s{i}"), p.path(f"t{i}"))
    compiled, _ = served(p.mnt, before, "RENAME", N)
    assert compiled >= N // 2
    for i in range(N):
        assert get(p.path(f"t{i}")) == b"fresh"
        assert p.where(f"t{i}") == [1] and not os.path.lexists(p.path(f"s{i}"))


def test_rename_into_a_parent_missing_on_the_source_branch(mount_pool):
    """The new parent exists only on branch 1, the file only on branch 2: the
    C path hands it to Python, which clones the parent onto branch 2."""
    p = mount_pool(2, layout=[{"dst/": None}, {"src": b"data"}])
    os.rename(p.path("src"), p.path("dst/moved"))
    assert get(p.path("dst/moved")) == b"data"
    assert p.where("dst/moved") == [1] and p.where("dst") == [0, 1]


def test_rename_of_a_directory_keeps_its_children_reachable(mount_pool):
    p = mount_pool(2, layout=[{"a/x": b"1"}, {"a/y": b"2"}])
    assert sorted(os.listdir(p.path("a"))) == ["x", "y"]
    st = os.stat(p.path("a/x"))
    os.rename(p.path("a"), p.path("b"))
    assert get(p.path("b/x")) == b"1" and get(p.path("b/y")) == b"2"
    assert os.stat(p.path("b/x")).st_ino == st.st_ino
    assert not os.path.exists(p.path("a"))


def test_rename_over_and_onto_the_control_file(pool, native):
    put(pool.path("f"), b"x")
    for _ in range(3):  # whichever worker gets it, after it carries the caller
        assert err_of(os.rename, pool.path("f"), pool.path(".mergerfs")) == errno.EPERM
        assert err_of(os.rename, pool.path(".mergerfs"), pool.path("g")) == errno.EPERM
    assert get(pool.path("f")) == b"x"


def test_rename_errors_as_native(pool, native):
    for root in (pool.mnt, native):
        os.mkdir(os.path.join(root, "dir"))
        put(os.path.join(root, "file"), b"x")
    for _ in range(3):
        for old, new in (("file", "dir"), ("dir", "file"), ("missing", "z"), ("file", "nodir/z")):
            want = err_of(os.rename, os.path.join(native, old), os.path.join(native, new))
            assert err_of(os.rename, pool.path(old), pool.path(new)) == want, (old, new)


def test_rmdir_in_c_and_not_empty_anywhere(mount_pool, native):
    p = mount_pool(2, layout=[{f"e{i}/": None for i in range(N)}, {f"e{i}/": None for i in range(N)}])
    before = counts(p.mnt)
    for i in range(N):
        os.rmdir(p.path(f"e{i}"))
    compiled, _ = served(p.mnt, before, "RMDIR", N)
    assert compiled >= N // 2
    assert all(p.where(f"e{i}") == [] for i in range(N))
    # empty on branch 1, an entry on branch 2: ENOTEMPTY as native, nothing removed
    os.makedirs(p.branch_path(0, "busy"))
    os.makedirs(p.branch_path(1, "busy/sub"))
    os.makedirs(os.path.join(native, "busy/sub"))
    for _ in range(3):
        assert err_of(os.rmdir, p.path("busy")) == err_of(os.rmdir, os.path.join(native, "busy")) == errno.ENOTEMPTY
    assert p.where("busy") == [0, 1]
    put(p.path("plain"), b"x")
    put(os.path.join(native, "plain"), b"x")
    assert err_of(os.rmdir, p.path("plain")) == err_of(os.rmdir, os.path.join(native, "plain"))
