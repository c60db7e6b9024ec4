from collections.abc import Callable, Iterable, Sequence

from typing_extensions import Self, disjoint_base

from mergerfs._nodes import NodeTable

ACT_CHMOD: int
ACT_CHOWN: int
ACT_UTIMENS: int
ACT_UNLINK: int
ACT_RMDIR: int
ACT_RENAME: int
DIR_FH_BIT: int
PICK_FIRST: int
PICK_MOST_FREE: int
PICK_LEAST_FREE: int
PICK_LEAST_USED: int
PICK_LEAST_USED_PCT: int
PICK_WEIGHTED: int
PICK_RANDOM: int
PICK_EP: int

@disjoint_base
class Session:
    devfd: int
    bufsize: int
    slow: Callable[[bytes], bytes | None]
    inval: Callable[[int], None]
    busy_poll_ns: int
    trace: bool
    table: NodeTable
    def __new__(cls, devfd: int, table: NodeTable) -> Self: ...
    def set_fast(
        self,
        branches: Sequence[bytes] | None,
        readonly: Sequence[bool] = (),
        calc: int = 0,
        entry: int = 0,
        attr: int = 0,
        negative: int = 0,
        actions: int = 0,
        getxattr: bool = False,
        capability: bool = False,
        posix_acl: bool = False,
        creds_fixed: bool = False,
        pid_bound: bool = False,
        root_devs: Sequence[int] | None = None,
        readdir: bool = False,
        dir_flags: int = 0,
        opens: tuple[int, int, int, bool, bool] | None = None,
        creatable: Sequence[bool] = (),
        minfree: Sequence[int] = (),
        create: int = 0,
        mkdir: int = 0,
    ) -> None: ...
    def configure(self, max_write: int, minor: int) -> None: ...
    def counts(self) -> dict[int, tuple[int, int]]: ...
    def passthrough(self, modes: Iterable[int] | None) -> None: ...
    def add(self, pyfh: int, fd: int, nodeid: int, flags: int, open_flags: int) -> bytes: ...
    def pyfh(self, fh: int) -> int: ...
    def remove(self, fh: int) -> int: ...
    def add_c(self, fd: int, nodeid: int, root: bytes, flags: int, open_flags: int) -> tuple[int, bytes]: ...
    def claim(self, fh: int) -> tuple[int, int, bytes, int] | None: ...
    def adopted(self, fh: int, pyfh: int) -> None: ...
    def c_fhs(self, nodeid: int | None = None, root: bytes | None = None) -> list[int]: ...
    def serve(self, fd: int, poller: bool = False) -> None: ...

def dir_request(s: Session, opcode: int, body: bytes, uid: int, gid: int) -> bytes: ...
def dir_attr(s: Session, opcode: int, nodeid: int, body: bytes, attr_valid: int) -> bytes | None: ...
def choose(pick: int, spaces: Sequence[tuple[int, int, int]], r: float = 0.0) -> int: ...
def clone_fd(devfd: int) -> int: ...
def mount(source: str, target: str, fstype: str, flags: int, data: str) -> None: ...
def umount_lazy(target: str) -> None: ...
def pack_dirents(entries: list[tuple[bytes, int, int]], off: int, size: int) -> bytes: ...
def entry_out(nodeid: int, st: object, entry_valid: int, attr_valid: int) -> bytes: ...
def attr_out(nodeid: int, st: object, attr_valid: int) -> bytes: ...
