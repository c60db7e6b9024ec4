"""docs/ARCHITECTURE.md names every module of the package (it is the map)."""

from __future__ import annotations

import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_every_module_is_in_the_architecture_doc():
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    pkg = ROOT / "mergerfs"
    modules = {p.name for p in pkg.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    modules |= {p.name for p in pkg.glob("*.pyx")}
    modules |= {p.name + "/" for p in pkg.iterdir() if (p / "__init__.py").exists()}
    missing = sorted(m for m in modules if f"`{m}`" not in doc)
    assert not missing, f"docs/ARCHITECTURE.md does not describe: {missing}"
