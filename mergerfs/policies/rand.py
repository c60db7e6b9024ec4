"""``rand``: One qualifying branch at random. Action and search: ``eprand``."""

from mergerfs.policies import eprand
from mergerfs.policies._filter import eligible, random_one

action = eprand.action
search = eprand.search


def create(branches, relpath, probe):
    c = eligible("create", branches, relpath, probe, existing=False)
    return random_one(c, probe)
