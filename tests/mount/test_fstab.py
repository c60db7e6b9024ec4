"""fstab and mount(8): the lines users write, mounted by the real mount(8).

mount(8) runs /sbin/mount.fuse for types ``fuse.mergerfs`` and ``fuse``
(legacy ``mergerfs#BRANCHES``) and /sbin/mount.mergerfs for type ``mergerfs``;
mount.fuse starts ``mergerfs`` through /bin/sh with the shell's default PATH,
so a venv install needs ``mergerfs-install-helper`` to link it into
/usr/local/bin. To exercise exactly that without touching the machine, each
scenario runs in a private mount namespace (``unshare -m``) where an empty
temporary directory is bind-mounted over /usr/local/bin and the helper
installs into it; fstab entries live in a temporary file (``mount --fstab``).
The machine's /etc/fstab and /usr/local/bin are never changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from .helpers import is_reference, pool_cmd
from .nsutil import kill_leftovers, run_private

pytestmark = pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")

OUR_SCRIPTS = os.path.dirname(sys.executable)
MOUNT_MERGERFS = "/usr/sbin/mount.mergerfs"


def _helper() -> str:
    path = os.path.join(OUR_SCRIPTS, "mergerfs-install-helper")
    if not is_reference() and not os.path.exists(path):
        pytest.skip(f"{path} missing: the package is not installed in this interpreter's env (make build)")
    return path


@pytest.fixture
def layout(tmp_path):
    """Two disks with one file each, two pool dirs, and an fstab with the three spellings."""
    t = str(tmp_path)
    for d in ("disk1", "disk2", "pool", "pool2", "pool3", "usrlocalbin"):
        os.mkdir(os.path.join(t, d))
    with open(os.path.join(t, "disk1", "one"), "w") as f:
        f.write("from disk1\n")
    with open(os.path.join(t, "disk2", "two"), "w") as f:
        f.write("from disk2\n")
    opts = "defaults,allow_other,category.create=mfs,minfreespace=1G,nofail,x-systemd.requires=local-fs.target"
    with open(os.path.join(t, "fstab"), "w") as f:
        f.write(
            f"# test fstab\n{t}/disk*  {t}/pool  fuse.mergerfs  {opts}  0 0\n"
            f"mergerfs#{t}/disk1:{t}/disk2  {t}/pool2  fuse  defaults,allow_other  0 0\n"
            f"{t}/disk1:{t}/disk2  {t}/pool3  mergerfs  defaults,noauto  0 0\n"
        )
    yield t
    kill_leftovers(f"{t}/pool")


def in_namespace(t: str, body: str, timeout: float = 90) -> str:
    """Run ``body`` (bash) in a private mount namespace with /usr/local/bin replaced
    by ``t/usrlocalbin``; every pool under ``t`` is unmounted on the way out."""
    script = textwrap.dedent(f"""\
        set -eu
        mount --bind {t}/usrlocalbin /usr/local/bin
        cleanup() {{ for p in pool pool2 pool3; do umount {t}/$p 2>/dev/null || true; done; }}
        trap cleanup EXIT
        daemon() {{ for p in $(pgrep -f -- "$1( |$)"); do  # not this script's own bash
            case "$(readlink /proc/$p/exe)" in *bash) ;; *) echo $p; return;; esac; done; }}
        exe() {{ readlink /proc/$(daemon "$1")/exe; }}
        opt() {{ getfattr --absolute-names --only-values -n "user.mergerfs.$2" "$1/.mergerfs"; echo; }}
        types() {{ awk -v t={t}/ 'index($5, t) == 1 {{print $5, $(NF-2)}}' /proc/self/mountinfo | sort; }}
        """) + textwrap.dedent(body)
    return run_private(["bash", "-c", script], timeout)


def _install(t: str) -> str:
    """Shell lines making `mergerfs` resolvable the way a user would."""
    if is_reference():
        return f"ln -s {pool_cmd()[0]} /usr/local/bin/mergerfs\n"
    return f"{_helper()} --sbindir {t}/sbin\n"


def _expected_exe() -> str:
    return "mergerfs" if is_reference() else "python"


def test_fuse_mergerfs_line_mount_read_umount(layout):
    """`mount POOL` with a fuse.mergerfs line (glob source, generic options): serves both disks."""
    t = layout
    out = in_namespace(
        t,
        _install(t)
        + f"""\
        mount --fstab {t}/fstab {t}/pool
        echo "types: $(types)"
        echo "exe: $(exe {t}/pool)"
        echo "create: $(opt {t}/pool category.create)"
        cat {t}/pool/one {t}/pool/two
        echo new > {t}/pool/three
        umount {t}/pool
        echo "after: $(types)"
        """,
    )
    assert f"types: {t}/pool fuse.mergerfs" in out
    assert _expected_exe() in out.split("exe: ")[1].splitlines()[0]
    assert "create: mfs" in out
    assert "from disk1\nfrom disk2\n" in out  # the glob reached mergerfs intact and was expanded
    assert "after: \n" in out
    assert [os.path.exists(os.path.join(t, d, "three")) for d in ("disk1", "disk2")].count(True) == 1


def test_mount_all_of_type_and_legacy_form(layout):
    """`mount -a -t fuse.mergerfs,fuse` mounts the new and the legacy line, skips noauto; umount ends the daemons."""
    t = layout
    out = in_namespace(
        t,
        _install(t)
        + f"""\
        mount --fstab {t}/fstab -a -t fuse.mergerfs,fuse
        echo "types: $(types | tr '\\n' ';')"
        cat {t}/pool2/one
        pids="$(daemon {t}/pool) $(daemon {t}/pool2)"
        # Mounted pools are not recognised by source (fsname differs): mount(8) runs the
        # helper again, which refuses the non-empty mountpoint, as the reference does.
        mount --fstab {t}/fstab -a -t fuse.mergerfs,fuse 2>/dev/null || echo "again-rc: $?"
        echo "again: $(types | tr '\\n' ';')"
        umount {t}/pool
        umount {t}/pool2
        for i in $(seq 100); do alive=0; for p in $pids; do [ -e /proc/$p ] && alive=1; done
            [ $alive = 0 ] && break; sleep 0.1; done
        echo "alive: $alive"
        """,
    )
    both = f"types: {t}/pool fuse.mergerfs;{t}/pool2 fuse.mergerfs;"
    assert both in out
    assert f"again: {t}/pool fuse.mergerfs;{t}/pool2 fuse.mergerfs;" in out  # noauto pool3 untouched, no doubles
    assert "again-rc: " in out
    assert "from disk1" in out
    assert "alive: 0" in out


@pytest.mark.skipif(not os.path.exists(MOUNT_MERGERFS), reason=f"no {MOUNT_MERGERFS} to bind ours over")
def test_type_mergerfs_uses_mount_helper(layout):
    """Type `mergerfs` (noauto line, mounted explicitly): mount(8) runs /sbin/mount.mergerfs SPEC DIR -o OPTS."""
    t = layout
    bind = "" if is_reference() else f"mount --bind {OUR_SCRIPTS}/mount.mergerfs {MOUNT_MERGERFS}\n"
    out = in_namespace(
        t,
        _install(t)
        + bind
        + f"""\
        mount --fstab {t}/fstab {t}/pool3
        echo "types: $(types)"
        echo "exe: $(exe {t}/pool3)"
        cat {t}/pool3/two
        umount {t}/pool3
        """,
    )
    assert f"types: {t}/pool3 fuse.mergerfs" in out
    assert _expected_exe() in out.split("exe: ")[1].splitlines()[0]
    assert "from disk2" in out


def test_install_helper_links(tmp_path):
    """Links into the given dirs, keeps a foreign file unless --force, uninstall removes only ours."""
    helper = _helper()
    if is_reference():
        pytest.skip("our install helper only")
    b, s = tmp_path / "bin", tmp_path / "sbin"
    s.mkdir()
    (s / "mount.mergerfs").write_text("foreign")

    def run(*a: str) -> str:
        cmd = [helper, "--bindir", str(b), "--sbindir", str(s), *a]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    out = run()
    assert os.path.realpath(b / "mergerfs") == os.path.realpath(os.path.join(OUR_SCRIPTS, "mergerfs"))
    assert "kept" in out and (s / "mount.mergerfs").read_text() == "foreign"
    run("--force")
    assert os.path.realpath(s / "mount.mergerfs") == os.path.realpath(os.path.join(OUR_SCRIPTS, "mount.mergerfs"))
    assert "ok " in run()  # idempotent
    run("--uninstall")
    assert not os.path.lexists(b / "mergerfs") and not os.path.lexists(s / "mount.mergerfs")
    r = subprocess.run([helper, "--bindir", str(b), "--sbindir", str(s), "--uninstall"], capture_output=True)
    assert r.returncode == 0  # nothing to remove is fine
