"""Hostile names: the longest legal names and one byte more, non-UTF-8 bytes,
newlines and control characters, option-looking names, ``..`` games and symlinks
pointing out of the pool. Each sequence of calls runs on the pool and on a native
directory; outcomes (values and errnos) must match, and what lands on the branch
is exactly the bytes asked for, inside the branch.
"""

from __future__ import annotations

import functools
import os
import stat

import pytest

from .helpers import errname, is_reference, outcome

OPTS = "category.create=ff,cache.attr=0,cache.entry=0,cache.negative_entry=0"

NAMES = [
    b"a" * 255,
    "é".encode() * 127 + b"x",  # 255 bytes of multibyte UTF-8
    b"\xff\xfe\x80not-utf8",
    b"latin1-\xe9t\xe9",
    b"new\nline",
    b"tab\tand\rcr\x01\x7f",
    b"-o",
    b"--help",
    b"-",
    b"-f",
    b"--",
    b"-o allow_other",
    b" lead",
    b"trail ",
    b"...",
    b".hidden",
    b"..x",
    b"x..",
    b"back\\slash",
    b"star*?[]",
    b"semi;colon|pipe$`",
    b"colon:equals=RO",
    b".mergerfs_x",
    b"%s%n%x",
]


def _read(path: bytes) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _create(path: bytes) -> None:
    open(path, "wb").close()


@pytest.fixture
def roots(mount_pool, native):
    p = mount_pool(n=2, options=OPTS)
    return p, os.fsencode(p.mnt), os.fsencode(native)


def _seq(root: bytes, name: bytes) -> list:
    """create, write, stat, list, rename, readback, mkdir inside, rmdir, unlink."""
    p = os.path.join(root, name)
    q = os.path.join(root, b"renamed")
    out = []

    def step(fn):
        out.append(errname(outcome(fn)))

    def create():
        fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640)
        os.write(fd, name)
        os.close(fd)

    def size(path):
        return os.stat(path).st_size

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    step(create)
    step(lambda: size(p))
    step(lambda: name in os.listdir(root))
    step(lambda: os.rename(p, q))
    step(lambda: read(q))
    step(lambda: os.rename(q, p))
    step(lambda: os.mkdir(p))  # EEXIST
    step(lambda: os.unlink(p))
    step(lambda: os.mkdir(p, 0o750))
    step(lambda: os.close(os.open(os.path.join(p, name), os.O_CREAT | os.O_WRONLY, 0o600)))
    step(lambda: sorted(os.listdir(p)))
    step(lambda: os.symlink(name, os.path.join(p, b"l")))
    step(lambda: os.readlink(os.path.join(p, b"l")))
    step(lambda: os.rmdir(p))  # ENOTEMPTY
    step(lambda: os.unlink(os.path.join(p, name)))
    step(lambda: os.unlink(os.path.join(p, b"l")))
    step(lambda: os.rmdir(p))
    step(lambda: os.listdir(root))
    return out


