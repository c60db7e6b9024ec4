"""``eplus``: Of qualifying branches where the path exists, the least used space."""

from mergerfs.policies._filter import path_preserving, least_used

action, create, search = path_preserving(least_used)
