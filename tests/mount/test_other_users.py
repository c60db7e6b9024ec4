"""Other users on an allow_other pool (kernel permission checks on), beyond
test_users.py: two unprivileged users against each other, the creator's umask,
setuid/setgid stripped when a non-owner writes, sticky-directory renames, and a
pool mounted without allow_other refusing everyone but its owner.

Every case runs as the user on the pool and on a native directory with the same
modes and owners; outcomes must match. Users are plain uids (no passwd entry needed).
"""

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

ALICE, BOB, GROUP = 4301, 4302, 4310
USER_PY = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or sys.executable
OPTS = "category.create=ff,cache.files=off,cache.attr=0,cache.entry=0,cache.negative_entry=0"

# Runs as the user: argv[1] = a Python expression over ``p`` (root path) and os,
# evaluated inside a function; prints repr((ok, errno, value)).
SCRIPT = r"""
import os, stat, sys
p = sys.argv[1]
def write(path, data=b"u", flags=0):
    fd = os.open(path, os.O_WRONLY | flags)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)
def create(path, mode=0o666):
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode))
    s = os.stat(path)
    return (s.st_uid, s.st_gid, stat.filemode(s.st_mode))
def read(path):
    with open(path, "rb") as f:
        return f.read()
def mkdir(path, mode=0o777):
    os.mkdir(path, mode)
    s = os.stat(path)
    return (s.st_uid, s.st_gid, stat.filemode(s.st_mode))
try:
    print(repr((True, None, eval(sys.argv[2]))))
except OSError as e:
    print(repr((False, e.errno, None)))
"""


def run_as(uid: int, root: str, expr: str, gid: int | None = None, groups=(), umask=0o022):
    gid = uid if gid is None else gid

    def drop():
        os.setgroups(list(groups))
        os.setgid(gid)
        os.setuid(uid)
        os.umask(umask)

    r = subprocess.run(
        [USER_PY, "-c", SCRIPT, root, expr], preexec_fn=drop, capture_output=True, text=True, timeout=30, cwd="/"
    )
    assert r.returncode == 0, r.stderr
    return ast.literal_eval(r.stdout.strip())


@pytest.fixture
def base():
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    d = tempfile.mkdtemp(prefix="mfsother-", dir="/tmp")
    os.chmod(d, 0o755)
    mnts = []
    try:
        yield d, mnts
    finally:
        for m in mnts:
            unmount(m)
        shutil.rmtree(d, ignore_errors=True)


def _pool(base, options):
    d, mnts = base
    k = len(mnts)
    branches = [os.path.join(d, f"p{k}b{i}") for i in (1, 2)]
    mnt = os.path.join(d, f"p{k}mnt")
    for b in branches:
        os.mkdir(b)
        os.chmod(b, 0o755)
    mnts.append(mnt)
    p = mount(branches, mnt, options)
    os.chmod(mnt, 0o755)
    return p


@pytest.fixture
def env(base):
    p = _pool(base, "allow_other," + OPTS)
    native = os.path.join(base[0], "native")
    os.mkdir(native)
    os.chmod(native, 0o755)
    return p, native


def both(env, setup, uid, expr, **kw):
    p, native = env
    outs = []
    for root in (p.mnt, native):
        setup(root)
        outs.append(run_as(uid, root, expr, **kw))
    assert outs[0] == outs[1], f"pool {outs[0]} != native {outs[1]}"
    return outs[0]


def _alice_private(root):
    """Alice's 0700 dir with a 0600 file, her 0755 dir with a 0644 file, a sticky shared dir."""
    for d, mode in (("priv", 0o700), ("pub", 0o755), ("sticky", 0o1777)):
        os.mkdir(os.path.join(root, d))
        os.chmod(os.path.join(root, d), mode)
    for f, mode in (("priv/f", 0o600), ("pub/f", 0o644), ("sticky/f", 0o644)):
        with open(os.path.join(root, f), "wb") as fh:
            fh.write(b"alice")
        os.chmod(os.path.join(root, f), mode)
    for rel in ("priv", "pub", "sticky/f", "priv/f", "pub/f"):
        os.chown(os.path.join(root, rel), ALICE, ALICE)


