"""The compiled data path against the os module and os.scandir as oracles."""

import errno
import os
import shutil
import struct
import tempfile
import threading

import pytest
from hypothesis import given, settings, strategies as st

from mergerfs import _fastpath


@pytest.fixture
def fd(tmp_path):
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    yield fd
    os.close(fd)


def test_pread_pwrite_match_os(fd):
    data = os.urandom(300_000)
    assert _fastpath.pwrite(fd, data, 0) == len(data)
    for off, size in [(0, 10), (5, 131072), (299_990, 100), (300_000, 10), (400_000, 1)]:
        assert _fastpath.pread(fd, size, off) == os.pread(fd, size, off)


def test_pwrite_accepts_buffers_and_offsets(fd):
    assert _fastpath.pwrite(fd, memoryview(b"xyz"), 10) == 3
    assert _fastpath.pwrite(fd, bytearray(b"ab"), 0) == 2
    assert os.pread(fd, 13, 0) == b"ab" + b"\0" * 8 + b"xyz"


def test_errors_raise_oserror(tmp_path):
    with pytest.raises(OSError) as e:
        _fastpath.pread(-1, 10, 0)
    assert e.value.errno == errno.EBADF
    ro = os.open(tmp_path / "r", os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        with pytest.raises(OSError) as e:
            _fastpath.pwrite(ro, b"x", 0)
        assert e.value.errno == errno.EBADF
    finally:
        os.close(ro)


def _dtype(entry):
    if entry.is_symlink():
        return 10
    return 4 if entry.is_dir(follow_symlinks=False) else 8


def test_readdir_merge_first_branch_wins(tmp_path):
    b1, b2, b3 = (tmp_path / n for n in ("b1", "b2", "b3"))
    for b in (b1, b2, b3):
        b.mkdir()
    (b1 / "same").write_text("1")
    (b2 / "same").mkdir()
    (b2 / "d").mkdir()
    (b3 / "l").symlink_to("nowhere")
    (b3 / b"\xff\xfe".decode("utf-8", "surrogateescape")).write_text("x")
    got = _fastpath.readdir_merge([str(b1), str(tmp_path / "missing"), str(b2), str(b3)])
    names = [n for n, *_ in got]
    assert sorted(names) == sorted([b"same", b"d", b"l", b"\xff\xfe"])
    assert len(names) == len(set(names))
    by = {n: (t, ino, idx) for n, t, ino, idx in got}
    assert by[b"same"][2] == 0 and by[b"same"][0] == 8  # b1's file, not b2's dir
    for idx, b in ((2, b2), (3, b3)):
        for e in os.scandir(os.fsencode(b)):
            if by[e.name][2] == idx:
                assert by[e.name][0] == _dtype(e) and by[e.name][1] == e.inode()


def test_readdir_merge_all_missing_raises(tmp_path):
    with pytest.raises(OSError) as e:
        _fastpath.readdir_merge([str(tmp_path / "a"), str(tmp_path / "b")])
    assert e.value.errno == errno.ENOENT


def test_readdir_merge_many(tmp_path):
    d = tmp_path / "big"
    d.mkdir()
    for i in range(30_000):
        os.close(os.open(d / f"f{i}", os.O_CREAT | os.O_WRONLY, 0o644))
    got = _fastpath.readdir_merge([str(d), str(d)])
    assert len(got) == 30_000  # 100k entries are proven through a mount in tests/mount


def test_hash64_stable():
    assert _fastpath.hash64(b"/a") == _fastpath.hash64(b"/a")
    assert _fastpath.hash64(b"/a") != _fastpath.hash64(b"/b")
    assert 0 <= _fastpath.hash64(b"") < 2**64
    assert _fastpath.hash64(b"/a") == 0x3B50127431545604  # fixed forever: inode numbers depend on it


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch identity")
def test_set_creds_is_per_thread():
    d = tempfile.mkdtemp(dir="/tmp")  # pytest's tmp_path is not searchable by others
    os.chmod(d, 0o777)
    result = {}

    def worker():
        try:
            _fastpath.set_creds(65534, 65534, (65534,))
            p = os.path.join(d, "by_worker")
            open(p, "w").close()
            result["uid"] = os.stat(p).st_uid
        except OSError as e:
            result["error"] = e

    try:
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        assert result.get("uid") == 65534, result
        open(os.path.join(d, "by_main"), "w").close()
        assert os.stat(os.path.join(d, "by_main")).st_uid == 0  # the main thread is still root
    finally:
        shutil.rmtree(d)


# ------------------------------------------------------------ inodecalc
# An independent model of the inodecalc rules, written from the spec.
def _model(mode: str, relpath: bytes, isdir: bool, dev: int, ino: int) -> int:
    def fix(v):
        return v if v > 1 else v + 2

    if mode == "passthrough":
        return fix(ino)
    base = mode.removesuffix("32")
    if base == "path-hash" or (base == "hybrid-hash" and isdir):
        v = fix(_fastpath.hash64(relpath))
    else:
        v = fix(_fastpath.hash64(struct.pack("<QQ", dev, ino)))
    return fix(v & 0xFFFFFFFF) if mode.endswith("32") else v


MODES = ("passthrough", "path-hash", "path-hash32", "devino-hash", "devino-hash32", "hybrid-hash", "hybrid-hash32")


@settings(max_examples=300, deadline=None)
@given(
    mode=st.sampled_from(MODES),
    name=st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b),
    parent=st.sampled_from([b"/", b"/d", b"/d/\xff\xfe"]),
    isdir=st.booleans(),
    dev=st.integers(0, 2**64 - 1),
    ino=st.integers(0, 2**64 - 1),
)
def test_inode_rules_match_the_model(mode, name, parent, isdir, dev, ino):
    from mergerfs import inodes

    path = (b"" if parent == b"/" else parent) + b"/" + name
    want = _model(mode, path, isdir, dev, ino)
    assert inodes.calc(mode, os.fsdecode(path), 0o40755 if isdir else 0o100644, dev, ino) == want
    rows = [(name, 4 if isdir else 8, ino, 0)]
    got = _fastpath.readdir_inodes([None, rows], parent, [0, dev], inodes.mode_code(mode))
    assert got == [(name, 4 if isdir else 8, want)]


