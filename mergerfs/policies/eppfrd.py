"""``eppfrd``: Of qualifying branches where the path exists, one at random weighted by available space."""

from mergerfs.policies._filter import path_preserving, weighted_by_free

action, create, search = path_preserving(weighted_by_free)
