"""``eprand``: Of qualifying branches where the path exists, one at random."""

from mergerfs.policies._filter import path_preserving, random_one

action, create, search = path_preserving(random_one)
