"""A bug in a handler (an unexpected Python exception) must answer EIO, be
logged with its traceback, and leave the mount serving everything else."""

import errno
import os
import subprocess
import sys
import textwrap

import pytest

from .helpers import REPO, cmd_env, is_pool_mounted, is_reference, unmount, wait_until

pytestmark = pytest.mark.mount

INJECT = textwrap.dedent("""
    import sys
    from mergerfs import fs
    real = fs.FileSystem.symlink
    def symlink(self, target, relpath):
        if relpath.endswith("boom"):
            raise ZeroDivisionError("injected bug")
        return real(self, target, relpath)
    fs.FileSystem.symlink = symlink
    from mergerfs.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.skipif(is_reference(), reason="injects a bug into our code")
def test_handler_bug_is_eio_and_mount_survives(tmp_path):
    b = tmp_path / "b"
    mnt = tmp_path / "mnt"
    b.mkdir()
    mnt.mkdir()
    (b / "fine").write_text("ok")
    log_path = tmp_path / "log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", INJECT, "-f", str(b), str(mnt)], stderr=log, env=cmd_env(), cwd=REPO
        )
    try:
        assert wait_until(lambda: is_pool_mounted(str(mnt)), 20)
        for _ in range(3):  # SYMLINK: a Python request whatever the config
            with pytest.raises(OSError) as e:
                os.symlink("target", mnt / "boom")
            assert e.value.errno == errno.EIO
        assert (mnt / "fine").read_text() == "ok"
        (mnt / "new").write_text("still writable")
        assert (b / "new").read_text() == "still writable"
        assert proc.poll() is None
    finally:
        unmount(str(mnt))
        proc.wait(timeout=20)
    assert proc.returncode == 0
    text = log_path.read_text()
    assert "Traceback" in text and "ZeroDivisionError: injected bug" in text


def test_stat_racing_close_never_ebadf(mount_pool):
    """RELEASE is sent asynchronously after close(): a stat racing with it must
    see the file (found through the open fd or the path), never EBADF."""
    import threading

    p = mount_pool(n=2, options="cache.attr=0,cache.entry=0", layout=[{"f": b"data"}])
    f = p.path("f")
    stop = threading.Event()
    errors: list[OSError] = []

    def opener():
        while not stop.is_set():
            os.close(os.open(f, os.O_RDONLY))

    threads = [threading.Thread(target=opener) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(3000):
            try:
                os.stat(f)
            except OSError as e:
                errors.append(e)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
