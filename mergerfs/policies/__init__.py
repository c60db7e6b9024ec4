"""Policy registry: which branch(es) a function acts on.

Every policy is a module in this package exposing three pure functions::

    action(branches, relpath, probe) -> list[Branch]
    create(branches, relpath, probe) -> list[Branch]
    search(branches, relpath, probe) -> list[Branch]

``branches`` is the ordered snapshot (tuple of :class:`~mergerfs.branches.Branch`),
``relpath`` the ``/``-prefixed pool path whose existence matters (for create
functions: the *parent* directory of the new entry), ``probe`` supplies the
facts (``exists``, ``space``, ``mtime``, ``random``; see
:class:`~mergerfs.branches.Probe`). A policy never touches the disk itself.

Results are ordered; the caller decides how many it uses (create uses the
first, except mkdir/mknod/symlink under ``all``/``epall``; action uses all;
search uses the first). When nothing qualifies a policy raises ``OSError``
with the most significant reason seen (see :func:`mergerfs.errors.worse`).
Non-``ep`` policies delegate action and search to their ``ep`` twin.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: Policy names users type, in documentation order.
NAMES = (
    "all",
    "epall",
    "epff",
    "eplfs",
    "eplup",
    "eplus",
    "epmfs",
    "eppfrd",
    "eprand",
    "erofs",
    "ff",
    "lfs",
    "lup",
    "lus",
    "mfs",
    "msplfs",
    "msplus",
    "mspmfs",
    "msppfrd",
    "newest",
    "pfrd",
    "rand",
)

#: Policies whose create only considers branches where the parent exists.
PATH_PRESERVING = frozenset(
    {"epall", "epff", "eplfs", "eplup", "eplus", "epmfs", "eppfrd", "eprand", "msplfs", "msplus", "mspmfs", "msppfrd"}
)

CATEGORIES = ("action", "create", "search")

_cache: dict[str, ModuleType] = {}


def get(name: str) -> ModuleType:
    """The policy module for ``name``; KeyError for an unknown policy."""
    mod = _cache.get(name)
    if mod is None:
        if name not in NAMES:
            raise KeyError(name)
        mod = importlib.import_module(f"{__name__}.{name}")
        _cache[name] = mod
    return mod


def select(category: str, name: str, branches, relpath: str, probe):
    """Run policy ``name`` for ``category`` ('action'|'create'|'search')."""
    return getattr(get(name), category)(branches, relpath, probe)
