"""``pfrd``: One qualifying branch at random, weighted by available space. Action and search: ``eppfrd``."""

from mergerfs.policies import eppfrd
from mergerfs.policies._filter import anywhere, weighted_by_free

action, create, search = anywhere(eppfrd, weighted_by_free)
