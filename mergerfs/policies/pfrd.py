"""``pfrd``: One qualifying branch at random, weighted by available space. Action and search: ``eppfrd``."""

from mergerfs.policies import eppfrd
from mergerfs.policies._filter import eligible, weighted_by_free

action = eppfrd.action
search = eppfrd.search


def create(branches, relpath, probe):
    c = eligible("create", branches, relpath, probe, existing=False)
    return weighted_by_free(c, probe)
