"""``mspmfs``: ``epmfs``, but if no branch has the path, try its parent, and so on
up to the root ("most shared path"). Action and search: ``epmfs``."""

import errno

from mergerfs.policies import epmfs

action = epmfs.action
search = epmfs.search


def create(branches, relpath, probe):
    while True:
        try:
            return epmfs.create(branches, relpath, probe)
        except OSError as e:
            if e.errno != errno.ENOENT or relpath == "/":
                raise
        relpath = relpath.rpartition("/")[0] or "/"
