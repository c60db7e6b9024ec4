"""The compiled CREATE/MKDIR's pick (mergerfs/_create.pxi ``_choose``) against
the policy modules, which define it: for every policy the compiled path takes
(kernel/transport.py ``_PICKS``), the same branch from the same facts and the
same random draw. Hypothesis draws small numbers, so ties (first of equals),
empty filesystems (lup: 100 % used) and zero free space everywhere (pfrd) are
common. The filter in front of the pick (mode, parent, statvfs, minfreespace)
is held by tests/mount/test_policies_mount.py through a mount."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from mergerfs import _kernel, policies
from mergerfs.branches import Branch
from mergerfs.kernel.transport import _PICKS
from mergerfs.probe import SpaceInfo


class _Probe:
    """Every branch holds every path; its facts from ``spaces``; one fixed draw."""

    def __init__(self, spaces: dict[str, SpaceInfo], draw: float) -> None:
        self.spaces, self.draw = spaces, draw

    def exists(self, branch, relpath):
        return True

    def space(self, branch):
        return self.spaces[branch.path]

    def random(self):
        return self.draw


# values below 2**40: sums stay exact in a double, as in Python's ints
_facts = st.tuples(st.integers(0, 1 << 40), st.integers(0, 1 << 40), st.integers(0, 1 << 40))


@settings(max_examples=400, deadline=None)
@given(
    policy=st.sampled_from(sorted(_PICKS)),
    spaces=st.lists(st.one_of(_facts, st.sampled_from([(0, 0, 0), (5, 5, 10), (5, 1, 10)])), min_size=1, max_size=8),
    draw=st.one_of(st.floats(0, 1, exclude_max=True), st.sampled_from([0.0, 0.5, 0.9999999])),
)
def test_compiled_pick_is_the_policy_modules(policy, spaces, draw):
    branches = tuple(Branch(f"/b{i}", "RW", 0) for i in range(len(spaces)))
    infos = {b.path: SpaceInfo(a, u, t, False) for b, (a, u, t) in zip(branches, spaces)}
    chosen = policies.select("create", policy, branches, "/", _Probe(infos, draw))
    assert len(chosen) == 1
    assert _kernel.choose(_PICKS[policy] & ~_kernel.PICK_EP, spaces, draw) == branches.index(chosen[0])


def test_every_single_branch_create_policy_is_compiled():
    """A create policy choosing one branch by space or chance is compiled (the
    rest: all/epall many branches, msp* walk up, newest reads mtimes, erofs fails)."""
    expected = {n for n in policies.NAMES if n not in ("all", "epall", "newest", "erofs") and not n.startswith("msp")}
    assert set(_PICKS) == expected
