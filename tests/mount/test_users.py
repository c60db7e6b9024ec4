"""Multi-user: an unprivileged user on an allow_other pool gets native permission answers."""

from __future__ import annotations

import ast
import errno
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from .helpers import is_reference, mount, unmount

UID, GID = 4242, 4242
GROUP_SUPP = 4343
USER, GROUP = "mfstest", "mfstestgrp"
# The venv may sit in a root-only tree: the user runs the system interpreter (stdlib only).
USER_PY = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or sys.executable

# Runs as the user: argv = op, path[, path2]; prints repr((ok, errno, value)).
USER_SCRIPT = r"""
import os, sys
op, args = sys.argv[1], sys.argv[2:]
def run():
    p = args[0]
    if op == "create":
        fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644); os.write(fd, b"u"); os.close(fd)
        s = os.stat(p); return (s.st_uid, s.st_gid)
    if op == "write":
        fd = os.open(p, os.O_WRONLY); os.close(fd); return None
    if op == "read":
        with open(p, "rb") as f: return f.read()
    if op == "mkdir":
        os.mkdir(p); s = os.stat(p); return (s.st_uid, s.st_gid)
    if op == "unlink":
        os.unlink(p); return None
    if op == "rmdir":
        os.rmdir(p); return None
    if op == "chmod":
        os.chmod(p, 0o777); return None
    if op == "chown":
        os.chown(p, os.getuid(), -1); return None
    if op == "utime_set":
        os.utime(p, (1, 2)); return None
    if op == "utime_now":
        os.utime(p); return None
    if op == "listdir":
        return sorted(os.listdir(p))
    if op == "rename":
        os.rename(p, args[1]); return None
    if op == "access_w":
        return os.access(p, os.W_OK)
    if op == "setxattr":
        os.setxattr(p, "user.u", b"1"); return None
    if op == "truncate":
        os.truncate(p, 0); return None
    if op == "stat":
        s = os.stat(p); return (s.st_mode, s.st_uid)
    if op == "getxattr":
        return os.getxattr(p, "user.k")
    if op == "tmpfile":  # an unnamed file, then its name (a dir fd makes os.link use linkat)
        fd = os.open(p, os.O_TMPFILE | os.O_RDWR, 0o640)
        try:
            os.write(fd, b"t")
            os.link("/proc/self/fd/%d" % fd, args[1], src_dir_fd=fd, follow_symlinks=True)
        finally:
            os.close(fd)
        s = os.stat(args[1])
        with open(args[1], "rb") as f:
            return (s.st_uid, s.st_gid, s.st_nlink, oct(s.st_mode), f.read())
    raise SystemExit("bad op " + op)
try:
    print(repr((True, None, run())))
except OSError as e:
    print(repr((False, e.errno, None)))
"""


