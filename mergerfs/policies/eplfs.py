"""``eplfs``: Of qualifying branches where the path exists, the least available space."""

from mergerfs.policies._filter import least_free, path_preserving

action, create, search = path_preserving(least_free)
