"""``all``: Every qualifying branch. Action and search: ``epall``."""

from mergerfs.policies import epall
from mergerfs.policies._filter import anywhere, every

action, create, search = anywhere(epall, every)
