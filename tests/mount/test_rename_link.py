"""rename and link placement across branches that are separate tmpfs filesystems.

Each branch is its own device, so a rename that would need data to cross
branches must end in EXDEV (or the rename-exdev / link-exdev fallbacks).
"""

from __future__ import annotations

import errno
import os

import pytest

from .branchfs import err_of, is_reference, pool, tmpfs_branches, where

pytestmark = pytest.mark.mount

#: kernel caches off, so a name changed behind the kernel's back is looked up afresh.
BASE = "minfreespace=1M,cache.attr=0,cache.entry=0"
EXDEV_DIR = ".mergerfs_rename_exdev"


@pytest.fixture
def br():
    with tmpfs_branches([8, 16, 12]) as b:
        yield b


def put(br, i, rel, data=b"data"):
    p = os.path.join(br[i], rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)


def read(p):
    with open(p, "rb") as f:
        return f.read()


# -- rename ---------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["epmfs", "ff", "mfs"])
def test_rename_within_branch(br, policy):
    put(br, 0, "f")
    with pool(br, f"{BASE},category.create={policy}") as m:
        os.rename(os.path.join(m, "f"), os.path.join(m, "g"))
        assert read(os.path.join(m, "g")) == b"data"
        assert not os.path.exists(os.path.join(m, "f"))
    assert where(br, "g") == [0] and where(br, "f") == []


def test_rename_dir_on_several_branches(br):
    for i in (0, 2):
        put(br, i, f"x/f{i}")
    with pool(br, f"{BASE},category.create=epmfs") as m:
        os.rename(os.path.join(m, "x"), os.path.join(m, "y"))
        assert sorted(os.listdir(os.path.join(m, "y"))) == ["f0", "f2"]
    assert where(br, "y") == [0, 2] and where(br, "x") == []


def test_rename_removes_stale_target_elsewhere(br):
    """The target left on a branch without a source copy is removed (it would shadow the result)."""
    put(br, 0, "g", b"old")
    put(br, 1, "f", b"new")
    with pool(br, f"{BASE},category.create=epmfs") as m:
        os.rename(os.path.join(m, "f"), os.path.join(m, "g"))
        assert read(os.path.join(m, "g")) == b"new"
    assert where(br, "g") == [1] and where(br, "f") == []


def test_rename_pp_target_parent_elsewhere_exdev(br):
    """Path-preserving create policy, target parent only on another branch: EXDEV, nothing moves."""
    put(br, 0, "f")
    os.mkdir(os.path.join(br[1], "d"))
    with pool(br, f"{BASE},category.create=epmfs") as m:
        assert err_of(os.rename, os.path.join(m, "f"), os.path.join(m, "d", "f")) == errno.EXDEV
        assert read(os.path.join(m, "f")) == b"data"
    assert where(br, "f") == [0] and where(br, "d/f") == [] and where(br, "d") == [1]


@pytest.mark.parametrize(
    "opts", ["category.create=ff", "category.create=mfs", "category.create=epmfs,ignorepponrename=true"]
)
def test_rename_non_pp_clones_parent(br, opts):
    """Non-path-preserving (or ignorepponrename): clone the target parent onto the source branch."""
    put(br, 0, "f")
    os.mkdir(os.path.join(br[1], "d"))
    os.chmod(os.path.join(br[1], "d"), 0o750)
    with pool(br, f"{BASE},{opts}") as m:
        os.rename(os.path.join(m, "f"), os.path.join(m, "d", "f"))
        assert read(os.path.join(m, "d", "f")) == b"data"
    assert where(br, "d/f") == [0] and where(br, "f") == []
    assert where(br, "d") == [0, 1]
    assert os.stat(os.path.join(br[0], "d")).st_mode & 0o777 == 0o750


def test_rename_pp_partial_success_removes_failed_source(br):
    """Sources on two branches, target parent on one: rename there, drop the other source."""
    put(br, 0, "f", b"zero")
    put(br, 1, "f", b"one")
    os.mkdir(os.path.join(br[1], "d"))
    with pool(br, f"{BASE},category.create=epmfs") as m:
        os.rename(os.path.join(m, "f"), os.path.join(m, "d", "f"))
        assert read(os.path.join(m, "d", "f")) == b"one"
        assert not os.path.exists(os.path.join(m, "f"))
    assert where(br, "d/f") == [1] and where(br, "f") == []


def test_rename_pp_create_picks_source_branch_clones(br):
    """epmfs picks the source branch for the target (it has the most space): clone and rename there."""
    put(br, 1, "f")  # branch 1 is the biggest
    os.makedirs(os.path.join(br[1], "a"))
    os.makedirs(os.path.join(br[0], "a", "d"))
    with pool(br, f"{BASE},category.create=epmfs") as m:
        # the target parent a/d exists only on branch 0; epmfs for "a/d" chooses branch 0 -> EXDEV
        assert err_of(os.rename, os.path.join(m, "f"), os.path.join(m, "a", "d", "f")) == errno.EXDEV
    assert where(br, "f") == [1]


def test_rename_missing_source_enoent(br):
    with pool(br, f"{BASE}") as m:
        assert err_of(os.rename, os.path.join(m, "nope"), os.path.join(m, "x")) == errno.ENOENT


