"""``msplfs``: ``eplfs``, but if no branch has the path, try its parent, and so on
up to the root ("most shared path"). Action and search: ``eplfs``."""

import errno

from mergerfs.policies import eplfs

action = eplfs.action
search = eplfs.search


def create(branches, relpath, probe):
    while True:
        try:
            return eplfs.create(branches, relpath, probe)
        except OSError as e:
            if e.errno != errno.ENOENT or relpath == "/":
                raise
        relpath = relpath.rpartition("/")[0] or "/"
