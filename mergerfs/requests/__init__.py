"""The binding-neutral request layer between a FUSE transport and :mod:`mergerfs.fs`.

Nodeids and file handles in, relpaths and :class:`~mergerfs.fs.Handle` objects
out to the filesystem logic; ``os.stat_result`` and plain values back, and
``OSError`` for the transport to turn into an error reply. Cache decisions
(what an open does to the kernel's page cache) are made here, once; each
transport only spells them in its own protocol.

Threading: transports call every method concurrently from worker threads that
already carry the caller's identity (:mod:`mergerfs.ugid`). The inode table and
the handle table have their own small locks; nothing here holds a lock while
doing I/O or while notifying the kernel.

:class:`Requests` is composed of one class per group, each on the tables of
``core``: ``entries`` (names and attributes), ``files``, ``dirs``, ``xattrs``.
"""

from mergerfs.requests.core import CONTROL_INO, DIRECT, DROP, KEEP, Notifier, forced_attrs, process_name
from mergerfs.requests.dirs import DirRequests
from mergerfs.requests.entries import EntryRequests
from mergerfs.requests.files import FileRequests
from mergerfs.requests.xattrs import XattrRequests

__all__ = ["CONTROL_INO", "DIRECT", "DROP", "KEEP", "Notifier", "Requests", "forced_attrs", "process_name"]


class Requests(EntryRequests, FileRequests, DirRequests, XattrRequests):
    """Every FUSE request, on nodeids and handles.

    ``auto_inval``: the kernel itself drops cached pages when the attributes it
    is given show a new size or mtime (FUSE_AUTO_INVAL_DATA); otherwise this
    layer notifies it when a getattr sees a change made behind its back.
    ``cache_by_notify``: the transport's open reply cannot say what happens to
    the cached pages (llfuse always keeps them), so the decision is carried out
    by notifications: DROP at open, and ``cache.files=off`` approximated by
    dropping the cache at open and release. Otherwise the decision goes into
    the open reply alone (a late notification would drop pages the new open
    already read).
    """
