"""``msppfrd``: ``eppfrd``, but if no branch qualifies for the path, its parent, and so on
up to the root ("most shared path"). Action and search: ``eppfrd``."""

from mergerfs.policies import eppfrd
from mergerfs.policies._filter import most_shared_path

action, create, search = most_shared_path(eppfrd)
