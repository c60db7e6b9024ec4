"""mergerfs-dup: make sure files exist on N branches (redundancy against a dead disk)."""

from __future__ import annotations

import sys

from mergerfs.tools.common import (
    ToolError,
    avail,
    execute_flag,
    find_pool,
    holders_of,
    locked_branches,
    parser,
    run,
    transfer_all,
)

PROG = "mergerfs-dup"
ABOUT = "Copy files under PATH so each exists on COUNT branches (newest copy wins). Dry-run unless --execute."


def main(argv: list[str] | None = None) -> int:
    p = parser(PROG, ABOUT, ("PATH", "a pool path (directory or file)"))
    p.add_argument("-c", "--count", type=int, default=2, help="copies wanted (default 2)")
    execute_flag(p)
    args = p.parse_args(argv)

    def body() -> int:
        if args.count < 1:
            raise ToolError("--count must be at least 1")
        pool = find_pool(args.path)
        with locked_branches(pool, args.execute) as branches:
            rw = [b.path for b in branches if b.mode == "RW"]
            files = holders_of(branches, pool.relpath(args.path))
            work = []
            for rel, have in files.items():
                missing = args.count - len(have)
                if missing <= 0:
                    continue
                src, st = max(have, key=lambda h: h[1].st_mtime_ns)
                dests = sorted((b for b in rw if b not in [h[0] for h in have]), key=avail, reverse=True)
                dests = [d for d in dests if avail(d) > st.st_size][:missing]
                if len(dests) < missing:
                    sys.stderr.write(f"{PROG}: {rel}: only {len(have) + len(dests)} branches can hold it\n")
                work += [(rel, src, d, st.st_size) for d in dests]
            failed = transfer_all(PROG, work, False, args.execute, args.quiet)
            return 1 if failed else 0

    return run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
