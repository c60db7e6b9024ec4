"""``lus``: The qualifying branch with the least used space. Action and search: ``eplus``."""

from mergerfs.policies import eplus
from mergerfs.policies._filter import anywhere, least_used

action, create, search = anywhere(eplus, least_used)
