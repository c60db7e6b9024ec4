"""The option table against the spec: names, aliases, defaults, values, order,
config files, generic mount options, and format/parse round trips.

The expectations below are written from the spec (sections 1-12), not read
from ``mergerfs.options``.
"""

from __future__ import annotations

import pathlib
import re

import pytest
from hypothesis import given, settings, strategies as st

from mergerfs import options, policies
from mergerfs.config import Config, parse_o
from mergerfs.options import OptionError

ROOT = pathlib.Path(__file__).resolve().parents[2]
G = 1 << 30

#: option -> (default as it reads back, a good value, a bad value); spec wording.
SPEC = {
    "minfreespace": ("4294967296", "10737418240", "ten"),  # reads back in bytes, as the reference
    "moveonenospc": ("pfrd", "mfs", "sideways"),
    "dropcacheonclose": ("false", "true", "maybe"),
    "symlinkify": ("false", "true", "2"),
    "symlinkify-timeout": ("3600", "60", "-1"),
    "nullrw": ("false", "true", "yes please"),
    "ignorepponrename": ("false", "true", "x"),
    "link-cow": ("false", "true", "x"),
    "nfsopenhack": ("off", "git", "some"),
    "security-capability": ("true", "false", "x"),
    "xattr": ("passthrough", "noattr", "none"),
    "statfs": ("base", "full", "half"),
    "statfs-ignore": ("none", "nc", "rw"),
    "posix-acl": ("false", "true", "x"),
    "inodecalc": ("hybrid-hash", "devino-hash32", "hash"),
    "cache.files": ("off", "partial", "on"),
    "cache.entry": ("1", "5", "-5"),
    "cache.attr": ("1", "0", "1.5"),
    "cache.statfs": ("0", "10", "soon"),
    "rename-exdev": ("passthrough", "rel-symlink", "copy"),
    "link-exdev": ("passthrough", "abs-pool-symlink", "copy"),
    "follow-symlinks": ("never", "all", "some"),
    "export-support": ("true", "false", "x"),
    "kernel-permissions-check": ("true", "false", "x"),
    "lazy-umount-mountpoint": ("false", "true", "x"),
    "branches-mount-timeout": ("0", "30", "-1"),
    "func.readdir": ("seq", "cosr", "parallel"),
    # 2.42 (its control file as the reference: names, defaults, read-back forms)
    "readahead": ("0", "1024", "lots"),
    "proxy-ioprio": ("false", "true", "x"),
    "scheduling-priority": ("-10", "5", "20"),
    "pin-threads": ("false", "R1L", "R9Z"),
    "process-thread-queue-depth": ("2", "8", "deep"),
    "never-forget-nodes": ("false", "true", "x"),
    "debug": ("false", "true", "x"),
    "allow-idmap": ("true", "false", "x"),
    "category.action": ("epall", "all", "best"),
    "category.create": ("pfrd", "mfs", "best"),
    "category.search": ("ff", "newest", "best"),
}
#: Every other option the spec names, with its default (as it reads back) and the
#: values the spec lists; upstream-current defaults where 2.33.5 differs (spec
#: section 1 header, docs/DIFFERENCES.md). Plain text: an oracle independent of options.py.
SPEC_MORE = {
    "cache.files.process-names": ("qbittorrent-nox|rtorrent", ["rtorrent", "a|b|c"]),  # 2.42: sorted
    # spec 9 says "0 in 2.33.5, 1 upstream"; ours and the reference both read back 0
    "cache.negative-entry": ("0", ["0", "1", "3600"]),
    "cache.symlinks": ("false", ["true", "false"]),
    "cache.readdir": ("false", ["true", "false"]),
    "cache.writeback": ("false", ["true", "false"]),
    "cache.open": ("0", ["0", "30"]),
    "async-read": ("true", ["true", "false"]),
    "threads": ("0", ["0", "4", "-2"]),
    "read-thread-count": ("0", ["0", "2", "-1"]),
    "process-thread-count": ("-1", ["-1", "0", "8"]),
    "fuse-msg-size": ("256", ["1", "32", "256", "65535"]),
    "log.file": ("", ["/var/log/mergerfs.log"]),
    "branches-mount-timeout-fail": ("false", ["true", "false"]),
    "fsname": ("", ["pool", "disk1:disk2"]),
    "branches": ("", ["/a=RW:/b=RO:/c=NC", "/d=RW,1G"]),
    "use_ino": ("true", ["true", "false"]),  # spec 1: accepted
    "log-level": ("info", ["debug", "info", "warning", "error"]),  # DIFFERENCES.md (issue 6)
    # 2.42's kernel-facing options, defaults as its control file reads them back
    "passthrough.io": ("off", ["off", "ro", "wo", "rw"]),
    "passthrough.max-stack-depth": ("1", ["1", "2"]),
    "direct-io-allow-mmap": ("true", ["true", "false"]),
    "parallel-direct-writes": ("true", ["true", "false"]),
    "handle-killpriv": ("true", ["true", "false"]),
    "handle-killpriv-v2": ("true", ["true", "false"]),
    "flush-on-close": ("opened-for-write", ["never", "always", "opened-for-write"]),
    "fuse-binding": ("kernel", ["kernel", "llfuse"]),  # extension: the transport
    "fuse-busy-poll": ("200", ["0", "50", "1000000"]),  # extension: polling for the next request (µs)
    "fuse-io-uring": ("true", ["true", "false"]),  # extension: requests over io_uring when offered
}
#: In the option table without a spec default: accepted for compatibility, or not values.
UNSPECIFIED = {"mountpoint", "config", "readdirplus", "log.metrics"}
#: 2.42's read-back forms of values given in another spelling: (option, given, reads back)
READ_BACK = [
    ("fuse-msg-size", "1M", "256"),
    ("fuse-msg-size", "64K", "16"),
    ("fuse-msg-size", "6K", "2"),
    ("fuse-msg-size", "4096B", "1"),
    ("fuse-msg-size", "1G", "65535"),
    ("fuse-msg-size", "100000", "65535"),
    ("fuse_msg_size", "2M", "512"),
    ("func.readdir", "cosr:4:8", "cosr:4:8"),
    ("func.readdir", "cor:2", "cor:2"),
    ("func.readdir", "seq", "seq"),
    ("cache.files.process-names", "b|a|b", "a|b"),
    ("readahead", "1M", "1024"),
    ("readahead", "4K", "4"),
    ("readahead", "128", "128"),
    ("noforget", None, "true"),
    ("remember-nodes", "true", "true"),
    ("never-forget-nodes", None, "true"),
    ("debug", None, "true"),  # 2.33.5's bare 'debug' (2.42 wants debug=true)
]
#: ... and the values 2.42 refuses too, or that we refuse where it misbehaves
REFUSED = [
    ("fuse-msg-size", "0"),
    ("fuse-msg-size", "-1"),
    ("fuse-msg-size", "abc"),
    ("func.readdir", "cosr:x"),
    ("func.readdir", "cor:1:2:3"),
    ("func.readdir", "seq:"),
    ("readahead", "-1"),
    ("readahead", "1.5M"),
    ("scheduling-priority", "-21"),
    ("debug", "x"),
    ("log.file", "relative.log"),
]
#: Each enum the spec spells out, complete (section numbers in the spec).
SPEC_ENUMS = {
    "nfsopenhack": "off git all",
    "xattr": "passthrough noattr nosys",
    "statfs": "base full",
    "statfs-ignore": "none ro nc",
    "inodecalc": "passthrough path-hash path-hash32 devino-hash devino-hash32 hybrid-hash hybrid-hash32",
    "cache.files": "libfuse off partial full auto-full per-process",
    "follow-symlinks": "never directory regular all",
    "rename-exdev": "passthrough rel-symlink abs-symlink",
    "link-exdev": "passthrough rel-symlink abs-base-symlink abs-pool-symlink",
}
SPEC_POLICIES = (
    "all epall ff epff mfs epmfs lfs eplfs lus eplus lup eplup rand eprand pfrd "
    "eppfrd newest mspmfs msplfs msplus msppfrd erofs"
).split()
FUNCS = {
    "action": "chmod chown link removexattr rename rmdir setxattr truncate unlink utimens",
    "create": "create mkdir mknod symlink",
    "search": "access getattr getxattr listxattr open readlink",
}
ALIASES = {  # old spelling -> canonical, spec section 1
    "srcmounts": "branches",
    "statfs_ignore": "statfs-ignore",
    "link_cow": "link-cow",
    "symlinkify_timeout": "symlinkify-timeout",
    "security_capability": "security-capability",
    "cache.negative_entry": "cache.negative-entry",
    "async_read": "async-read",
    "fuse_msg_size": "fuse-msg-size",
}
GENERIC = [
    "defaults",
    "rw",
    "ro",
    "allow_other",
    "default_permissions",
    "nonempty",
    "nofail",
    "noauto",
    "auto",
    "_netdev",
    "x-systemd.requires=zfs.target",
    "x-systemd.mount-timeout=30",
    "x-systemd.automount",
    "x-systemd.device-timeout=5s",
    "nosuid",
    "nodev",
    "noexec",
    "suid",
    "dev",
    "exec",
    "user",
    "nouser",
    "users",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "diratime",
    "nodiratime",
    "lazytime",
    "fsname=pool",
    "subtype=mergerfs",
    "uid=1000",
    "gid=100",
    "umask=022",
    "umask=0",
    "use_ino",
    "comment=x-gvfs-hide",
]


