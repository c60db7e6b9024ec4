"""The offline wheelhouse (`make wheels`) and builds from source.

What a NAS image builder does: a fresh venv, no compiler on PATH, pip without
an index, ``pip install --no-index --find-links wheels/ mergerfs``; then the
installed command must run and serve a pool. The wheels are built (or reused
while the sources are unchanged) by scripts/build_wheels.py into wheels/.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import venv
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHEELS = os.path.join(ROOT, "wheels")
COMPILERS = ("gcc", "cc", "c++", "clang", "x86_64-linux-gnu-gcc")
# What the daemon may call at run time besides Python: unmounting.
RUNTIME_TOOLS = ("fusermount", "fusermount3", "umount", "mount")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheelhouse() -> dict[str, str]:
    r = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "build_wheels.py")], capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, r.stdout + r.stderr
    names = r.stdout.split()
    found = {}
    for project in ("mergerfs", "llfuse"):
        (whl,) = [n for n in names if n.startswith(project + "-")]
        found[project] = os.path.join(WHEELS, whl)
    return found


def _bare_path(tmp_path) -> str:
    """A PATH with the unmount tools only: no compiler, no pkg-config."""
    bindir = tmp_path / "sysbin"
    bindir.mkdir()
    for tool in RUNTIME_TOOLS:
        where = shutil.which(tool)
        if where:
            os.symlink(where, bindir / tool)
    return str(bindir)


def _fresh_venv(path) -> str:
    venv.create(path, with_pip=True, symlinks=True)
    return os.path.join(path, "bin")


def _offline_env(bindir: str, sysbin: str) -> dict[str, str]:
    env = {
        "PATH": f"{bindir}:{sysbin}",
        "HOME": os.path.dirname(bindir),
        "LANG": "C.UTF-8",
        "PIP_NO_INDEX": "1",
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    for c in COMPILERS:
        assert shutil.which(c, path=env["PATH"]) is None, c
    return env


def test_wheels_are_binary_and_sourceless(wheelhouse):
    with zipfile.ZipFile(wheelhouse["mergerfs"]) as z:
        names = z.namelist()
    assert "manylinux" in os.path.basename(wheelhouse["mergerfs"])
    for ext in ("_fastpath", "_kernel", "_nodes"):
        assert any(n.startswith(f"mergerfs/{ext}.") and n.endswith(".so") for n in names), ext
    assert not [n for n in names if n.endswith((".pyx", ".c", ".pxd"))]
    assert {"mergerfs/cli.py", "mergerfs/policies/ff.py", "mergerfs/install.py"} <= set(names)
    with zipfile.ZipFile(wheelhouse["llfuse"]) as z:
        names = z.namelist()
    assert "manylinux" in os.path.basename(wheelhouse["llfuse"])
    assert any(n.startswith("llfuse.") and n.endswith(".so") for n in names)
    assert any(n.startswith("llfuse.libs/libfuse") for n in names), "libfuse2 not grafted in"


def test_offline_install_runs_and_serves_a_pool(wheelhouse, tmp_path):
    bindir = _fresh_venv(tmp_path / "env")
    env = _offline_env(bindir, _bare_path(tmp_path))
    r = subprocess.run(
        ["pip", "install", "-q", "--no-index", "--find-links", WHEELS, "mergerfs"],
        env=env,
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    for script in ("mergerfs", "mount.mergerfs", "mergerfs-install-helper"):
        assert os.path.exists(os.path.join(bindir, script)), script
    r = subprocess.run(["mergerfs", "--version"], env=env, cwd="/", capture_output=True, text=True)
    assert r.returncode == 0 and "2.33.5" in r.stdout, r.stdout + r.stderr
    code = "import mergerfs, mergerfs._fastpath as f, llfuse; print(mergerfs.__file__, f.__file__, llfuse.__file__)"
    files = subprocess.run(
        ["python", "-c", code], env=env, cwd="/", check=True, capture_output=True, text=True
    ).stdout.split()
    assert all(f.startswith(str(tmp_path / "env")) for f in files), files  # not the source tree

    disks = [tmp_path / "d1", tmp_path / "d2"]
    mnt = tmp_path / "pool"
    for d in (*disks, mnt):
        d.mkdir()
    (disks[1] / "hello").write_text("served\n")
    r = subprocess.run(
        ["mergerfs", "-o", "category.create=mfs", ":".join(map(str, disks)), str(mnt)],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        assert r.returncode == 0, r.stderr
        assert (mnt / "hello").read_text() == "served\n"
        (mnt / "new").write_text("x")
        assert [d for d in disks if (d / "new").exists()]
        pid = int(os.getxattr(str(mnt / ".mergerfs"), "user.mergerfs.pid"))
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert str(tmp_path / "env").encode() in f.read()  # served by the wheel install
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.ismount(str(mnt))
    finally:
        if os.path.ismount(str(mnt)):
            subprocess.run(["fusermount", "-u", "-z", str(mnt)], check=False)


def test_source_tree_builds_with_a_compiler(tmp_path):
    """`pip install .` path: the checkout builds (compiler and libfuse-dev present) and installs."""
    out = tmp_path / "w"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), ROOT],
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    (wheel,) = out.glob("mergerfs-*.whl")
    assert "linux" in wheel.name  # a binary wheel, not a pure one
    bindir = _fresh_venv(tmp_path / "env")
    subprocess.run(
        [os.path.join(bindir, "pip"), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    f = subprocess.run(
        [os.path.join(bindir, "python"), "-c", "import mergerfs._fastpath as f; print(f.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd="/",
    ).stdout.strip()
    assert f.endswith(".so") and f.startswith(str(tmp_path / "env"))
