"""The config: parsed option values by canonical name (:class:`Config`), and
reading them from ``-o`` arguments, config files and the generic mount
options fstab and mount(8) pass along.

Once the pool serves, a change is made to a copy that is then swapped in
whole (the control file, SIGUSR1).
"""

from __future__ import annotations

import re
from typing import Any

from mergerfs import policies
from mergerfs.branches import parse_size
from mergerfs.options import OPTIONS, OptionError, lookup, ranged

#: Generic FUSE options with a number: libfuse reads them as unsigned int (umask: octal mode).
_FUSE_NUMBER = {"umask": ranged(0, 0o7777, 8)}

# Generic mount options fstab/mount(8) hand us. Values: pass to FUSE as-is,
# or None: accepted and ignored (the kernel mount flags libfuse 2 sets itself,
# or options only mount(8) cares about).
_FUSE_PASS = {
    "allow_other",
    "allow_root",
    "default_permissions",
    "ro",
    "rw",
    "nosuid",
    "nodev",
    "noexec",
    "suid",
    "dev",
    "exec",
    "sync",
    "async",
    "dirsync",
    "atime",
    "noatime",
}
_IGNORED = {
    "defaults",
    "nonempty",
    "nofail",
    "noauto",
    "auto",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "_netdev",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "lazytime",
    "nolazytime",
    "diratime",
    "nodiratime",
    "hard_remove",
    "large_read",
    "big_writes",
    "splice_read",
    "splice_write",
    "splice_move",
    "auto_unmount",
    "atomic_o_trunc",
    "no_remote_lock",
    "dropcacheonclose_",
    "iversion",
    "noiversion",
    "silent",
    "loud",
    "blkdev",
}
_FUSE_VALUED = {
    "fsname",
    "subtype",
    "max_read",
    "max_write",
    "max_readahead",
    "uid",
    "gid",
    "umask",
    "blksize",
    "max_background",
    "congestion_threshold",
}
_NUMERIC = {
    "uid",
    "gid",
    "umask",
    "max_read",
    "max_write",
    "max_readahead",
    "blksize",
    "max_background",
    "congestion_threshold",
}
_IGNORED_PREFIXES = ("x-", "comment=", "context=", "fscontext=", "defcontext=", "rootcontext=", "helper=")


class Config:
    """Parsed option values by canonical name, plus the generic FUSE options."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.fuse_options: list[str] = []
        self.mountpoint: str | None = None

    @classmethod
    def defaults(cls) -> Config:
        cfg = cls()
        for opt in OPTIONS.values():
            if opt.expand is None:
                cfg.values[opt.name] = list(opt.default) if isinstance(opt.default, list) else opt.default
        return cfg

    def copy(self) -> Config:
        c = Config()
        c.values = dict(self.values)
        c.fuse_options = list(self.fuse_options)
        c.mountpoint = self.mountpoint
        return c

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def policy(self, func: str) -> str:
        return self.values[f"func.{func}"]

    def apply(self, key: str, value: str | None) -> None:
        """Apply ``key[=value]``; on error raise OptionError and change nothing."""
        key = key.strip()
        if key in _IGNORED or (key + ("" if value is None else "=")).startswith(_IGNORED_PREFIXES):
            return
        if key in _FUSE_PASS and value is None:
            self._fuse(key)
            return
        if key in _FUSE_VALUED and key != "fsname":
            if value is None:
                raise OptionError(f"option '{key}' needs a value")
            try:
                if key in _NUMERIC:
                    _FUSE_NUMBER.get(key, ranged(0, 2**32 - 1))(value)
            except ValueError:
                raise OptionError(f"invalid value for option '{key}': '{value}'") from None
            self._fuse(f"{key}={value}")
            return
        if not key:
            raise OptionError(f"missing option name in '={value or ''}'")
        opt = lookup(key)
        parsed = opt.parse(value)
        if opt.name == "mountpoint":
            self.mountpoint = parsed
            return
        if opt.name == "config":
            self.values["config"] = parsed
            for lineno, (k, v) in load_config_file(parsed):
                try:
                    self.apply(k, v)
                except OptionError as e:
                    raise OptionError(f"{parsed}:{lineno}: {e}") from None
            return
        if opt.expand is not None:
            self.values.update(opt.expand(parsed))
        else:
            self.values[opt.name] = parsed

    def _fuse(self, opt: str) -> None:
        name = opt.partition("=")[0]
        self.fuse_options = [o for o in self.fuse_options if o.partition("=")[0] != name] + [opt]

    def format(self, name: str) -> str:
        opt = OPTIONS[name]
        if name.startswith("category."):
            found = dict.fromkeys(self.values[f"func.{f}"] for f in policies.funcs(name.split(".", 1)[1]))
            return ",".join(found)
        if opt.expand is not None:
            return opt.kind.format(False)
        if name == "mountpoint":
            return self.mountpoint or ""
        value = self.values.get(name)
        return "" if value is None else opt.kind.format(value)

    def keys(self) -> list[str]:
        """Control-file keys in listing order: 2.42's names, sorted as 2.42 lists them
        (2.33.5's spellings, ``srcmounts`` and ``mount`` still read and write)."""
        return sorted(o.name for o in OPTIONS.values() if o.listed)


# ------------------------------------------------------------------ parsing
def parse_o(text: str) -> list[tuple[str, str | None]]:
    """Split one ``-o`` argument into (key, value|None) pairs.

    A bare size after a branch entry (``branches=/a=RW,10G``) belongs to that
    entry's minfreespace, not to a new option.
    """
    out: list[tuple[str, str | None]] = []
    for token in _split_commas(text):
        if not token:
            continue
        key, sep, value = token.partition("=")
        if (
            out
            and not sep
            and _looks_like_size(token)
            and out[-1][0] in ("branches", "srcmounts")
            and out[-1][1]
            and re.search(r"=(RW|RO|NC)$", out[-1][1], re.IGNORECASE)
        ):
            out[-1] = (out[-1][0], f"{out[-1][1]},{token}")
            continue
        out.append((key.strip(), value if sep else None))
    return out


def _split_commas(text: str) -> list[str]:
    parts, cur, escape = [], [], False
    for ch in text:
        if escape:
            cur.append(ch)
            escape = False
        elif ch == "\\":
            escape = True
        elif ch == ",":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _looks_like_size(token: str) -> bool:
    try:
        parse_size(token)
    except ValueError:
        return False
    return True


def load_config_file(path: str) -> list[tuple[int, tuple[str, str | None]]]:
    """(line number, (key, value|None)) for each setting in a config file."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise OptionError(f"cannot read config file '{path}': {e.strerror}") from None
    out: list[tuple[int, tuple[str, str | None]]] = []
    for lineno, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if not line:
            continue
        key, sep, value = line.partition("=")
        out.append((lineno, (key.strip(), value.strip() if sep else None)))
    return out