@settings(max_examples=200, deadline=None)
@given(
    listings=st.lists(
        st.one_of(
            st.none(),
            st.lists(
                st.tuples(
                    st.sampled_from([b"a", b"b", b"c", b".mergerfs"]),
                    st.sampled_from([4, 8]),
                    st.integers(0, 2**64 - 1),
                    st.just(0),
                ),
                max_size=5,
            ),
        ),
        max_size=4,
    ),
    hide=st.booleans(),
)
def test_listings_merge_first_branch_wins(listings, hide):
    """The merge against the obvious model: each name once, from the first branch
    listing it, numbered with that branch's st_dev; hidden names never."""
    from mergerfs import inodes

    devs = [7 * (i + 1) for i in range(len(listings))]
    hidden = {b".mergerfs"} if hide else set()
    want, seen = [], set(hidden)
    for i, rows in enumerate(listings):
        for name, dtype, ino, _ in rows or ():
            if name not in seen:
                seen.add(name)
                want.append(
                    (
                        name,
                        dtype,
                        _fastpath.inode_calc(inodes.mode_code("devino-hash"), b"/d/" + name, dtype == 4, devs[i], ino),
                    )
                )
    got = _fastpath.readdir_inodes(listings, b"/d", devs, inodes.mode_code("devino-hash"), hidden)
    assert got == want


def test_statx_matches_os_stat(tmp_path):
    """statx(2) by path (not following a symlink, or following it) and by fd:
    the fields os.stat knows agree, and the birth time is there (tmp is ext4/tmpfs)."""
    f = tmp_path / "f"
    f.write_bytes(b"x" * 5000)
    os.utime(f, ns=(1_500_000_000_123_456_789, 1_600_000_000_987_654_321))
    os.symlink("f", tmp_path / "l")
    fd = os.open(f, os.O_RDONLY)
    try:
        for target, flags, st in (
            (str(f), 0x100, os.lstat(f)),
            (os.fsencode(tmp_path / "l"), 0x100, os.lstat(tmp_path / "l")),
            (str(tmp_path / "l"), 0, os.stat(f)),
            (fd, 0, os.fstat(fd)),
            (str(tmp_path), 0, os.stat(tmp_path)),
        ):
            sx = _fastpath.statx(target, flags, 0xFFF)  # STATX_BASIC_STATS | STATX_BTIME
            (mask, blksize, _, nlink, uid, gid, mode, ino, size, blocks, _, atime, btime, ctime, mtime) = sx[:15]
            assert mask & 0x7FF == 0x7FF and mask & 0x800, target
            assert (blksize, nlink, uid, gid, mode, ino, size, blocks) == (
                st.st_blksize,
                st.st_nlink,
                st.st_uid,
                st.st_gid,
                st.st_mode,
                st.st_ino,
                st.st_size,
                st.st_blocks,
            ), target
            assert (atime, ctime, mtime) == (st.st_atime_ns, st.st_ctime_ns, st.st_mtime_ns), target
            assert 0 < btime <= ctime, target
            assert os.makedev(sx[17], sx[18]) == st.st_dev and os.makedev(sx[15], sx[16]) == st.st_rdev, target
    finally:
        os.close(fd)


def test_statx_errors(tmp_path):
    with pytest.raises(OSError) as e:
        _fastpath.statx(str(tmp_path / "missing"), 0, 0xFFF)
    assert e.value.errno == errno.ENOENT and e.value.filename == str(tmp_path / "missing")
    with pytest.raises(OSError) as e:
        _fastpath.statx(-1, 0, 0xFFF)
    assert e.value.errno == errno.EBADF
    with pytest.raises(ValueError):
        _fastpath.statx("a\0b", 0, 0xFFF)
