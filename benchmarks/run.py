#!/usr/bin/env python3
"""Side-by-side benchmark: our mergerfs vs Debian's mergerfs 2.33.5 vs upstream 2.42.

All three pools are mounted over the same two tmpfs branches; a third tmpfs is the
native limit.  Each workload runs in rounds (ours, 2.33.5, 2.42, native; the order
rotates every round), the median time per side gives ratio = reference time / ours
(> 1: we are faster).  Two option sets: the same options on every side, and each
side's best options (passthrough I/O where supported).  See README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib

from mergerfs import mounts

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MiB = 1 << 20
TIMEOUT = 600  # seconds for any one external command (a hung daemon must not hang the run)


class Side:
    def __init__(self, key, label, binary):
        self.key, self.label, self.binary = key, label, binary


SIDES = [
    Side("ours", "ours", os.path.join(REPO, ".venv", "bin", "mergerfs")),
    Side("deb", "2.33.5", "/usr/bin/mergerfs"),
    Side("up", "2.42", os.path.realpath(os.path.join(REPO, "..", "shared", "reference", "mergerfs-2.42.0-17"))),
]
REFS = ["deb", "up"]
LABEL = {s.key: s.label for s in SIDES}
LABEL["native"] = "native"

# Options every side gets in every set: both C++ versions default minfreespace to 4G
# (creates would fail on small branches) and 2.33.5 defaults category.create to
# epmfs where 2.42 and ours use pfrd.
COMMON = "minfreespace=100M,category.create=pfrd"
OPTION_SETS = {
    "same": (
        "same options on every side",
        {
            "ours": "cache.files=partial",
            "deb": "cache.files=partial",
            "up": "cache.files=partial",
        },
    ),
    "best": (
        "best options per side: passthrough I/O where supported",
        {
            # our kernel transport will honour passthrough.io; until then it is parsed and ignored
            "ours": "cache.files=auto-full,passthrough.io=rw",
            "deb": "cache.files=auto-full",  # 2.33.5 has no passthrough
            "up": "cache.files=auto-full,passthrough.io=rw",
        },
    ),
}
NOTES = []  # odd things seen during the run (daemons surviving unmount, failures)


def note(msg):
    print("NOTE: " + msg, flush=True)
    NOTES.append(msg)


# ---------------------------------------------------------------- mounts and cleanup


def sh(*cmd, **kw):
    kw.setdefault("timeout", TIMEOUT)
    return subprocess.run(cmd, check=True, **kw)


def mountpoints():
    return {m.mountpoint for m in mounts.mounts()}


def is_mounted(path):
    return os.path.abspath(path) in mountpoints()  # no realpath: never stat a FUSE mount


def force_unmount(path):
    """umount, then fusermount, then a lazy umount; quiet; bounded in time."""
    for cmd in (["umount", path], ["fusermount3", "-u", path], ["fusermount", "-u", path], ["umount", "-l", path]):
        if not is_mounted(path):
            return
        try:
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            pass


POOLS = []  # every daemon started, for cleanup
TMPFS = []  # every tmpfs mounted, for cleanup


class Pool:
    def __init__(self, side, branches, mnt, options, logdir):
        self.side, self.name, self.mnt, self.options = side, side.key, mnt, options
        self.cmd = [side.binary, "-f", "-o", options, ":".join(branches), mnt]
        os.makedirs(mnt, exist_ok=True)
        self.log = os.path.join(logdir, f"{side.key}-{os.path.basename(os.path.dirname(mnt))}.log")
        self.proc = None
        with open(self.log, "ab") as log:
            # own session: a Ctrl-C in the terminal reaches the harness, which then
            # unmounts in order, not the daemons directly
            self.proc = subprocess.Popen(
                self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
            POOLS.append(self)
        self.wait_mounted()

    def wait_mounted(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.side.label}: daemon exited with {self.proc.returncode} before mounting: {self.log_tail()}"
                )
            if is_mounted(self.mnt):
                os.stat(self.mnt)  # the root answers
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.side.label}: {self.mnt} not mounted after {timeout}s")

    def log_tail(self, n=5):
        try:
            with open(self.log, errors="replace") as f:
                return " | ".join(f.read().strip().splitlines()[-n:])
        except OSError:
            return ""

    def alive(self):
        return self.proc.poll() is None and is_mounted(self.mnt)

    def rss_kib(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    def cpu_s(self):
        """utime+stime of the daemon, all its threads (10 ms resolution)."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return None

    def requests(self):
        """Our daemon's requests so far, {opcode: (answered in C, by Python)}; {} elsewhere."""
        try:
            text = os.getxattr(os.path.join(self.mnt, ".mergerfs"), "user.mergerfs.requests").decode()
        except OSError:
            return {}
        return {op: (int(c), int(py)) for op, c, py in (line.split() for line in text.splitlines())}

    def close(self):
        if self.proc is None or (self.proc.returncode is not None and not is_mounted(self.mnt)):
            return
        force_unmount(self.mnt)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            note(f"{self.side.label} (pid {self.proc.pid}) still running 5 s after its unmount; killed by PID")
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        force_unmount(self.mnt)


