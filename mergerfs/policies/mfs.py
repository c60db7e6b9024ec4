"""``mfs``: The qualifying branch with the most available space. Action and search: ``epmfs``."""

from mergerfs.policies import epmfs
from mergerfs.policies._filter import eligible, best, most_free

action = epmfs.action
search = epmfs.search


def create(branches, relpath, probe):
    c = eligible("create", branches, relpath, probe, existing=False)
    return best(c, probe, most_free)
