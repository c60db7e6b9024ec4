#!/usr/bin/env python3
"""Side-by-side benchmark: our mergerfs vs the C++ reference vs the native directory.

Both pools are mounted over the same two tmpfs branches with the same options; each
workload runs A B A B (ours, ref, native interleaved) for several repetitions, and the
median time per target gives the ratio ref/ours (>1 = we are faster).  See README.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
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

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OURS = os.path.join(REPO, ".venv", "bin", "mergerfs")
REF = "/usr/bin/mergerfs"
MiB = 1 << 20
OPTION_SETS = {
    "partial": "cache.files=partial,dropcacheonclose=false",
    "off": "cache.files=off",
}


# ---------------------------------------------------------------- mounts

def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def wait_mounted(path, proc, timeout=15.0):
    deadline = time.monotonic() + timeout
    parent = os.stat(os.path.dirname(path)).st_dev
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon for {path} exited with {proc.returncode}")
        try:
            if os.stat(path).st_dev != parent:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{path} not mounted after {timeout}s")


def unmount(path):
    for cmd in (["fusermount", "-u", path], ["umount", path], ["umount", "-l", path]):
        if subprocess.run(cmd, stderr=subprocess.DEVNULL).returncode == 0:
            return


class Pool:
    def __init__(self, name, binary, branches, mnt, options):
        self.name, self.mnt = name, mnt
        os.makedirs(mnt, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "-f", "-o", options, ":".join(branches), mnt],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_mounted(mnt, self.proc)

    def rss_kib(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    def close(self):
        unmount(self.mnt)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Native:
    name, proc = "native", None

    def __init__(self, path):
        self.mnt = path

    def rss_kib(self):
        return None

    def close(self):
        pass


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
    import random
    rnd = random.Random(5)
    src = tempfile.mkdtemp(prefix="mfsbench-tarsrc-")
    try:
        words = [("".join(rnd.choice("abcdefghijklmnop") for _ in range(rnd.randint(2, 9))))
                 for _ in range(500)]
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
# Each workload: prepare(ctx) once per option set (untimed, data on the branches),
# run(target_dir, ctx) -> seconds (timed part only).

class Ctx:
    def __init__(self, quick, branches, native, work):
        self.quick, self.branches, self.native, self.work = quick, branches, native, work
        self.roots = branches  # data written "behind" the pools
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
        self.fio_runtime = 2 if quick else 5


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def dd(args):
    sh("dd", *args, "status=none")


def prep_seqread(ctx):
    for root in (ctx.branches[0], ctx.native):
        dd([f"if=/dev/zero", f"of={root}/seqread.bin", "bs=1M", f"count={ctx.read_mib}"])


def run_seqread(d, ctx):
    p = os.path.join(d, "seqread.bin")
    fadvise_drop(p)
    return timed(lambda: dd([f"if={p}", "of=/dev/null", "bs=1M"]))


def run_seqwrite(d, ctx):
    p = os.path.join(d, "seqwrite.bin")
    try:
        return timed(lambda: dd(["if=/dev/zero", f"of={p}", "bs=1M",
                                 f"count={ctx.write_mib}", "conv=fsync"]))
    finally:
        os.unlink(p)


def prep_fio(ctx):
    for root in (ctx.branches[1], ctx.native):
        dd(["if=/dev/urandom", f"of={root}/fio.bin", "bs=1M", "count=256"])


def run_fio(d, ctx):
    """Seconds per 10k 4 KiB reads (1 / IOPS scaled), so ratios read like times."""
    out = subprocess.run(
        ["fio", "--name=rr", f"--filename={d}/fio.bin", "--rw=randread", "--bs=4k",
         "--direct=1", "--numjobs=4", "--size=256M", "--time_based",
         f"--runtime={ctx.fio_runtime}", "--group_reporting", "--ioengine=psync",
         "--output-format=json"], check=True, capture_output=True, text=True).stdout
    iops = json.loads(out[out.index("{"):])["jobs"][0]["read"]["iops"]
    return 10000.0 / iops


def run_smallfiles(d, ctx):
    ndirs, n = ctx.small
    top = os.path.join(d, "small")
    data = b"s" * 4096

    def go():
        for k in range(ndirs):
            os.makedirs(os.path.join(top, f"d{k:02d}"))
        for i in range(n):
            fd = os.open(os.path.join(top, f"d{i % ndirs:02d}", f"f{i:05d}"),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, data)
            os.close(fd)
    try:
        return timed(go)
    finally:
        shutil.rmtree(top)


def prep_find(ctx):
    ndirs, n = ctx.find
    split_tree(ctx.branches, "find", ndirs, n // ndirs)
    split_tree([ctx.native], "find", ndirs, n // ndirs)


def run_find(d, ctx):
    drop_dentries()
    return timed(lambda: sh("find", os.path.join(d, "find"), "-printf", "%s %m %U\n",
                            stdout=subprocess.DEVNULL))


def prep_ls(ctx):
    n = ctx.ls
    for r in ctx.branches + [ctx.native]:
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
    return timed(lambda: sh("xargs", "-a", os.path.join(ctx.work, "catlist"), "cat",
                            cwd=d, stdout=subprocess.DEVNULL))


def prep_tar(ctx):
    make_tarball(os.path.join(ctx.work, "src.tar"), ctx.tar_files)


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
    if not os.path.isdir(p):  # each rep (or --only rm-rf): extract untimed first
        run_untar(d, ctx)
    return timed(lambda: sh("rm", "-rf", p))


def prep_meta(ctx):
    split_tree(ctx.branches, "meta", 10, ctx.meta // 10, size=100)
    split_tree([ctx.native], "meta", 10, ctx.meta // 10, size=100)


def run_meta(d, ctx):
    top = os.path.join(d, "meta")
    names = [os.path.join(top, f"d{k:03d}", f"f{i:05d}")
             for k in range(10) for i in range(ctx.meta // 10)]

    def go():
        for p in names:
            os.rename(p, p + ".r")
            os.chmod(p + ".r", 0o600)
            os.utime(p + ".r", (1e9, 1e9))
            os.rename(p + ".r", p)
        for p in names[::2]:
            if os.path.exists(p):
                os.unlink(p)
    t = timed(go)
    # restore the unlinked half on its original branch (untimed)
    for k in range(10):
        for i in range(0, ctx.meta // 10, 2):
            for r in ([ctx.native] if d == ctx.native else [ctx.branches[i % 2]]):
                with open(os.path.join(r, "meta", f"d{k:03d}", f"f{i:05d}"), "wb") as f:
                    f.write(b"x" * 100)
    return t


WORKLOADS = {  # name: (prepare, run, kind)
    "seqread": (prep_seqread, run_seqread, "data"),
    "seqwrite": (None, run_seqwrite, "data"),
    "fio-randread": (prep_fio, run_fio, "data"),
    "smallfiles": (None, run_smallfiles, "meta"),
    "find-stat": (prep_find, run_find, "meta"),
    "ls-f": (prep_ls, run_ls, "meta"),
    "cat-small": (prep_cat, run_cat, "meta"),
    "untar": (prep_tar, run_untar, "meta"),
    "rm-rf": (prep_tar, run_rmrf, "meta"),
    "metadata-mix": (prep_meta, run_meta, "meta"),
}
DESCR = {
    "seqread": "sequential read, 1 MiB dd, page cache dropped (fadvise DONTNEED)",
    "seqwrite": "sequential write, 1 MiB dd, conv=fsync",
    "fio-randread": "fio 4 KiB O_DIRECT randread, 4 jobs, psync (s per 10k IOs)",
    "smallfiles": "create+write 4 KiB files in 40 dirs",
    "find-stat": "find -printf %s%m%U (stat) over files in 100 dirs, both branches",
    "ls-f": "ls -f of one directory merged from both branches",
    "cat-small": "cat of small files (xargs cat)",
    "untar": "tar -xf of a generated source tarball",
    "rm-rf": "rm -rf of the extracted tree",
    "metadata-mix": "rename/chmod/utime/rename per file, unlink half",
}


def walk_rss(pool, ctx, walks=3):
    """RSS after walking ctx.walk files, repeated; dentries dropped between walks."""
    out = [("start", pool.rss_kib())]
    for w in range(walks):
        t = time.perf_counter()
        for root, dirs, files in os.walk(os.path.join(pool.mnt, "walk")):
            for f in files:
                os.lstat(os.path.join(root, f))
        el = time.perf_counter() - t
        out.append((f"walk{w + 1} ({el:.1f}s)", pool.rss_kib()))
        drop_dentries()
        time.sleep(0.5)
        out.append((f"after drop {w + 1}", pool.rss_kib()))
    return out


# ---------------------------------------------------------------- PNG chart

def write_png(path, groups, series_colors, width=900, height=360):
    """Bar chart of ratios: groups = [(label, [v_series0, v_series1])]; a line at 1.0."""
    vmax = max([2.0] + [v for _, vs in groups for v in vs if v])
    vmax = math.ceil(vmax * 2) / 2
    pix = [[(255, 255, 255)] * width for _ in range(height)]
    top, bottom, left = 10, height - 20, 30
    plot_h = bottom - top

    def y_of(v):
        return bottom - int(v / vmax * plot_h)

    def hline(y, color, x0=left, x1=width - 5, dash=False):
        for x in range(x0, x1):
            if not dash or (x // 4) % 2 == 0:
                pix[y][x] = color
    g = 0.0
    while g <= vmax + 1e-9:
        hline(y_of(g), (225, 225, 225))
        g += 0.5
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
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))
    png = (b"\x89PNG\r\n\x1a\n"
           + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(png)


# ---------------------------------------------------------------- main

def geomean(xs):
    xs = [x for x in xs if x]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def run_set(setname, options, args, base, results, rss, walks):
    b = [os.path.join(base, "b1"), os.path.join(base, "b2")]
    nat = os.path.join(base, "nat")
    mounted_tmpfs = []
    pools = []
    try:
        for p in b + [nat]:
            os.makedirs(p)
            sh("mount", "-t", "tmpfs", "-o", "size=12g", "tmpfs", p)
            mounted_tmpfs.append(p)
        ctx = Ctx(args.quick, b, nat, base)
        names = [w for w in WORKLOADS if not args.only or w in args.only]
        for w in names:
            prep = WORKLOADS[w][0]
            if prep:
                prep(ctx)
        if args.walk:
            split_tree(b, "walk", 100, ctx.walk // 100)
        ours_opts = options + ("," + args.ours_opts if args.ours_opts else "")
        pools = [Pool("ours", OURS, b, os.path.join(base, "m_ours"), ours_opts),
                 Pool("ref", REF, b, os.path.join(base, "m_ref"), options)]
        targets = pools + [Native(nat)]
        for w in names:
            run = WORKLOADS[w][1]
            times = {t.name: [] for t in targets}
            for rep in range(args.reps):
                order = targets if rep % 2 == 0 else [targets[1], targets[0], targets[2]]
                for t in order:
                    times[t.name].append(run(t.mnt, ctx))
            med = {k: statistics.median(v) for k, v in times.items()}
            results[(setname, w)] = med
            rss[(setname, w)] = {p.name: p.rss_kib() for p in pools}
            print(f"[{setname:7}] {w:13} ours {med['ours']:8.3f}s  ref {med['ref']:8.3f}s  "
                  f"native {med['native']:8.3f}s  ratio {med['ref'] / med['ours']:5.2f}  "
                  f"rss ours {rss[(setname, w)]['ours'] // 1024} MiB", flush=True)
        if args.walk:
            for p in pools:
                walks[(setname, p.name)] = walk_rss(p, ctx)
                print(f"[{setname:7}] walk {p.name}: " + ", ".join(
                    f"{k}={v // 1024 if v else '?'}MiB" for k, v in walks[(setname, p.name)]),
                    flush=True)
    finally:
        for p in pools:
            p.close()
        for p in reversed(mounted_tmpfs):
            subprocess.run(["umount", p])


def write_markdown(path, args, results, rss, walks, png_name, elapsed):
    sets = [s for s in OPTION_SETS if any(k[0] == s for k in results)]
    names = [w for w in WORKLOADS if any(k[1] == w for k in results)]
    L = ["# Benchmark results", "",
         f"Generated by `benchmarks/run.py{' --quick' if args.quick else ''}` on "
         f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.reps} repetitions "
         f"(A B A B interleaved, medians), {os.cpu_count()} CPUs, kernel {os.uname().release}, "
         f"run took {elapsed / 60:.1f} min.", "",
         "Branches: two tmpfs mounts; native = a third tmpfs (physical limit). "
         "ratio = ref_time / our_time (> 1: we are faster).", "",
         "**Noise:** a shared VM; absolute times drift between runs and single "
         "workloads swing by ±20 % (sequential read the most); the interleaving keeps "
         "the ratios of one run comparable.", "",
         f"![ratios]({png_name})", "",
         "Chart: one group per workload in table order (k tick marks under group k); "
         "blue = cache.files=partial, orange = cache.files=off; dashed red line = 1.0.", ""]
    for s in sets:
        L += [f"## cache.files={s}  (`-o {OPTION_SETS[s]}`)", "",
              "| workload | ours s | ref s | native s | ratio ref/ours | RSS ours MiB | RSS ref MiB |",
              "|---|---:|---:|---:|---:|---:|---:|"]
        ratios = []
        for w in names:
            if (s, w) not in results:
                continue
            m = results[(s, w)]
            r = m["ref"] / m["ours"]
            ratios.append(r)
            rs = rss[(s, w)]
            L.append(f"| {w} | {m['ours']:.3f} | {m['ref']:.3f} | {m['native']:.3f} | "
                     f"**{r:.2f}** | {(rs['ours'] or 0) / 1024:.1f} | {(rs['ref'] or 0) / 1024:.1f} |")
        L += ["", f"Geometric mean of ratios: **{geomean(ratios):.2f}**", ""]
    if walks:
        L += ["## RSS while walking files (os.walk + lstat), dentries dropped between walks", ""]
        for (s, who), pts in walks.items():
            L.append(f"- cache.files={s}, {who}: " + ", ".join(
                f"{k} {v / 1024 if v else 0:.1f} MiB" for k, v in pts))
        L.append("")
    L += ["## Workloads", ""] + [f"- **{w}**: {DESCR[w]}" for w in names] + [""]
    with open(path, "w") as f:
        f.write("\n".join(L))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes, 1 repetition")
    ap.add_argument("--only", action="append", choices=list(WORKLOADS) + ["walk"],
                    help="run only this workload (repeatable); 'walk' = RSS walk only")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--sets", default="partial,off")
    ap.add_argument("--ours-opts", default="",
                    help="extra -o options for OUR pool only (lever experiments)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    if args.reps is None:
        args.reps = 1 if args.quick else 3
    args.walk = not args.only or "walk" in args.only
    if args.only:
        args.only = [w for w in args.only if w != "walk"] or ["__none__"]
    if os.geteuid() != 0:
        sys.exit("run as root (mounts tmpfs branches, drops caches)")
    for exe in (OURS, REF):
        if not os.access(exe, os.X_OK):
            sys.exit(f"missing {exe}")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    results, rss, walks = {}, {}, {}
    t0 = time.perf_counter()
    base = tempfile.mkdtemp(prefix="mfsbench-")
    try:
        for s in args.sets.split(","):
            sub = os.path.join(base, s)
            os.makedirs(sub)
            run_set(s, OPTION_SETS[s], args, sub, results, rss, walks)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    elapsed = time.perf_counter() - t0
    os.makedirs(args.out, exist_ok=True)
    names = [w for w in WORKLOADS if any(k[1] == w for k in results)]
    sets = args.sets.split(",")
    groups = [(w, [(results[(s, w)]["ref"] / results[(s, w)]["ours"]) if (s, w) in results
                   else None for s in sets]) for w in names]
    suffix = "-quick" if args.quick else ""
    png = f"ratios{suffix}.png"
    write_png(os.path.join(args.out, png), groups, [(60, 110, 200), (240, 140, 40)])
    md = os.path.join(args.out, f"latest{suffix}.md")
    write_markdown(md, args, results, rss, walks, png, elapsed)
    for s in sets:
        rs = [results[(s, w)]["ref"] / results[(s, w)]["ours"] for w in names if (s, w) in results]
        print(f"geomean ratio cache.files={s}: {geomean(rs):.2f}")
    print(f"wrote {md} and {png} ({elapsed / 60:.1f} min)")


if __name__ == "__main__":
    main()
