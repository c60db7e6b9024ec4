"""Every policy x category against an independent model of the spec (section 3).

The model below is written from the spec's words, not from ``mergerfs.policies``:
filter the branches for the category (search: nothing; action: RO mode or a
read-only filesystem; create: also NC and free space below the branch's
minfreespace), keep only branches where the path exists for ``ep`` policies,
remember the most significant reason a branch was dropped (ENOENT < ENOSPC <
EROFS < anything else, first of equals), then choose by the policy's rule, the
first of equals winning. Non-``ep`` policies use their ``ep`` twin for action
and search; ``msp*`` create walks up to the parent while nothing has the path.

Branch facts come from an injected fake probe; Hypothesis draws branch sets
with small numbers so that ties, empty results and errors are common.

policy x category -> test (mount-level placement: tests/mount/test_policies_mount.py):

| policy | action | create | search |
|---|---|---|---|
| every name in policies.NAMES | test_policy_matches_model[*-action] | test_policy_matches_model[*-create] | test_policy_matches_model[*-search] |
| rand, eprand | + test_rand_is_uniform | + test_rand_is_uniform | + test_rand_is_uniform |
| pfrd, eppfrd, msppfrd | + test_pfrd_weighted_by_available_space | same | same |
| msplfs, msplus, mspmfs, msppfrd | (ep twin) | + test_msp_walks_up_to_the_shared_parent | (ep twin) |
| erofs | test_policy_matches_model (always EROFS) | same | same |
"""

from __future__ import annotations

import collections
import errno
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mergerfs import policies
from mergerfs.branches import Branch, SpaceInfo

PATHS = ("/", "/a", "/a/b")
RANK = {errno.ENOENT: 0, errno.ENOSPC: 1, errno.EROFS: 2}  # anything else: 3


# ----------------------------------------------------------------- the facts
class Facts:
    """What the fake probe knows about one branch."""

    def __init__(self, paths, space, mtimes):
        self.paths = paths        # relpaths that exist on the branch
        self.space = space        # SpaceInfo, or an errno if statvfs fails
        self.mtimes = mtimes      # relpath -> mtime


class FakeProbe:
    def __init__(self, facts: dict[str, Facts], seed: int = 0):
        self.facts = facts
        self.rng = random.Random(seed)

    def exists(self, branch, relpath):
        return relpath in self.facts[branch.path].paths

    def space(self, branch):
        s = self.facts[branch.path].space
        if isinstance(s, int):
            raise OSError(s, "injected")
        return s

    def mtime(self, branch, relpath):
        return self.facts[branch.path].mtimes.get(relpath)

    def random(self):
        return self.rng.random()


@st.composite
def pools(draw):
    n = draw(st.integers(1, 6))
    branches, facts = [], {}
    for i in range(n):
        path = f"/b{i}"
        mode = draw(st.sampled_from(["RW", "RW", "RO", "NC"]))
        minfree = draw(st.sampled_from([0, 1, 2]))
        # "/" always exists; "/a/b" only where "/a" does
        has_a = draw(st.booleans())
        has_ab = has_a and draw(st.booleans())
        paths = {"/"} | ({"/a"} if has_a else set()) | ({"/a/b"} if has_ab else set())
        if draw(st.integers(0, 9)) == 0:
            space = draw(st.sampled_from([errno.EIO, errno.EACCES, errno.ENOENT]))
        else:
            avail = draw(st.integers(0, 3))
            used = draw(st.integers(0, 3))
            total = avail + used + draw(st.integers(0, 2))
            space = SpaceInfo(avail, used, total, draw(st.integers(0, 7)) == 0)
        mtimes = {p: draw(st.integers(0, 2)) for p in paths}
        branches.append(Branch(path, mode, minfree))
        facts[path] = Facts(paths, space, mtimes)
    return tuple(branches), facts


# ----------------------------------------------------------------- the model
class Fail(Exception):
    def __init__(self, err):
        super().__init__(err)
        self.errno = err


def _worse(cur, new):
    if cur is None or RANK.get(new, 3) > RANK.get(cur, 3):
        return new
    return cur


