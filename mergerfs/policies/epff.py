"""``epff``: The first qualifying branch where the path exists."""

from mergerfs.policies._filter import first, path_preserving

action, create, search = path_preserving(first)