def apply_all(text: str) -> Config:
    cfg = Config.defaults()
    for k, v in parse_o(text):
        cfg.apply(k, v)
    return cfg


@pytest.mark.parametrize("name", sorted(SPEC))
def test_spec_option_default_good_and_bad_value(name):
    default, good, bad = SPEC[name]
    cfg = Config.defaults()
    assert cfg.format(name) == default
    cfg.apply(name, good)
    assert cfg.format(name) == good
    before = dict(cfg.values)
    with pytest.raises(OptionError) as e:
        cfg.apply(name, bad)
    msg = str(e.value)
    assert "\n" not in msg and name in msg and bad in msg
    assert cfg.values == before  # a bad value changes nothing


@pytest.mark.parametrize("cat", sorted(FUNCS))
def test_category_sets_every_function_and_func_overrides_in_order(cat):
    funcs = FUNCS[cat].split()
    cfg = apply_all(f"category.{cat}=mfs,func.{funcs[0]}=ff")
    assert cfg.policy(funcs[0]) == "ff"
    assert all(cfg.policy(f) == "mfs" for f in funcs[1:])
    # later settings win: the category after the func resets it
    cfg = apply_all(f"func.{funcs[0]}=ff,category.{cat}=lfs")
    assert all(cfg.policy(f) == "lfs" for f in funcs)
    for other, ofuncs in FUNCS.items():
        if other != cat:
            assert all(cfg.policy(f) == Config.defaults().policy(f) for f in ofuncs.split())


