"""``eplus``: Of qualifying branches where the path exists, the least used space."""

from mergerfs.policies._filter import least_used, path_preserving

action, create, search = path_preserving(least_used)
