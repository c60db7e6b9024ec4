"""``ff``: The first qualifying branch in order. Action and search: ``epff``."""

from mergerfs.policies import epff
from mergerfs.policies._filter import anywhere, first

action, create, search = anywhere(epff, first)
