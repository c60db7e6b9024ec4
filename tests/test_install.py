"""The package builds into a wheel whose compiled data path imports from
outside the source tree (what pip users and the NAS image get)."""

import os
import subprocess
import sys
import venv

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_wheel_installs_compiled_fastpath(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), ROOT], check=True, cwd=tmp_path)
    (wheel,) = wheels.glob("mergerfs-*.whl")
    assert "linux" in wheel.name  # a binary wheel, not a pure one
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=True)
    py = str(env_dir / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, cwd=tmp_path)
    out = subprocess.run(
        [py, "-c", "import mergerfs._fastpath as f, mergerfs; print(f.__file__); print(mergerfs.__file__)"],
        check=True, capture_output=True, text=True, cwd="/", env={"PATH": os.environ["PATH"]},
    ).stdout.split()
    assert out[0].endswith(".so") and str(env_dir) in out[0]
    assert not out[1].startswith(ROOT)
    assert (env_dir / "bin" / "mergerfs").exists() and (env_dir / "bin" / "mount.mergerfs").exists()
