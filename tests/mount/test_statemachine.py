"""Hypothesis state machine: random file operations on a pool and a native dir stay in step."""

from __future__ import annotations

import os
import shutil
import stat

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from .helpers import errname, outcome

OPTS = "category.create=ff,cache.files=off,cache.attr=0,cache.entry=0,cache.negative_entry=0"
PATHS = ["a", "b", "d1", "d2", "d1/a", "d1/b", "d1/e", "d1/e/a", "d2/a"]
path_st = st.sampled_from(PATHS)
mode_st = st.sampled_from([0o600, 0o644, 0o755, 0o700, 0o4750])
data_st = st.binary(min_size=0, max_size=300)


def _clear(root: str) -> None:
    for name in os.listdir(root):
        p = os.path.join(root, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)


def _snapshot(root: str) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            s = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISDIR(s.st_mode):
                out[rel] = ("d", stat.filemode(s.st_mode))
            else:
                out[rel] = ("f", stat.filemode(s.st_mode), s.st_size, s.st_nlink)
    return out


def _create(r, p, mode):
    os.close(os.open(os.path.join(r, p), os.O_CREAT | os.O_WRONLY, mode))


def _write(r, p, off, data):
    fd = os.open(os.path.join(r, p), os.O_WRONLY)
    try:
        return os.pwrite(fd, data, off)
    finally:
        os.close(fd)


def _read(r, p):
    with open(os.path.join(r, p), "rb") as f:
        return f.read()


def make_machine(pool, native):
    class PoolVsNative(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            _clear(pool.mnt)
            _clear(native)

        def both(self, fn, *args):
            a = errname(outcome(lambda: fn(pool.mnt, *args)))
            b = errname(outcome(lambda: fn(native, *args)))
            assert a == b, f"{fn.__name__}{args}: pool {a} != native {b}"

        @rule(p=path_st, mode=mode_st)
        def create(self, p, mode):
            self.both(_create, p, mode)

        @rule(p=path_st, off=st.integers(0, 5000), data=data_st)
        def write(self, p, off, data):
            self.both(_write, p, off, data)

        @rule(p=path_st, size=st.integers(0, 6000))
        def truncate(self, p, size):
            self.both(lambda r, p, n: os.truncate(os.path.join(r, p), n), p, size)

        @rule(a=path_st, b=path_st)
        def rename(self, a, b):
            self.both(lambda r, a, b: os.rename(os.path.join(r, a), os.path.join(r, b)), a, b)

        @rule(a=path_st, b=path_st)
        def link(self, a, b):
            self.both(lambda r, a, b: os.link(os.path.join(r, a), os.path.join(r, b)), a, b)

        @rule(p=path_st)
        def unlink(self, p):
            self.both(lambda r, p: os.unlink(os.path.join(r, p)), p)

        @rule(p=path_st)
        def mkdir(self, p):
            self.both(lambda r, p: os.mkdir(os.path.join(r, p)), p)

        @rule(p=path_st)
        def rmdir(self, p):
            self.both(lambda r, p: os.rmdir(os.path.join(r, p)), p)

        @rule(p=path_st, mode=mode_st)
        def chmod(self, p, mode):
            self.both(lambda r, p, m: os.chmod(os.path.join(r, p), m), p, mode)

        @rule(p=path_st)
        def read(self, p):
            self.both(_read, p)

        @invariant()
        def same_tree(self):
            assert _snapshot(pool.mnt) == _snapshot(native)

        @invariant()
        def pool_reads_branch(self):
            for rel, info in _snapshot(pool.mnt).items():
                if info[0] != "f":
                    continue
                where = pool.where(rel)
                assert where, rel
                with open(pool.branch_path(where[0], rel), "rb") as f:
                    assert _read(pool.mnt, rel) == f.read(), rel

    return PoolVsNative


@pytest.mark.slow
def test_pool_matches_native(mount_pool, native):
    pool = mount_pool(options=OPTS)
    machine = make_machine(pool, native)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=30,
            stateful_step_count=30,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
