"""Error precedence and multi-branch result aggregation.

Pure helpers, no I/O. Used by policies (why a branch was filtered) and by
operations that act on several branches ("any success wins").
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

# ENOENT < ENOSPC < EROFS < anything else: the reason that tells the user most.
_RANK = {errno.ENOENT: 0, errno.ENOSPC: 1, errno.EROFS: 2}


def rank(err: int) -> int:
    """Significance of an errno when several branches failed for different reasons."""
    return _RANK.get(err, 3)


def worse(current: int | None, new: int) -> int:
    """Keep ``current`` unless ``new`` ranks strictly higher (first of equals wins)."""
    if current is None or rank(new) > rank(current):
        return new
    return current


def oserror(err: int, path: str | None = None) -> OSError:
    return OSError(err, os.strerror(err), path) if path else OSError(err, os.strerror(err))


class Aggregate:
    """Result of one action applied to several branches.

    Any success wins; if every branch failed, the first error is reported;
    if nothing was tried at all, ENOENT.
    """

    __slots__ = ("ok", "first_error")

    def __init__(self) -> None:
        self.ok = False
        self.first_error: int | None = None

    def success(self) -> None:
        self.ok = True

    def failure(self, err: int) -> None:
        if self.first_error is None:
            self.first_error = err

    def run(self, fn: Callable[..., object], *args: object) -> None:
        """Call ``fn(*args)``, recording success or its OSError errno."""
        try:
            fn(*args)
        except OSError as e:
            self.failure(e.errno or errno.EIO)
        else:
            self.success()

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise oserror(self.first_error if self.first_error is not None else errno.ENOENT)
