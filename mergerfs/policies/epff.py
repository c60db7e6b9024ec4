"""``epff``: The first qualifying branch where the path exists."""

from mergerfs.policies._filter import eligible, first


def _pick(category, branches, relpath, probe):
    c = eligible(category, branches, relpath, probe, existing=True)
    return first(c)


def action(branches, relpath, probe):
    return _pick("action", branches, relpath, probe)


def create(branches, relpath, probe):
    return _pick("create", branches, relpath, probe)


def search(branches, relpath, probe):
    return _pick("search", branches, relpath, probe)
