"""Page-cache freshness: llfuse answers every open with keep_cache, so the
pool must itself drop cached pages whenever a branch file changed behind the
kernel's back, in every cache.files mode, and must never lose its own writes."""

import os
import time

import pytest

from .helpers import is_reference

pytestmark = pytest.mark.mount

MODES = ["libfuse", "off", "partial", "full", "auto-full", "per-process"]


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("mode", MODES)
def test_outside_change_same_size_is_seen(mount_pool, mode):
    if is_reference() and mode in ("full", "per-process"):
        pytest.skip("the reference keeps (full) or may not know (per-process) this mode")
    p = mount_pool(n=2, options=f"cache.files={mode},cache.attr=0,cache.entry=0", layout=[{"f": b"A" * 8192}])
    f = p.path("f")
    assert _read(f) == b"A" * 8192  # now cached
    branch = p.branch_path(0, "f")
    st = os.stat(branch)
    _write(branch, b"B" * 8192)  # same size: only the mtime tells
    os.utime(branch, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert _read(f) == b"B" * 8192


@pytest.mark.parametrize("mode", MODES)
def test_outside_change_new_size_is_seen(mount_pool, mode):
    p = mount_pool(n=2, options=f"cache.files={mode}", layout=[{"f": b"old contents"}])
    f = p.path("f")
    assert _read(f) == b"old contents"
    _write(p.branch_path(0, "f"), b"new, longer contents")
    time.sleep(1.1)  # let the default 1 s attribute cache expire, as a user would
    assert _read(f) == b"new, longer contents"


@pytest.mark.parametrize("mode", MODES)
def test_own_writes_never_lost_or_reordered(mount_pool, mode):
    p = mount_pool(n=1, options=f"cache.files={mode}")
    f = p.path("f")
    expect = bytearray()
    with open(f, "wb") as out:
        for i in range(64):
            chunk = bytes([i]) * (4096 + i)
            out.write(chunk)
            expect += chunk
    with open(f, "r+b") as rw:
        rw.seek(100)
        rw.write(b"X" * 5000)
        expect[100:5100] = b"X" * 5000
    assert _read(f) == bytes(expect)
    assert _read(p.branch_path(0, "f")) == bytes(expect)
