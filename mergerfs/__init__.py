"""mergerfs: a union filesystem that pools many branches into one tree.

Python re-implementation of mergerfs (drop-in for 2.33.5) on llfuse, with the
data path in the compiled ``mergerfs._fastpath`` extension.
"""

__version__ = "1.0.0"
#: The reference release whose command line and behaviour we are compatible with.
COMPAT_VERSION = "2.33.5"