@pytest.mark.parametrize("name", NAMES, ids=lambda n: repr(n)[:24])
def test_name_matches_native(roots, name):
    p, mnt, native = roots
    got, want = _seq(mnt, name), _seq(native, name)
    assert got == want
    # while it exists, the branch holds exactly these bytes, inside the branch
    fd = os.open(os.path.join(mnt, name), os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    b = os.fsencode(p.branches[0])
    assert os.listdir(b) == [name]
    assert os.path.isfile(os.path.join(b, name))


_REF_ENOENT = pytest.mark.xfail(
    condition=is_reference(), strict=True, reason="2.33.5 answers a lookup of a too-long name ENOENT"
)


@pytest.mark.parametrize("n", [pytest.param(256, marks=_REF_ENOENT), pytest.param(300, marks=_REF_ENOENT), 4096])
def test_too_long_names(roots, n):
    _, mnt, native = roots
    name = b"n" * n
    for fn in (
        lambda r: os.open(os.path.join(r, name), os.O_CREAT | os.O_WRONLY, 0o644),
        lambda r: os.stat(os.path.join(r, name)),
        lambda r: os.mkdir(os.path.join(r, name)),
        lambda r: os.symlink(b"t", os.path.join(r, name)),
        lambda r: os.rename(os.path.join(r, b"."), os.path.join(r, name)),
    ):
        a, b = errname(outcome(functools.partial(fn, mnt))), errname(outcome(functools.partial(fn, native)))
        assert a == b
        assert a[1] in ("ENAMETOOLONG", "EBUSY", "EINVAL")


def test_longest_path(roots):
    """Nested 255-byte components up to ~4 KiB of path: same outcomes as native."""
    _, mnt, native = roots
    comp = b"c" * 255
    outs = []
    for root in (mnt, native):
        seq = []
        rel = b""
        for _ in range(16):
            rel = os.path.join(rel, comp)
            seq.append(errname(outcome(functools.partial(os.mkdir, os.path.join(root, rel)))))
        seq.append(errname(outcome(functools.partial(_create, os.path.join(root, rel, b"f")))))
        outs.append(seq)
    assert outs[0] == outs[1]
    assert "ENAMETOOLONG" in str(outs[0]), outs[0]


def test_dotdot_games(roots):
    """``..`` is resolved by the kernel against the pool's own tree: it never
    reaches a branch's parent, and matches native."""
    p, mnt, native = roots
    for root in (mnt, native):
        os.makedirs(os.path.join(root, b"d/e"))
    checks = [
        lambda r: open(os.path.join(r, b"d/e/../../top"), "wb").close(),
        lambda r: sorted(os.listdir(os.path.join(r, b"d/e/../.."))),
        lambda r: os.rename(os.path.join(r, b"d/e/../../top"), os.path.join(r, b"d/./e/../moved")),
        lambda r: sorted(os.listdir(os.path.join(r, b"d"))),
        lambda r: os.mkdir(os.path.join(r, b"d/..")),
        lambda r: os.rmdir(os.path.join(r, b"d/e/..")),
        lambda r: os.rmdir(os.path.join(r, b"d/e/.")),
        lambda r: os.unlink(os.path.join(r, b"d/..")),
        lambda r: os.rename(os.path.join(r, b"d"), os.path.join(r, b"d/e/inside")),
        lambda r: os.link(os.path.join(r, b"d/moved"), os.path.join(r, b"d/e/../../hl")),
        lambda r: os.stat(os.path.join(r, b"d/e/../../hl")).st_nlink,
    ]
    for fn in checks:
        a, b = errname(outcome(functools.partial(fn, mnt))), errname(outcome(functools.partial(fn, native)))
        assert a == b
    # the pool root's .. is the mountpoint's parent, exactly as for any directory
    assert os.stat(os.path.join(mnt, b"..")).st_ino == os.stat(os.path.dirname(mnt)).st_ino
    b0 = os.fsencode(p.branches[0])
    parent_before = sorted(os.listdir(os.path.dirname(b0)))
    assert sorted(os.listdir(b0)) == [b"d", b"hl"]
    assert sorted(os.listdir(os.path.dirname(b0))) == parent_before


def test_symlinks_out_of_the_pool(roots, tmp_path):
    """A symlink to outside is stored verbatim on the branch and followed by the
    kernel relative to the pool path, as native: the daemon never follows it."""
    p, mnt, native = roots
    secret = tmp_path / "secret"
    secret.write_bytes(b"outside")
    outdir = tmp_path / "outdir"
    outdir.mkdir()
    for target in (os.fsencode(secret), b"../secret", b"../../../../../../../../etc/hostname"):
        for root in (mnt, native):
            os.symlink(target, os.path.join(root, b"l"))
        b0 = os.fsencode(p.branches[0])
        assert os.readlink(os.path.join(b0, b"l")) == target
        assert stat.S_ISLNK(os.lstat(os.path.join(mnt, b"l")).st_mode)
        for fn in (
            lambda r: os.readlink(os.path.join(r, b"l")),
            lambda r: _read(os.path.join(r, b"l")),
            lambda r: os.lstat(os.path.join(r, b"l")).st_size,
            lambda r: os.getxattr(os.path.join(r, b"l"), "user.x", follow_symlinks=False),
        ):
            a, b = errname(outcome(functools.partial(fn, mnt))), errname(outcome(functools.partial(fn, native)))
            assert a == b, target
        for root in (mnt, native):
            os.unlink(os.path.join(root, b"l"))
    assert secret.read_bytes() == b"outside"
    # creating through a symlinked directory: the kernel resolves it (outside,
    # as native does); through the pool nothing is created on a branch
    os.symlink(os.fsencode(outdir), os.path.join(mnt, b"ld"))
    with open(os.path.join(mnt, b"ld", b"made"), "wb") as f:
        f.write(b"x")
    assert (outdir / "made").read_bytes() == b"x"
    assert sorted(os.listdir(os.fsencode(p.branches[0]))) == [b"ld"]
    assert os.listdir(os.fsencode(p.branches[1])) == []
