"""Real remote branches on the loopback address: an sshd mounted with sshfs, and
``rclone serve sftp`` mounted with ``rclone mount``.

Everything lives under one temporary directory: the throwaway client and host
keys, sshd's config, rclone's config and cache. Servers listen on 127.0.0.1
only, on a free high port. :func:`remotes` is a context manager whose exit
resumes stopped servers, unmounts, kills every process it started (by PID)
and removes the directory, whatever happened inside. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator

try:
    from .helpers import mountinfo, unmount, wait_until
except ImportError:  # rootdir-less collection
    from helpers import mountinfo, unmount, wait_until

SSHD = "/usr/sbin/sshd"


def tools_missing() -> str | None:
    """Why the remote tests cannot run here (None: they can)."""
    for exe in (SSHD, "sshfs", "rclone", "ssh-keygen"):
        if not shutil.which(exe):
            return f"{exe} not installed (make deps installs openssh-server, sshfs, rclone)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        try:
            s.connect(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc's parent links)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(c for c, pp in parents.items() if pp == p)
    return out


def _signal(pids: list[int], sig: int) -> None:
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, sig)


def _stop(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """Terminate ``proc`` and its children (SIGCONT first: it may be stopped); reap it."""
    if proc is None or proc.poll() is not None:
        return
    pids = _descendants(proc.pid)
    _signal(pids, signal.SIGCONT)
    _signal(pids, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _signal(_descendants(proc.pid), signal.SIGKILL)
        proc.wait(timeout)
    _signal([p for p in pids if p != proc.pid], signal.SIGKILL)  # leftover session children


class Server:
    """One sftp server process on 127.0.0.1:``port`` serving ``root``: start,
    kill, pause (SIGSTOP, with its per-connection children) and resume."""

    def __init__(self, argv: list[str], port: int, root: str) -> None:
        self.argv, self.port, self.root = argv, port, root
        self.proc: subprocess.Popen | None = None
        self._paused: list[int] = []
        self._timer: threading.Timer | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        if not wait_until(lambda: self.proc.poll() is None and _port_open(self.port), timeout, 0.05):
            raise RuntimeError(f"{self.argv[0]} did not listen on 127.0.0.1:{self.port}")

    def kill(self) -> None:
        """SIGKILL the server and its connections (a crash, a pulled cable)."""
        if self.proc is not None and self.proc.poll() is None:
            _signal(_descendants(self.proc.pid), signal.SIGKILL)
            self.proc.wait(5)

    def pause(self, at_most: float = 30.0) -> None:
        """SIGSTOP the server and its connections: the remote hangs. A timer
        resumes it after ``at_most`` seconds whatever the test is doing, so a
        request hung on it cannot outlive the test (nor block its teardown)."""
        assert self.proc is not None
        self._paused = _descendants(self.proc.pid)
        _signal(self._paused, signal.SIGSTOP)
        self._timer = threading.Timer(at_most, self.resume)
        self._timer.daemon = True
        self._timer.start()

    def resume(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        _signal(self._paused, signal.SIGCONT)
        self._paused = []

    def close(self) -> None:
        self.resume()
        _stop(self.proc)


class Remote:
    """A remote branch: its ``server``, the local mountpoint ``mnt`` (the pool
    branch) and the served directory ``served`` (to check bytes server-side)."""

    def __init__(self, kind: str, server: Server, mnt: str, mount_argv: list[str]) -> None:
        self.kind, self.server, self.mnt, self.mount_argv = kind, server, mnt, mount_argv
        self.served = server.root
        self.client: subprocess.Popen | None = None

    def mount(self, timeout: float = 15.0) -> None:
        os.makedirs(self.mnt, exist_ok=True)
        self.client = subprocess.Popen(
            self.mount_argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        if not wait_until(lambda: self.client.poll() is None and self.mounted(), timeout, 0.05):
            self.unmount()
            raise RuntimeError(f"{self.kind} mount at {self.mnt} did not come up")

    def mounted(self) -> bool:
        info = mountinfo(self.mnt)
        return info is not None and info["type"].startswith("fuse")

    def exit_client(self, timeout: float = 10.0) -> None:
        """The client exits the way it does on its own (SIGTERM: it unmounts
        itself), leaving the bare mountpoint directory."""
        _stop(self.client, timeout)
        if self.mounted():  # sshfs killed before it could unmount
            unmount(self.mnt)

    def unmount(self) -> None:
        if self.mounted():
            subprocess.run(["umount", "-l", self.mnt], capture_output=True, timeout=10)
        _stop(self.client)
        unmount(self.mnt)


class Remotes:
    """Factory for remotes under one temporary directory (see :func:`remotes`)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.key = os.path.join(base, "id_ed25519")
        self.hostkey = os.path.join(base, "host_ed25519")
        for k in (self.key, self.hostkey):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mergerfs-test", "-f", k],
                check=True,
                capture_output=True,
                timeout=30,
            )
        self.authorized = os.path.join(base, "authorized_keys")
        shutil.copy(self.key + ".pub", self.authorized)
        os.chmod(self.authorized, 0o600)
        self.servers: list[Server] = []
        self.remotes: list[Remote] = []
        self.made_run_sshd = False

    def _dir(self, name: str) -> str:
        path = os.path.join(self.base, name)
        os.makedirs(path, exist_ok=True)
        return path

    def sshfs(self, served: str | None = None, keepalive: bool = True) -> Remote:
        """An sshd on a free loopback port serving ``served`` (default: a new
        directory), mounted with sshfs. ``keepalive``: sshfs gives up on a silent
        server after about 2 s and reconnects on demand; without it a stopped
        server hangs its requests until it resumes."""
        n = len(self.remotes)
        served = served or self._dir(f"served{n}")
        port = free_port()
        cfg = os.path.join(self.base, f"sshd{n}.conf")
        with open(cfg, "w") as f:
            f.write(
                f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {self.hostkey}\n"
                f"AuthorizedKeysFile {self.authorized}\nPermitRootLogin prohibit-password\n"
                "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
                "StrictModes no\nSubsystem sftp internal-sftp\nPidFile none\nLogLevel QUIET\n"
                "MaxStartups 100\n"
            )
        if not os.path.isdir("/run/sshd"):  # sshd's privilege-separation directory
            os.makedirs("/run/sshd", mode=0o755)
            self.made_run_sshd = True
        server = Server([SSHD, "-D", "-e", "-f", cfg], port, served)
        self.servers.append(server)
        server.start()
        opts = [
            f"IdentityFile={self.key}",
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "BatchMode=yes",
            "LogLevel=QUIET",
            "ConnectTimeout=2",
            "dir_cache=no",
            "reconnect",
        ]
        if keepalive:
            opts += ["ServerAliveInterval=1", "ServerAliveCountMax=1"]
        mnt = self._dir(f"sshfs{n}")
        argv = ["sshfs", "-f", "-p", str(port), "-o", ",".join(opts), f"root@127.0.0.1:{served}", mnt]
        remote = Remote("sshfs", server, mnt, argv)
        self.remotes.append(remote)
        remote.mount()
        return remote

    def rclone(self, served: str | None = None, extra: list[str] | None = None) -> Remote:
        """``rclone serve sftp`` of ``served`` on a free loopback port, mounted
        with ``rclone mount`` (config and cache kept in the temporary directory;
        ``extra``: more ``rclone mount`` flags, later ones win)."""
        n = len(self.remotes)
        served = served or self._dir(f"served{n}")
        port = free_port()
        conf = os.path.join(self.base, "rclone.conf")
        open(conf, "a").close()
        common = ["--config", conf, "--cache-dir", self._dir("rclone-cache"), "--log-level", "ERROR"]
        server = Server(
            [
                "rclone",
                "serve",
                "sftp",
                served,
                "--addr",
                f"127.0.0.1:{port}",
                "--key",
                self.hostkey,
                "--authorized-keys",
                self.authorized,
                *common,
            ],
            port,
            served,
        )
        self.servers.append(server)
        server.start()
        mnt = self._dir(f"rclone{n}")
        argv = (
            [
                "rclone",
                "mount",
                ":sftp:",
                mnt,
                "--sftp-host",
                "127.0.0.1",
                "--sftp-port",
                str(port),
                "--sftp-user",
                "root",
                "--sftp-key-file",
                self.key,
                "--dir-cache-time",
                "0s",
                "--attr-timeout",
                "0s",
                "--contimeout",
                "2s",
                "--timeout",
                "5s",
                "--low-level-retries",
                "1",
                "--retries",
                "1",
            ]
            + common
            + (extra or [])
        )
        remote = Remote("rclone", server, mnt, argv)
        self.remotes.append(remote)
        remote.mount()
        return remote

    def close(self) -> None:
        for s in self.servers:  # resume first: a stopped server would hang the unmounts
            s.resume()
        for r in self.remotes:
            with contextlib.suppress(Exception):
                r.unmount()
        for s in self.servers:
            with contextlib.suppress(Exception):
                s.close()
        if self.made_run_sshd:
            with contextlib.suppress(OSError):
                os.rmdir("/run/sshd")


@contextlib.contextmanager
def remotes(parent: str | None = None) -> Iterator[Remotes]:
    """Remotes whose servers, mounts, keys and files are gone after the block."""
    base = tempfile.mkdtemp(prefix="mergerfs-remote-", dir=parent)
    os.chmod(base, 0o700)
    r = None
    try:
        r = Remotes(base)
        yield r
    finally:
        if r is not None:
            r.close()
        for _ in range(3):  # an unmount may lag a moment behind its client's exit
            if not any(mountinfo(os.path.join(base, d)) for d in os.listdir(base)):
                break
            time.sleep(0.5)
        shutil.rmtree(base, ignore_errors=True)