def _ensure(kind: str, name: str, ident: int) -> bool:
    """Create a user/group if missing; True if we created it."""
    db = "passwd" if kind == "user" else "group"
    if subprocess.run(["getent", db, name], capture_output=True).returncode == 0:
        return False
    if kind == "group":
        subprocess.run(["groupadd", "-g", str(ident), name], check=True, capture_output=True)
    else:
        subprocess.run(
            ["useradd", "-M", "-N", "-u", str(ident), "-g", str(ident), "-G", GROUP, "-s", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
    return True


@pytest.fixture(scope="module")
def testuser():
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    made = []
    for kind, name, ident in (("group", USER, GID), ("group", GROUP, GROUP_SUPP), ("user", USER, UID)):
        if _ensure(kind, name, ident):
            made.append((kind, name))
    yield UID, GID
    for kind, name in reversed(made):
        subprocess.run(["userdel" if kind == "user" else "groupdel", name], capture_output=True)


def as_user(op: str, *paths: str, groups: tuple[int, ...] = ()):
    def drop():
        os.setgroups(list(groups))
        os.setgid(GID)
        os.setuid(UID)

    r = subprocess.run(
        [USER_PY, "-c", USER_SCRIPT, op, *paths], preexec_fn=drop, capture_output=True, text=True, timeout=30, cwd="/"
    )
    assert r.returncode == 0, r.stderr
    return ast.literal_eval(r.stdout.strip())


@pytest.fixture
def env(testuser, request):
    """(pool, native root) under a world-traversable dir; pool mounted allow_other
    (plus the test's ``extra_options`` marker, if any)."""
    marker = request.node.get_closest_marker("extra_options")
    extra = "," + marker.args[0] if marker else ""
    base = tempfile.mkdtemp(prefix="mfsusers-", dir="/tmp")
    os.chmod(base, 0o755)
    branches = [os.path.join(base, f"b{i}") for i in (1, 2)]
    native = os.path.join(base, "native")
    mnt = os.path.join(base, "mnt")
    for d in [*branches, native]:
        os.mkdir(d)
        os.chmod(d, 0o755)
    p = None
    try:
        p = mount(
            branches,
            mnt,
            "allow_other,category.create=ff,cache.files=off,cache.attr=0,cache.entry=0,cache.negative_entry=0" + extra,
        )
        os.chmod(mnt, 0o755)
        yield p, native
    finally:
        unmount(mnt)
        shutil.rmtree(base, ignore_errors=True)


def both(p, native, setup, op, rel, rel2=None, groups=()):
    """Run ``setup`` (as root) on both roots then ``op`` as the user; assert same outcome."""
    outs = []
    for root in (p.mnt, native):
        setup(root)
        args = [os.path.join(root, rel)] + ([os.path.join(root, rel2)] if rel2 else [])
        outs.append(as_user(op, *args, groups=groups))
    assert outs[0] == outs[1], f"pool {outs[0]} != native {outs[1]}"
    return outs[0]


def _root_file(root, mode=0o644):
    p = os.path.join(root, "rootfile")
    with open(p, "wb") as f:
        f.write(b"root")
    os.chmod(p, mode)


def _root_dir(root, mode=0o755):
    d = os.path.join(root, "rootdir")
    os.mkdir(d)
    os.chmod(d, mode)


def _user_dir(root):
    d = os.path.join(root, "userdir")
    os.mkdir(d)
    os.chown(d, UID, GID)


def test_create_owned_by_user(env):
    p, native = env
    ok, _, val = both(p, native, _user_dir, "create", "userdir/f")
    assert ok and val == (UID, GID)
    [i] = p.where("userdir/f")
    s = os.stat(p.branch_path(i, "userdir/f"))
    assert (s.st_uid, s.st_gid) == (UID, GID)


@pytest.mark.parametrize("where, expect", [("userdir", None), ("rootdir", "EACCES")])
def test_tmpfile_as_user_owned_by_user_or_refused(env, where, expect):
    p, native = env
    setup = _user_dir if where == "userdir" else _root_dir
    ok, err, val = both(p, native, setup, "tmpfile", where, f"{where}/named")
    assert (ok, errno.errorcode.get(err) if err else None) == (expect is None, expect)
    if ok:
        assert val[:3] == (UID, GID, 1) and val[4] == b"t"
        [i] = p.where(f"{where}/named")
        s = os.stat(p.branch_path(i, f"{where}/named"))
        assert (s.st_uid, s.st_gid, s.st_nlink) == (UID, GID, 1)


def test_mkdir_owned_by_user(env):
    p, native = env
    ok, _, val = both(p, native, _user_dir, "mkdir", "userdir/d")
    assert ok and val == (UID, GID)
    s = os.stat(p.branch_path(p.where("userdir/d")[0], "userdir/d"))
    assert (s.st_uid, s.st_gid) == (UID, GID)


@pytest.mark.parametrize(
    "op,expect",
    [
        ("write", "EACCES"),
        ("read", None),
        ("truncate", "EACCES"),
        ("chmod", "EPERM"),
        ("chown", "EPERM"),
        ("utime_set", "EPERM"),
        ("utime_now", "EACCES"),
        ("setxattr", "EACCES"),
        ("access_w", None),
    ],
)
def test_root_file_0644(env, op, expect):
    import errno as E

    p, native = env
    ok, err, _ = both(p, native, _root_file, op, "rootfile")
    if expect is None:
        assert ok
    else:
        assert not ok and err == getattr(E, expect)


@pytest.mark.parametrize(
    "op,rel,expect",
    [
        ("mkdir", "rootdir/x", "EACCES"),
        ("create", "rootdir/x", "EACCES"),
        ("listdir", "rootdir", None),
    ],
)
def test_root_dir_0755(env, op, rel, expect):
    import errno as E

    p, native = env
    ok, err, _ = both(p, native, _root_dir, op, rel)
    assert ok if expect is None else (not ok and err == getattr(E, expect))


def test_unlink_in_root_dir(env):
    import errno as E

    p, native = env

    def setup(root):
        _root_dir(root)
        open(os.path.join(root, "rootdir", "f"), "w").close()

    ok, err, _ = both(p, native, setup, "unlink", "rootdir/f")
    assert not ok and err == E.EACCES


def test_sticky_dir(env):
    import errno as E

    p, native = env

    def setup(root):
        _root_dir(root, 0o1777)
        open(os.path.join(root, "rootdir", "f"), "w").close()

    ok, err, _ = both(p, native, setup, "unlink", "rootdir/f")
    assert not ok and err in (E.EPERM, E.EACCES)


def test_private_dir_denied(env):
    import errno as E

    p, native = env

    def setup(root):
        _root_dir(root, 0o700)
        open(os.path.join(root, "rootdir", "f"), "w").close()

    ok, err, _ = both(p, native, setup, "read", "rootdir/f")
    assert not ok and err == E.EACCES


def _group_dir(root):
    d = os.path.join(root, "grpdir")
    os.mkdir(d)
    os.chown(d, 0, GROUP_SUPP)
    os.chmod(d, 0o770)


def test_supplementary_group_grants(env):
    p, native = env
    ok, _, val = both(p, native, _group_dir, "create", "grpdir/f", groups=(GROUP_SUPP,))
    assert ok and val[0] == UID
    s = os.stat(p.branch_path(p.where("grpdir/f")[0], "grpdir/f"))
    assert s.st_uid == UID


def _group_dir2(root):
    d = os.path.join(root, "grpdir")
    os.mkdir(d)
    os.chown(d, 0, GROUP_SUPP + 1)
    os.chmod(d, 0o770)


@pytest.mark.xfail(
    condition=is_reference(),
    strict=True,
    reason="2.33.5 takes supplementary groups from the user database, not the caller",
)
def test_caller_groups_not_in_group_db(env):
    """A group the caller holds (setgroups) but /etc/group does not list still grants access."""
    p, native = env
    ok, _, _ = both(p, native, _group_dir2, "create", "grpdir/f", groups=(GROUP_SUPP + 1,))
    assert ok


def test_without_supplementary_group_denied(env):
    import errno as E

    p, native = env
    ok, err, _ = both(p, native, _group_dir, "create", "grpdir/f")
    assert not ok and err == E.EACCES


def test_rename_user_files(env):
    p, native = env

    def setup(root):
        _user_dir(root)
        f = os.path.join(root, "userdir", "a")
        open(f, "w").close()
        os.chown(f, UID, GID)

    ok, _, _ = both(p, native, setup, "rename", "userdir/a", "userdir/b")
    assert ok
    assert os.path.exists(os.path.join(p.mnt, "userdir", "b"))


@pytest.mark.extra_options("kernel-permissions-check=false")
def test_lookups_switch_identity_between_callers(env):
    """The compiled LOOKUP/GETATTR/GETXATTR path acts as each caller in turn: root's
    answers in a 0700 directory never leak to the user, and the user's refusal
    never sticks to root. The kernel checks no permissions here and caches no
    entries: every stat is a request the daemon answers as its caller."""
    p, native = env
    for root in (p.mnt, native):
        _root_dir(root, 0o700)
        with open(os.path.join(root, "rootdir", "f"), "wb") as f:
            f.write(b"x")
        os.setxattr(os.path.join(root, "rootdir", "f"), "user.k", b"v")
    for _ in range(3):
        for root in (p.mnt, native):
            f = os.path.join(root, "rootdir", "f")
            assert os.stat(f).st_size == 1 and os.getxattr(f, "user.k") == b"v"  # root, as itself
        for op in ("stat", "getxattr"):
            pool_out = as_user(op, os.path.join(p.mnt, "rootdir", "f"))
            assert pool_out == as_user(op, os.path.join(native, "rootdir", "f")) == (False, 13, None)
