"""``lfs``: The qualifying branch with the least available space. Action and search: ``eplfs``."""

from mergerfs.policies import eplfs
from mergerfs.policies._filter import anywhere, least_free

action, create, search = anywhere(eplfs, least_free)