def test_rename_action_policy_ro_source(br):
    """A source present only on an RO branch cannot be renamed: EROFS."""
    put(br, 2, "f")
    spec = [b + "=RO" if i == 2 else b for i, b in enumerate(br)]
    with pool(spec, f"{BASE}") as m:
        assert err_of(os.rename, os.path.join(m, "f"), os.path.join(m, "g")) == errno.EROFS
    assert where(br, "f") == [2]


@pytest.mark.parametrize("kind", ["rel-symlink", "abs-symlink"])
def test_rename_exdev_symlink(br, kind):
    """rename-exdev=*-symlink: the file moves into .mergerfs_rename_exdev on its own branch and a
    symlink (relative, or absolute through the pool) takes the new name where the policy puts it."""
    put(br, 0, "f")
    os.mkdir(os.path.join(br[1], "d"))
    with pool(br, f"{BASE},category.create=epmfs,rename-exdev={kind}", skip_reject=True) as m:
        os.rename(os.path.join(m, "f"), os.path.join(m, "d", "f"))
        assert not os.path.lexists(os.path.join(m, "f"))
        target = os.readlink(os.path.join(m, "d", "f"))
        assert read(os.path.join(m, "d", "f")) == b"data"
    assert where(br, f"{EXDEV_DIR}/f") == [0]
    assert where(br, "d/f") == [1] and where(br, "f") == []
    assert os.path.islink(os.path.join(br[1], "d", "f"))
    if kind == "rel-symlink":
        assert target == f"../{EXDEV_DIR}/f"
    else:
        assert target == os.path.join(m, EXDEV_DIR, "f")


def test_rename_exdev_passthrough(br):
    put(br, 0, "f")
    os.mkdir(os.path.join(br[1], "d"))
    with pool(br, f"{BASE},category.create=epmfs,rename-exdev=passthrough", skip_reject=True) as m:
        assert err_of(os.rename, os.path.join(m, "f"), os.path.join(m, "d", "f")) == errno.EXDEV
    assert where(br, EXDEV_DIR) == []


# -- link -----------------------------------------------------------------------------------


def test_link_same_branch(br):
    put(br, 0, "f")
    with pool(br, f"{BASE},category.create=epmfs") as m:
        os.link(os.path.join(m, "f"), os.path.join(m, "g"))
        assert os.stat(os.path.join(m, "g")).st_nlink == 2
        if not is_reference():  # 2.33.5 quirk: the two names show different st_ino
            assert os.stat(os.path.join(m, "f")).st_ino == os.stat(os.path.join(m, "g")).st_ino
    assert where(br, "g") == [0]
    assert os.stat(os.path.join(br[0], "g")).st_ino == os.stat(os.path.join(br[0], "f")).st_ino


def test_link_on_every_source_branch(br):
    """link acts on every branch holding the source (action policy epall)."""
    put(br, 0, "f")
    put(br, 2, "f")
    with pool(br, f"{BASE},category.create=epmfs") as m:
        os.link(os.path.join(m, "f"), os.path.join(m, "g"))
    assert where(br, "g") == [0, 2]


def test_link_pp_exdev(br):
    put(br, 0, "f")
    os.mkdir(os.path.join(br[1], "d"))
    with pool(br, f"{BASE},category.create=epmfs") as m:
        assert err_of(os.link, os.path.join(m, "f"), os.path.join(m, "d", "g")) == errno.EXDEV
    assert where(br, "d/g") == []


@pytest.mark.parametrize("opts", ["category.create=ff", "category.create=epmfs,ignorepponrename=true"])
def test_link_non_pp_clones_parent(br, opts):
    put(br, 0, "f")
    os.mkdir(os.path.join(br[1], "d"))
    with pool(br, f"{BASE},{opts}") as m:
        os.link(os.path.join(m, "f"), os.path.join(m, "d", "g"))
    assert where(br, "d/g") == [0] and where(br, "f") == [0]
    assert os.stat(os.path.join(br[0], "d", "g")).st_nlink == 2


@pytest.mark.parametrize("kind", ["rel-symlink", "abs-base-symlink", "abs-pool-symlink"])
def test_link_exdev_symlink(br, kind):
    """link-exdev=*: an EXDEV hard link becomes a symlink on the branch holding the target parent."""
    put(br, 0, "f")
    os.mkdir(os.path.join(br[1], "d"))
    with pool(br, f"{BASE},category.create=epmfs,link-exdev={kind}", skip_reject=True) as m:
        os.link(os.path.join(m, "f"), os.path.join(m, "d", "g"))
        target = os.readlink(os.path.join(m, "d", "g"))
        assert read(os.path.join(m, "d", "g")) == b"data"
        expect = {
            "rel-symlink": "../f",
            "abs-base-symlink": os.path.join(br[0], "f"),
            "abs-pool-symlink": os.path.join(m, "f"),
        }[kind]
        assert target == expect
    assert where(br, "d/g") == [1] and where(br, "f") == [0]
    assert os.path.islink(os.path.join(br[1], "d", "g"))


def test_link_exdev_passthrough(br):
    put(br, 0, "f")
    os.mkdir(os.path.join(br[1], "d"))
    with pool(br, f"{BASE},category.create=epmfs,link-exdev=passthrough", skip_reject=True) as m:
        assert err_of(os.link, os.path.join(m, "f"), os.path.join(m, "d", "g")) == errno.EXDEV
