"""moveonenospc: a write that runs out of space moves the open file to a roomier branch.

Branch 0 is a 4 MiB tmpfs (first, so func.create=ff puts files there), branch 1
a 64 MiB one.  Writing 6 MiB through one fd must succeed only with the move.
"""

from __future__ import annotations

import errno
import os
import stat

import pytest

from .branchfs import MiB, is_reference, pool, tmpfs_branches, where
from .helpers import counts, is_llfuse, served

pytestmark = pytest.mark.mount

BASE = "minfreespace=1M,func.create=ff,cache.attr=0,cache.entry=0"
CHUNK = b"".join(bytes([i]) * 1024 for i in range(256))  # 256 KiB, position-dependent


@pytest.fixture
def br():
    with tmpfs_branches([4, 64]) as b:
        yield b


def prepare(m, br):
    """A file created on the small branch with a distinctive mode, owner, xattr and content."""
    p = os.path.join(m, "f")
    with open(p, "wb") as f:
        f.write(b"head")
    assert where(br, "f") == [0]
    os.chmod(p, 0o640)
    os.chown(p, 1234, 2345)
    os.setxattr(p, "user.keep", b"me")
    os.utime(p, (111111, 222222))
    return p


def write_past_capacity(fd, total=6 * MiB):
    """Write whole CHUNKs from offset 4, finishing short writes (a short count is legal near ENOSPC)."""
    os.lseek(fd, 4, os.SEEK_SET)
    written = 0
    while written < total:
        view = memoryview(CHUNK)
        while view:
            view = view[os.write(fd, view) :]
        written += len(CHUNK)
    return written


@pytest.mark.parametrize("value", ["true", "mfs", "pfrd", "lfs"])
def test_moveonenospc_moves_file(br, value):
    with pool(br, f"{BASE},moveonenospc={value}", skip_reject=True) as m:
        p = prepare(m, br)
        fd = os.open(p, os.O_RDWR)
        try:
            n = write_past_capacity(fd)
            os.write(fd, b"tail")  # the handle keeps working after the move
            os.fsync(fd)
            assert where(br, "f") == [1]
            st = os.stat(os.path.join(br[1], "f"))
            assert st.st_size == 4 + n + 4
            assert stat.S_IMODE(st.st_mode) == 0o640
            assert (st.st_uid, st.st_gid) == (1234, 2345)
            assert st.st_atime == 111111  # mtime moves with the write; atime survives the copy
            assert os.getxattr(os.path.join(br[1], "f"), "user.keep") == b"me"
            os.lseek(fd, 0, os.SEEK_SET)
            assert os.read(fd, 4) == b"head"
            assert os.pread(fd, len(CHUNK), 4 + 5 * len(CHUNK)) == CHUNK
        finally:
            os.close(fd)
        with open(p, "rb") as f:
            data = f.read()
        assert data[:4] == b"head" and data[-4:] == b"tail"
        assert data[4 : 4 + n] == CHUNK * (n // len(CHUNK))
    # the small branch got its space back
    assert os.statvfs(br[0]).f_bfree * os.statvfs(br[0]).f_frsize > 3 * MiB


def assert_write_hits_enospc(path):
    fd = os.open(path, os.O_RDWR)
    try:
        with pytest.raises(OSError) as exc:
            write_past_capacity(fd)
        assert exc.value.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_moveonenospc_false_enospc(br):
    with pool(br, f"{BASE},moveonenospc=false") as m:
        assert_write_hits_enospc(prepare(m, br))
    assert where(br, "f") == [0]


def test_moveonenospc_second_handle_follows(br):
    """Another handle open on the same file sees the moved data (upstream behaviour)."""
    if is_reference():
        pytest.skip("reference 2.33.5: only the writing handle is switched to the new copy")
    with pool(br, f"{BASE},moveonenospc=true") as m:
        p = prepare(m, br)
        fd = os.open(p, os.O_RDWR)
        rd = os.open(p, os.O_RDONLY)
        try:
            n = write_past_capacity(fd)
            os.fsync(fd)
            assert os.pread(rd, len(CHUNK), 4 + 2 * len(CHUNK)) == CHUNK
            assert os.fstat(rd).st_size == 4 + n
        finally:
            os.close(fd)
            os.close(rd)
    assert where(br, "f") == [1]


def test_moveonenospc_nowhere_to_go(br):
    """If no other branch has room, the write still fails with ENOSPC and the file stays."""
    spec = [br[0], br[1] + "=NC"]
    with pool(spec, f"{BASE},moveonenospc=true") as m:
        assert_write_hits_enospc(prepare(m, br))
    assert where(br, "f") == [0]


def test_moveonenospc_switches_compiled_opens(br):
    """Both handles opened by the kernel session's compiled OPEN (one worker that
    just answered a Python request as this caller; the request counts prove
    it): the ENOSPC write adopts the writer, the move adopts the reader first
    and switches it with the writer, so the reader sees data the original
    never held."""
    if is_reference() or is_llfuse():
        pytest.skip("the kernel session's compiled OPEN")
    with pool(br, f"{BASE},moveonenospc=true,threads=1") as m:
        p = prepare(m, br)
        served(m, {}, "RELEASE", 1)  # the CREATE's release (sent late) counted before the baseline
        before = counts(m)  # answered by Python: the one worker now acts as this caller
        fd = os.open(p, os.O_RDWR)
        rd = os.open(p, os.O_RDONLY)
        try:
            n = write_past_capacity(fd)
            os.fsync(fd)
            assert os.pread(rd, len(CHUNK), 4 + n - len(CHUNK)) == CHUNK  # past the small branch's 4 MiB
            assert os.fstat(rd).st_size == 4 + n
        finally:
            os.close(fd)
            os.close(rd)
        assert served(m, before, "OPEN", 2) == (2, 0)
        assert served(m, before, "RELEASE", 2) == (0, 2)  # both adopted: released by Python
    assert where(br, "f") == [1]
