"""``all``: Every qualifying branch. Action and search: ``epall``."""

from mergerfs.policies import epall
from mergerfs.policies._filter import eligible, every

action = epall.action
search = epall.search


def create(branches, relpath, probe):
    c = eligible("create", branches, relpath, probe, existing=False)
    return every(c)
