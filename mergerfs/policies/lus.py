"""``lus``: The qualifying branch with the least used space. Action and search: ``eplus``."""

from mergerfs.policies import eplus
from mergerfs.policies._filter import eligible, best, least_used

action = eplus.action
search = eplus.search


def create(branches, relpath, probe):
    c = eligible("create", branches, relpath, probe, existing=False)
    return best(c, probe, least_used)
