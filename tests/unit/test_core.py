"""Pure logic of the core: error precedence, aggregation, branch parsing,
inode numbering and the nodeid table, branch-list edits of the control file."""

import errno
import os

import pytest
from hypothesis import given, strategies as st

from mergerfs import inodes
from mergerfs.branches import (
    Branch,
    BranchSpec,
    format_branches,
    format_size,
    parse_branch_spec,
    parse_branches,
    parse_size,
)
from mergerfs.control import _edit_branches
from mergerfs.errors import Aggregate, rank, worse


def test_error_precedence_order():
    assert rank(errno.ENOENT) < rank(errno.ENOSPC) < rank(errno.EROFS) < rank(errno.EIO)
    assert worse(None, errno.ENOENT) == errno.ENOENT
    assert worse(errno.ENOSPC, errno.ENOENT) == errno.ENOSPC
    assert worse(errno.EROFS, errno.EACCES) == errno.EACCES
    assert worse(errno.EACCES, errno.EPERM) == errno.EACCES  # first of equals wins


def test_aggregate_any_success_wins_else_first_error():
    agg = Aggregate()
    agg.failure(errno.EACCES)
    agg.failure(errno.EPERM)
    with pytest.raises(OSError) as e:
        agg.raise_if_failed()
    assert e.value.errno == errno.EACCES
    agg.success()
    agg.raise_if_failed()
    with pytest.raises(OSError) as e:
        Aggregate().raise_if_failed()
    assert e.value.errno == errno.ENOENT


@pytest.mark.parametrize(
    "text,value", [("0", 0), ("10", 10), ("1K", 1024), ("4G", 4 << 30), ("2t", 2 << 40), ("7B", 7)]
)
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["", "G", "-1", "1.5G", "1X"])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


@given(st.integers(min_value=0, max_value=1 << 50))
def test_size_round_trip(n):
    assert parse_size(format_size(n)) == n


def test_branch_spec_forms():
    assert parse_branch_spec("/a") == BranchSpec("/a", "RW", None)
    assert parse_branch_spec("/a=ro") == BranchSpec("/a", "RO", None)
    assert parse_branch_spec("/a=NC,10G") == BranchSpec("/a", "NC", 10 << 30)
    with pytest.raises(ValueError):
        parse_branch_spec("/a=XX,1G")
    specs = parse_branches("/a=RW:/b=RO,1M:/c")
    assert parse_branches(format_branches(specs)) == specs


@pytest.mark.parametrize("text", ["=:=:=", "=RW", "/a::/c", "/a:", ":/a", " :/a", "=RO,1G"])
def test_empty_branch_path_refused(text):
    """An empty entry beside real ones is an error (as 2.42), never a relative path ''."""
    with pytest.raises(ValueError):
        parse_branches(text)


def test_no_branch_at_all_is_an_empty_list():
    assert parse_branches("") == [] and parse_branches(":") == []


def test_branch_full_path():
    assert Branch("/srv/d1").full("/") == "/srv/d1"
    assert Branch("/srv/d1").full("/x/y") == "/srv/d1/x/y"
    assert Branch("/").full("/x") == "/x"


@pytest.mark.parametrize("calc", inodes.CALCS)
def test_inodecalc_never_root_or_zero(calc):
    for ino in (0, 1, 2, 12345):
        v = inodes.calc(calc, "/p", 0o100644, 7, ino)
        assert v > inodes.ROOT
        if calc.endswith("32"):
            assert v < 2**32 + 2


def test_hybrid_hash_dirs_by_path_files_by_devino():
    d1 = inodes.calc("hybrid-hash", "/d", 0o040755, 1, 10)
    d2 = inodes.calc("hybrid-hash", "/d", 0o040755, 2, 99)
    assert d1 == d2  # same path, any branch: one directory
    f1 = inodes.calc("hybrid-hash", "/a", 0o100644, 1, 10)
    f2 = inodes.calc("hybrid-hash", "/b", 0o100644, 1, 10)
    assert f1 == f2  # hard links share an inode
    assert f1 != inodes.calc("hybrid-hash", "/a", 0o100644, 2, 10)


def test_table_rename_moves_subtree_and_forget_drops():
    t = inodes.InodeTable()
    a, _ = t.remember(100, "/a", inodes.identity(1, 1), isdir=True)
    b, _ = t.remember(101, "/a/b", inodes.identity(1, 2))
    t.renamed("/a", "/z")
    assert t.relpath(a) == "/z" and t.relpath(b) == "/z/b"
    t.forget(b, 1)
    with pytest.raises(OSError) as e:
        t.relpath(b)
    assert e.value.errno == errno.ESTALE


def test_table_hard_links_survive_unlink_of_one_name():
    t = inodes.InodeTable()
    a, _ = t.remember(100, "/a", inodes.identity(1, 1))
    b, _ = t.remember(100, "/b", inodes.identity(1, 1))
    assert a == b == 100
    t.unlinked("/b")
    assert t.relpath(a) == "/a"
    t.renamed("/c", "/a")  # something unknown replaced /a: the node keeps its last name
    assert t.relpath(a) == "/a"


