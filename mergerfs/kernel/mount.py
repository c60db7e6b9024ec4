"""Getting a mounted ``/dev/fuse`` fd without libfuse: mount(2) ourselves as
root, else let the setuid ``fusermount3`` mount and hand the fd back over a
socket (``_FUSE_COMMFD``), as libfuse does."""

from __future__ import annotations

import errno
import os
import stat as S

from mergerfs import _kernel

# mount(2) flags for the generic options
_MS = {"ro": 1, "nosuid": 2, "nodev": 4, "noexec": 8, "sync": 16, "dirsync": 128, "noatime": 1024}
_MS_UNSET = {"rw": "ro", "suid": "nosuid", "dev": "nodev", "exec": "noexec", "async": "sync", "atime": "noatime"}


def mount(mnt: str, opts: set[str]) -> int:
    """Mount a FUSE filesystem at ``mnt`` (already resolved) with the generic
    options ``opts``; the /dev/fuse fd serving it."""
    generic = dict(o.partition("=")[::2] for o in opts)
    fsname = generic.pop("fsname", "mergerfs").replace("\\,", ",")
    subtype = generic.pop("subtype", "mergerfs")
    if os.geteuid() == 0:
        return _mount_root(mnt, fsname, subtype, generic)
    return _mount_fusermount(mnt, fsname, subtype, opts)


def _mount_root(mnt: str, fsname: str, subtype: str, generic: dict) -> int:
    flags = _MS["nosuid"] | _MS["nodev"]  # as libfuse, unless suid/dev are asked for
    data = []
    for k, v in generic.items():
        if k in _MS:
            flags |= _MS[k]
        elif k in _MS_UNSET:
            flags &= ~_MS[_MS_UNSET[k]]
        elif k in ("allow_other", "default_permissions"):
            data.append(k)
        elif k in ("max_read", "blksize"):
            data.append(f"{k}={v}")
    st = os.stat(mnt)
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    data[:0] = [
        f"fd={fd}",
        f"rootmode={S.S_IFMT(st.st_mode):o}",
        f"user_id={os.getuid()}",
        f"group_id={os.getgid()}",
    ]
    try:
        _kernel.mount(fsname, mnt, "fuse." + subtype, flags, ",".join(data))
    except OSError:
        os.close(fd)
        raise
    return fd


def _mount_fusermount(mnt: str, fsname: str, subtype: str, opts: set[str]) -> int:
    """Non-root: fusermount3 mounts and hands the /dev/fuse fd back over a socket."""
    import socket  # noqa: PLC0415 - only this path: each costs the daemon ~0.7 MiB
    import subprocess  # noqa: PLC0415

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    keep = [o for o in opts if not o.startswith(("fsname=", "subtype="))]
    keep += [f"fsname={fsname}", f"subtype={subtype}"]
    try:
        env = dict(os.environ, _FUSE_COMMFD=str(theirs.fileno()))
        proc = subprocess.run(
            ["fusermount3", "-o", ",".join(keep), "--", mnt],
            env=env,
            pass_fds=(theirs.fileno(),),
            stderr=subprocess.PIPE,
            check=False,
        )
        theirs.close()
        if proc.returncode != 0:
            raise OSError(errno.EPERM, proc.stderr.decode(errors="replace").strip() or "fusermount3 failed")
        _, fds, _, _ = socket.recv_fds(ours, 1, 1)
        if not fds:
            raise OSError(errno.EIO, "fusermount3 handed back no /dev/fuse fd")
        os.set_inheritable(fds[0], False)
        return fds[0]
    finally:
        ours.close()
        theirs.close()
