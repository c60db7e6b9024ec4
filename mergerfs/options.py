"""The option table: one :class:`Option` per option drives everything.

``-o`` parsing and config files (:mod:`mergerfs.config`), the control file's
``user.mergerfs.*`` keys, ``--help`` and the README's option table all read
:data:`OPTIONS`; there is no other list of option names. Each option's
:class:`Kind` says how its value is parsed and written back.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, NamedTuple

from mergerfs import policies
from mergerfs.branches import format_branches, parse_branches, parse_size


class OptionError(ValueError):
    """A bad option or value; the text is the one line shown to the user."""


# --------------------------------------------------------------- value types
class Kind(NamedTuple):
    """How a value is parsed and formatted, and how --help spells its type."""

    name: str
    parse: Callable[[str], Any]
    format: Callable[[Any], str] = str


def _bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("true", "1", "yes", "on"):
        return True
    if t in ("false", "0", "no", "off"):
        return False
    raise ValueError(text)


def ranged(lo: int, hi: int, base: int = 10) -> Callable[[str], int]:
    """An integer parser refusing what the reference's C type cannot hold."""

    def parse(text: str) -> int:
        value = int(text.strip(), base)
        if not lo <= value <= hi:
            raise ValueError(text)
        return value

    return parse


_uint = ranged(0, 2**64 - 1)  # uint64_t
_int = ranged(-(2**31), 2**31 - 1)  # int


def _size(text: str) -> int:
    value = parse_size(text)
    if value > 2**64 - 1:
        raise ValueError(text)
    return value


def _enum(*values: str) -> Kind:
    def parse(text: str) -> str:
        if text not in values:
            raise ValueError(text)
        return text

    return Kind("|".join(values), parse)


def _policy(text: str) -> str:
    if text not in policies.NAMES:
        raise ValueError(text)
    return text


def _moveonenospc(text: str) -> str:
    t = text.strip().lower()
    if t in ("true", "false"):
        return t
    return _policy(t)


def _readdir(text: str) -> str:
    """``seq|cosr|cor[:THREADS[:QUEUE]]`` (2.42); kept as written, numbers checked."""
    mode, *nums = text.split(":")
    if mode not in ("seq", "cosr", "cor") or len(nums) > 2:
        raise ValueError(text)
    for n in nums:
        ranged(-(2**31), 2**31 - 1)(n)
    return text


def readdir_mode(value: str) -> tuple[str, int, int]:
    """(mode, threads, queue depth) of a ``func.readdir`` value; 0 means the default."""
    mode, *nums = value.split(":")
    threads, queue = ([int(n) for n in nums] + [0, 0])[:2]
    return mode, threads, queue


PAGE = 4096
FUSE_MSG_PAGES_MAX = 65535  # the kernel's max_pages field is 16 bits


