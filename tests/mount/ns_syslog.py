"""Run inside a private mount namespace (see test_logging.py): a fresh /dev with
a syslog socket at /dev/log that we read, a daemonised pool, some requests,
SIGTERM; prints what reached syslog as JSON.

    python ns_syslog.py '{"cmd": [...], "args": [...], "mnt": "...", "requests": N}'
"""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

from helpers import pid_alive  # this script runs with tests/mount as sys.path[0]

DEVICES = {"null": (1, 3), "zero": (1, 5), "random": (1, 8), "urandom": (1, 9), "fuse": (10, 229)}


def private_dev() -> socket.socket:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", "/dev"], check=True)
    for name, (major, minor) in DEVICES.items():
        os.mknod(f"/dev/{name}", stat.S_IFCHR | 0o666, os.makedev(major, minor))
        os.chmod(f"/dev/{name}", 0o666)
    os.symlink("/proc/self/fd", "/dev/fd")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("/dev/log")
    sock.settimeout(0.3)
    return sock


def drain(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(65536).decode(errors="replace").rstrip("\0\n"))
        except socket.timeout:
            return out


def main() -> None:
    spec = json.loads(sys.argv[1])
    mnt = spec["mnt"]
    sock = private_dev()
    r = subprocess.run(spec["cmd"] + spec["args"], capture_output=True, text=True, timeout=60)
    result = {"rc": r.returncode, "stderr": r.stderr}
    try:
        if r.returncode == 0:
            pid = int(os.getxattr(os.path.join(mnt, ".mergerfs"), "user.mergerfs.pid"))
            for i in range(spec["requests"]):
                name = os.path.join(mnt, f"f{i % 10}")
                with open(name, "w") as f:
                    f.write("x")
                os.stat(name)
                os.listdir(mnt)
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            result["exited"] = not pid_alive(pid)
            result["pid"] = pid
    finally:
        subprocess.run(["umount", "-l", mnt], capture_output=True)
    result["messages"] = drain(sock)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