def qualifying(category, branches, facts, relpath, existing):
    """The spec's filter, in its order; returns (kept, most significant reason)."""
    kept, reason = [], None
    for b in branches:
        f = facts[b.path]
        why = None
        if category != "search" and b.mode == "RO":
            why = errno.EROFS
        elif category == "create" and b.mode == "NC":
            why = errno.EROFS
        elif existing and relpath not in f.paths:
            why = errno.ENOENT
        elif category != "search":
            if isinstance(f.space, int):
                why = f.space
            elif f.space.readonly:
                why = errno.EROFS
            elif category == "create" and f.space.available < b.minfreespace:
                why = errno.ENOSPC
        if why is None:
            kept.append(b)
        else:
            reason = _worse(reason, why)
    return kept, (reason if reason is not None else errno.ENOENT)


def _usage_pct(s):
    return Fraction(s.used, s.total) if s.total else Fraction(1)


#: rule -> key to minimise over branches with known space (None: not space based)
KEYS = {
    "mfs": lambda s: -s.available,
    "lfs": lambda s: s.available,
    "lus": lambda s: s.used,
    "lup": _usage_pct,
}


def choose(rule, kept, err, facts, relpath):
    """Apply ``rule`` to the qualifying branches. Random rules return the set of
    acceptable answers (a frozenset); the others the exact list."""
    if rule in KEYS:
        known = [b for b in kept if not isinstance(facts[b.path].space, int)]
        if not known:
            raise Fail(err)
        key = KEYS[rule]
        best = min(key(facts[b.path].space) for b in known)
        return [next(b for b in known if key(facts[b.path].space) == best)]
    if not kept:
        raise Fail(err)
    if rule == "ff":
        return kept[:1]
    if rule == "all":
        return list(kept)
    if rule == "rand":
        return frozenset(b.path for b in kept)
    if rule == "pfrd":
        weights = {b.path: (0 if isinstance(facts[b.path].space, int)
                            else facts[b.path].space.available) for b in kept}
        if sum(weights.values()) == 0:
            return frozenset(weights)  # no weights: any of them
        return frozenset(p for p, w in weights.items() if w > 0)
    if rule == "newest":
        dated = [b for b in kept if facts[b.path].mtimes.get(relpath) is not None]
        if not dated:
            raise Fail(err)
        top = max(facts[b.path].mtimes[relpath] for b in dated)
        return [next(b for b in dated if facts[b.path].mtimes[relpath] == top)]
    raise AssertionError(rule)


#: policy -> (rule, path preserving for create?, most-shared-path walk?)
SPEC = {
    "all": ("all", False, False), "epall": ("all", True, False),
    "ff": ("ff", False, False), "epff": ("ff", True, False),
    "mfs": ("mfs", False, False), "epmfs": ("mfs", True, False), "mspmfs": ("mfs", True, True),
    "lfs": ("lfs", False, False), "eplfs": ("lfs", True, False), "msplfs": ("lfs", True, True),
    "lus": ("lus", False, False), "eplus": ("lus", True, False), "msplus": ("lus", True, True),
    "lup": ("lup", False, False), "eplup": ("lup", True, False),
    "rand": ("rand", False, False), "eprand": ("rand", True, False),
    "pfrd": ("pfrd", False, False), "eppfrd": ("pfrd", True, False),
    "msppfrd": ("pfrd", True, True),
    "newest": ("newest", True, False),
}


def model(policy, category, branches, facts, relpath):
    if policy == "erofs":
        raise Fail(errno.EROFS)
    rule, ep, msp = SPEC[policy]
    if category != "create":
        ep = True  # action and search: the ep twin
    if category == "create" and msp:
        while True:
            kept, err = qualifying(category, branches, facts, relpath, True)
            try:
                return choose(rule, kept, err, facts, relpath)
            except Fail as e:
                if e.errno != errno.ENOENT or relpath == "/":
                    raise
            relpath = relpath.rpartition("/")[0] or "/"
    kept, err = qualifying(category, branches, facts, relpath, ep)
    return choose(rule, kept, err, facts, relpath)


# ------------------------------------------------------------------ the tests
def test_model_covers_every_policy():
    assert set(SPEC) | {"erofs"} == set(policies.NAMES)
    assert {p for p, (_, ep, _) in SPEC.items() if ep and p != "newest"} == policies.PATH_PRESERVING


