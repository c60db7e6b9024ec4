"""``ff``: The first qualifying branch in order. Action and search: ``epff``."""

from mergerfs.policies import epff
from mergerfs.policies._filter import eligible, first

action = epff.action
search = epff.search


def create(branches, relpath, probe):
    c = eligible("create", branches, relpath, probe, existing=False)
    return first(c)
