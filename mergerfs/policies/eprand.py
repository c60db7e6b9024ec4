"""``eprand``: Of qualifying branches where the path exists, one at random."""

from mergerfs.policies._filter import eligible, random_one


def _pick(category, branches, relpath, probe):
    c = eligible(category, branches, relpath, probe, existing=True)
    return random_one(c, probe)


def action(branches, relpath, probe):
    return _pick("action", branches, relpath, probe)


def create(branches, relpath, probe):
    return _pick("create", branches, relpath, probe)


def search(branches, relpath, probe):
    return _pick("search", branches, relpath, probe)