@pytest.mark.parametrize("category", policies.CATEGORIES)
@pytest.mark.parametrize("policy", policies.NAMES)
@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(pool=pools(), relpath=st.sampled_from(PATHS), seed=st.integers(0, 2**16))
def test_policy_matches_model(policy, category, pool, relpath, seed):
    branches, facts = pool
    try:
        expect = model(policy, category, branches, facts, relpath)
    except Fail as e:
        with pytest.raises(OSError) as got:
            policies.select(category, policy, branches, relpath, FakeProbe(facts, seed))
        assert got.value.errno == e.errno
        return
    got = policies.select(category, policy, branches, relpath, FakeProbe(facts, seed))
    if isinstance(expect, frozenset):
        assert len(got) == 1 and got[0].path in expect
    else:
        assert [b.path for b in got] == [b.path for b in expect]


def _draws(policy, category, branches, facts, n=6000, relpath="/"):
    probe = FakeProbe(facts, seed=1234)
    return collections.Counter(
        policies.select(category, policy, branches, relpath, probe)[0].path for _ in range(n))


def _facts(avails):
    return {f"/b{i}": Facts({"/"}, SpaceInfo(a, 0, a + 1, False), {"/": 0})
            for i, a in enumerate(avails)}


@pytest.mark.parametrize("policy,category", [("rand", "create"), ("eprand", "create"),
                                             ("rand", "action"), ("eprand", "search")])
def test_rand_is_uniform(policy, category):
    facts = _facts([5, 5, 5, 5])
    branches = tuple(Branch(p, "RW", 0) for p in facts)
    counts = _draws(policy, category, branches, facts)
    assert set(counts) == set(facts)
    for c in counts.values():
        assert abs(c / 6000 - 0.25) < 0.03


@pytest.mark.parametrize("policy,category", [("pfrd", "create"), ("eppfrd", "create"),
                                             ("msppfrd", "create"), ("pfrd", "search"),
                                             ("eppfrd", "action")])
def test_pfrd_weighted_by_available_space(policy, category):
    facts = _facts([100, 200, 700, 0])
    branches = tuple(Branch(p, "RW", 0) for p in facts)
    counts = _draws(policy, category, branches, facts)
    assert counts["/b3"] == 0  # no space, never picked
    for path, share in (("/b0", 0.1), ("/b1", 0.2), ("/b2", 0.7)):
        assert abs(counts[path] / 6000 - share) < 0.03


@pytest.mark.parametrize("policy", ["msplfs", "msplus", "mspmfs", "msppfrd"])
def test_msp_walks_up_to_the_shared_parent(policy):
    # /a/b exists nowhere; /a only on b1: the create lands on b1, not on b0
    # (which has more space and only "/").
    facts = {"/b0": Facts({"/"}, SpaceInfo(900, 0, 1000, False), {}),
             "/b1": Facts({"/", "/a"}, SpaceInfo(10, 990, 1000, False), {})}
    branches = (Branch("/b0", "RW", 0), Branch("/b1", "RW", 0))
    got = policies.select("create", policy, branches, "/a/b", FakeProbe(facts))
    assert [b.path for b in got] == ["/b1"]
    # the ep twin refuses instead
    with pytest.raises(OSError) as e:
        policies.select("create", "ep" + policy[3:], branches, "/a/b", FakeProbe(facts))
    assert e.value.errno == errno.ENOENT


def test_error_precedence_across_branches():
    """ENOENT < ENOSPC < EROFS < other: the most significant reason wins."""
    facts = {"/full": Facts({"/"}, SpaceInfo(0, 10, 10, False), {}),
             "/ro": Facts({"/"}, SpaceInfo(10, 0, 10, True), {}),
             "/gone": Facts({"/"}, errno.EIO, {})}
    full, ro, gone = (Branch(p, "RW", 1) for p in facts)
    for branches, want in [((full,), errno.ENOSPC), ((full, ro), errno.EROFS),
                           ((ro, full), errno.EROFS), ((full, ro, gone), errno.EIO)]:
        with pytest.raises(OSError) as e:
            policies.select("create", "mfs", branches, "/", FakeProbe(facts))
        assert e.value.errno == want