BOB_DENIED = [
    ("read(p + '/priv/f')", "EACCES"),
    ("os.listdir(p + '/priv')", "EACCES"),
    ("os.stat(p + '/priv/f')", "EACCES"),
    ("write(p + '/pub/f')", "EACCES"),
    ("os.truncate(p + '/pub/f', 0)", "EACCES"),
    ("os.rename(p + '/pub/f', p + '/pub/g')", "EACCES"),
    ("os.rename(p + '/pub/f', p + '/sticky/g')", "EACCES"),
    ("os.rename(p + '/sticky/f', p + '/sticky/g')", "EPERM"),
    ("os.unlink(p + '/pub/f')", "EACCES"),
    ("os.unlink(p + '/sticky/f')", "EPERM"),
    ("os.rmdir(p + '/pub')", "EACCES"),
    ("os.rename(p + '/pub', p + '/sticky/pub')", "EACCES"),
    ("create(p + '/pub/new')", "EACCES"),
    ("os.symlink('x', p + '/pub/l')", "EACCES"),
    ("os.link(p + '/pub/f', p + '/sticky/hl')", "EPERM"),  # protected_hardlinks
    ("os.chmod(p + '/pub/f', 0o666)", "EPERM"),
    ("os.setxattr(p + '/pub/f', 'user.x', b'1')", "EACCES"),
]


@pytest.mark.parametrize("expr,err", BOB_DENIED, ids=[e for e, _ in BOB_DENIED])
def test_second_user_denied(env, expr, err):
    import errno as E

    ok, got, _ = both(env, _alice_private, BOB, expr)
    assert not ok and got == getattr(E, err)


def test_second_user_allowed_and_owner_keeps_access(env):
    p, native = env
    assert both(env, _alice_private, BOB, "read(p + '/pub/f')")[2] == b"alice"
    for root in (p.mnt, native):
        assert run_as(ALICE, root, "read(p + '/priv/f')") == (True, None, b"alice")
        assert run_as(BOB, root, "write(p + '/priv/f')")[1] == errno.EACCES
    [i] = p.where("priv/f")
    with open(p.branch_path(i, "priv/f"), "rb") as f:
        assert f.read() == b"alice"


def _open_dir(root):
    d = os.path.join(root, "open")
    os.mkdir(d)
    os.chmod(d, 0o777)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077, 0o000])
def test_created_with_callers_umask(env, umask):
    p, _ = env
    ok, _, val = both(env, _open_dir, BOB, "(create(p + '/open/f'), mkdir(p + '/open/d'))", umask=umask)
    assert ok
    (fu, fg, _), (du, dg, _) = val
    assert (fu, fg, du, dg) == (BOB, BOB, BOB, BOB)
    [i] = p.where("open/f")
    st = os.stat(p.branch_path(i, "open/f"))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (BOB, BOB, 0o666 & ~umask)


def _setid_file(root):
    f = os.path.join(root, "sid")
    with open(f, "wb") as fh:
        fh.write(b"0123456789")
    os.chown(f, ALICE, GROUP)
    os.chmod(f, 0o6777)


@pytest.mark.parametrize(
    "expr",
    [
        "write(p + '/sid')",
        "write(p + '/sid', flags=os.O_TRUNC)",
        pytest.param(
            "os.truncate(p + '/sid', 3)",
            marks=pytest.mark.xfail(
                condition=is_reference(),
                strict=True,
                reason="2.33.5 runs the kernel's setid-clearing chmod as the caller: EPERM",
            ),
        ),
    ],
)
def test_setid_bits_cleared_by_non_owner_write(env, expr):
    """A write by someone other than the owner drops S_ISUID and S_ISGID (group-executable)."""
    p, _ = env
    expr = f"({expr}, oct(os.stat(p + '/sid').st_mode & 0o7777))"
    ok, _, (_, mode) = both(env, _setid_file, BOB, expr)
    assert ok and int(mode, 8) & 0o6000 == 0, mode
    [i] = p.where("sid")
    assert os.stat(p.branch_path(i, "sid")).st_mode & 0o6000 == 0


def test_setid_bits_on_owner_write(env):
    """The owner's own write (no CAP_FSETID) does what native does."""
    both(env, _setid_file, ALICE, "(write(p + '/sid'), oct(os.stat(p + '/sid').st_mode & 0o7777))", gid=GROUP)


def test_root_mount_implies_allow_other(base):
    """As 2.42: a pool mounted by root is open to other users without allow_other
    (the kernel still checks permissions: default_permissions)."""
    try:
        from .helpers import mountinfo
    except ImportError:
        from helpers import mountinfo
    p = _pool(base, OPTS)
    assert "allow_other" in mountinfo(p.mnt)["super"]
    with open(p.path("f"), "wb") as f:
        f.write(b"root")
    os.chmod(p.path("f"), 0o600)
    ok, _, listing = run_as(BOB, p.mnt, "sorted(os.listdir(p))")
    assert ok and listing == ["f"]
    import errno as E

    ok, err, _ = run_as(BOB, p.mnt, "read(p + '/f')")
    assert not ok and err == E.EACCES  # mode 0600: refused by the permission check
