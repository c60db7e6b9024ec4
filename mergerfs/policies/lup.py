"""``lup``: The qualifying branch with the least used percentage. Action and search: ``eplup``."""

from mergerfs.policies import eplup
from mergerfs.policies._filter import anywhere, least_used_pct

action, create, search = anywhere(eplup, least_used_pct)
