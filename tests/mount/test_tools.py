"""The pool toolkit (mergerfs-ctl, -balance, -dup, -dedup, -fsck, -consolidate) on real pools.

Every tool runs against a pool of ours and one of the reference C++ mergerfs
(same control interface). Branches are tmpfs filesystems so usage really
differs per branch. The oracle is the branch directories themselves: files
with known SHA-256 must end up exactly once (or N times) with that content.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest

from .branchfs import MiB, pool, tmpfs_branches
from .helpers import REFERENCE, cmd_env, pool_cmd

NOCACHE = "cache.files=off,cache.attr=0,cache.entry=0,cache.negative_entry=0"
TOOLS = ("ctl", "balance", "dup", "dedup", "fsck", "consolidate")


@pytest.fixture(params=["ours", "reference"])
def cmd(request) -> list[str]:
    if request.param == "reference":
        if not os.path.exists(REFERENCE):
            pytest.skip("reference mergerfs not installed")
        return [REFERENCE]
    return pool_cmd()


def tool(name: str, *args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    e = cmd_env()
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", f"mergerfs.tools.{name}", *args], env=e, capture_output=True, text=True, timeout=timeout
    )


def sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def put(branch: str, rel: str, size: int, seed: int) -> str:
    """A file of ``size`` deterministic bytes; returns its sha256."""
    p = os.path.join(branch, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    data = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    with open(p, "wb") as f:
        f.write(data[:size])
    return hashlib.sha256(data[:size]).hexdigest()


def files_on(branches: list[str]) -> dict[str, list[str]]:
    """relpath -> [sha256 per branch holding it] for every regular file (everything, tool files too)."""
    out: dict[str, list[str]] = {}
    for b in branches:
        for root, _, names in os.walk(b):
            for n in names:
                p = os.path.join(root, n)
                out.setdefault(os.path.relpath(p, b), []).append(sha(p))
    return out


def assert_once(branches: list[str], expect: dict[str, str]) -> None:
    got = files_on(branches)
    assert got == {rel: [h] for rel, h in expect.items()}


def used_pct(b: str) -> float:
    st = os.statvfs(b)
    return 100.0 * (st.f_blocks - st.f_bfree) / st.f_blocks


# ------------------------------------------------------------------ refusal
@pytest.mark.parametrize("name", TOOLS)
def test_refuses_what_is_not_a_pool(name, tmp_path):
    (tmp_path / "d").mkdir()
    target = str(tmp_path / "d")
    args = {"ctl": ["--mount", target, "status"]}.get(name, [target])
    r = tool(name, *args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a mergerfs pool" in lines[0], r.stderr
    assert os.listdir(target) == []


def test_one_tool_at_a_time(tmp_path):
    from mergerfs.tools.common import find_pool, pool_lock

    with tmpfs_branches([4, 4]) as br, pool(br, NOCACHE) as mnt:
        put(br[0], "f", 1000, 1)
        with pool_lock(find_pool(mnt, exact=True)):
            r = tool("dedup", mnt, "--execute")
            assert r.returncode == 2 and "another mergerfs tool" in r.stderr
        assert tool("dedup", mnt, "--execute").returncode == 0


# --------------------------------------------------------------------- ctl
def test_ctl(cmd, tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    with tmpfs_branches([8, 16, 24]) as br:
        put(br[0], "a/one", 300_000, 1)
        put(br[1], "a/one", 1000, 2)
        put(br[2], "two", 2000, 3)
        spec = [br[0], br[1] + "=RO", br[2] + "=NC"]
        with pool(spec, NOCACHE, cmd=cmd) as mnt:
            r = tool("ctl", "--mount", mnt, "status", "--files")
            assert r.returncode == 0, r.stderr
            for b, mode in zip(br, ("RW", "RO", "NC")):
                assert any(b in line and f" {mode} " in line for line in r.stdout.splitlines()), r.stdout
            doc = json.loads(tool("ctl", "--mount", mnt, "status", "--json", "--files").stdout)
            assert [b["path"] for b in doc["branches"]] == br
            assert [b["mode"] for b in doc["branches"]] == ["RW", "RO", "NC"]
            assert [b["files"] for b in doc["branches"]] == [1, 1, 1]
            for row, b in zip(doc["branches"], br):
                st = os.statvfs(b)
                assert row["total"] == st.f_blocks * st.f_frsize
                assert abs(row["used"] - (st.f_blocks - st.f_bfree) * st.f_frsize) <= 64 * 1024
            r = tool("ctl", "info", os.path.join(mnt, "a/one"), "--json")  # finds the pool holding it
            info = json.loads(r.stdout)
            assert [b["path"] for b in info["branches"]] == br[:2]
            assert info["relpath"] == "/a/one"
            # get / set / bad set
            assert (
                tool("ctl", "--mount", mnt, "get", "category.create").stdout.strip()
                == os.getxattr(os.path.join(mnt, ".mergerfs"), "user.mergerfs.category.create").decode()
            )
            assert tool("ctl", "--mount", mnt, "set", "category.create", "mfs").returncode == 0
            assert json.loads(tool("ctl", "--mount", mnt, "get", "--json").stdout)["category.create"] == "mfs"
            r = tool("ctl", "--mount", mnt, "set", "minfreespace", "lots")
            assert r.returncode == 1 and "invalid value" in r.stderr
            r = tool("ctl", "--mount", mnt, "set", "nosuchkey", "1")
            assert r.returncode == 1 and "no such key" in r.stderr
            # branches
            assert tool("ctl", "--mount", mnt, "add-branch", str(extra), "--mode", "NC", "--first").returncode == 0
            got = os.getxattr(os.path.join(mnt, ".mergerfs"), "user.mergerfs.branches").decode()
            assert got.split(":")[0] == f"{extra}=NC"
            assert tool("ctl", "--mount", mnt, "add-branch", str(extra)).returncode == 1  # already one
            assert tool("ctl", "--mount", mnt, "remove-branch", br[1]).returncode == 0
            got = os.getxattr(os.path.join(mnt, ".mergerfs"), "user.mergerfs.branches").decode()
            assert [e.split("=")[0] for e in got.split(":")] == [str(extra), br[0], br[2]]
            assert tool("ctl", "--mount", mnt, "remove-branch", br[1]).returncode == 1  # not one now
            assert os.path.getsize(os.path.join(mnt, "a/one")) == 300_000


# ------------------------------------------------------------------ balance
def _seed_balance(br: list[str], n: int, size: int) -> dict[str, str]:
    expect = {f"d{i % 3}/f{i}.bin": put(br[0], f"d{i % 3}/f{i}.bin", size, i) for i in range(n)}
    expect["d0/pinned.keep"] = put(br[0], "d0/pinned.keep", size, 999)
    return expect


def test_balance(cmd):
    with tmpfs_branches([16, 16, 32]) as br:
        expect = _seed_balance(br, 24, 256 * 1024)
        with pool(br, NOCACHE, cmd=cmd) as mnt:
            before = files_on(br)
            r = tool("balance", mnt, "--dry-run", "-p", "5", "-e", "*.keep")
            assert r.returncode == 0, r.stderr
            assert "would move" in r.stdout
            assert files_on(br) == before  # dry run changes nothing
            r = tool("balance", mnt, "-p", "5", "-e", "*.keep")
            assert r.returncode == 0, r.stderr
            assert_once(br, dict(expect))  # moved, each exactly once
            assert os.path.exists(os.path.join(br[0], "d0/pinned.keep"))
            pcts = [used_pct(b) for b in br]
            assert max(pcts) - min(pcts) <= 5 + 2, pcts  # one file's worth of slack
            assert len({os.path.exists(os.path.join(b, "d1")) for b in br}) == 1  # dirs cloned
            for rel, h in expect.items():  # the pool still serves every file
                assert sha(os.path.join(mnt, rel)) == h
            assert tool("balance", mnt, "-p", "5").stdout.startswith("0 files")  # nothing left to do


def _check_after_crash(br: list[str], mnt: str, expect: dict[str, str]) -> None:
    """Every file present with its content; at most the one in flight on two branches."""
    got = files_on(br)
    doubles = 0
    for rel, h in expect.items():
        assert got.get(rel) and set(got[rel]) == {h}, rel
        doubles += len(got[rel]) > 1
        assert sha(os.path.join(mnt, rel)) == h
    assert doubles <= 1
    assert sorted(e for e in os.listdir(os.path.join(mnt, "d0")) if not e.startswith(".mergerfs-tools")) == sorted(
        os.path.basename(r) for r in expect if r.startswith("d0/")
    )


def _no_tool_files(br: list[str]) -> None:
    for b in br:
        for root, _, names in os.walk(b):
            assert not [n for n in names if n.startswith(".mergerfs-tools.")], root


@pytest.mark.slow
def test_balance_sigkill_mid_run(cmd):
    with tmpfs_branches([32, 32, 32]) as br:
        expect = _seed_balance(br, 48, 512 * 1024)
        with pool(br, NOCACHE, cmd=cmd) as mnt:
            for stop_after in (2, 5):
                proc = subprocess.Popen(
                    [sys.executable, "-m", "mergerfs.tools.balance", mnt, "-p", "3"],
                    env=cmd_env(),
                    stdout=subprocess.PIPE,
                    text=True,
                )
                try:
                    for _ in range(stop_after):
                        assert proc.stdout.readline().startswith(("moved", "recovered")), "ran out of moves"
                    proc.send_signal(signal.SIGKILL)  # somewhere inside the next move
                finally:
                    proc.kill()
                    proc.wait()
                    proc.stdout.close()
                _check_after_crash(br, mnt, expect)
            r = tool("balance", mnt, "-p", "3")
            assert r.returncode == 0, r.stderr
            assert_once(br, expect)
            _no_tool_files(br)


@pytest.mark.parametrize("step", ["journal", "copy", "verified", "renamed", "unlinked"])
def test_balance_killed_at_each_step(step):
    with tmpfs_branches([16, 16]) as br:
        expect = _seed_balance(br, 12, 256 * 1024)
        with pool(br, NOCACHE) as mnt:
            r = tool("balance", mnt, "-p", "3", env={"MERGERFS_TOOLS_FAULT": f"{step}:2"})
            assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
            _check_after_crash(br, mnt, expect)
            r = tool("balance", mnt, "-p", "3")
            assert r.returncode == 0, r.stderr
            assert_once(br, expect)
            _no_tool_files(br)


@pytest.mark.parametrize("step", ["copy", "renamed"])
def test_balance_ctrl_c_cleans_up_at_once(step):
    """SIGINT mid-move: exit 130, the move undone or completed, nothing left behind."""
    with tmpfs_branches([16, 16]) as br:
        expect = _seed_balance(br, 12, 256 * 1024)
        with pool(br, NOCACHE) as mnt:
            r = tool("balance", mnt, "-p", "3", env={"MERGERFS_TOOLS_FAULT": f"{step}:2:INT"})
            assert r.returncode == 130 and "interrupted" in r.stderr, (r.returncode, r.stderr)
            assert_once(br, expect)


def test_mover_on_a_full_disk_leaves_the_source():
    from mergerfs.tools.common import JOURNAL, transfer

    with tmpfs_branches([8, 1]) as br:
        h = put(br[0], "d/big", 2 * MiB, 5)
        with pytest.raises(OSError) as ei:
            transfer(br[0], br[1], "/d/big", move=True)
        assert ei.value.errno == errno.ENOSPC
        assert files_on(br) == {"d/big": [h]}  # no temp, no journal, source intact
        assert not os.path.exists(os.path.join(br[1], JOURNAL))


# --------------------------------------------------------- dup and dedup
def test_dup(cmd):
    with tmpfs_branches([8, 8, 8]) as br:
        h1 = put(br[0], "keep/a", 100_000, 1)
        h2 = put(br[1], "keep/b", 50_000, 2)
        os.chmod(os.path.join(br[0], "keep/a"), 0o640)
        with pool(br, NOCACHE, cmd=cmd) as mnt:
            before = files_on(br)
            r = tool("dup", os.path.join(mnt, "keep"), "-c", "2")
            assert r.returncode == 0 and r.stdout.count("would copy") == 2, r.stdout + r.stderr
            assert files_on(br) == before
            r = tool("dup", os.path.join(mnt, "keep"), "-c", "2", "--execute")
            assert r.returncode == 0, r.stderr
            got = files_on(br)
            assert got == {"keep/a": [h1, h1], "keep/b": [h2, h2]}
            holders = [b for b in br if os.path.exists(os.path.join(b, "keep/a"))]
            assert {os.stat(os.path.join(b, "keep/a")).st_mode & 0o777 for b in holders} == {0o640}
            r = tool("dup", os.path.join(mnt, "keep"), "-c", "3", "--execute")
            assert files_on(br) == {"keep/a": [h1] * 3, "keep/b": [h2] * 3}


def test_dedup(cmd):
    with tmpfs_branches([8, 8, 8]) as br:
        hs = [put(b, "x/f", 1000 + i, i) for i, b in enumerate(br)]
        for i, b in enumerate(br):
            os.utime(os.path.join(b, "x/f"), (1000, [3000, 5000, 4000][i]))
        same = put(br[0], "x/same", 4000, 7)
        put(br[2], "x/same", 4000, 7)
        only = put(br[1], "x/only", 10, 8)
        with pool(br, NOCACHE, cmd=cmd) as mnt:
            before = files_on(br)
            r = tool("dedup", mnt, "--json")
            assert r.returncode == 0, r.stderr
            doc = json.loads(r.stdout)
            groups = {d["relpath"]: d for d in doc["duplicates"]}
            assert set(groups) == {"/x/f", "/x/same"}
            assert groups["/x/same"]["identical"] and not groups["/x/f"]["identical"]
            assert groups["/x/f"]["keep"] == br[1]  # newest
            assert files_on(br) == before
            r = tool("dedup", mnt, "--identical-only", "--execute")
            assert r.returncode == 0, r.stderr
            assert files_on(br)["x/same"] == [same]
            assert len(files_on(br)["x/f"]) == 3
            r = tool("dedup", mnt, "--rule", "largest", "--execute")
            assert r.returncode == 0, r.stderr
            assert files_on(br) == {"x/f": [hs[2]], "x/same": [same], "x/only": [only]}
            assert sha(os.path.join(mnt, "x/f")) == hs[2]


# ------------------------------------------------------- fsck, consolidate
def test_fsck(cmd):
    with tmpfs_branches([8, 8, 8]) as br:
        for i, b in enumerate(br):
            os.makedirs(os.path.join(b, "share/sub"))
            os.chmod(os.path.join(b, "share"), [0o755, 0o700, 0o755][i])
            os.chown(os.path.join(b, "share/sub"), [0, 0, 1234][i], 0)
        with pool(br, NOCACHE, cmd=cmd) as mnt:
            base = os.getxattr(os.path.join(mnt, "share"), "user.mergerfs.basepath").decode()
            want = os.stat(os.path.join(base, "share")).st_mode & 0o7777
            r = tool("fsck", mnt, "--json")
            assert r.returncode == 1
            rows = json.loads(r.stdout)["mismatches"]
            assert {(m["relpath"], m["branch"]) for m in rows} == {
                ("/share", b) for b in br if os.stat(os.path.join(b, "share")).st_mode & 0o7777 != want
            } | {
                ("/share/sub", b)
                for b in br
                if os.stat(os.path.join(b, "share/sub")).st_uid != os.stat(os.path.join(base, "share/sub")).st_uid
            }
            r = tool("fsck", mnt, "--fix")
            assert r.returncode == 0, r.stderr
            assert len({os.stat(os.path.join(b, "share")).st_mode for b in br}) == 1
            assert len({os.stat(os.path.join(b, "share/sub")).st_uid for b in br}) == 1
            assert tool("fsck", mnt).returncode == 0


def test_consolidate(cmd):
    with tmpfs_branches([8, 8, 8]) as br:
        expect = {f"album/t{i}": put(br[i % 3], f"album/t{i}", 40_000 * (1 + (i % 3 == 1)), i) for i in range(9)}
        other = put(br[0], "elsewhere", 10, 99)
        with pool(br, NOCACHE, cmd=cmd) as mnt:
            before = files_on(br)
            r = tool("consolidate", os.path.join(mnt, "album"))
            assert r.returncode == 0 and "would move" in r.stdout, r.stderr
            assert files_on(br) == before
            r = tool("consolidate", os.path.join(mnt, "album"), "--execute")
            assert r.returncode == 0, r.stderr
            assert files_on([br[1]]) == {rel: [h] for rel, h in expect.items()}  # most bytes were there
            assert_once(br, {**expect, "elsewhere": other})
            assert sorted(os.listdir(os.path.join(mnt, "album"))) == sorted(r.split("/")[1] for r in expect)


def test_ctl_collect_info(mount_pool, tmp_path):
    """collect-info: version, options, branches with filesystem and space, the mount
    entry, the kernel, and the daemon's recent log lines (here its log.file)."""
    import json
    import platform

    logf = tmp_path / "pool.log"
    p = mount_pool(n=2, options=f"log.file={logf},category.create=mfs")
    r = tool("ctl", "-m", p.mnt, "collect-info")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for needle in (
        "== mergerfs 2.33.5",
        f"log.file={logf}",
        "category.create=mfs",
        platform.release(),
        "fstype=fuse.mergerfs",
        f"mountpoint={p.mnt}",
        f"INFO: mounted {p.mnt}",
    ):
        assert needle in out, (needle, out)
    for b in p.branches:
        assert any(line.strip().startswith(f"{b} RW") and "free" in line for line in out.splitlines()), out
    r = tool("ctl", "-m", p.mnt, "collect-info", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["options"]["category.create"] == "mfs" and info["mount"]["fstype"] == "fuse.mergerfs"
    assert [b["path"] for b in info["branches"]] == p.branches
    assert all(b["fstype"] and b["total"] > 0 for b in info["branches"])
    assert info["kernel"]["release"] == platform.release()
    assert info["log"]["source"] == str(logf) and any("mounted" in ln for ln in info["log"]["lines"])
    assert info["command"] and int(info["pid"]) > 0