class Native:
    name, proc = "native", None

    def requests(self):
        return {}

    def __init__(self, path):
        self.mnt = path

    def alive(self):
        return True

    def rss_kib(self):
        return None

    def cpu_s(self):
        return None


def mount_tmpfs(path, size="12g"):
    os.makedirs(path)
    TMPFS.append(path)
    sh("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path)


def cleanup(base):
    """Stop every daemon, unmount every tmpfs, remove the scratch dir; never raises."""
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        for p in reversed(POOLS):
            try:
                p.close()
            except Exception as e:  # noqa: BLE001 - keep going: the rest must still be cleaned
                print(f"cleanup: {p.mnt}: {e}", file=sys.stderr)
        POOLS.clear()
        for t in reversed(TMPFS):
            force_unmount(t)
        TMPFS.clear()
        left = [m for m in mountpoints() if m.startswith(base + os.sep)]
        if left:
            print(f"cleanup: still mounted, {base} kept: {left}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ---------------------------------------------------------------- helpers


def drop_dentries():
    """Evict dentries/inodes so metadata workloads start cold (kernel sends FORGETs)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2")
    except OSError:
        pass


def fadvise_drop(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def split_tree(roots, top, ndirs, per_dir, size=0):
    """ndirs dirs of per_dir files under top/, files alternating between roots."""
    data = b"x" * size
    for d in range(ndirs):
        for r in roots:
            os.makedirs(os.path.join(r, top, f"d{d:03d}"), exist_ok=True)
        for i in range(per_dir):
            r = roots[i % len(roots)]
            with open(os.path.join(r, top, f"d{d:03d}", f"f{i:05d}"), "wb") as f:
                f.write(data)


def make_tarball(path, nfiles):
    rnd = random.Random(5)
    src = tempfile.mkdtemp(prefix="mfsbench-tarsrc-")
    try:
        words = [("".join(rnd.choice("abcdefghijklmnop") for _ in range(rnd.randint(2, 9)))) for _ in range(500)]
        for i in range(nfiles):
            d = os.path.join(src, "proj", f"mod{i // 30:03d}")
            os.makedirs(d, exist_ok=True)
            text = " ".join(rnd.choice(words) for _ in range(rnd.randint(50, 1500)))
            with open(os.path.join(d, f"file{i:05d}.c"), "w") as f:
                f.write(text)
        with tarfile.open(path, "w") as t:
            t.add(os.path.join(src, "proj"), arcname="proj")
    finally:
        shutil.rmtree(src)


# ---------------------------------------------------------------- workloads
# Each workload: prepare(ctx) once per run (untimed, data written on the branches and
# on native), run(target_dir, ctx) -> seconds (timed part only).


class Ctx:
    def __init__(self, quick, branches, native, work):
        self.quick, self.branches, self.native, self.work = quick, branches, native, work
        s = 8 if quick else 1
        self.read_mib = 1024 // s
        self.write_mib = 512 // s
        self.small = (40, 4000 // s)
        self.find = (100, 10000 // s)
        self.ls = 20000 // s
        self.cat = 1000 // s
        self.tar_files = 3000 // s
        self.meta = 1000 // s
        self.walk = 100000 // (20 if quick else 1)
        self.fio_runtime = 2 if quick else 4


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def dd(args):
    sh("dd", *args, "status=none")


def prep_seqread(ctx):
    for root in (ctx.branches[0], ctx.native):
        dd(["if=/dev/zero", f"of={root}/seqread.bin", "bs=1M", f"count={ctx.read_mib}"])


def run_seqread(d, ctx):
    p = os.path.join(d, "seqread.bin")
    fadvise_drop(p)
    return timed(lambda: dd([f"if={p}", "of=/dev/null", "bs=1M"]))


def run_seqwrite(d, ctx):
    p = os.path.join(d, "seqwrite.bin")
    try:
        return timed(lambda: dd(["if=/dev/zero", f"of={p}", "bs=1M", f"count={ctx.write_mib}", "conv=fsync"]))
    finally:
        if os.path.exists(p):
            os.unlink(p)


def prep_fio(ctx):
    for root in (ctx.branches[1], ctx.native):
        dd(["if=/dev/urandom", f"of={root}/fio.bin", "bs=1M", "count=256"])


def run_fio(d, ctx):
    """Seconds per 10k 4 KiB reads (1 / IOPS scaled), so ratios read like times."""
    out = sh(
        "fio",
        "--name=rr",
        f"--filename={d}/fio.bin",
        "--rw=randread",
        "--bs=4k",
        "--direct=1",
        "--numjobs=4",
        "--size=256M",
        "--time_based",
        f"--runtime={ctx.fio_runtime}",
        "--group_reporting",
        "--ioengine=psync",
        "--output-format=json",
        capture_output=True,
        text=True,
    ).stdout
    iops = json.loads(out[out.index("{") :])["jobs"][0]["read"]["iops"]
    return 10000.0 / iops


def run_smallfiles(d, ctx):
    ndirs, n = ctx.small
    top = os.path.join(d, "small")
    data = b"s" * 4096

    def go():
        for k in range(ndirs):
            os.makedirs(os.path.join(top, f"d{k:02d}"))
        for i in range(n):
            fd = os.open(
                os.path.join(top, f"d{i % ndirs:02d}", f"f{i:05d}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644
            )
            os.write(fd, data)
            os.close(fd)

    try:
        return timed(go)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def prep_find(ctx):
    ndirs, n = ctx.find
    split_tree(ctx.branches, "find", ndirs, n // ndirs)
    split_tree([ctx.native], "find", ndirs, n // ndirs)


def run_find(d, ctx):
    drop_dentries()
    return timed(lambda: sh("find", os.path.join(d, "find"), "-printf", "%s %m %U\n", stdout=subprocess.DEVNULL))


def prep_ls(ctx):
    n = ctx.ls
    for r in [*ctx.branches, ctx.native]:
        os.makedirs(os.path.join(r, "ls"), exist_ok=True)
    for i in range(n):
        for r in ((ctx.branches[i % 2]), ctx.native):
            open(os.path.join(r, "ls", f"entry{i:06d}"), "w").close()


def run_ls(d, ctx):
    drop_dentries()
    return timed(lambda: sh("ls", "-f", os.path.join(d, "ls"), stdout=subprocess.DEVNULL))


def prep_cat(ctx):
    split_tree(ctx.branches, "cat", 10, ctx.cat // 10, size=2048)
    split_tree([ctx.native], "cat", 10, ctx.cat // 10, size=2048)
    with open(os.path.join(ctx.work, "catlist"), "w") as f:
        for k in range(10):
            for i in range(ctx.cat // 10):
                f.write(f"cat/d{k:03d}/f{i:05d}\n")


def run_cat(d, ctx):
    drop_dentries()
    return timed(lambda: sh("xargs", "-a", os.path.join(ctx.work, "catlist"), "cat", cwd=d, stdout=subprocess.DEVNULL))


def prep_tar(ctx):
    p = os.path.join(ctx.work, "src.tar")
    if not os.path.exists(p):
        make_tarball(p, ctx.tar_files)


def _tarx(d):
    return os.path.join(d, "tarx-" + os.path.basename(d))  # shared branches: per target


def run_untar(d, ctx):
    p = _tarx(d)
    if os.path.isdir(p):
        sh("rm", "-rf", p)
    os.makedirs(p)
    return timed(lambda: sh("tar", "-xf", os.path.join(ctx.work, "src.tar"), "-C", p))


def run_rmrf(d, ctx):
    p = _tarx(d)
    if not os.path.isdir(p):  # each round (or --only rm-rf): extract untimed first
        run_untar(d, ctx)
    return timed(lambda: sh("rm", "-rf", p))


def prep_meta(ctx):
    split_tree(ctx.branches, "meta", 10, ctx.meta // 10, size=100)
    split_tree([ctx.native], "meta", 10, ctx.meta // 10, size=100)


def run_meta(d, ctx):
    top = os.path.join(d, "meta")
    names = [os.path.join(top, f"d{k:03d}", f"f{i:05d}") for k in range(10) for i in range(ctx.meta // 10)]

    def go():
        for p in names:
            os.rename(p, p + ".r")
            os.chmod(p + ".r", 0o600)
            os.utime(p + ".r", (1e9, 1e9))
            os.rename(p + ".r", p)
        for p in names[::2]:
            if os.path.exists(p):
                os.unlink(p)

    try:
        return timed(go)
    finally:
        # restore the tree on its original branches (untimed), even after a failure
        for k in range(10):
            for i in range(ctx.meta // 10):
                r = ctx.native if d == ctx.native else ctx.branches[i % 2]
                p = os.path.join(r, "meta", f"d{k:03d}", f"f{i:05d}")
                for q in [os.path.join(b, "meta", f"d{k:03d}", f"f{i:05d}.r") for b in [*ctx.branches, ctx.native]]:
                    if os.path.exists(q):
                        os.unlink(q)
                if not os.path.exists(p):
                    with open(p, "wb") as f:
                        f.write(b"x" * 100)


WORKLOADS = {  # name: (prepare, run)
    "seqread": (prep_seqread, run_seqread),
    "seqwrite": (None, run_seqwrite),
    "fio-randread": (prep_fio, run_fio),
    "smallfiles": (None, run_smallfiles),
    "find-stat": (prep_find, run_find),
    "ls-f": (prep_ls, run_ls),
    "cat-small": (prep_cat, run_cat),
    "untar": (prep_tar, run_untar),
    "rm-rf": (prep_tar, run_rmrf),
    "metadata-mix": (prep_meta, run_meta),
}
DESCR = {
    "seqread": "`dd bs=1M` of a 1 GiB file (128 MiB in --quick) to /dev/null, its pool "
    "pages dropped first (posix_fadvise DONTNEED)",
    "seqwrite": "`dd bs=1M conv=fsync` of 512 MiB (64 MiB) into a new file",
    "fio-randread": "fio, 4 KiB O_DIRECT random reads of a 256 MiB file, 4 jobs, psync, 4 s "
    "(2 s); the time column is seconds per 10k reads (1/IOPS)",
    "smallfiles": "create + write 4 KiB + close of 4000 (500) files in 40 new dirs",
    "find-stat": "`find -printf '%s %m %U'` (a stat per file) over 10k (1250) files in "
    "100 dirs, each dir on both branches; dentries dropped first",
    "ls-f": "`ls -f` of one directory of 20k (2500) entries, half on each branch; dentries dropped first",
    "cat-small": "`xargs cat` of 1000 (120) 2 KiB files in 10 dirs; dentries dropped first",
    "untar": "`tar -xf` of a generated source tree: 3000 (375) text files of 0.3-10 KiB in 100 (13) dirs",
    "rm-rf": "`rm -rf` of that extracted tree",
    "metadata-mix": "per file of 1000 (120): rename, chmod, utime, rename back; then unlink half",
}


# ---------------------------------------------------------------- the RSS walk


def walk_rss(pool, ctx):
    """Idle RSS, RSS after an os.walk + lstat of ctx.walk files, RSS once forgotten."""
    r = {"idle": pool.rss_kib()}
    c0 = pool.cpu_s()
    t = time.perf_counter()
    n = 0
    for root, _, files in os.walk(os.path.join(pool.mnt, "walk")):
        for f in files:
            os.lstat(os.path.join(root, f))
            n += 1
    r["walk_s"] = time.perf_counter() - t
    r["walk_cpu"] = (pool.cpu_s() or 0) - (c0 or 0)
    r["files"] = n
    r["after"] = pool.rss_kib()
    drop_dentries()
    time.sleep(1.0)
    r["forgot"] = pool.rss_kib()
    return r


# ---------------------------------------------------------------- PNG chart


def write_png(path, groups, series_colors, width=900, height=360):
    """Bar chart of ratios: groups = [(label, [v_series0, ...])]; a line at 1.0."""
    vmax = max([2.0] + [v for _, vs in groups for v in vs if v])
    vmax = min(math.ceil(vmax * 2) / 2, 20.0)
    pix = [[(255, 255, 255)] * width for _ in range(height)]
    top, bottom, left = 10, height - 20, 30
    plot_h = bottom - top

    def y_of(v):
        return bottom - int(min(v, vmax) / vmax * plot_h)

    def hline(y, color, x0=left, x1=width - 5, dash=False):
        for x in range(x0, x1):
            if not dash or (x // 4) % 2 == 0:
                pix[y][x] = color

    g = 0.0
    step = 0.5 if vmax <= 5 else 1.0
    while g <= vmax + 1e-9:
        hline(y_of(g), (225, 225, 225))
        g += step
    n = len(groups)
    slot = (width - left - 10) / max(n, 1)
    bw = max(2, int(slot / (len(series_colors) + 1)))
    for i, (_, vals) in enumerate(groups):
        for s, v in enumerate(vals):
            if not v:
                continue
            x0 = int(left + i * slot + bw / 2 + s * bw)
            for y in range(y_of(v), bottom):
                for x in range(x0, x0 + bw - 1):
                    pix[y][x] = series_colors[s]
        # tick under each group: i+1 small marks so groups can be counted
        cx = int(left + i * slot + slot / 2)
        for k in range(i + 1):
            yy = bottom + 3 + (k // 10) * 3
            xx = cx - 10 + (k % 10) * 2
            pix[yy][xx] = pix[yy + 1][xx] = (0, 0, 0)
    hline(y_of(1.0), (200, 0, 0), dash=True)
    hline(bottom, (0, 0, 0))
    for y in range(top, bottom):
        pix[y][left] = (0, 0, 0)
    raw = b"".join(b"\x00" + bytes(c for p in row for c in p) for row in pix)

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
    with open(path, "wb") as f:
        f.write(png)


# ---------------------------------------------------------------- running a set


def geomean(xs):
    xs = [x for x in xs if x]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def side_options(setname, key, args):
    o = ",".join(x for x in (COMMON, OPTION_SETS[setname][1][key]) if x)
    if key == "ours":
        if args.binding:
            o += f",fuse-binding={args.binding}"
        if args.ours_options:
            o += "," + args.ours_options
    return o


def mount_all(setname, args, ctx, base, logdir, tag):
    d = os.path.join(base, f"{setname}-{tag}")
    os.makedirs(d, exist_ok=True)
    pools = []
    try:
        for s in SIDES:
            pools.append(
                Pool(s, ctx.branches, os.path.join(d, f"m_{s.key}"), side_options(setname, s.key, args), logdir)
            )
    except BaseException:
        close_all([p for p in POOLS if os.path.dirname(p.mnt) == d])
        raise
    return pools


def close_all(pools):
    for p in pools:
        p.close()
        if p in POOLS:
            POOLS.remove(p)


def run_set(setname, args, ctx, base, logdir, R):
    """R: the run's record; fills R['times'][(set, workload)], R['cpu'], R['rss']."""
    names = [w for w in WORKLOADS if not args.only or w in args.only]
    if args.walk:
        # fresh daemons: idle RSS, then the walk, one side after the other
        pools = mount_all(setname, args, ctx, base, logdir, "walk")
        try:
            time.sleep(2.0)
            for p in pools:
                R["rss"][(setname, p.name)] = r = walk_rss(p, ctx)
                print(
                    f"[{setname}] walk {LABEL[p.name]:7} idle {r['idle'] / 1024:6.1f} MiB  "
                    f"after {r['files']} files {r['after'] / 1024:6.1f} MiB  forgotten "
                    f"{r['forgot'] / 1024:6.1f} MiB  ({r['walk_s']:.1f} s, cpu "
                    f"{r['walk_cpu']:.2f} s)",
                    flush=True,
                )
        finally:
            close_all(pools)
    if not names:
        return
    pools = mount_all(setname, args, ctx, base, logdir, "run")
    try:
        targets = [*pools, Native(ctx.native)]
        for w in names:
            run = WORKLOADS[w][1]
            times = {t.name: [] for t in targets}
            cpu = {p.name: [] for p in pools}
            python: dict[str, list[int]] = {}  # ours: opcode -> [answered in C, by Python], all rounds
            failed = None
            for rnd in range(args.reps):
                k = rnd % len(targets)
                for t in targets[k:] + targets[:k]:
                    if not all(p.alive() for p in pools):
                        dead = [LABEL[p.name] for p in pools if not p.alive()]
                        raise RuntimeError(f"daemon gone: {', '.join(dead)}")
                    c0 = t.cpu_s()
                    q0 = t.requests()
                    try:
                        times[t.name].append(run(t.mnt, ctx))
                    except Exception as e:  # noqa: BLE001 - a failed workload is reported in the results
                        failed = f"{LABEL[t.name]}: {type(e).__name__}: {e}"
                        break
                    if c0 is not None:
                        cpu[t.name].append(t.cpu_s() - c0)
                    if q0:  # ours: which requests still took the GIL (the workload's own)
                        q1 = t.requests()
                        for op, (c, py) in q1.items():
                            c_, py_ = q0.get(op, (0, 0))
                            acc = python.setdefault(op, [0, 0])
                            acc[0] += c - c_
                            acc[1] += py - py_
                if failed:
                    break
            if failed:
                note(f"[{setname}] {w} failed on {failed}")
                R["failed"][(setname, w)] = failed
                continue
            med = {k: statistics.median(v) for k, v in times.items()}
            R["times"][(setname, w)] = med
            R["cpu"][(setname, w)] = {k: sum(v) / len(v) for k, v in cpu.items() if v}
            R["requests"][(setname, w)] = {op: (c // args.reps, py // args.reps) for op, (c, py) in python.items()}
            print(
                f"[{setname}] {w:13} "
                + "  ".join(f"{LABEL[k]} {med[k]:7.3f}s" for k in ("ours", "deb", "up", "native"))
                + "  ratio "
                + " ".join(f"{med[r] / med['ours']:5.2f}" for r in REFS),
                flush=True,
            )
        for p in pools:
            R["rss_end"][(setname, p.name)] = p.rss_kib()
    finally:
        close_all(pools)


# ---------------------------------------------------------------- report


def fmt_s(x):
    return "—" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.2f}")


def mib(k):
    return "—" if k is None else f"{k / 1024:.1f}"


def set_table(s, R, names):
    L = [
        (
            "| workload | ours s | 2.33.5 s | 2.42 s | native s | **2.33.5 / ours** | "
            "**2.42 / ours** | daemon CPU ms ours / 2.33.5 / 2.42 |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ratios = {r: [] for r in REFS}
    for w in names:
        if (s, w) in R["failed"]:
            L.append(f"| {w} | failed: {R['failed'][(s, w)]} ||||||| ")
            continue
        if (s, w) not in R["times"]:
            continue
        m = R["times"][(s, w)]
        rr = {r: m[r] / m["ours"] for r in REFS}
        for r in REFS:
            ratios[r].append(rr[r])
        c = R["cpu"][(s, w)]
        cpu = " / ".join(f"{c[k] * 1000:.0f}" if k in c else "—" for k in ("ours", "deb", "up"))
        L.append(
            f"| {w} | {fmt_s(m['ours'])} | {fmt_s(m['deb'])} | {fmt_s(m['up'])} | "
            f"{fmt_s(m['native'])} | **{rr['deb']:.2f}** | **{rr['up']:.2f}** | {cpu} |"
        )
    gm = {r: geomean(ratios[r]) for r in REFS}
    L.append(f"| **geometric mean** | | | | | **{gm['deb']:.2f}** | **{gm['up']:.2f}** | |")
    return L, gm


def rss_table(s, R):
    L = [
        "| daemon | idle MiB | after walk MiB | forgotten MiB | walk s | walk CPU s | after workloads MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for side in SIDES:
        r = R["rss"].get((s, side.key))
        end = R["rss_end"].get((s, side.key))
        if not r and end is None:
            continue
        r = r or {}
        L.append(
            f"| {side.label} | {mib(r.get('idle'))} | {mib(r.get('after'))} | "
            f"{mib(r.get('forgot'))} | {fmt_s(r.get('walk_s'))} | "
            f"{fmt_s(r.get('walk_cpu'))} | {mib(end)} |"
        )
    return L


ENABLE_URING = "/sys/module/fuse/parameters/enable_uring"


def read_enable_uring():
    """The fuse module's enable_uring ("Y"/"N"), or None (a kernel without it)."""
    try:
        with open(ENABLE_URING) as f:
            return f.read().strip()
    except OSError:
        return None


def set_enable_uring(want):
    """Set enable_uring for the run ("on"/"off"/"Y"/"N"; "as-is": leave it):
    the value before, to restore, or None if nothing changed."""
    before = read_enable_uring()
    value = {"on": "Y", "off": "N"}.get(want, want)
    if before is None or value not in ("Y", "N") or value == before:
        return None
    with open(ENABLE_URING, "w") as f:
        f.write(value)
    return before


def write_markdown(path, args, R, png_name, elapsed, sets):
    names = [w for w in WORKLOADS if any(k[1] == w for k in list(R["times"]) + list(R["failed"]))]
    walkn = next((r["files"] for r in R["rss"].values()), 0)
    L = [
        "# Benchmark results",
        "",
        (
            f"Generated by `benchmarks/run.py {' '.join(sys.argv[1:])}` on "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.reps} round(s) "
            f"(ours, 2.33.5, 2.42, native; order rotated each round; medians), {os.cpu_count()} "
            f"CPUs, kernel {os.uname().release} (fuse enable_uring={args.uring}: our pool takes "
            f"requests over io_uring when Y), ours at {R['commit']}, run took "
            f"{elapsed / 60:.1f} min."
        ),
        "",
        (
            "Branches: two tmpfs mounts shared by the three pools; native = a third tmpfs "
            "(the physical limit). **ratio = reference time / our time: > 1 means we are "
            "faster.** Daemon CPU = utime+stime of the daemon process per round (mean; "
            "10 ms resolution)."
        ),
        "",
        (
            "**Noise:** a shared 2-core VM; absolute times drift between runs and single "
            "workloads swing by ±20 % (sequential read the most); the interleaving keeps the "
            "ratios of one run comparable. Read ratios, not seconds."
        ),
        "",
    ]
    if png_name:
        L += [
            f"![ratios]({png_name})",
            "",
            (
                "Chart: one group per workload in table order (k tick marks under group k); "
                "bars: blue = same/2.33.5, light blue = same/2.42, orange = best/2.33.5, "
                "red-brown = best/2.42; dashed red line = 1.0."
            ),
            "",
        ]
    for s in sets:
        title, _opts = OPTION_SETS[s]
        L += [f"## {s}: {title}", ""]
        L += [f"- {LABEL[k]}: `-o {side_options(s, k, args)}`" for k in ("ours", "deb", "up")]
        L.append("")
        if any(k[0] == s for k in list(R["times"]) + list(R["failed"])):
            t, _gm = set_table(s, R, names)
            L += [*t, ""]
        if any(k[0] == s for k in R["requests"]):
            L += [
                (
                    "Our requests per round, answered in C / by Python (`user.mergerfs.requests`; largest "
                    "first), and how many came over io_uring / through read() of `/dev/fuse`:"
                ),
                "",
            ]
            L += ["| workload | in C | by Python | io_uring / read() |", "|---|---|---|---:|"]
            for w in names:
                q = dict(R["requests"].get((s, w)) or {})
                if not q:
                    continue
                ring, read = q.pop("io_uring", (0, 0))
                order = sorted(q.items(), key=lambda kv: (-kv[1][1], -kv[1][0]))
                inc = ", ".join(f"{op} {c}" for op, (c, _) in sorted(q.items(), key=lambda kv: -kv[1][0]) if c)
                byp = ", ".join(f"{op} {py}" for op, (_, py) in order if py)
                L.append(f"| {w} | {inc or '—'} | {byp or '—'} | {ring} / {read} |")
            L.append("")
        if any(k[0] == s for k in list(R["rss"]) + list(R["rss_end"])):
            L += [
                (
                    f"Daemon RSS (walk: `os.walk` + `lstat` of {walkn} files on freshly "
                    f"mounted pools; forgotten = after dropping dentries, 1 s later):"
                ),
                "",
            ]
            L += [*rss_table(s, R), ""]
    if NOTES:
        L += ["## Notes from this run", ""] + [f"- {n}" for n in NOTES] + [""]
    L += ["## Workloads (sizes in parentheses: --quick)", ""]
    L += [f"- **{w}**: {DESCR[w]}" for w in WORKLOADS] + [""]
    with open(path, "w") as f:
        f.write("\n".join(L))
    return L


def git_commit():
    try:
        out = subprocess.run(
            ["git", "-C", REPO, "log", "-1", "--format=%h %s"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", REPO, "status", "--porcelain", "--", "mergerfs"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return f"`{out[:60]}`" + (" (+ uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one short round of everything, small sizes (< 3 min)")
    ap.add_argument(
        "--only",
        action="append",
        choices=[*WORKLOADS, "walk"],
        help="run only this workload (repeatable); 'walk' = the RSS walk",
    )
    ap.add_argument("--reps", type=int, default=None, help="rounds (default 5, --quick 1)")
    ap.add_argument("--sets", default="same,best", help="option sets: same,best")
    ap.add_argument(
        "--binding",
        choices=["kernel", "llfuse"],
        help="our side only: -o fuse-binding=BINDING (default: the daemon's own)",
    )
    ap.add_argument(
        "--ours-options",
        "--ours-opts",
        dest="ours_options",
        default="",
        help="extra -o options for OUR pool only (levers, e.g. threads=2)",
    )
    ap.add_argument(
        "--io-uring",
        choices=["on", "off", "as-is"],
        default="on",
        help="the fuse module's enable_uring for the run (restored after): on lets our pool take "
        "requests over io_uring (fuse-io-uring); the references do not use it either way",
    )
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    if args.reps is None:
        args.reps = 1 if args.quick else 5
    sets = [s for s in args.sets.split(",") if s]
    for s in sets:
        if s not in OPTION_SETS:
            ap.error(f"unknown set {s!r} (have: {', '.join(OPTION_SETS)})")
    args.walk = not args.only or "walk" in args.only
    if args.only:
        args.only = [w for w in args.only if w != "walk"] or ["__none__"]
    if os.geteuid() != 0:
        sys.exit("run as root (mounts tmpfs branches, drops caches)")
    for s in SIDES:
        if not os.access(s.binary, os.X_OK):
            sys.exit(f"missing {s.binary} ({s.label})")
    for tool in ("fio", "dd", "tar", "find", "xargs"):
        if not shutil.which(tool):
            sys.exit(f"missing {tool}")

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGINT too: a job started with '&' by a non-interactive shell inherits it ignored
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)

    R = {"times": {}, "cpu": {}, "rss": {}, "rss_end": {}, "failed": {}, "requests": {}, "commit": git_commit()}
    t0 = time.perf_counter()
    base = tempfile.mkdtemp(prefix="mfsbench-")
    logdir = os.path.join(base, "logs")
    os.makedirs(logdir)
    print(f"scratch {base}; ours: {SIDES[0].binary} -o {side_options(sets[0], 'ours', args)}", flush=True)
    status = 0
    uring_was = set_enable_uring(args.io_uring)
    args.uring = read_enable_uring()
    try:
        b = [os.path.join(base, "b1"), os.path.join(base, "b2")]
        nat = os.path.join(base, "nat")
        for p in [*b, nat]:
            mount_tmpfs(p)
        ctx = Ctx(args.quick, b, nat, base)
        names = [w for w in WORKLOADS if not args.only or w in args.only]
        tp = time.perf_counter()
        for prep in dict.fromkeys(WORKLOADS[w][0] for w in names):
            if prep:
                prep(ctx)
        if args.walk:
            split_tree(b, "walk", 100, ctx.walk // 100)
        print(f"prepared in {time.perf_counter() - tp:.0f} s", flush=True)
        for s in sets:
            try:
                run_set(s, args, ctx, base, logdir, R)
            except Exception as e:  # noqa: BLE001 - one set's failure is noted, the others still run
                note(f"[{s}] set aborted: {type(e).__name__}: {e}")
                status = 1
    except KeyboardInterrupt as e:
        print(f"\ninterrupted ({e or 'Ctrl-C'}): cleaning up", file=sys.stderr, flush=True)
        status = 130
    finally:
        cleanup(base)
        if uring_was is not None:
            set_enable_uring(uring_was)
    elapsed = time.perf_counter() - t0
    if not R["times"] and not R["rss"]:
        print("no results", file=sys.stderr)
        return status or 1
    os.makedirs(args.out, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    names = [w for w in WORKLOADS if any(k[1] == w for k in R["times"])]
    groups = [
        (
            w,
            [
                (R["times"][(s, w)][r] / R["times"][(s, w)]["ours"]) if (s, w) in R["times"] else None
                for s in ("same", "best")
                for r in REFS
            ],
        )
        for w in names
    ]
    png = f"ratios{suffix}.png" if names and status != 130 else None
    if png:
        write_png(os.path.join(args.out, png), groups, [(60, 110, 200), (140, 180, 240), (240, 140, 40), (150, 70, 30)])
    if status == 130:  # interrupted: show what there is, keep the last complete record
        suffix += "-interrupted"
    md = os.path.join(args.out, f"latest{suffix}.md")
    lines = write_markdown(md, args, R, png, elapsed, sets)
    print()
    print("\n".join(line for line in lines if not line.startswith("![")))
    print(f"wrote {md}" + (f" and {png}" if png else "") + f" ({elapsed / 60:.1f} min)")
    return status


if __name__ == "__main__":
    sys.exit(main())
