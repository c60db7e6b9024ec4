"""``erofs``: always fails with EROFS (a pool that refuses the function)."""

import errno

from mergerfs.errors import oserror


def _refuse(branches, relpath, probe):
    raise oserror(errno.EROFS)


action = create = search = _refuse