def test_every_func_accepts_every_policy():
    for funcs in FUNCS.values():
        for f in funcs.split():
            for p in policies.NAMES:
                assert apply_all(f"func.{f}={p}").policy(f) == p


def test_defaults_are_the_documented_ones():
    cfg = Config.defaults()
    # spec 3: action epall, create pfrd (current upstream; 2.33.5: epmfs), search ff
    for cat, policy in (("action", "epall"), ("create", "pfrd"), ("search", "ff")):
        assert all(cfg.policy(f) == policy for f in FUNCS[cat].split())
    assert cfg["minfreespace"] == 4 * G


@pytest.mark.parametrize("old,new", sorted(ALIASES.items()))
def test_old_spellings_are_aliases(old, new):
    assert options.lookup(old).name == new
    assert options.lookup(old.replace("-", "_")).name == new


@pytest.mark.parametrize("old,mode", [("direct_io", "off"), ("kernel_cache", "full"), ("auto_cache", "auto-full")])
def test_deprecated_cache_flags(old, mode):
    assert apply_all(f"cache.files=partial,{old}")["cache.files"] == mode


def test_bare_bool_means_true():
    assert apply_all("dropcacheonclose")["dropcacheonclose"] is True
    with pytest.raises(OptionError):
        apply_all("minfreespace")  # non-bool needs a value


@pytest.mark.parametrize("opt", GENERIC)
def test_generic_mount_options_accepted(opt):
    cfg = apply_all(opt)
    if not opt.startswith("fsname="):  # fsname is also a mergerfs option
        assert cfg.values == Config.defaults().values


