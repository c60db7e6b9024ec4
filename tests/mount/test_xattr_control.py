"""The ``.mergerfs`` control file: listing, reading and changing options at runtime."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from .helpers import is_reference

CTL = ".mergerfs"
P = "user.mergerfs."


def ctl(pool) -> str:
    return os.path.join(pool.mnt, CTL)


def get(pool, key: str) -> str:
    return os.getxattr(ctl(pool), P + key).decode()


def test_stat(pool):
    s = os.stat(ctl(pool))
    assert stat.S_ISREG(s.st_mode)


def test_listxattr_has_options(pool):
    keys = os.listxattr(ctl(pool))
    for k in (
        "branches",
        "minfreespace",
        "category.create",
        "func.getattr",
        "moveonenospc",
        "cache.files",
        "version",
        "pid",
    ):
        assert P + k in keys, k
    assert all(k.startswith(P) for k in keys)


def test_every_listed_key_readable(pool):
    for k in os.listxattr(ctl(pool)):
        os.getxattr(ctl(pool), k)


def test_info_keys(pool):
    assert get(pool, "version")
    assert int(get(pool, "pid")) > 0
    assert get(pool, "mount") == pool.mnt
    assert get(pool, "branches").split(":")[0].split("=")[0] == pool.branches[0]

    def paths(v):
        return [b.split("=")[0] for b in v.split(":")]

    assert paths(get(pool, "srcmounts")) == paths(get(pool, "branches"))


@pytest.mark.xfail(
    condition=is_reference(), strict=True, reason="2.33.5 reports the pid of its pre-fork parent, not the daemon"
)
def test_pid_is_daemon(pool):
    pid = int(get(pool, "pid"))
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert pool.mnt.encode() in f.read()


@pytest.mark.parametrize(
    "key,value,expect",
    [
        ("category.create", "mfs", "mfs"),
        ("func.getattr", "newest", "newest"),
        ("minfreespace", "1G", "1073741824"),
        ("moveonenospc", "false", "false"),
        ("dropcacheonclose", "true", "true"),
    ],
)
def test_set_then_get(pool, key, value, expect):
    os.setxattr(ctl(pool), P + key, value.encode())
    got = get(pool, key)
    assert got == expect or (key == "minfreespace" and got in ("1G", "1073741824"))


@pytest.mark.parametrize(
    "key,value",
    [
        pytest.param(
            "category.create",
            "nosuchpolicy",
            marks=pytest.mark.xfail(
                condition=is_reference(),
                strict=True,
                reason="2.33.5 daemon crashes on an unknown policy name for a category",
            ),
        ),
        pytest.param(
            "func.getattr",
            "nosuchpolicy",
            marks=pytest.mark.xfail(
                condition=is_reference(),
                strict=True,
                reason="2.33.5 daemon crashes on an unknown policy name for a func",
            ),
        ),
        ("minfreespace", "lots"),
        ("moveonenospc", "maybe"),
    ],
)
def test_bad_value_einval_unchanged(pool, key, value):
    before = get(pool, key)
    with pytest.raises(OSError) as ei:
        os.setxattr(ctl(pool), P + key, value.encode())
    assert ei.value.errno == errno.EINVAL
    assert get(pool, key) == before


def test_unknown_key(pool):
    with pytest.raises(OSError) as ei:
        os.getxattr(ctl(pool), P + "nosuchkey")
    assert ei.value.errno == errno.ENODATA
    with pytest.raises(OSError) as ei:
        os.setxattr(ctl(pool), P + "nosuchkey", b"1")
    assert ei.value.errno == errno.ENODATA


def test_create_policy_change_takes_effect(mount_pool):
    p = mount_pool(options="category.create=ff,cache.attr=0,cache.entry=0,cache.negative_entry=0")
    open(p.path("a"), "w").close()
    assert p.where("a") == [0]
    os.setxattr(ctl(p), P + "category.create", b"lfs")
    os.setxattr(ctl(p), P + "minfreespace", b"0")
    open(p.path("b"), "w").close()
    assert len(p.where("b")) == 1


def _branch_paths(pool) -> list[str]:
    return [b.split("=")[0] for b in get(pool, "branches").split(":") if b]


def test_branches_forms(mount_pool, tmp_path):
    p = mount_pool(n=2)
    extra1, extra2 = tmp_path / "x1", tmp_path / "x2"
    extra1.mkdir()
    extra2.mkdir()
    b1, b2 = p.branches
    os.setxattr(ctl(p), P + "branches", f"+>{extra1}".encode())
    assert _branch_paths(p) == [b1, b2, str(extra1)]
    os.setxattr(ctl(p), P + "branches", f"+<{extra2}".encode())
    assert _branch_paths(p) == [str(extra2), b1, b2, str(extra1)]
    os.setxattr(ctl(p), P + "branches", f"-{b2}".encode())
    assert _branch_paths(p) == [str(extra2), b1, str(extra1)]
    os.setxattr(ctl(p), P + "branches", b"-<")
    assert _branch_paths(p) == [b1, str(extra1)]
    os.setxattr(ctl(p), P + "branches", b"->")
    assert _branch_paths(p) == [b1]
    os.setxattr(ctl(p), P + "branches", f"+{b2}".encode())
    assert _branch_paths(p) == [b1, b2]
    os.setxattr(ctl(p), P + "branches", f"{extra1}:{b1}".encode())
    assert _branch_paths(p) == [str(extra1), b1]
    # the new branch list is what the pool shows
    (extra1 / "seen").write_text("hi")
    assert "seen" in os.listdir(p.mnt)


def test_per_path_keys(mount_pool):
    p = mount_pool(layout=[{}, {"d/": None, "d/f": b"1"}, {"d/": None, "d/f": b"2"}])
    f = p.path("d/f")
    assert os.getxattr(f, P + "basepath").decode() == p.branches[1]
    assert os.getxattr(f, P + "relpath").decode() == "/d/f"
    assert os.getxattr(f, P + "fullpath").decode() == p.branch_path(1, "d/f")
    allp = [x for x in os.getxattr(f, P + "allpaths").decode().split("\0") if x]
    assert allp == [p.branch_path(1, "d/f"), p.branch_path(2, "d/f")]
    assert os.getxattr(p.path("d"), P + "relpath").decode() == "/d"
    # not listed on ordinary files
    assert not [k for k in os.listxattr(f) if k.startswith(P)]


def test_glob_branches_read_back_expanded(mount_pool, tmp_path):
    """Scripts read the branch list to find the disks: a glob reads back as the
    disks it matched (srcmounts: paths only), as the reference does."""
    for d in ("disk2", "disk1", "other"):
        (tmp_path / d).mkdir()
    pattern = str(tmp_path / "disk*")
    p = mount_pool(branches=[pattern + "=RW", str(tmp_path / "other") + "=NC"])
    d1, d2, o = (str(tmp_path / n) for n in ("disk1", "disk2", "other"))
    assert get(p, "branches") == f"{d1}=RW:{d2}=RW:{o}=NC"
    assert get(p, "srcmounts") == f"{d1}:{d2}:{o}"
    # an edit names one of the expanded disks
    os.setxattr(ctl(p), P + "branches", f"-{d1}".encode())
    assert get(p, "branches") == f"{d2}=RW:{o}=NC"


@pytest.mark.parametrize(
    "value",
    [
        "=:=:=",  # empty paths (both references refuse it)
        "=RW",
        "{b0}::{b1}",  # an empty entry among real ones (2.42 refuses it)
        "{b0}:",
        "",  # nothing at all
        ":",
        "rel",  # relative: the daemon's cwd means nothing to the caller
        "{b0}:rel=RO",
        "+>rel",
        "+<=",
        "{missing}",  # nothing valid: the pool would show only its error entry
        "{missing}*",
        "-<<",
    ],
)
def test_bad_branches_einval_unchanged(mount_pool, tmp_path, value):
    p = mount_pool(n=2)
    before = get(p, "branches")
    text = value.format(b0=p.branches[0], b1=p.branches[1], missing=tmp_path / "missing")
    if value == "-<<":  # removing every branch, one edit at a time, stops at the last one
        os.setxattr(ctl(p), P + "branches", b"-<")
        before = get(p, "branches")
        text = "-<"
    with pytest.raises(OSError) as ei:
        os.setxattr(ctl(p), P + "branches", text.encode())
    assert ei.value.errno == errno.EINVAL
    assert get(p, "branches") == before
    assert os.listdir(p.mnt) == []  # still the real (empty) branches, no error entry
