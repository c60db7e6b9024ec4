"""``mfs``: The qualifying branch with the most available space. Action and search: ``epmfs``."""

from mergerfs.policies import epmfs
from mergerfs.policies._filter import anywhere, most_free

action, create, search = anywhere(epmfs, most_free)
