"""mergerfs-balance: move files from the fullest branches to the emptiest until usage is even.

Plans first on a model of each branch filesystem's usage (so ``--dry-run``
prints exactly the plan), then performs each move with the crash-safe
:func:`~mergerfs.tools.common.transfer`. Sources are RW or NC branches,
destinations RW only; branches sharing a filesystem count as one.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from mergerfs.branches import Branch
from mergerfs.tools.common import (
    add_filters,
    find_pool,
    full,
    human,
    locked_branches,
    parser,
    run,
    say,
    selected,
    transfer_all,
    walk_files,
)

PROG = "mergerfs-balance"


@dataclass
class Disk:
    """One branch filesystem in the plan: usage in bytes, and the branches on it."""

    dev: int
    total: int
    used: int
    free: int
    branches: list[Branch] = field(default_factory=list)

    @property
    def pct(self) -> float:
        return 100.0 * self.used / self.total if self.total else 100.0


def plan(branches, args) -> list[tuple[str, str, str, int]]:
    """[(rel, src_branch, dst_branch, size)] that brings the spread within ``args.percentage``."""
    disks: dict[int, Disk] = {}
    for b in branches:
        if b.mode == "RO":
            continue
        try:
            vfs, dev = os.statvfs(b.path), os.stat(b.path).st_dev
        except OSError:
            continue
        d = disks.setdefault(
            dev,
            Disk(
                dev,
                vfs.f_blocks * vfs.f_frsize,
                (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize,
                vfs.f_bavail * vfs.f_frsize,
            ),
        )
        d.branches.append(b)
    # candidate files per disk, largest first; a file moves at most once
    files: dict[int, list] = {}
    for d in disks.values():
        cands = []
        for b in d.branches:
            for rel, st in walk_files(b.path):
                if st.st_nlink == 1 and selected(args, rel, st.st_size):
                    cands.append((st.st_blocks * 512 or st.st_size, st.st_size, rel, b.path))
        files[d.dev] = sorted(cands, reverse=True)
    moves: list[tuple[str, str, str, int]] = []
    taken: set[tuple[str, str]] = set()
    while True:
        writable = [d for d in disks.values() if any(b.mode == "RW" for b in d.branches)]
        if not writable:
            return moves
        lo, hi = min(writable, key=lambda d: d.pct), max(disks.values(), key=lambda d: d.pct)
        if hi.pct - lo.pct <= args.percentage:
            return moves
        dests = [b for b in lo.branches if b.mode == "RW"]
        for i, (blocks, size, rel, src) in enumerate(files[hi.dev]):
            if (src, rel) in taken or size == 0:
                continue
            new_hi = 100.0 * (hi.used - blocks) / hi.total
            new_lo = 100.0 * (lo.used + blocks) / lo.total
            if new_lo > new_hi or blocks > lo.free:  # would overshoot: try a smaller file
                continue
            dst = next((b.path for b in dests if not os.path.lexists(full(b.path, rel))), None)
            if dst is None:
                continue
            taken.add((src, rel))
            taken.add((dst, rel))
            moves.append((rel, src, dst, size))
            hi.used, hi.free = hi.used - blocks, hi.free + blocks
            lo.used, lo.free = lo.used + blocks, lo.free - blocks
            del files[hi.dev][i]
            break
        else:
            return moves  # nothing on the fullest disk fits: as even as it gets


def main(argv: list[str] | None = None) -> int:
    p = parser(
        PROG, "Move files from the fullest to the emptiest branches of a pool until their usage is within a percentage."
    )
    p.add_argument("mount", metavar="MOUNTPOINT")
    p.add_argument(
        "-p",
        "--percentage",
        type=float,
        default=2.0,
        help="stop when the used%% of branches differs by at most this (default 2)",
    )
    add_filters(p)
    p.add_argument("-n", "--dry-run", action="store_true", help="print the moves, change nothing")
    args = p.parse_args(argv)

    def body() -> int:
        pool = find_pool(args.mount, exact=True)
        with locked_branches(pool, not args.dry_run) as branches:
            moves = plan(branches, args)
            failed = transfer_all(PROG, moves, True, not args.dry_run, args.quiet)
            size = human(sum(m[3] for m in moves))
            if args.dry_run:
                say(f"{len(moves)} files, {size} to move")
            else:
                say(f"{len(moves) - failed} files moved, {failed} failed")
            return 1 if failed else 0

    return run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
