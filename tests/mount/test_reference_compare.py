"""Side by side with the reference: the same script on identical branch sets, same placement.

For each deterministic create policy, two fresh sets of tmpfs branches (distinct
sizes, identical seed) are mounted, one under /usr/bin/mergerfs and one under
the command being tested (MERGERFS_CMD, default ``python -m mergerfs``).  The
errno of every step and the resulting branch trees (relpath -> mode, symlink
target) must match.  With MERGERFS_CMD pointing at the reference this is a
self-check of the harness.
"""

from __future__ import annotations

import errno
import os
import time

import pytest

from .branchfs import REFERENCE, fill, is_reference, ours_importable, pool, pool_cmd, tmpfs_branches, tree

pytestmark = pytest.mark.mount

POLICIES = [
    "ff",
    "epff",
    "mfs",
    "epmfs",
    "lfs",
    "eplfs",
    "lus",
    "eplus",
    "all",
    "epall",
    "newest",
    "mspmfs",
    "msplfs",
    "msplus",
    "erofs",
]

#: (size MiB, filled MiB): avail 12, 2, 120, 63, 7.5; used 4, 2, 8, 1, 0.5.
SHAPE = [(16, 4), (4, 2), (128, 8), (64, 1), (8, 0.5)]

#: relpath -> branches it is seeded on (dirs end in "/").
SEED = {
    "p/": [1, 3, 4],
    "a/": [1, 3],
    "q/": [1],
    "empty/": [2, 4],
    "deep/x/": [4],
    "seed_x": [0],
    "seed_y": [2],
    "seed_z": [0, 2],
    "seed_multi": [0, 3],
    "p/old": [3],
}


def seed(br):
    for b, (_, f) in zip(br, SHAPE):
        fill(b, f)
    for rel, idxs in SEED.items():
        for i in idxs:
            p = os.path.join(br[i], rel)
            if rel.endswith("/"):
                os.makedirs(p, exist_ok=True)
            else:
                with open(p, "wb") as f:
                    f.write(rel.encode())
                os.chmod(p, 0o644)
    # newest needs distinct, old parent mtimes: branch 4's "p" is the newest
    base = time.time() - 10000
    for n, i in enumerate([1, 3, 4]):
        os.utime(os.path.join(br[i], "p"), (base + n * 100, base + n * 100))
    for n, i in enumerate([1, 3]):
        os.utime(os.path.join(br[i], "a"), (base + n * 100, base + n * 100))
    # branch roots last (seeding touched them); distinct whole seconds keep newest exact
    for i, b in enumerate(br):
        os.utime(b, (base + 1000 + i * 10, base + 1000 + i * 10))


def _create(p):
    os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))


def script(m):
    """(step name, callable) in order; each step's errno is compared."""
    j = lambda *r: os.path.join(m, *r)  # noqa: E731
    return [
        ("create f1", lambda: _create(j("f1"))),
        ("mkdir d1", lambda: os.mkdir(j("d1"), 0o755)),
        ("create p/f2", lambda: _create(j("p", "f2"))),
        ("mkdir p/d2", lambda: os.mkdir(j("p", "d2"), 0o700)),
        ("mkdir a/b", lambda: os.mkdir(j("a", "b"))),
        ("create a/b/f3", lambda: _create(j("a", "b", "f3"))),
        ("create deep/x/y", lambda: _create(j("deep", "x", "y"))),
        ("symlink s1", lambda: os.symlink("f1", j("s1"))),
        ("mkfifo p/fifo", lambda: os.mkfifo(j("p", "fifo"), 0o640)),
        ("create q/new", lambda: _create(j("q", "new"))),
        ("chmod f1", lambda: os.chmod(j("f1"), 0o600)),
        ("chmod p", lambda: os.chmod(j("p"), 0o750)),
        ("chmod seed_multi", lambda: os.chmod(j("seed_multi"), 0o700)),
        ("rename f1 f1r", lambda: os.rename(j("f1"), j("f1r"))),
        ("rename f1r p/f1r", lambda: os.rename(j("f1r"), j("p", "f1r"))),
        ("rename seed_x p/seed_x", lambda: os.rename(j("seed_x"), j("p", "seed_x"))),
        ("rename seed_multi q/sm", lambda: os.rename(j("seed_multi"), j("q", "sm"))),
        ("rename d1 dd1", lambda: os.rename(j("d1"), j("dd1"))),
        ("rename p/old seed_z", lambda: os.rename(j("p", "old"), j("seed_z"))),
        ("link p/f2 p/f2l", lambda: os.link(j("p", "f2"), j("p", "f2l"))),
        ("link seed_y q/sy", lambda: os.link(j("seed_y"), j("q", "sy"))),
        ("link seed_y a/sy", lambda: os.link(j("seed_y"), j("a", "sy"))),
        ("unlink seed_y", lambda: os.unlink(j("seed_y"))),
        ("rmdir empty", lambda: os.rmdir(j("empty"))),
        ("create p/f2 again", lambda: _create(j("p", "f2"))),
        ("mkdir p again", lambda: os.mkdir(j("p"))),
        ("rename missing", lambda: os.rename(j("missing"), j("x"))),
        ("create missing/f", lambda: _create(j("missing", "f"))),
        ("truncate p/f2", lambda: os.truncate(j("p", "f2"), 10)),
        ("mkdir dd1/sub", lambda: os.mkdir(j("dd1", "sub"))),
    ]


def run(cmd, policy):
    """Fresh branches, mount with ``cmd``, run the script; return (errnos, trees)."""
    with tmpfs_branches([s for s, _ in SHAPE], prefix="mfscmp") as br:
        seed(br)
        opts = f"minfreespace=1M,category.create={policy},cache.attr=0,cache.entry=0"
        results = []
        with pool(br, opts, cmd=cmd) as m:
            for name, fn in script(m):
                try:
                    fn()
                    results.append((name, 0))
                except OSError as e:
                    results.append((name, errno.errorcode.get(e.errno, e.errno)))
        trees = []
        for b in br:
            t = {}
            for rel, mode in tree(b).items():
                if rel == "/.fill":
                    continue
                full = b + rel
                t[rel] = (oct(mode), os.readlink(full) if os.path.islink(full) else None)
            trees.append(t)
        return results, trees


@pytest.fixture(scope="module")
def ours():
    cmd = pool_cmd()
    if not is_reference(cmd) and not ours_importable():
        pytest.skip("our implementation is not importable yet (python -m mergerfs -v fails)")
    return cmd


@pytest.mark.parametrize("policy", POLICIES)
def test_same_as_reference(ours, policy):
    if not os.access(REFERENCE, os.X_OK):
        pytest.skip("reference mergerfs not installed")
    ref_errs, ref_trees = run([REFERENCE], policy)
    our_errs, our_trees = run(ours, policy)
    diffs = [f"{a[0]}: reference {a[1]}, ours {b[1]}" for a, b in zip(ref_errs, our_errs) if a != b]
    assert not diffs, "errno differs:\n" + "\n".join(diffs)
    for i, (rt, ot) in enumerate(zip(ref_trees, our_trees)):
        only_ref = {k: v for k, v in rt.items() if ot.get(k) != v}
        only_ours = {k: v for k, v in ot.items() if rt.get(k) != v}
        assert not only_ref and not only_ours, f"branch {i}: reference has {only_ref}, ours has {only_ours}"
