"""Policy registry: which branch(es) a function acts on.

Every policy is a module in this package exposing three pure functions::

    action(branches, relpath, probe) -> list[Branch]
    create(branches, relpath, probe) -> list[Branch]
    search(branches, relpath, probe) -> list[Branch]

``branches`` is the ordered snapshot (tuple of :class:`~mergerfs.branches.Branch`),
``relpath`` the ``/``-prefixed pool path whose existence matters (for create
functions: the *parent* directory of the new entry), ``probe`` supplies the
facts (``exists``, ``space``, ``mtime``, ``random``; see
:class:`~mergerfs.probe.Probe`). A policy never touches the disk itself.

Results are ordered; the caller decides how many it uses (create uses the
first, except mkdir/mknod/symlink under ``all``/``epall``; action uses all;
search uses the first). When nothing qualifies a policy raises ``OSError``
with the most significant reason seen (see :func:`mergerfs.errors.worse`).
Non-``ep`` policies delegate action and search to their ``ep`` twin.
"""

from __future__ import annotations

from types import ModuleType

from mergerfs.policies import (
    all as all_,
    epall,
    epff,
    eplfs,
    eplup,
    eplus,
    epmfs,
    eppfrd,
    eprand,
    erofs,
    ff,
    lfs,
    lup,
    lus,
    mfs,
    msplfs,
    msplus,
    mspmfs,
    msppfrd,
    newest,
    pfrd,
    rand,
)

#: Policy name -> its module, in documentation order.
REGISTRY: dict[str, ModuleType] = {
    "all": all_,
    "epall": epall,
    "epff": epff,
    "eplfs": eplfs,
    "eplup": eplup,
    "eplus": eplus,
    "epmfs": epmfs,
    "eppfrd": eppfrd,
    "eprand": eprand,
    "erofs": erofs,
    "ff": ff,
    "lfs": lfs,
    "lup": lup,
    "lus": lus,
    "mfs": mfs,
    "msplfs": msplfs,
    "msplus": msplus,
    "mspmfs": mspmfs,
    "msppfrd": msppfrd,
    "newest": newest,
    "pfrd": pfrd,
    "rand": rand,
}
#: Policy names users type, in documentation order.
NAMES = tuple(REGISTRY)

#: Policies whose create only considers branches where the parent exists.
PATH_PRESERVING = frozenset(
    {"epall", "epff", "eplfs", "eplup", "eplus", "epmfs", "eppfrd", "eprand", "msplfs", "msplus", "mspmfs", "msppfrd"}
)

CATEGORIES = ("action", "create", "search")

#: Each function's category (spec section 3): the one table the options
#: (``func.*``, ``category.*``), the operations and ``--help`` read; grouped by category.
FUNCS: dict[str, str] = {
    "chmod": "action",
    "chown": "action",
    "link": "action",
    "removexattr": "action",
    "rename": "action",
    "rmdir": "action",
    "setxattr": "action",
    "truncate": "action",
    "unlink": "action",
    "utimens": "action",
    "create": "create",
    "mkdir": "create",
    "mknod": "create",
    "symlink": "create",
    "access": "search",
    "getattr": "search",
    "getxattr": "search",
    "listxattr": "search",
    "open": "search",
    "readlink": "search",
}


def funcs(category: str) -> tuple[str, ...]:
    """The functions of ``category``, in table order."""
    return tuple(f for f, c in FUNCS.items() if c == category)


def get(name: str) -> ModuleType:
    """The policy module for ``name``; KeyError for an unknown policy."""
    return REGISTRY[name]


def select(category: str, name: str, branches, relpath: str, probe):
    """Run policy ``name`` for ``category`` ('action'|'create'|'search')."""
    return getattr(REGISTRY[name], category)(branches, relpath, probe)