def _msg_size(text: str) -> int:
    """Pages, or a SIZE with a suffix (rounded up to pages), clamped to what the
    kernel takes, as 2.42 does: ``1M`` -> 256, ``6K`` -> 2, ``1G`` -> 65535."""
    t = text.strip()
    pages = int(t) if t.isdigit() else -(-_size(t) // PAGE) if t[-1:].isalpha() else int(t)
    if pages < 1:
        raise ValueError(text)  # 2.42 reports success and mounts nothing
    return min(pages, FUSE_MSG_PAGES_MAX)


def _readahead(text: str) -> int:
    """KiB as 2.42's docs say (``readahead=1024``); a SIZE with a suffix is bytes
    (``1M`` = 1024 KiB: 2.42 writes 1048576 KiB there, see docs/DIFFERENCES.md)."""
    t = text.strip()
    if t.isdigit():
        return _uint(t)
    if not t[-1:].isalpha():
        raise ValueError(text)
    return -(-_size(t) // 1024)


#: 2.42's pin-threads strategies (accepted; see the option's doc).
PIN_THREADS = ("false", "R1L", "R1P", "RP1L", "RP1P", "RPSL", "RPSP")


def _process_names(text: str) -> str:
    """'|'-separated names, read back sorted and unique as 2.42 does."""
    return "|".join(sorted({n for n in text.split("|") if n}))


def _abs_path(text: str) -> str:
    """An absolute path, or empty for none (the daemon's cwd means nothing to a caller)."""
    if text and not text.startswith("/"):
        raise ValueError(text)
    return text


BOOL = Kind("BOOL", _bool, lambda v: "true" if v else "false")
UINT = Kind("UINT", _uint)
INT = Kind("INT", _int)
SIZE = Kind("SIZE", _size)
STR = Kind("STR", str)
POLICY = Kind("POLICY", _policy)
BRANCHES = Kind("BRANCHES", parse_branches, format_branches)

CATEGORY_DEFAULTS = {"action": "epall", "create": "pfrd", "search": "ff"}


class Option(NamedTuple):
    name: str
    kind: Kind
    default: Any
    doc: str
    runtime: bool = True
    aliases: tuple[str, ...] = ()
    #: Turns a parsed value into {canonical name: value} (deprecated and category options).
    expand: Callable[[Any], dict[str, Any]] | None = None
    #: Shown by getxattr/listxattr on the control file.
    listed: bool = True
    #: The control file's name where 2.33.5 spells it differently (scripts parse
    #: its listing); also accepted as an alias.
    key: str = ""

    @property
    def spellings(self) -> tuple[str, ...]:
        """Every name this option is written as (canonical first)."""
        return (self.name, *self.aliases, *((self.key,) if self.key else ()))

    def parse(self, text: str | None) -> Any:
        if text is None:
            if self.kind is BOOL:
                return True
            raise OptionError(f"option '{self.name}' needs a value")
        try:
            return self.kind.parse(text)
        except (ValueError, TypeError):
            raise OptionError(f"invalid value for option '{self.name}': '{text}'") from None


def _o(name, kind, default, doc, **kw) -> Option:
    return Option(name, kind, default, doc, **kw)


def _cache_files_alias(mode: str):
    return lambda on: {"cache.files": mode if on else "libfuse"}


_OPTION_LIST = [
    _o(
        "branches",
        BRANCHES,
        [],
        "':'-separated branch paths or globs, each PATH[=RW|RO|NC[,MINFREESPACE]]",
        aliases=("srcmounts",),
    ),
    _o("mountpoint", STR, None, "where the pool is mounted", runtime=False),
    _o("config", STR, None, "read options from FILE (key=value per line)", runtime=False),
    _o("minfreespace", SIZE, 4 << 30, "minimum available space for create policies (per branch overridable)"),
    _o(
        "moveonenospc",
        Kind("true|false|POLICY", _moveonenospc),
        "pfrd",
        "on ENOSPC/EDQUOT during write move the file to a branch the policy picks (true = mfs)",
    ),
    _o("dropcacheonclose", BOOL, False, "posix_fadvise(DONTNEED) branch files on close"),
    _o("symlinkify", BOOL, False, "report files unmodified for symlinkify-timeout as symlinks to their branch path"),
    _o("symlinkify-timeout", UINT, 3600, "seconds before symlinkify applies", key="symlinkify_timeout"),
    _o("nullrw", BOOL, False, "reads return zeros, writes are discarded (benchmarking)", runtime=False),
    _o("ignorepponrename", BOOL, False, "ignore path preservation on rename and link"),
    _o("link-cow", BOOL, False, "break hard links (copy) when a linked file is opened for writing", key="link_cow"),
    _o(
        "nfsopenhack",
        _enum("off", "git", "all"),
        "off",
        "create-for-write with a read-only mode still opens (NFS export quirk)",
    ),
    _o(
        "security-capability",
        BOOL,
        True,
        "pass security.capability through (false: answer ENOATTR)",
        key="security_capability",
    ),
    _o("xattr", _enum("passthrough", "noattr", "nosys"), "passthrough", "xattr handling"),
    _o("statfs", _enum("base", "full"), "base", "statfs over all branches, or only those holding the path"),
    _o(
        "statfs-ignore",
        _enum("none", "ro", "nc"),
        "none",
        "leave RO or NC branches' free space out of statfs",
        key="statfs_ignore",
    ),
    _o("posix-acl", BOOL, False, "enable POSIX ACLs", runtime=False, key="posix_acl"),
    _o(
        "async-read",
        BOOL,
        True,
        "allow concurrent reads of one file (accepted; kernel default)",
        runtime=False,
        key="async_read",
    ),
    _o(
        "inodecalc",
        _enum(
            "passthrough", "path-hash", "path-hash32", "devino-hash", "devino-hash32", "hybrid-hash", "hybrid-hash32"
        ),
        "hybrid-hash",
        "how st_ino is calculated",
    ),
    _o(
        "cache.files",
        _enum("libfuse", "off", "partial", "full", "auto-full", "per-process"),
        "off",
        "page caching of file data",
    ),
    _o(
        "cache.files.process-names",
        Kind("NAME|NAME...", _process_names),
        "qbittorrent-nox|rtorrent",
        "'|'-separated process names given partial caching under cache.files=per-process",
    ),
    _o("cache.entry", UINT, 1, "seconds the kernel caches name lookups"),
    _o("cache.attr", UINT, 1, "seconds the kernel caches attributes"),
    _o("cache.negative-entry", UINT, 0, "seconds the kernel caches failed lookups", key="cache.negative_entry"),
    _o("cache.statfs", UINT, 0, "seconds branch statvfs results are reused by policies"),
    _o("cache.symlinks", BOOL, False, "kernel symlink caching (accepted; not carried by libfuse 2)", runtime=False),
    _o("cache.readdir", BOOL, False, "kernel readdir caching (accepted; not carried by libfuse 2)"),
    _o("cache.writeback", BOOL, False, "kernel writeback caching (accepted; not carried by llfuse)", runtime=False),
    _o("cache.open", UINT, 0, "seconds open policy results are cached (accepted)", listed=False),
    _o("rename-exdev", _enum("passthrough", "rel-symlink", "abs-symlink"), "passthrough", "what rename does on EXDEV"),
    _o(
        "link-exdev",
        _enum("passthrough", "rel-symlink", "abs-base-symlink", "abs-pool-symlink"),
        "passthrough",
        "what link does on EXDEV",
    ),
    _o("follow-symlinks", _enum("never", "directory", "regular", "all"), "never", "report symlinks as their targets"),
    _o("export-support", BOOL, True, "tell the kernel the pool may be exported over NFS", runtime=False),
    _o("kernel-permissions-check", BOOL, True, "kernel checks mode bits (default_permissions)", runtime=False),
    _o(
        "lazy-umount-mountpoint",
        BOOL,
        False,
        "lazily unmount whatever is mounted at the mountpoint first",
        runtime=False,
    ),
    _o("threads", INT, 0, "worker threads (0 = default)", runtime=False, listed=False),
    _o("read-thread-count", INT, 0, "worker threads reading requests (mapped onto threads)", runtime=False),
    _o("process-thread-count", INT, -1, "worker threads processing requests (mapped onto threads)", runtime=False),
    _o(
        "process-thread-queue-depth",
        INT,
        2,
        "requests queued per processing thread (accepted: llfuse and our kernel session keep no queue)",
        runtime=False,
    ),
    _o(
        "pin-threads",
        _enum(*PIN_THREADS),
        "false",
        "CPU pinning strategy of the threads (accepted: one interpreter lock runs the Python side "
        "on one core at a time, so pinning has nothing to spread)",
        runtime=False,
    ),
    _o(
        "scheduling-priority",
        Kind("-20..19", ranged(-20, 19)),
        -10,
        "nice value the daemon sets for itself at start",
        runtime=False,
    ),
    _o("proxy-ioprio", BOOL, False, "do branch I/O with the I/O priority (ionice) of the calling thread"),
    _o(
        "readahead",
        Kind("KIB|SIZE", _readahead),
        0,
        "read_ahead_kb of the pool and of each branch's block device, if > 0 (SIZE with a suffix: bytes); "
        "0: the pool's follows fuse-msg-size (kernel session), the branches' are left",
    ),
    _o(
        "never-forget-nodes",
        BOOL,
        False,
        "keep every node the kernel forgets (stable nodeids for NFS)",
        runtime=False,
        aliases=("noforget", "remember-nodes"),
    ),
    _o("allow-idmap", BOOL, True, "allow idmapped mounts of the pool (kernel session)", runtime=False),
    _o(
        "debug",
        BOOL,
        False,
        "log every request and debug messages (to log.file if set; bare 'debug' as in 2.33.5 also works)",
    ),
    _o("log.file", Kind("PATH", _abs_path), "", "file the log goes to (default: syslog, or stderr with -f)"),
    _o(
        "fuse-msg-size",
        Kind("PAGES|SIZE", _msg_size),
        256,
        "max FUSE message size: pages, or SIZE such as 1M (read back in pages)",
        runtime=False,
        key="fuse_msg_size",
    ),
    _o(
        "fuse-busy-poll",
        Kind("MICROSECONDS", ranged(0, 1000000)),
        200,
        "extension: how long one worker keeps polling for the next request before it sleeps "
        "(microseconds, 0: off; kernel session, 2+ CPUs)",
    ),
    _o(
        "fuse-io-uring",
        BOOL,
        True,
        "extension: take requests over io_uring when the kernel offers it (kernel >= 6.14 with the fuse "
        "module's enable_uring parameter set; kernel session)",
        runtime=False,
    ),
    _o(
        "fuse-binding",
        _enum("kernel", "llfuse"),
        "kernel",
        "extension: transport speaking to the kernel (kernel: our own /dev/fuse session; llfuse: libfuse 2)",
        runtime=False,
    ),
    _o(
        "passthrough.io",
        _enum("off", "ro", "wo", "rw"),
        "off",
        "let the kernel read/write branch files itself for opens of this access mode (root, kernel >= 6.9)",
        runtime=False,
    ),
    _o(
        "passthrough.max-stack-depth",
        Kind("1|2", ranged(1, 2)),
        1,
        "filesystem stacking depth allowed above a passthrough branch",
        runtime=False,
    ),
    _o("direct-io-allow-mmap", BOOL, True, "allow shared mmap of files opened with direct_io", runtime=False),
    _o("parallel-direct-writes", BOOL, True, "allow concurrent direct_io writes to one file", runtime=False),
    _o("handle-killpriv", BOOL, True, "the filesystem clears setuid/setgid on write/truncate/chown", runtime=False),
    _o("handle-killpriv-v2", BOOL, True, "as handle-killpriv, with the kernel saying when", runtime=False),
    _o(
        "flush-on-close",
        _enum("never", "always", "opened-for-write"),
        "opened-for-write",
        "when close() sends FLUSH to the daemon",
    ),
    _o("branches-mount-timeout", UINT, 0, "seconds to wait at start for branches to be mounted", runtime=False),
    _o(
        "branches-mount-timeout-fail",
        BOOL,
        False,
        "exit if branches are still not mounted after the timeout",
        runtime=False,
    ),
    _o(
        "func.readdir",
        Kind("seq|cosr|cor[:THREADS[:QUEUE]]", _readdir),
        "seq",
        "readdir: branches listed in turn (seq) or concurrently (cosr, cor; THREADS workers, "
        "0 = one per branch); the merged listing is the same",
    ),
    _o("fsname", STR, "", "filesystem name shown in /proc/mounts (default: from branches)", runtime=False),
    _o("readdirplus", BOOL, False, "accepted; not carried by libfuse 2", runtime=False, listed=False),
    _o("log.metrics", BOOL, False, "accepted for compatibility", listed=False),
    _o(
        "log-level",
        _enum("debug", "info", "warning", "error"),
        "info",
        "extension: lowest severity logged (to syslog when daemonised, stderr with -f; -d means debug)",
        runtime=False,
    ),
    _o("use_ino", BOOL, True, "accepted; inode numbers always come from inodecalc", runtime=False, listed=False),
    _o(
        "direct_io",
        BOOL,
        False,
        "deprecated: cache.files=off",
        runtime=False,
        expand=_cache_files_alias("off"),
        listed=False,
    ),
    _o(
        "kernel_cache",
        BOOL,
        False,
        "deprecated: cache.files=full",
        runtime=False,
        expand=_cache_files_alias("full"),
        listed=False,
    ),
    _o(
        "auto_cache",
        BOOL,
        False,
        "deprecated: cache.files=auto-full",
        runtime=False,
        expand=_cache_files_alias("auto-full"),
        listed=False,
    ),
]
for _cat in policies.CATEGORIES:
    _funcs = policies.funcs(_cat)
    _OPTION_LIST.append(
        _o(
            f"category.{_cat}",
            POLICY,
            CATEGORY_DEFAULTS[_cat],
            f"policy of every {_cat} function",
            expand=(lambda fs: lambda p: {f"func.{f}": p for f in fs})(_funcs),
        )
    )
    for _f in _funcs:
        _OPTION_LIST.append(_o(f"func.{_f}", POLICY, CATEGORY_DEFAULTS[_cat], f"policy of {_f} ({_cat})"))

OPTIONS: dict[str, Option] = {o.name: o for o in _OPTION_LIST}
_ALIASES: dict[str, str] = {}
for _opt in _OPTION_LIST:
    for _k in _opt.spellings:
        _ALIASES[_k] = _opt.name
        _ALIASES[_k.replace("-", "_")] = _opt.name
        _ALIASES[_k.replace("_", "-")] = _opt.name


def lookup(key: str) -> Option:
    """The option named ``key`` (any accepted spelling); OptionError if unknown."""
    name = _ALIASES.get(key)
    if name is None:
        raise OptionError(f"invalid option '{key}'")
    return OPTIONS[name]


# --------------------------------------------------------------- docs/help
def help_text() -> str:
    lines = []
    for o in _OPTION_LIST:
        if o.name.startswith("func.") and o.name != "func.readdir":
            continue
        default = _default_text(o)
        lines.append(f"    -o {o.name}={o.kind.name}\n        {o.doc}" + (f" (default: {default})" if default else ""))
    lines.append("    -o func.FUNC=POLICY\n        policy of one function (FUNC: " + ", ".join(policies.FUNCS) + ")")
    lines.append("    POLICY: " + ", ".join(policies.NAMES))
    return "\n".join(lines)


def _default_text(o: Option) -> str:
    """The default as ``-o`` would write it (none shown for aliases of other options)."""
    if o.expand is not None and not o.name.startswith("category."):
        return ""
    return "" if o.default is None else o.kind.format(o.default)


def _cell(text: str) -> str:
    return text.replace("|", "&#124;")


def markdown_table() -> str:
    rows = ["| option | values | default | runtime | description |", "|---|---|---|---|---|"]
    for o in _OPTION_LIST:
        if o.name.startswith("func.") and o.name != "func.readdir":
            continue
        default = _default_text(o)
        names = ", ".join(f"`{n}`" for n in o.spellings)
        rows.append(
            f"| {names} | {_cell(o.kind.name)} | {_cell(default)} | {'yes' if o.runtime else 'no'} | {_cell(o.doc)} |"
        )
    rows.append(
        "| `func.FUNC` | POLICY | per category | yes | one function's policy: " + ", ".join(policies.FUNCS) + " |"
    )
    return "\n".join(rows)


if __name__ == "__main__":
    if "--markdown" in sys.argv:
        print(markdown_table())
    else:
        print(help_text())
