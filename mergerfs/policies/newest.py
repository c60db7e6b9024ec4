"""``newest``: of the qualifying branches where the path exists, the one whose
entry has the largest mtime (first of equals)."""

from mergerfs.policies._filter import eligible, newest


def _pick(category, branches, relpath, probe):
    return newest(eligible(category, branches, relpath, probe, existing=True), relpath, probe)


def action(branches, relpath, probe):
    return _pick("action", branches, relpath, probe)


def create(branches, relpath, probe):
    return _pick("create", branches, relpath, probe)


def search(branches, relpath, probe):
    return _pick("search", branches, relpath, probe)
