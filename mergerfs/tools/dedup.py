"""mergerfs-dedup: find the same relpath on several branches; keep one copy by a rule."""

from __future__ import annotations

import os
import sys

from mergerfs.tools.common import (
    Progress,
    avail,
    digest,
    emit_json,
    execute_flag,
    find_pool,
    holders_of,
    human,
    parser,
    pool_lock,
    run,
    say,
)

PROG = "mergerfs-dedup"
ABOUT = (
    "Report files present on more than one branch; with --execute keep one "
    "copy per file (chosen by --rule) and remove the others."
)
# rule -> sort key over (branch index, branch path, lstat); the smallest key is kept
RULES = {
    "newest": lambda i, b, st: (-st.st_mtime_ns, i),
    "oldest": lambda i, b, st: (st.st_mtime_ns, i),
    "largest": lambda i, b, st: (-st.st_size, i),
    "smallest": lambda i, b, st: (st.st_size, i),
    "first": lambda i, b, st: (i,),
    "mostfree": lambda i, b, st: (-avail(b), i),
    "leastfree": lambda i, b, st: (avail(b), i),
}


def main(argv: list[str] | None = None) -> int:
    p = parser(PROG, ABOUT, ("PATH", "a pool path (directory or file)"))
    p.add_argument(
        "-r",
        "--rule",
        choices=sorted(RULES),
        default="newest",
        help="which copy to keep (default newest; ties: earlier branch)",
    )
    p.add_argument(
        "--identical-only", action="store_true", help="only resolve files whose copies have the same content"
    )
    p.add_argument("--json", action="store_true", help="report as JSON")
    execute_flag(p)
    args = p.parse_args(argv)

    def body() -> int:
        pool = find_pool(args.path)
        with pool_lock(pool):
            branches = pool.branches()
            index = {b.path: i for i, b in enumerate(branches)}
            mode = {b.path: b.mode for b in branches}
            dups = {rel: h for rel, h in holders_of(branches, pool.relpath(args.path)).items() if len(h) > 1}
            prog = Progress(len(dups), "checking", args.quiet or args.json)
            report, failed, freeable = [], 0, 0
            for rel, have in sorted(dups.items()):
                sums = {b: digest(os.path.join(b, rel.lstrip("/"))) for b, _ in have}
                identical = len(set(sums.values())) == 1
                keep = min(have, key=lambda h: RULES[args.rule](index[h[0]], h[0], h[1]))[0]
                remove = [b for b, _ in have if b != keep] if identical or not args.identical_only else []
                freeable += sum(st.st_size for b, st in have if b in remove)
                entry = {
                    "relpath": rel,
                    "identical": identical,
                    "keep": keep,
                    "remove": remove,
                    "copies": [
                        {"branch": b, "size": st.st_size, "mtime": st.st_mtime, "sha256": sums[b]} for b, st in have
                    ],
                }
                for b in remove:
                    if args.execute:
                        try:
                            if mode[b] == "RO":
                                raise OSError(30, "branch is mounted RO in the pool")
                            os.unlink(os.path.join(b, rel.lstrip("/")))
                        except OSError as e:
                            failed += 1
                            sys.stderr.write(f"{PROG}: {rel} on {b}: {e.strerror}\n")
                            continue
                    if not args.json:
                        say(
                            f"{'removed' if args.execute else 'would remove'} {rel} on {b} "
                            f"(keeping {keep}{', identical' if identical else ''})"
                        )
                if not remove and not args.json:
                    say(f"kept {rel}: copies differ ({', '.join(b for b, _ in have)})")
                report.append(entry)
                prog.advance()
            prog.close()
            if args.json:
                emit_json({"mount": pool.mnt, "rule": args.rule, "executed": args.execute, "duplicates": report})
            else:
                say(f"{len(report)} duplicated files, {human(freeable)} {'freed' if args.execute else 'removable'}")
            return 1 if failed else 0

    return run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
