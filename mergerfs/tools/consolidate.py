"""mergerfs-consolidate: gather a directory's files, scattered over branches, onto one branch."""

from __future__ import annotations

import os
import sys

from mergerfs.tools.common import (
    ToolError,
    avail,
    execute_flag,
    find_pool,
    holders_of,
    human,
    locked_branches,
    parser,
    run,
    say,
    transfer_all,
)

PROG = "mergerfs-consolidate"
ABOUT = (
    "Move the files under a pool directory onto one branch (by default the one "
    "already holding most of its bytes). Dry-run unless --execute."
)


def main(argv: list[str] | None = None) -> int:
    p = parser(PROG, ABOUT, ("DIR", "a pool directory"))
    p.add_argument("-b", "--branch", help="the branch to gather onto")
    execute_flag(p)
    args = p.parse_args(argv)

    def body() -> int:
        pool = find_pool(args.path)
        if not os.path.isdir(args.path):
            raise ToolError(f"{args.path}: not a directory")
        with locked_branches(pool, args.execute) as branches:
            rw = [b.path for b in branches if b.mode == "RW"]
            files = holders_of(branches, pool.relpath(args.path))
            if args.branch:
                target = os.path.abspath(args.branch)
                if target not in rw:
                    raise ToolError(f"{args.branch}: not a RW branch of {pool.mnt}")
            else:
                held = dict.fromkeys(rw, 0)
                for have in files.values():
                    for b, st in have:
                        if b in held:
                            held[b] += st.st_size
                if not held:
                    raise ToolError(f"{pool.mnt}: no RW branch")
                target = max(rw, key=lambda b: (held[b], avail(b)))
            work, skipped = [], 0
            for rel, have in sorted(files.items()):
                where = [b for b, _ in have]
                if target in where:
                    if len(where) > 1:
                        skipped += 1
                        say(f"skipped {rel}: also on {target} (see mergerfs-dedup)")
                    continue
                if len(where) > 1:
                    skipped += 1
                    say(f"skipped {rel}: on several branches (see mergerfs-dedup)")
                    continue
                work.append((rel, where[0], have[0][1].st_size))
            need = sum(w[2] for w in work)
            if need > avail(target):
                raise ToolError(f"{target}: {human(avail(target))} free, {human(need)} needed", 1)
            failed = transfer_all(PROG, [(r, s, target, n) for r, s, n in work], True, args.execute, args.quiet)
            say(f"{len(work) - failed} files onto {target}, {skipped} skipped, {failed} failed")
            return 1 if failed else 0

    return run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
