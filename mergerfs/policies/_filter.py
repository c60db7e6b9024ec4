"""Shared by every policy: which branches qualify for a category, and why not.

``eligible`` walks the branches in order and returns those that pass the
category's filter, remembering the most significant reason any was dropped
(see :func:`mergerfs.errors.worse`); ``none_left`` raises it. A *pick*
chooses among the candidates; the builders at the end turn a pick into a
policy's three functions, so each policy module is one line of intent.
"""

from __future__ import annotations

import errno

from mergerfs.errors import oserror, worse


class Candidates(list):
    """Eligible branches in order, with space facts, plus the reason others failed."""

    def __init__(self) -> None:
        super().__init__()
        self.error: int | None = None
        self.space: dict[str, object] = {}

    def drop(self, err: int) -> None:
        self.error = worse(self.error, err)

    def none_left(self):
        raise oserror(self.error if self.error is not None else errno.ENOENT)


def eligible(category: str, branches, relpath: str, probe, existing: bool, enough: int = 0) -> Candidates:
    """Branches that qualify for ``category``; ``existing``: relpath must exist
    there. ``enough``: stop once that many qualify (``first`` needs one: a
    lookup on a 6-disk pool then probes only up to the disk that has it)."""
    out = Candidates()
    for b in branches:
        if enough and len(out) >= enough:
            break
        if category != "search" and (b.mode == "RO" or (category == "create" and b.mode == "NC")):
            out.drop(errno.EROFS)
            continue
        if existing and not probe.exists(b, relpath):
            out.drop(errno.ENOENT)
            continue
        if category != "search":
            try:
                info = probe.space(b)
            except OSError as e:
                out.drop(e.errno or errno.ENOENT)
                continue
            if category == "create" and info.gone:  # its filesystem went away: a bare mountpoint
                out.drop(errno.ENOENT)
                continue
            if info.readonly:
                out.drop(errno.EROFS)
                continue
            if category == "create" and info.available < b.minfreespace:
                out.drop(errno.ENOSPC)
                continue
            out.space[b.path] = info
        out.append(b)
    return out


def _facts(c: Candidates, b, probe):
    info = c.space.get(b.path)
    if info is None:  # search: no filtering happened, ask now
        try:
            info = c.space[b.path] = probe.space(b)
        except OSError:
            return None
    return info


# Picks: choose from the candidates, ``pick(c, relpath, probe) -> list``.
def lowest(key):
    """A pick: the single branch minimising ``key(space info)``; ties keep branch order."""

    def pick(c: Candidates, relpath: str, probe) -> list:
        chosen, chosen_key = None, None
        for b in c:
            info = _facts(c, b, probe)
            if info is None:
                continue
            k = key(info)
            if chosen is None or k < chosen_key:
                chosen, chosen_key = b, k
        if chosen is None:
            c.none_left()
        return [chosen]

    return pick


def first(c: Candidates, relpath: str, probe) -> list:
    if not c:
        c.none_left()
    return c[:1]


def every(c: Candidates, relpath: str, probe) -> list:
    if not c:
        c.none_left()
    return list(c)


def random_one(c: Candidates, relpath: str, probe) -> list:
    if not c:
        c.none_left()
    return [c[min(int(probe.random() * len(c)), len(c) - 1)]]


def weighted_by_free(c: Candidates, relpath: str, probe) -> list:
    """pfrd: random, each branch weighted by its available space."""
    if not c:
        c.none_left()
    avail = []
    for b in c:
        info = _facts(c, b, probe)
        avail.append(info.available if info is not None else 0)
    total = sum(avail)
    if total <= 0:
        return c[:1]
    point = probe.random() * total
    acc = 0
    for b, a in zip(c, avail):
        acc += a
        if point < acc:
            return [b]
    return [c[-1]]


def newest(c: Candidates, relpath: str, probe) -> list:
    """The branch whose entry has the largest mtime (first of equals)."""
    chosen, when = None, None
    for b in c:
        m = probe.mtime(b, relpath)
        if m is not None and (chosen is None or m > when):
            chosen, when = b, m
    if chosen is None:
        c.none_left()
    return [chosen]


most_free = lowest(lambda info: -info.available)
least_free = lowest(lambda info: info.available)
least_used = lowest(lambda info: info.used)
least_used_pct = lowest(lambda info: info.used / info.total if info.total else 1.0)


def _choose(pick, category: str, branches, relpath: str, probe, existing: bool) -> list:
    """``pick`` among the qualifying branches (``first`` needs only one found)."""
    c = eligible(category, branches, relpath, probe, existing, enough=1 if pick is first else 0)
    return pick(c, relpath, probe)


# Policy builders: the three functions (action, create, search) of a policy.
def path_preserving(pick) -> tuple:
    """An ``ep`` policy: ``pick`` among qualifying branches where the path exists."""

    def bind(category):
        def run(branches, relpath: str, probe) -> list:
            return _choose(pick, category, branches, relpath, probe, existing=True)

        return run

    return bind("action"), bind("create"), bind("search")


def anywhere(ep, pick) -> tuple:
    """The non-``ep`` twin of ``ep``: create picks among all qualifying
    branches; action and search are the ``ep`` policy's."""

    def create(branches, relpath: str, probe) -> list:
        return _choose(pick, "create", branches, relpath, probe, existing=False)

    return ep.action, create, ep.search


def most_shared_path(ep) -> tuple:
    """``msp*``: ``ep``'s create, but if no branch qualifies for the path (it
    is missing, or every branch holding it is read-only, no-create or too
    full), its parent, and so on up to the root; the error is the most
    significant reason seen on the way. Action and search are the ``ep`` policy's."""

    def create(branches, relpath: str, probe) -> list:
        err = None
        while True:
            try:
                return ep.create(branches, relpath, probe)
            except OSError as e:
                err = worse(err, e.errno or errno.ENOENT)
                if relpath == "/":
                    raise oserror(err) from None
            relpath = relpath.rpartition("/")[0] or "/"

    return ep.action, create, ep.search
