"""An fsx-style data-integrity exerciser on a pool file, against an in-memory model.

Each worker process owns one file and runs seeded random operations: writes,
truncates (up and down), reads at random offsets and sizes, mmap reads and
writes (msync'd), O_DIRECT reads and writes (page-aligned buffers from mmap),
O_APPEND writes, fsync, close/reopen (cache.files=off: the reopen drops the
kernel's pages, so the next reads come from the daemon). Every read is compared
with the model; the whole file is compared every few hundred operations, and at
the end through the pool and on the branch. A failure reports the seed and the
last operations, so ``FSX_SEED=<seed>`` replays it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .helpers import is_reference

pytestmark = pytest.mark.slow

WORKERS = 4
OPS_PER_WORKER = int(os.environ.get("FSX_OPS", "26000"))
SEED = int(os.environ.get("FSX_SEED", "20261125"))

WORKER = r"""
import json, mmap, os, random, sys
path, branch_path, seed, nops = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
MAXLEN = 256 * 1024
MAXOP = 48 * 1024
PAGE = mmap.PAGESIZE
model = bytearray()
log = []

class Mismatch(Exception):
    pass

def fail(what, off, got, want):
    bad = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), min(len(got), len(want)))
    raise Mismatch(f"{what} at {off}: len got {len(got)} want {len(want)}, first diff at +{bad}")

def open_fds():
    return (os.open(path, os.O_RDWR | os.O_CREAT, 0o644),
            os.open(path, os.O_RDWR | os.O_DIRECT),
            os.open(path, os.O_WRONLY | os.O_APPEND))

fd, dfd, afd = open_fds()
abuf = mmap.mmap(-1, MAXOP + PAGE)  # page-aligned buffer for O_DIRECT

def data(n):
    return rng.randbytes(n)

def op_write():
    off = rng.randrange(0, MAXLEN)
    n = rng.randrange(1, min(MAXOP, MAXLEN - off) + 1)
    b = data(n)
    assert os.pwrite(fd, b, off) == n
    if off > len(model):
        model.extend(bytes(off - len(model)))
    model[off:off + n] = b
    return ("write", off, n)

def op_read():
    off = rng.randrange(0, len(model) + 100)
    n = rng.randrange(1, MAXOP)
    got = os.pread(fd, n, off)
    want = bytes(model[off:off + n])
    if got != want:
        fail("read", off, got, want)
    return ("read", off, n)

def op_truncate():
    size = rng.randrange(0, MAXLEN)
    os.ftruncate(fd, size)
    if size < len(model):
        del model[size:]
    else:
        model.extend(bytes(size - len(model)))
    return ("truncate", size)

def op_mapread():
    if not model:
        return op_write()
    off = rng.randrange(0, len(model))
    n = rng.randrange(1, min(MAXOP, len(model) - off) + 1)
    with mmap.mmap(fd, len(model), mmap.MAP_SHARED, mmap.PROT_READ) as m:
        got = m[off:off + n]
    if got != model[off:off + n]:
        fail("mapread", off, got, bytes(model[off:off + n]))
    return ("mapread", off, n)

def op_mapwrite():
    off = rng.randrange(0, MAXLEN - 1)
    n = rng.randrange(1, min(MAXOP, MAXLEN - off) + 1)
    if off + n > len(model):  # as fsx: grow the file first, a mapping cannot
        os.ftruncate(fd, off + n)
        model.extend(bytes(off + n - len(model)))
    b = data(n)
    with mmap.mmap(fd, len(model), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as m:
        m[off:off + n] = b
        m.flush()
    model[off:off + n] = b
    return ("mapwrite", off, n)

def op_dwrite():
    off = rng.randrange(0, MAXLEN // PAGE) * PAGE
    n = rng.randrange(1, max(2, min(MAXOP, MAXLEN - off) // PAGE + 1)) * PAGE
    b = data(n)
    abuf[:n] = b
    got = os.pwritev(dfd, [memoryview(abuf)[:n]], off)
    assert got == n, (got, n)
    if off > len(model):
        model.extend(bytes(off - len(model)))
    model[off:off + n] = b
    return ("dwrite", off, n)

def op_dread():
    off = rng.randrange(0, MAXLEN // PAGE) * PAGE
    n = rng.randrange(1, MAXOP // PAGE + 1) * PAGE
    got = os.preadv(dfd, [memoryview(abuf)[:n]], off)
    if abuf[:got] != model[off:off + n]:
        fail("dread", off, abuf[:got], bytes(model[off:off + n]))
    return ("dread", off, n)

def op_append():
    n = rng.randrange(1, 8192)
    if len(model) + n > MAXLEN:
        return op_truncate()
    b = data(n)
    assert os.write(afd, b) == n
    model.extend(b)
    return ("append", n)

def op_fsync():
    os.fsync(rng.choice((fd, dfd)))
    return ("fsync",)

def op_reopen():
    global fd, dfd, afd
    for x in (fd, dfd, afd):
        os.close(x)
    fd, dfd, afd = open_fds()
    return ("reopen",)

def check_all(where):
    with open(where, "rb") as f:
        got = f.read()
    if got != model:
        fail("whole file " + where, 0, got, bytes(model))

OPS = [(op_write, 8), (op_read, 8), (op_truncate, 2), (op_mapread, 3), (op_mapwrite, 3),
       (op_dwrite, 3), (op_dread, 3), (op_append, 3), (op_fsync, 1), (op_reopen, 1)]
table = [f for f, w in OPS for _ in range(w)]
done = 0
try:
    for done in range(1, nops + 1):
        log.append(rng.choice(table)())
        if done % 500 == 0:
            check_all(path)
    op_reopen()
    check_all(path)
    for x in (fd, dfd, afd):
        os.close(x)
    check_all(branch_path)
    print(json.dumps({"ops": done, "error": None}))
except Exception as e:
    print(json.dumps({"ops": done, "error": f"{type(e).__name__}: {e}", "last": log[-12:]}))
"""


@pytest.mark.skipif(
    is_reference(),
    reason="2.33.5 passes O_DIRECT to the branch file (EINVAL on "
    "this branch filesystem) and its cache.files=off (direct_io) refuses mmap",
)
def test_fsx(mount_pool):
    p = mount_pool(n=1, options="cache.files=off,cache.attr=0,cache.entry=0")
    procs = []
    for i in range(WORKERS):
        seed = SEED + i
        procs.append(
            (
                seed,
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        WORKER,
                        p.path(f"fsx{i}"),
                        p.branch_path(0, f"fsx{i}"),
                        str(seed),
                        str(OPS_PER_WORKER),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
        )
    total, failures = 0, []
    for seed, pr in procs:
        out, err = pr.communicate(timeout=600)
        if pr.returncode != 0 or not out.strip():
            failures.append(f"seed {seed}: rc={pr.returncode} {err[-2000:]}")
            continue
        res = json.loads(out)
        total += res["ops"]
        if res["error"]:
            failures.append(
                f"seed {seed} (worker {seed - SEED} of FSX_SEED={SEED}) after "
                f"{res['ops']} ops: {res['error']}; last ops {res['last']}"
            )
    print(f"\nfsx: {WORKERS} workers, {total} operations, {len(failures)} failures")
    assert not failures, "\n".join(failures)
    assert total >= 100_000
