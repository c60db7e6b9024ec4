"""mergerfs-ctl: look at and reconfigure a running pool through its control file."""

from __future__ import annotations

import errno
import glob
import os
import platform
import shutil
import subprocess
import sys

from mergerfs import __version__, mounts
from mergerfs.tools.common import (
    Pool,
    ToolError,
    bar,
    emit_json,
    find_pool,
    full,
    human,
    parser,
    run,
    say,
    walk_files,
)

PROG = "mergerfs-ctl"


def _unavailable(pool: Pool) -> dict[str, str]:
    """Branches the daemon leaves out of creates, with why (our pools only)."""
    try:
        text = pool.get("branches-unavailable")
    except OSError:
        return {}  # the C++ mergerfs has no such key
    out = {}
    for line in text.splitlines():
        path, _, why = line.rpartition(": ")
        if path:
            out[path] = why
    return out


def _branch_rows(pool: Pool, count_files: bool) -> list[dict]:
    rows = []
    unavailable = _unavailable(pool)
    for b in pool.branches():
        row: dict = {"path": b.path, "mode": b.mode}
        if b.path in unavailable:
            row["unavailable"] = unavailable[b.path]
            row["error"] = f"unavailable: {unavailable[b.path]}"
            rows.append(row)  # its statvfs would hang (not answering) or show the parent's disk
            continue
        try:
            st = os.statvfs(b.path)
            total = st.f_blocks * st.f_frsize
            free = st.f_bavail * st.f_frsize
            used = (st.f_blocks - st.f_bfree) * st.f_frsize
            row.update(total=total, used=used, free=free, dev=os.stat(b.path).st_dev)
        except OSError as e:
            row["error"] = os.strerror(e.errno or 0)
        if count_files and "error" not in row:
            row["files"] = sum(1 for _ in walk_files(b.path))
        rows.append(row)
    return rows


def status(pool: Pool, args) -> int:
    rows = _branch_rows(pool, args.files)
    seen, tot = set(), {"total": 0, "used": 0, "free": 0}
    for r in rows:
        if "dev" in r and r["dev"] not in seen:  # branches sharing a filesystem count once
            seen.add(r["dev"])
            for k in tot:
                tot[k] += r[k]
    if args.json:
        for r in rows:
            r.pop("dev", None)
        emit_json(
            {
                "mount": pool.mnt,
                "version": pool.get("version"),
                "category.create": pool.get("category.create"),
                "branches": rows,
                "total": tot,
            }
        )
        return 0
    say(f"pool {pool.mnt}  mergerfs {pool.get('version')}  create={pool.get('category.create')}")
    width = max([len(r["path"]) for r in rows] + [6])
    head = f"  {'branch':<{width}}  mode     used     free    total  usage"
    say(head + ("     files" if args.files else ""))
    for r in rows:
        if "error" in r:
            say(f"  {r['path']:<{width}}  {r['mode']:<4}  {r['error']}")
            continue
        frac = r["used"] / r["total"] if r["total"] else 0.0
        line = (
            f"  {r['path']:<{width}}  {r['mode']:<4} {human(r['used']):>8} {human(r['free']):>8} "
            f"{human(r['total']):>8}  {bar(frac)} {frac:4.0%}"
        )
        say(line + (f" {r['files']:>9}" if args.files else ""))
    frac = tot["used"] / tot["total"] if tot["total"] else 0.0
    say(
        f"  {'total':<{width}}       {human(tot['used']):>8} {human(tot['free']):>8} "
        f"{human(tot['total']):>8}  {bar(frac)} {frac:4.0%}"
    )
    return 0


def info(pool: Pool, args) -> int:
    path = args.path
    try:
        paths = pool.allpaths(path)
        base = os.getxattr(path, "user.mergerfs.basepath").decode()
    except OSError as e:
        raise ToolError(f"{path}: {os.strerror(e.errno or 0)}", 1) from None
    rel = pool.relpath(path)
    holders = [b for b in pool.branches() if full(b.path, rel) in paths]
    if args.json:
        emit_json(
            {
                "path": path,
                "relpath": rel,
                "basepath": base,
                "branches": [{"path": b.path, "mode": b.mode} for b in holders],
                "allpaths": paths,
            }
        )
        return 0
    say(f"{rel}  (shown from {base})")
    for p in paths:
        say(f"  {p}")
    return 0


def get(pool: Pool, args) -> int:
    try:
        values = {args.key: pool.get(args.key)} if args.key else pool.options()
    except OSError as e:
        raise ToolError(f"{args.key}: {_why(e)}", 1) from None
    if args.json:
        emit_json(values)
    elif args.key:
        say(values[args.key])
    else:
        for k, v in values.items():
            say(f"{k}={v}")
    return 0


def _why(e: OSError) -> str:
    return {
        errno.ENODATA: "no such key",
        errno.EROFS: "read-only (not settable at runtime)",
        errno.EINVAL: "invalid value",
    }.get(e.errno or 0, os.strerror(e.errno or 0))


def _set(pool: Pool, key: str, value: str) -> None:
    try:
        pool.set(key, value)
    except OSError as e:
        raise ToolError(f"{key}={value}: {_why(e)}", 1) from None


def set_(pool: Pool, args) -> int:
    _set(pool, args.key, args.value)
    say(f"{args.key}={pool.get(args.key)}")
    return 0


def add_branch(pool: Pool, args) -> int:
    path = os.path.abspath(args.path)
    if not os.path.isdir(path):
        raise ToolError(f"{args.path}: not a directory", 1)
    if path in [b.path for b in pool.branches()]:
        raise ToolError(f"{path}: already a branch", 1)
    _set(pool, "branches", ("+<" if args.first else "+>") + f"{path}={args.mode}")
    say(f"branches={pool.get('branches')}")
    return 0


