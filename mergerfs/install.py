"""``mergerfs-install-helper``: make a venv-installed mergerfs usable by mount(8).

An fstab line of type ``fuse.mergerfs`` (or the legacy ``mergerfs#BRANCHES``
with type ``fuse``) makes mount(8) run ``mount.fuse``, which runs ``mergerfs``
through ``/bin/sh`` with the shell's default PATH (mount(8) does not pass its
own PATH on). Type ``mergerfs`` runs ``/sbin/mount.mergerfs``. So a package
living in a venv needs two symlinks:

    BINDIR/mergerfs         -> VENV/bin/mergerfs         (default /usr/local/bin)
    SBINDIR/mount.mergerfs  -> VENV/bin/mount.mergerfs   (default /sbin)

An existing file that is not one of our symlinks (e.g. the C++ package's
``/sbin/mount.mergerfs``, which also just runs ``mergerfs`` from PATH) is left
alone unless ``--force``. A separate command rather than a ``mergerfs``
subcommand: ``mergerfs WORD`` already means "branches WORD".
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import sysconfig

LINKS = (("bindir", "mergerfs"), ("sbindir", "mount.mergerfs"))


def scripts_dir() -> str:
    """Where this installation's console scripts are (the venv's bin)."""
    for d in (sysconfig.get_path("scripts"), os.path.dirname(os.path.abspath(sys.argv[0]))):
        if os.path.exists(os.path.join(d, "mergerfs")):
            return d
    raise SystemExit("mergerfs-install-helper: cannot find the 'mergerfs' script of this installation")


def _ours(path: str, target: str) -> bool:
    return os.path.islink(path) and os.path.realpath(path) == os.path.realpath(target)


def install(dirs: dict[str, str], force: bool = False, uninstall: bool = False) -> list[str]:
    """Create (or remove) the links; returns one line per action for the user."""
    src = scripts_dir()
    done = []
    for key, name in LINKS:
        target, link = os.path.join(src, name), os.path.join(dirs[key], name)
        if uninstall:
            if _ours(link, target):
                os.unlink(link)
                done.append(f"removed {link}")
            continue
        if _ours(link, target):
            done.append(f"ok {link} -> {target}")
            continue
        if os.path.lexists(link):
            if not force:
                done.append(f"kept {link} (exists; --force replaces it)")
                continue
            os.unlink(link)
        os.makedirs(dirs[key], exist_ok=True)
        os.symlink(target, link)
        done.append(f"linked {link} -> {target}")
    if not uninstall and not any(shutil.which(h, path="/sbin:/usr/sbin") for h in ("mount.fuse3", "mount.fuse")):
        done.append("warning: no /sbin/mount.fuse: install the fuse3 (or fuse) package for fuse.mergerfs fstab lines")
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="mergerfs-install-helper",
        description="Link this installation's mergerfs where mount(8) and fstab find it.",
    )
    ap.add_argument("--bindir", default="/usr/local/bin", help="where 'mergerfs' goes (default: %(default)s)")
    ap.add_argument("--sbindir", default="/sbin", help="where 'mount.mergerfs' goes (default: %(default)s)")
    ap.add_argument("--force", action="store_true", help="replace existing files")
    ap.add_argument("--uninstall", action="store_true", help="remove our links")
    args = ap.parse_args(argv)
    try:
        lines = install({"bindir": args.bindir, "sbindir": args.sbindir}, args.force, args.uninstall)
    except OSError as e:
        print(f"mergerfs-install-helper: {e}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