@pytest.mark.parametrize("name", sorted(SPEC_MORE))
def test_more_spec_options_default_and_values(name):
    default, values = SPEC_MORE[name]
    assert Config.defaults().format(name) == default
    for v in values:
        assert apply_all(f"{name}={v}".replace(",", "\\,")).format(name) == v


@pytest.mark.parametrize("key,given,back", READ_BACK)
def test_read_back_forms_of_2_42(key, given, back):
    cfg = Config.defaults()
    cfg.apply(key, given)
    assert cfg.format(options.lookup(key).name) == back


@pytest.mark.parametrize("key,value", REFUSED)
def test_refused_values(key, value):
    with pytest.raises(OptionError):
        Config.defaults().apply(key, value)


def test_control_keys_are_2_42s_sorted():
    """The control file lists 2.42's names in its order (2.33.5 spellings still resolve)."""
    keys = Config.defaults().keys()
    assert keys == sorted(keys)
    for k in (
        "cache.negative-entry",
        "symlinkify-timeout",
        "link-cow",
        "security-capability",
        "statfs-ignore",
        "posix-acl",
        "async-read",
        "fuse-msg-size",
        "mountpoint",
        "config",
        "readahead",
        "never-forget-nodes",
        "log.file",
        "debug",
        "proxy-ioprio",
    ):
        assert k in keys, k
    for old in (
        "symlinkify_timeout",
        "cache.negative_entry",
        "link_cow",
        "srcmounts",
        "threads",
        "direct_io",
        "kernel_cache",
        "auto_cache",
        "readdirplus",
        "log.metrics",
        "cache.open",
    ):
        assert old not in keys, old


@pytest.mark.parametrize("name", sorted(SPEC_ENUMS))
def test_enum_values_are_exactly_the_spec_ones(name):
    for v in SPEC_ENUMS[name].split():
        assert apply_all(f"{name}={v}")[name] == v
    for bad in ("", v.upper(), v + "x", "none-such"):
        with pytest.raises(OptionError):
            apply_all(f"{name}={bad}")


def test_policy_names_are_the_spec_ones():
    assert sorted(policies.NAMES) == sorted(SPEC_POLICIES)
    for p in SPEC_POLICIES:
        cfg = apply_all(f"category.create={p},moveonenospc={p}")
        assert cfg.policy("mkdir") == p and cfg["moveonenospc"] == p


def test_every_table_option_has_an_expectation_here():
    """A new option in the table must get its default and values written down above."""
    covered = (
        set(SPEC)
        | set(SPEC_MORE)
        | UNSPECIFIED
        | {"direct_io", "kernel_cache", "auto_cache"}
        | {f"func.{f}" for fs in FUNCS.values() for f in fs.split()}
    )
    assert set(options.OPTIONS) - covered == set()


def test_every_spec_name_is_an_option():
    """Every option the spec names is accepted (the option table may hold more)."""
    named = (
        set(SPEC)
        | set(SPEC_MORE)
        | set(ALIASES)
        | {"direct_io", "kernel_cache", "auto_cache"}
        | {f"func.{f}" for fs in FUNCS.values() for f in fs.split()}
    )
    for n in named:
        options.lookup(n)


@pytest.mark.parametrize(
    "text,ok",
    [
        # uint64: what the reference's C type holds
        ("cache.attr=18446744073709551615", True),
        ("cache.attr=18446744073709551616", False),
        ("cache.attr=-0", True),
        ("cache.attr=-1", False),
        ("cache.attr=0x10", False),
        # int (threads): signed 32 bit
        ("threads=-2147483648", True),
        ("threads=2147483647", True),
        ("threads=2147483648", False),
        ("threads=-2147483649", False),
        # SIZE: uint64 bytes, suffixes only B K M G T
        ("minfreespace=16777215T", True),
        ("minfreespace=16777216T", False),
        ("minfreespace=1P", False),
        ("minfreespace=1.5G", False),
        ("minfreespace=-1", False),
        ("minfreespace=1g", True),
        # generic FUSE numbers: uid_t/gid_t, octal umask
        ("uid=4294967295", True),
        ("uid=4294967296", False),
        ("gid=-1", False),
        ("umask=7777", True),
        ("umask=10000", False),
        ("umask=8", False),
        ("umask=-1", False),
    ],
)
def test_number_ranges(text, ok):
    if ok:
        apply_all(text)
    else:
        with pytest.raises(OptionError, match=re.escape(text.split("=")[0])):
            apply_all(text)