def remove_branch(pool: Pool, args) -> int:
    path = os.path.abspath(args.path)
    if path not in [b.path for b in pool.branches()]:
        raise ToolError(f"{args.path}: not a branch of {pool.mnt}", 1)
    _set(pool, "branches", f"-{path}")
    say(f"branches={pool.get('branches')}")
    return 0


# ------------------------------------------------------------- collect-info
LOG_LINES = 50


def _mount_of(path: str, table: list[mounts.Mount]) -> dict:
    """The mountinfo entry holding ``path``: the longest mountpoint above it."""
    m = mounts.holding(os.path.realpath(path), table)
    if m is None:
        return {}
    out = m._asdict()
    del out["dev"]
    return out


def _recent_log(log_file: str) -> tuple[str, list[str]]:
    """(where from, last lines) of the daemon's log: its log.file, the journal, or syslog."""
    if log_file and os.path.isfile(log_file):
        return log_file, _tail(log_file)
    if shutil.which("journalctl"):
        r = subprocess.run(
            ["journalctl", "--no-pager", "-q", "-n", str(LOG_LINES), "-t", "mergerfs"],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=30,
        )
        if r.returncode == 0 and r.stdout.strip():
            return "journalctl -t mergerfs", r.stdout.splitlines()[-LOG_LINES:]
    for path in ("/var/log/syslog", "/var/log/messages", "/var/log/daemon.log"):
        if os.path.isfile(path):
            lines = [ln for ln in _tail(path, 20000) if "mergerfs" in ln]
            return path, lines[-LOG_LINES:]
    return "", []


def _tail(path: str, n: int = LOG_LINES) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * n))
            return f.read().decode("utf-8", "replace").splitlines()[-n:]
    except OSError as e:
        return [f"(cannot read {path}: {e.strerror})"]


def collect_info(pool: Pool, args) -> int:
    """What a bug report needs, in one go (nothing is changed)."""
    table = mounts.mounts()
    options = pool.options()
    pid = options.get("pid", "")
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except (OSError, ValueError):
        cmdline = []
    branches = _branch_rows(pool, False)
    for r in branches:
        r.pop("dev", None)
        m = _mount_of(r["path"], table)
        r.update(
            fstype=m.get("fstype", "?"),
            source=m.get("source", "?"),
            mountpoint=m.get("mountpoint", "?"),
            mount_options=m.get("options", "?"),
        )
    pool_mount = _mount_of(pool.mnt, table)
    uname = platform.uname()
    where, lines = _recent_log(options.get("log.file", ""))
    info = {
        "version": options.get("version", "?"),
        "tools_version": __version__,
        "pid": pid,
        "command": cmdline,
        "options": options,
        "branches": branches,
        "mount": pool_mount,
        "kernel": {"release": uname.release, "version": uname.version, "machine": uname.machine},
        "fuse_connections": sorted(os.path.basename(p) for p in glob.glob("/sys/fs/fuse/connections/*")),
        "log": {"source": where, "lines": lines},
    }
    if args.json:
        emit_json(info)
        return 0
    say(f"== mergerfs {info['version']} (tools {__version__}), pid {pid}")
    say("command: " + " ".join(cmdline))
    say(f"== kernel\n{uname.system} {uname.release} {uname.version} {uname.machine}")
    say("== mount\n" + " ".join(f"{k}={v}" for k, v in pool_mount.items()))
    say("== branches")
    for r in branches:
        space = f"free {human(r['free'])} of {human(r['total'])}" if "error" not in r else f"error: {r['error']}"
        say(f"  {r['path']} {r['mode']}  {r['fstype']} {r['source']} on {r['mountpoint']}  {space}")
    say("== options")
    for k, v in options.items():
        say(f"  {k}={v}")
    say(f"== log ({where or 'none found'})")
    for ln in lines:
        say("  " + ln)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = parser(PROG, "Show and change a mergerfs pool at runtime (user.mergerfs.* on MOUNT/.mergerfs).")
    p.add_argument("-m", "--mount", help="the pool's mountpoint (default: the only one mounted)")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("status", help="branches with mode and space")
    s.add_argument("--files", action="store_true", help="also count files per branch")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=status)
    s = sub.add_parser("info", help="which branches hold PATH")
    s.add_argument("path")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=info)
    s = sub.add_parser("get", help="read one key (or all)")
    s.add_argument("key", nargs="?")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=get)
    s = sub.add_parser("set", help="change a runtime-settable key")
    s.add_argument("key")
    s.add_argument("value")
    s.set_defaults(fn=set_)
    s = sub.add_parser("add-branch", help="add a branch")
    s.add_argument("path")
    s.add_argument("--mode", choices=("RW", "RO", "NC"), default="RW")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--first", action="store_true")
    where.add_argument("--last", action="store_true", help="(default)")
    s.set_defaults(fn=add_branch)
    s = sub.add_parser(
        "collect-info",
        help="what a bug report needs: version, options, branches "
        "with filesystems and space, mount entry, kernel, recent log lines",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=collect_info)
    s = sub.add_parser("remove-branch", help="remove a branch (its files stay on disk)")
    s.add_argument("path")
    s.set_defaults(fn=remove_branch)
    args = p.parse_args(argv)

    def body() -> int:
        target = args.mount
        if target is None and args.cmd == "info":
            target = args.path  # the pool holding PATH
        pool = find_pool(target, exact=args.mount is not None)
        return args.fn(pool, args)

    return run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
