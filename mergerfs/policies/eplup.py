"""``eplup``: Of qualifying branches where the path exists, the least used percentage."""

from mergerfs.policies._filter import least_used_pct, path_preserving

action, create, search = path_preserving(least_used_pct)