def test_table_shrinks_after_a_big_walk_is_forgotten():
    t = inodes.InodeTable()
    inos = [t.remember(1000 + i, f"/d/f{i}", inodes.identity(1, i))[0] for i in range(10000)]
    for ino in inos[:9000]:
        t.forget(ino, 1)
    assert len(t.nodeids()) == 1 + 1000  # root and the ones still held
    assert [t.relpath(i) for i in inos[9000:]] == [f"/d/f{i}" for i in range(9000, 10000)]
    t.renamed("/d/f9999", "/d/g")  # the path index survived the shrink
    assert t.relpath(inos[-1]) == "/d/g"


def test_table_rename_between_two_names_of_one_file():
    t = inodes.InodeTable()
    a, _ = t.remember(100, "/a", inodes.identity(1, 1))
    t.remember(100, "/b", inodes.identity(1, 1))  # hard link
    t.renamed("/a", "/b")  # POSIX: a no-op, both names stay
    t.unlinked("/b")
    t.unlinked("/a")  # the node keeps a name for its open fds
    assert t.relpath(a) in ("/a", "/b")


def test_table_reused_inode_number_is_a_new_object():
    t = inodes.InodeTable()
    a, _ = t.remember(100, "/a", inodes.identity(1, 7))
    t.unlinked("/a")  # ext4 hands inode 7 to the next file at once
    b, replaced = t.remember(100, "/b", inodes.identity(1, 7))
    assert b != a and not replaced  # a fresh kernel inode: no stale pages or size
    c, replaced = t.remember(100, "/a", inodes.identity(1, 7))  # same name again
    assert c == a and replaced  # the caller invalidates the kernel's data


def test_table_never_merges_two_objects():
    t = inodes.InodeTable()
    a, _ = t.remember(100, "/a", inodes.identity(1, 1))
    b, replaced = t.remember(100, "/b", inodes.identity(1, 2))  # same number, other object, other path
    assert a == 100 and b != 100 and not replaced
    c, replaced = t.remember(100, "/a", inodes.identity(1, 3))  # same path now holds another object
    assert c == 100 and replaced


@pytest.mark.parametrize(
    "edit,expect",
    [
        ("/x", "/x=RW"),
        ("+/x", "/a=RW:/b=RO:/x=RW"),
        ("+>/x", "/a=RW:/b=RO:/x=RW"),
        ("+</x", "/x=RW:/a=RW:/b=RO"),
        ("-/a", "/b=RO"),
        ("-<", "/b=RO"),
        ("->", "/a=RW"),
    ],
)
def test_control_branch_edits(edit, expect):
    assert format_branches(parse_branches(_edit_branches("/a=RW:/b=RO", edit))) == expect


def test_worker_count_default_negative_and_cap():
    import os

    from mergerfs.lifecycle import DEFAULT_THREADS, MAX_THREADS, worker_count

    assert worker_count(0) == DEFAULT_THREADS
    assert worker_count(1) == 2 and worker_count(8) == 8
    assert worker_count(2**31 - 1) == MAX_THREADS
    assert worker_count(-1) == max(2, os.cpu_count() or 1)
    assert worker_count(-1000) == 2


@pytest.mark.parametrize(
    ("paths", "expect"),
    [
        (["/srv/alpha", "/srv/beta"], "alpha:beta"),
        (["/srv/disk1", "/srv/disk2"], "1:2"),  # character-wise, as the reference (2.33.5 checked)
        (["/srv/d", "/srv/d2"], "/srv/d:/srv/d2"),  # first is a prefix of the rest: whole paths
        (["/srv/d2", "/srv/d"], "2:"),
        (["/x"], "/x"),
    ],
)
def test_default_fsname_strips_common_prefix_like_the_reference(paths, expect):
    from types import SimpleNamespace

    from mergerfs.lifecycle import _fsname

    assert _fsname({"fsname": ""}, [SimpleNamespace(path=p) for p in paths]) == expect


def test_never_forget_nodes_keeps_forgotten_nodes():
    """never-forget-nodes: a FORGET leaves the node answering (NFS file handles stay valid)."""
    t = inodes.InodeTable()
    t.never_forget = True
    b, _ = t.remember(101, "/b", inodes.identity(1, 2))
    t.forget(b, 1)
    assert t.relpath(b) == "/b"
    t2 = inodes.InodeTable()
    c, _ = t2.remember(102, "/c", inodes.identity(1, 3))
    t2.forget(c, 1)
    with pytest.raises(OSError):
        t2.relpath(c)


def test_mount_table_fields_are_unescaped():
    from mergerfs import mounts

    assert mounts.unescape(r"/a\040b\011c\012d\134e\040") == "/a b\tc\nd\\e "
    assert mounts.unescape(r"/x\08y") == r"/x\08y"  # not an escape: kept as written
    root = mounts.holding("/proc/self")
    assert root is not None and root.fstype == "proc"


def test_local_devs_only_for_local_filesystems(tmp_path):
    """The compiled listing (no deadline) is for local filesystems only: /proc
    stands for any other type, a missing path for a root that does not stat."""
    from mergerfs import mounts

    here = mounts.holding(str(tmp_path))
    if here is None or here.fstype not in mounts.LOCAL_FSTYPES:
        pytest.skip(f"{tmp_path} is not on a local filesystem")
    dev = os.stat(tmp_path).st_dev
    assert mounts.local_devs([str(tmp_path), str(tmp_path)]) == [dev, dev]
    assert mounts.local_devs([str(tmp_path), "/proc"]) is None
    assert mounts.local_devs([str(tmp_path / "missing")]) is None
    assert mounts.local_devs([]) == []
