"""The pool toolkit: console scripts that drive a mounted pool (ours or the C++ reference).

They talk to the pool only through ``MOUNTPOINT/.mergerfs`` (``user.mergerfs.*``
xattrs) and work on the branch directories it names, so they need no daemon
internals. One module per tool; :mod:`mergerfs.tools.common` holds the shared
plumbing (finding the pool, the control file, output, the crash-safe mover).
Single-threaded; one tool at a time per pool (a lock file enforces it).
"""
