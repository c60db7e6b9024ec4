"""``msplus``: ``eplus``, but if no branch has the path, try its parent, and so on
up to the root ("most shared path"). Action and search: ``eplus``."""

import errno

from mergerfs.policies import eplus

action = eplus.action
search = eplus.search


def create(branches, relpath, probe):
    while True:
        try:
            return eplus.create(branches, relpath, probe)
        except OSError as e:
            if e.errno != errno.ENOENT or relpath == "/":
                raise
        relpath = relpath.rpartition("/")[0] or "/"