def test_later_options_override_earlier_across_o_and_config(tmp_path):
    f = tmp_path / "c.conf"
    f.write_text("cache.attr=5\ncategory.search=newest\n")
    cfg = apply_all(f"cache.attr=1,func.getattr=epff,config={f},func.open=lfs")
    assert cfg["cache.attr"] == 5  # the file came later
    assert cfg.policy("getattr") == "newest" and cfg.policy("open") == "lfs"
    assert apply_all(f"config={f},cache.attr=9")["cache.attr"] == 9
    # aliases share the canonical slot
    assert apply_all("symlinkify_timeout=5,symlinkify-timeout=7")["symlinkify-timeout"] == 7
    assert apply_all("srcmounts=/a,branches=/b").format("branches") == "/b=RW"
    assert apply_all("direct_io,cache.files=full")["cache.files"] == "full"


def test_unknown_option_names_itself():
    with pytest.raises(OptionError, match="'nosuchoption'"):
        apply_all("nosuchoption=1")


def test_branches_with_modes_and_minfreespace_in_o():
    # a comma inside -o is escaped, as libfuse's parser (and the reference) want
    cfg = apply_all(r"branches=/a=RW\,10G:/b=NC,minfreespace=1G")
    assert cfg.format("branches") == "/a=RW,10G:/b=NC"
    assert cfg["minfreespace"] == G
    # forgiving where unambiguous: a bare size right after the last entry's mode
    assert apply_all("branches=/b=NC:/a=RW,10G").format("branches") == "/b=NC:/a=RW,10G"


def test_config_file(tmp_path):
    f = tmp_path / "pool.conf"
    f.write_text(
        "# a pool\n\n   \n\t# indented comment\nbranches=/a:/b\nmountpoint=/pool\n"
        "  category.create = mfs \ndropcacheonclose  # bare bool, trailing comment\n"
        "allow_other\nx-systemd.automount\n"
    )
    cfg = apply_all(f"minfreespace=1G,config={f},cache.attr=7")
    assert cfg.format("branches") == "/a=RW:/b=RW" and cfg.mountpoint == "/pool"
    assert cfg.policy("mkdir") == "mfs" and cfg["dropcacheonclose"] is True
    assert cfg["cache.attr"] == 7 and cfg["minfreespace"] == G
    assert "allow_other" in cfg.fuse_options


@pytest.mark.parametrize(
    "body,needle",
    [
        ("bogus=1\n", "bogus"),
        ("cache.attr=soon\n", "soon"),
        ("category.create=\n", "category.create"),
        ("# fine\n\nminfreespace\n", "minfreespace"),
        ("=5\n", "missing option name"),
        ("cache.attr 5\n", "cache.attr 5"),
        ("branches=/a=XX\n", "XX"),
    ],
)
def test_config_file_bad_line(tmp_path, body, needle):
    f = tmp_path / "bad.conf"
    f.write_text(body)
    with pytest.raises(OptionError, match=re.escape(needle)) as e:
        apply_all(f"config={f}")
    line = body.count("\n")  # the bad line is the last one
    assert str(e.value).startswith(f"{f}:{line}: ")


def test_config_file_missing(tmp_path):
    with pytest.raises(OptionError, match="cannot read config file"):
        apply_all(f"config={tmp_path}/nope")


def test_readme_table_is_generated_from_the_option_table():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- options:begin -->\n(.*?)<!-- options:end -->", text, re.S).group(1)
    assert block.strip() == options.markdown_table().strip(), "run `make readme`"


def test_control_keys_cover_the_spec():
    """Every spec option is listed (under 2.42's spelling)."""
    keys = set(Config.defaults().keys())
    assert set(SPEC) <= keys
    assert "branches" in keys


# ------------------------------------------------------------- round trips
SIZES = st.integers(0, 2**64 - 1)
#: numeric options with their own ranges (as stored): 2.42's, and our fuse-busy-poll
NUMERIC_RANGED = {
    "scheduling-priority": st.integers(-20, 19),
    "readahead": st.integers(0, 2**64 - 1),
    "fuse-msg-size": st.integers(1, 65535),
    "fuse-busy-poll": st.integers(0, 1000000),
}
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None)


