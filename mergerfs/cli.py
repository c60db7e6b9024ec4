"""Command line: ``mergerfs [-f] [-d] [-o OPT[,OPT...]] BRANCHES MOUNTPOINT``.

Parses argv the way the reference (libfuse's option parser) does: options and
positionals in any order, ``-o`` repeatable, later settings winning. Turns the
result into a :class:`~mergerfs.config.Config` and hands it to
:func:`mergerfs.lifecycle.run`. Every refusal is one line on stderr and exit 1.
"""

from __future__ import annotations

import os
import sys

from mergerfs import COMPAT_VERSION, __version__
from mergerfs.config import Config, parse_o
from mergerfs.options import OptionError, help_text

USAGE = "usage: mergerfs [options] <branches> <mountpoint>"


def _fail(msg: str) -> int:
    print(f"mergerfs: {msg}", file=sys.stderr)
    return 1


def parse_argv(argv: list[str]) -> tuple[Config, bool, bool, str | None]:
    """(config, foreground, debug, action) where action is 'help'/'version'/None.

    Arguments apply in order, as libfuse's parser feeds the reference: the
    first positional is the branches unless branches are already set (by an
    earlier ``-o branches=``/``config=``), the next the mountpoint.
    """
    cfg = Config.defaults()
    foreground = debug = False
    branches_given = False
    it = iter(argv)
    for arg in it:
        if arg in ("-h", "--help"):
            return cfg, False, False, "help"
        if arg in ("-v", "-V", "--version"):
            return cfg, False, False, "version"
        if arg == "-f":
            foreground = True
        elif arg == "-d" or arg == "--debug":
            foreground = debug = True
        elif arg == "-s":
            pass  # single-threaded: accepted, threads stay as configured
        elif arg == "-n":
            pass  # mount(8)'s "no mtab" (2.42 takes it too): there is no mtab to write
        elif arg.startswith("-o"):
            text = arg[2:] if arg != "-o" else next(it, None)
            if text is None:
                raise OptionError("missing argument after -o")
            for key, value in parse_o(text):
                cfg.apply(key, value)
                branches_given |= bool(cfg["branches"])
        elif arg.startswith("-") and arg != "-":
            raise OptionError(f"invalid option '{arg}'")
        elif not branches_given:
            cfg.apply("branches", arg)
            branches_given = True
        elif cfg.mountpoint is None:
            cfg.mountpoint = arg
        else:
            raise OptionError(f"too many arguments: '{arg}'")
    if cfg.mountpoint:
        cfg.mountpoint = os.path.abspath(cfg.mountpoint)
    return cfg, foreground, debug, None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg, foreground, debug, action = parse_argv(argv)
    except OptionError as e:
        return _fail(str(e))
    if action == "help":
        print(
            USAGE + "\n\n  -f  stay in the foreground\n  -d  debug log to stderr (implies -f)\n"
            "  -o OPT[,OPT...]  mount options\n  -n  accepted (mount(8)'s no-mtab)\n"
            "  -h  this help\n  -v  version\n\noptions:\n" + help_text()
        )
        return 0
    if action == "version":
        print(f"mergerfs version: {COMPAT_VERSION} (python mergerfs {__version__})")
        return 0
    if not cfg["branches"] and not cfg.mountpoint:
        return _fail(USAGE)
    if not cfg.mountpoint:
        return _fail("no mountpoint given")
    if not cfg["branches"]:
        return _fail("no branches given")
    from mergerfs import lifecycle  # noqa: PLC0415 - keeps -h/-v fast

    return lifecycle.run(cfg, foreground=foreground, debug=debug)


def mount_helper(argv: list[str] | None = None) -> int:
    """``mount.mergerfs SPEC DIR [-sfnv] [-o OPTS]`` as mount(8) calls it.

    -s (sloppy), -n (no mtab), -v (verbose) are mount(8)'s and ignored here.
    """
    argv = sys.argv[1:] if argv is None else argv
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "-o":
            out += ["-o", next(it, "")]
        elif arg.startswith("-o"):
            out.append(arg)
        elif arg.startswith("-") and set(arg[1:]) <= set("sfnvNi"):
            if "f" in arg[1:]:
                return 0  # -f: "fake", mount(8) asks us to do nothing
        else:
            out.append(arg)
    return main(out)
