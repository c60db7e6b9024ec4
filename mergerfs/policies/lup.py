"""``lup``: The qualifying branch with the least used percentage. Action and search: ``eplup``."""

from mergerfs.policies import eplup
from mergerfs.policies._filter import eligible, best, least_used_pct

action = eplup.action
search = eplup.search


def create(branches, relpath, probe):
    c = eligible("create", branches, relpath, probe, existing=False)
    return best(c, probe, least_used_pct)
