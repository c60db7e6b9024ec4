"""``epmfs``: Of qualifying branches where the path exists, the most available space."""

from mergerfs.policies._filter import most_free, path_preserving

action, create, search = path_preserving(most_free)