@SETTINGS
@given(
    st.sampled_from(
        [
            n
            for n, o in options.OPTIONS.items()
            if o.expand is None and o.name not in ("mountpoint", "config", "branches")
        ]
    ),
    st.data(),
)
def test_format_parses_back(name, data):
    """Whatever a key reads back as, set again, reads back the same (control file contract)."""
    opt = options.OPTIONS[name]
    kind = opt.kind
    if kind is options.BOOL:
        value = data.draw(st.booleans())
    elif kind in (options.UINT,):
        value = data.draw(st.integers(0, 2**64 - 1))
    elif kind is options.INT:
        value = data.draw(st.integers(-(2**31), 2**31 - 1))
    elif kind is options.SIZE:
        value = data.draw(SIZES)
    elif kind is options.POLICY:
        value = data.draw(st.sampled_from(policies.NAMES))
    elif name in NUMERIC_RANGED:
        value = data.draw(NUMERIC_RANGED[name])
    elif name == "log.file":
        value = data.draw(st.sampled_from(["", "/var/log/mergerfs.log", "/tmp/a b"]))
    elif name == "func.readdir":
        value = data.draw(st.sampled_from(["seq", "cosr", "cor"])) + data.draw(
            st.sampled_from(["", ":0", ":4", ":4:8", ":-2:1"])
        )
    elif name == "cache.files.process-names":
        value = "|".join(sorted(data.draw(st.sets(st.sampled_from(["a", "rtorrent", "x-y"]), min_size=1))))
    elif kind is options.STR:
        value = data.draw(
            st.text(st.characters(blacklist_characters=",\\\n\0", blacklist_categories=("Cs",)), max_size=20)
        )
    else:  # enums and moveonenospc
        text = data.draw(st.sampled_from(kind.name.split("|")))
        value = opt.parse(text if text != "POLICY" else "mfs")
    cfg = Config.defaults()
    cfg.values[name] = value
    text = cfg.format(name)
    again = Config.defaults()
    again.apply(name, text)
    assert again[name] == value


@SETTINGS
@given(st.data())
def test_branches_round_trip(data):
    """Branch lists with modes and per-branch minfreespace read back as written."""
    name = "branches"
    paths = st.text("abcXYZ019 ._-*", min_size=1, max_size=8).map(lambda t: "/" + t)
    value = data.draw(
        st.lists(
            st.tuples(paths, st.sampled_from(["RW", "RO", "NC", "rw", "nc"]), st.one_of(st.none(), SIZES)), max_size=4
        )
    )
    text = ":".join(p + "=" + m + ("" if s is None else f",{s}") for p, m, s in value)
    cfg = Config.defaults()
    cfg.apply(name, text)
    # independent model of what was written: path, upper-cased mode, bytes
    assert [(b.pattern, b.mode, b.minfreespace) for b in cfg[name]] == [(p, m.upper(), s) for p, m, s in value]
    again = Config.defaults()
    again.apply(name, cfg.format(name))  # control file: setxattr takes the text as is
    assert again[name] == cfg[name]
    via_o = apply_all(f"{name}=" + cfg.format(name).replace(",", "\\,"))  # -o: commas escaped
    assert via_o[name] == cfg[name]


@SETTINGS
@given(st.integers(0, 2**24 - 1))
def test_size_suffixes(n):
    for suffix, mult in (("", 1), ("B", 1), ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40)):
        for s in (suffix, suffix.lower()):
            assert apply_all(f"minfreespace={n}{s}")["minfreespace"] == n * mult


@SETTINGS
@given(
    st.lists(
        st.tuples(st.sampled_from(["cache.attr", "cache.entry", "symlinkify-timeout"]), st.integers(0, 99)),
        min_size=1,
        max_size=8,
    )
)
def test_last_setting_wins(pairs):
    cfg = apply_all(",".join(f"{k}={v}" for k, v in pairs))
    last = {}
    for k, v in pairs:
        last[k] = v
    for k, v in last.items():
        assert cfg[k] == v
