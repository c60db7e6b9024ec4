"""``msppfrd``: ``eppfrd``, but if no branch has the path, try its parent, and so on
up to the root ("most shared path"). Action and search: ``eppfrd``."""

import errno

from mergerfs.policies import eppfrd

action = eppfrd.action
search = eppfrd.search


def create(branches, relpath, probe):
    while True:
        try:
            return eppfrd.create(branches, relpath, probe)
        except OSError as e:
            if e.errno != errno.ENOENT or relpath == "/":
                raise
        relpath = relpath.rpartition("/")[0] or "/"
