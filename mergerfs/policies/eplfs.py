"""``eplfs``: Of qualifying branches where the path exists, the least available space."""

from mergerfs.policies._filter import eligible, best, least_free


def _pick(category, branches, relpath, probe):
    c = eligible(category, branches, relpath, probe, existing=True)
    return best(c, probe, least_free)


def action(branches, relpath, probe):
    return _pick("action", branches, relpath, probe)


def create(branches, relpath, probe):
    return _pick("create", branches, relpath, probe)


def search(branches, relpath, probe):
    return _pick("search", branches, relpath, probe)
