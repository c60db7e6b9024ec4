"""``epall``: Every qualifying branch where the path exists."""

from mergerfs.policies._filter import path_preserving, every

action, create, search = path_preserving(every)
