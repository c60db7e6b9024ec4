"""``lfs``: The qualifying branch with the least available space. Action and search: ``eplfs``."""

from mergerfs.policies import eplfs
from mergerfs.policies._filter import eligible, best, least_free

action = eplfs.action
search = eplfs.search


def create(branches, relpath, probe):
    c = eligible("create", branches, relpath, probe, existing=False)
    return best(c, probe, least_free)
