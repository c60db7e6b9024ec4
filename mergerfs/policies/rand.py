"""``rand``: One qualifying branch at random. Action and search: ``eprand``."""

from mergerfs.policies import eprand
from mergerfs.policies._filter import anywhere, random_one

action, create, search = anywhere(eprand, random_one)
