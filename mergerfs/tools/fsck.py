"""mergerfs-fsck: the same directory on several branches should agree on mode and owner.

The copy the pool shows (``user.mergerfs.basepath``) is the reference; --fix
makes the other copies match it.
"""

from __future__ import annotations

import os
import stat
import sys

from mergerfs.tools.common import PREFIX, Progress, emit_json, find_pool, full, parser, pool_lock, run, say, walk_dirs

PROG = "mergerfs-fsck"
ABOUT = (
    "Report directories whose mode or owner differ between branches; "
    "--fix makes every copy match the one the pool shows."
)


def _meta(st: os.stat_result) -> dict:
    return {"mode": oct(stat.S_IMODE(st.st_mode)), "uid": st.st_uid, "gid": st.st_gid}


def main(argv: list[str] | None = None) -> int:
    p = parser(PROG, ABOUT, ("PATH", "a pool path (directory)"))
    p.add_argument("-f", "--fix", action="store_true", help="change the mismatching copies")
    p.add_argument("--json", action="store_true", help="report as JSON")
    args = p.parse_args(argv)

    def body() -> int:
        pool = find_pool(args.path)
        with pool_lock(pool):
            branches = pool.branches()
            mode = {b.path: b.mode for b in branches}
            top = pool.relpath(args.path)
            dirs: dict[str, list[str]] = {}
            for br in branches:
                for rel in walk_dirs(br.path, top):
                    dirs.setdefault(rel, []).append(br.path)
            prog = Progress(len(dirs), "checking", args.quiet or args.json)
            report, failed = [], 0
            for rel, have in sorted(dirs.items()):
                prog.advance()
                if len(have) < 2:
                    continue
                try:
                    base = os.fsdecode(os.getxattr(pool.mnt + (rel if rel != "/" else ""), PREFIX + "basepath"))
                except OSError:
                    base = have[0]
                if base not in have:
                    base = have[0]
                want = os.lstat(full(base, rel))
                w = _meta(want)
                for b in have:
                    h = _meta(os.lstat(full(b, rel)))
                    if h == w:
                        continue
                    entry = {
                        "relpath": rel,
                        "branch": b,
                        "reference": base,
                        "have": h,
                        "want": w,
                        "fixed": False,
                    }
                    if args.fix:
                        try:
                            if mode[b] == "RO":
                                raise OSError(30, "branch is mounted RO in the pool")
                            os.lchown(full(b, rel), want.st_uid, want.st_gid)
                            os.chmod(full(b, rel), stat.S_IMODE(want.st_mode))
                            entry["fixed"] = True
                        except OSError as e:
                            failed += 1
                            sys.stderr.write(f"{PROG}: {rel} on {b}: {e.strerror}\n")
                    report.append(entry)
                    if not args.json:
                        say(
                            f"{'fixed' if entry['fixed'] else 'mismatch'} {rel} on {b}: "
                            f"mode {h['mode']} owner {h['uid']}:{h['gid']}, "
                            f"{base} has mode {w['mode']} owner {w['uid']}:{w['gid']}"
                        )
            prog.close()
            if args.json:
                emit_json({"mount": pool.mnt, "fixed": args.fix, "mismatches": report})
            else:
                say(f"{len(report)} mismatches")
            return 1 if failed or (report and not args.fix) else 0

    return run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
