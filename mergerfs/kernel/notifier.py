"""Cache invalidations to the kernel, written by one thread of their own: a
notification can block until the kernel is done with the inode, and no request
handler may wait on that (INC_EPOCH, which waits on none, is written at once).
Nothing else writes notifications."""

from __future__ import annotations

import errno
import os
import queue
import struct
import threading

from mergerfs.kernel.protocol import NOTIFY_INC_EPOCH, NOTIFY_INVAL_INODE, frame


class Notifier:
    def __init__(self) -> None:
        self.fd = -1
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self, fd: int) -> None:
        self.fd = fd
        self._thread = threading.Thread(target=self._run, name="fuse-notify", daemon=True)
        self._thread.start()

    def inval_inode(self, ino: int) -> None:
        """Queue the invalidation of ``ino``'s cached pages and attributes (any thread)."""
        if self.fd >= 0:
            self._queue.put(frame(0, NOTIFY_INVAL_INODE, struct.pack("<Qqq", ino, 0, 0)))

    def inc_epoch(self) -> None:
        """Invalidate every cached name, found or not found (each is looked up
        again at its next use; any thread, protocol 7.44). Written at once, not
        queued: it waits on no inode, and the reply to the request that changed
        the branches must not overtake it (a ring worker answers on its caller's
        CPU before this thread would run)."""
        if self.fd >= 0:
            try:
                os.write(self.fd, frame(0, NOTIFY_INC_EPOCH))
            except OSError:  # ENODEV: unmounted meanwhile
                pass

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)

    def _run(self) -> None:
        while (message := self._queue.get()) is not None:
            try:
                os.write(self.fd, message)
            except OSError as e:  # ENOENT: the kernel does not hold it any more
                if e.errno in (errno.ENODEV, errno.EBADF):
                    return
