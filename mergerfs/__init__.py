"""mergerfs: a union filesystem that pools many branches into one tree.

Python re-implementation of mergerfs (drop-in for 2.33.5 and 2.42) with its own
FUSE kernel session and hot paths compiled from Cython. Embedding::

    import mergerfs
    with mergerfs.mount(["/srv/disk1", "/srv/disk2"], "/srv/pool", {"category.create": "mfs"}) as pool:
        ...  # pool.running, pool.wait(), pool.unmount()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from mergerfs.api import Options, Pool

__version__ = "1.0.0"
#: The reference release whose command line and behaviour we are compatible with.
COMPAT_VERSION = "2.33.5"


def mount(branches: str | Iterable[str], mountpoint: str, options: Options = None) -> Pool:
    """Mount a pool and return its :class:`mergerfs.api.Pool` (see :mod:`mergerfs.api`)."""
    from mergerfs import api  # noqa: PLC0415 - keep `import mergerfs` light

    return api.mount(branches, mountpoint, options)
