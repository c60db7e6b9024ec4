"""``eplfs``: Of qualifying branches where the path exists, the least available space."""

from mergerfs.policies._filter import path_preserving, least_free

action, create, search = path_preserving(least_free)
