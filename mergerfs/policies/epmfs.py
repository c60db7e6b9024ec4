"""``epmfs``: Of qualifying branches where the path exists, the most available space."""

from mergerfs.policies._filter import path_preserving, most_free

action, create, search = path_preserving(most_free)
