"""``python -m mergerfs``: same as the ``mergerfs`` console script."""

import sys

from mergerfs.cli import main

if __name__ == "__main__":
    sys.exit(main())
