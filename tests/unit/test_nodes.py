"""The compiled node table (mergerfs._nodes) against a plain-Python model of
the same rules, on random sequences of what the kernel and the pool do:
lookups (with reused inode numbers and hard links), forgets, renames of files
and directories, exchanges, unlinks, opens and releases."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from mergerfs import _fastpath, inodes

ROOT = inodes.ROOT


class Model:
    """The table's rules, written the slow, obvious way."""

    def __init__(self) -> None:
        # nodeid -> [names newest first, nlookup, ident, isdir, fh count]
        self.nodes: dict[int, list] = {ROOT: [["/"], 1 << 62, None, True, 0]}
        self.by_path: dict[str, int] = {"/": ROOT}

    def remember(self, ino: int, path: str, ident, isdir: bool) -> tuple[int, bool]:
        bound = self.by_path.get(path)
        if bound is not None and ident is not None and self.nodes[bound][2] == ident:
            self._bind(bound, path)  # the nodeid the kernel holds for this object
            self.nodes[bound][1] += 1
            return bound, False
        salt, replaced = 0, False
        while True:
            n = self.nodes.get(ino)
            if n is None:
                n = self.nodes[ino] = [[path], 0, ident, isdir, 0]
                break
            if n[2] == ident:
                break
            if path in n[0]:
                n[2], n[3], replaced = ident, isdir, True
                break
            salt += 1
            v = _fastpath.hash64(f"{path}\0{salt}".encode())
            ino = v if v > ROOT else v + 2
        self._bind(ino, path)
        n[1] += 1
        return ino, replaced

    def _bind(self, ino: int, path: str) -> None:
        old = self.by_path.get(path)
        if old is not None and old != ino:
            self._unbind(path)
        names = self.nodes[ino][0]
        self.nodes[ino][0] = [path] + [p for p in names if p != path]
        self.by_path[path] = ino

    def _unbind(self, path: str) -> None:
        ino = self.by_path.pop(path, None)
        if ino is None:
            return
        n = self.nodes[ino]
        rest = [p for p in n[0] if p != path]
        if rest:
            n[0] = rest
        else:
            n[2] = None

    def forget(self, ino: int, count: int) -> None:
        n = self.nodes.get(ino)
        if n is None or ino == ROOT:
            return
        n[1] -= count
        if n[1] <= 0 and not n[4]:
            self._drop(ino)

    def _drop(self, ino: int) -> None:
        for p in self.nodes.pop(ino)[0]:
            if self.by_path.get(p) == ino:
                del self.by_path[p]

    def renamed(self, old: str, new: str) -> None:
        ino = self.by_path.pop(old, None)
        if ino is None:
            self._unbind(new)
            return
        n = self.nodes[ino]
        n[0] = list(dict.fromkeys(new if p == old else p for p in n[0]))
        self._bind(ino, new)
        if not n[3]:
            return
        moved = [(p, i) for p, i in self.by_path.items() if p.startswith(old + "/")]
        for p, _ in moved:
            del self.by_path[p]
        for p, i in moved:
            q = new + p[len(old) :]
            self.nodes[i][0] = list(dict.fromkeys(q if x == p else x for x in self.nodes[i][0]))
            self.by_path[q] = i

    def exchanged(self, a: str, b: str) -> None:
        self.renamed(a, "//exchange")
        self.renamed(b, a)
        self.renamed("//exchange", b)

    def state(self) -> dict:
        return {ino: tuple(n[0]) for ino, n in self.nodes.items()}


NAMES = ["/a", "/b", "/a/x", "/a/y", "/b/x", "/a/x/z", "/c"]
ops = st.one_of(
    st.tuples(
        st.just("remember"),
        st.integers(100, 104),
        st.sampled_from(NAMES),
        st.one_of(st.none(), st.integers(1, 4)),
        st.booleans(),
    ),
    st.tuples(st.just("forget"), st.integers(100, 104), st.integers(1, 2)),
    st.tuples(st.just("renamed"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.tuples(st.just("exchanged"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.tuples(st.just("unlinked"), st.sampled_from(NAMES)),
    st.tuples(st.just("open"), st.integers(100, 104)),
)


def _state(t) -> dict:
    return {ino: t.paths(ino) for ino in t.nodeids()}


@settings(max_examples=300, deadline=None)
@given(st.lists(ops, max_size=40))
def test_table_matches_the_model(seq):
    t, m = inodes.InodeTable(), Model()
    fh = 0
    held: list[tuple[int, int]] = []
    for op, *args in seq:
        if op == "remember":
            ino, path, ident, isdir = args
            ident = None if ident is None else inodes.identity(1, ident)
            assert t.remember(ino, path, ident, isdir) == m.remember(ino, path, ident, isdir)
        elif op == "forget":
            t.forget(*args)
            m.forget(*args)
        elif op == "unlinked":
            t.unlinked(args[0])
            m._unbind(args[0])
        elif op == "open":
            if args[0] in m.nodes:
                fh += 1
                t.add_fh(args[0], fh)
                m.nodes[args[0]][4] += 1
                held.append((args[0], fh))
        elif args[0] != args[1]:
            getattr(t, op)(*args)
            getattr(m, op)(*args)
        assert _state(t) == m.state()
    for ino, h in held:  # the last release of a forgotten node drops it
        t.drop_fh(ino, h)
        n = m.nodes[ino]
        n[4] -= 1
        if n[1] <= 0 and not n[4]:
            m._drop(ino)
        assert _state(t) == m.state()


def test_a_big_walk_is_forgotten_and_the_maps_shrink():
    t = inodes.InodeTable()
    inos = [t.remember(1000 + i, f"/d/f{i}", inodes.identity(1, i))[0] for i in range(50000)]
    for ino in inos[:49000]:
        t.forget(ino, 1)
    assert len(t) == 1 + 1000
    assert [t.relpath(i) for i in inos[49000:]] == [f"/d/f{i}" for i in range(49000, 50000)]
    t.renamed("/d/f49999", "/d/g")
    assert t.relpath(inos[-1]) == "/d/g"


def test_paths_beyond_path_max_and_undecodable_names():
    t = inodes.InodeTable()
    deep = "/" + "/".join(["d" * 200] * 40)  # 8 KiB: deeper than PATH_MAX
    a, _ = t.remember(100, deep, inodes.identity(1, 1))
    b, _ = t.remember(100, deep + "/f", inodes.identity(1, 2))  # salted: same number, other object
    assert b != a and t.relpath(b) == deep + "/f"
    odd = "/caf\udce9"  # a Latin-1 name, as os.fsdecode gives it
    c, _ = t.remember(101, odd, None)
    assert t.relpath(c) == odd


def test_seen_stamps_and_open_handles():
    t = inodes.InodeTable()
    a, _ = t.remember(100, "/a", inodes.identity(1, 1))
    assert t.swap_seen(a, 5) is None and t.swap_seen(a, 6) == 5
    t.add_fh(a, 7)
    assert t.has_fh(a) and t.any_fh(a) == 7
    t.forget(a, 1)
    assert t.relpath(a) == "/a"  # held open: kept
    t.drop_fh(a, 7)
    assert not t.has_fh(a) and a not in t.nodeids()
