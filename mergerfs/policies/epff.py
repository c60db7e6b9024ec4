"""``epff``: The first qualifying branch where the path exists."""

from mergerfs.policies._filter import path_preserving, first

action, create, search = path_preserving(first)
