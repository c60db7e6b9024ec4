"""``epall``: Every qualifying branch where the path exists."""

from mergerfs.policies._filter import every, path_preserving

action, create, search = path_preserving(every)
