"""``newest``: Of the qualifying branches where the path exists, the one whose
entry has the largest mtime (first of equals)."""

from mergerfs.policies._filter import newest, path_preserving

action, create, search = path_preserving(newest)
