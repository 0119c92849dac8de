"""Thin ctypes wrappers around the btrfs ioctls the btrfs backend needs (linux/btrfs.h).

Called directly instead of spawning `btrfs`: a snapshot is one ioctl (about 2-3 ms, bound by the
transaction commit) while starting the CLI alone costs several milliseconds more. Every function
takes open file descriptors (so callers can pin the directories they checked) and raises OSError
with the errno the kernel returned; callers translate errnos into the project's errors.

The ioctls go through libc's ioctl via ctypes, not fcntl.ioctl: fcntl.ioctl keeps the GIL for the
whole call when it is given a mutable buffer (ours are 4 KiB structures), so a snapshot's
transaction commit would stall every other thread of the agent (gRPC, other requests). A ctypes
foreign call releases the GIL. Errors are the same as fcntl.ioctl's: OSError(errno, strerror).
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# --- ioctl numbers (asm-generic _IOC encoding: dir << 30 | size << 16 | type << 8 | nr) --------
_IOC_WRITE = 1
_IOC_READ = 2
_BTRFS_IOCTL_MAGIC = 0x94


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (_BTRFS_IOCTL_MAGIC << 8) | nr


SUBVOL_NAME_MAX = 4039
PATH_NAME_MAX = 4087
INO_LOOKUP_PATH_MAX = 4080
SEARCH_ARGS_BUFSIZE = 4096 - 104

FIRST_FREE_OBJECTID = 256  # the root directory of every subvolume has this inode number
FS_TREE_OBJECTID = 5  # the top-level subvolume
ROOT_TREE_OBJECTID = 1
QUOTA_TREE_OBJECTID = 8

INODE_ITEM_KEY = 1
EXTENT_DATA_KEY = 108
ROOT_REF_KEY = 156
QGROUP_STATUS_KEY = 240
QGROUP_INFO_KEY = 242

SUBVOL_RDONLY = 1 << 1

QGROUP_STATUS_FLAG_ON = 1 << 0
QGROUP_STATUS_FLAG_RESCAN = 1 << 1
QGROUP_STATUS_FLAG_INCONSISTENT = 1 << 2
QGROUP_STATUS_FLAG_SIMPLE_MODE = 1 << 3

_U64_MAX = (1 << 64) - 1

_libc = ctypes.CDLL(None, use_errno=True)  # the C library the interpreter already links
_libc_ioctl = _libc.ioctl
_libc_ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_libc_ioctl.restype = ctypes.c_int


def _ioctl(fd: int, request: int, arg: ctypes.Structure | ctypes.c_uint64 | None = None) -> None:
    """ioctl(fd, request, &arg) with the GIL released; OSError(errno, strerror) on failure, as
    fcntl.ioctl raises (EINTR gives InterruptedError, like there)."""
    ptr = None if arg is None else ctypes.addressof(arg)
    if _libc_ioctl(fd, request, ptr) == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class _VolArgs(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int64), ("name", ctypes.c_char * (PATH_NAME_MAX + 1))]


class _VolArgsV2(ctypes.Structure):
    _fields_ = [
        ("fd", ctypes.c_int64),
        ("transid", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("unused", ctypes.c_uint64 * 4),  # union { size + qgroup_inherit pointer; unused[4] }
        ("name", ctypes.c_char * (SUBVOL_NAME_MAX + 1)),  # union { name; devid; subvolid }
    ]


class _InoLookupArgs(ctypes.Structure):
    _fields_ = [
        ("treeid", ctypes.c_uint64),
        ("objectid", ctypes.c_uint64),
        ("name", ctypes.c_char * INO_LOOKUP_PATH_MAX),
    ]


class _SearchKey(ctypes.Structure):
    _fields_ = [
        ("tree_id", ctypes.c_uint64),
        ("min_objectid", ctypes.c_uint64),
        ("max_objectid", ctypes.c_uint64),
        ("min_offset", ctypes.c_uint64),
        ("max_offset", ctypes.c_uint64),
        ("min_transid", ctypes.c_uint64),
        ("max_transid", ctypes.c_uint64),
        ("min_type", ctypes.c_uint32),
        ("max_type", ctypes.c_uint32),
        ("nr_items", ctypes.c_uint32),
        ("unused", ctypes.c_uint32),
        ("unused1", ctypes.c_uint64),
        ("unused2", ctypes.c_uint64),
        ("unused3", ctypes.c_uint64),
        ("unused4", ctypes.c_uint64),
    ]


class _SearchArgs(ctypes.Structure):
    _fields_ = [("key", _SearchKey), ("buf", ctypes.c_ubyte * SEARCH_ARGS_BUFSIZE)]


assert ctypes.sizeof(_VolArgs) == 4096
assert ctypes.sizeof(_VolArgsV2) == 4096
assert ctypes.sizeof(_InoLookupArgs) == 4096
assert ctypes.sizeof(_SearchArgs) == 4096

IOC_SNAP_CREATE_V2 = _ioc(_IOC_WRITE, 23, ctypes.sizeof(_VolArgsV2))
IOC_SUBVOL_CREATE = _ioc(_IOC_WRITE, 14, ctypes.sizeof(_VolArgs))
IOC_SNAP_DESTROY = _ioc(_IOC_WRITE, 15, ctypes.sizeof(_VolArgs))
IOC_SUBVOL_GETFLAGS = _ioc(_IOC_READ, 25, 8)
IOC_SUBVOL_SETFLAGS = _ioc(_IOC_WRITE, 26, 8)
IOC_INO_LOOKUP = _ioc(_IOC_READ | _IOC_WRITE, 18, ctypes.sizeof(_InoLookupArgs))
IOC_TREE_SEARCH = _ioc(_IOC_READ | _IOC_WRITE, 17, ctypes.sizeof(_SearchArgs))
IOC_SYNC = _ioc(0, 8, 0)

_SEARCH_HEADER = struct.Struct("<QQQII")  # transid, objectid, offset, type, len
_ROOT_REF = struct.Struct("<QQH")  # dirid, sequence, name_len (packed, name follows)
_QGROUP_INFO = struct.Struct("<QQQQQ")  # generation, rfer, rfer_cmpr, excl, excl_cmpr
_QGROUP_STATUS = struct.Struct("<QQQ")  # version, generation, flags
# struct btrfs_file_extent_item (packed): generation, ram_bytes, compression, encryption,
# other_encoding, type; then, unless the extent is inline: disk_bytenr, disk_num_bytes, offset, num_bytes
_FILE_EXTENT = struct.Struct("<QQBBHB")
_FILE_EXTENT_REG = struct.Struct("<QQQQ")
_INODE_SIZE = struct.Struct("<16xQ")  # struct btrfs_inode_item: generation, transid, size, ...
FILE_EXTENT_INLINE = 0
FILE_EXTENT_REG = 1


def _encode_name(name: str, limit: int) -> bytes:
    raw = os.fsencode(name)
    if not raw or b"/" in raw or raw in (b".", b".."):
        raise OSError(errno.EINVAL, f"invalid subvolume name {name!r}")
    if len(raw) > limit:
        raise OSError(errno.ENAMETOOLONG, f"subvolume name too long: {name!r}")
    return raw


def snapshot(src_fd: int, dest_dir_fd: int, name: str, *, readonly: bool) -> None:
    """Snapshot the subvolume open as `src_fd` to `name` inside the directory `dest_dir_fd`.

    The kernel creates the snapshot inside one transaction commit (root item, directory entry and,
    with `readonly`, the RDONLY flag together) and returns after that commit: the snapshot is
    durable on return and a crash can never expose a partial or writable one."""
    args = _VolArgsV2()
    args.fd = src_fd
    args.flags = SUBVOL_RDONLY if readonly else 0
    args.name = _encode_name(name, SUBVOL_NAME_MAX)
    _ioctl(dest_dir_fd, IOC_SNAP_CREATE_V2, args)


def create_subvolume(dest_dir_fd: int, name: str) -> None:
    args = _VolArgs()
    args.name = _encode_name(name, PATH_NAME_MAX)
    _ioctl(dest_dir_fd, IOC_SUBVOL_CREATE, args)


def destroy_subvolume(parent_dir_fd: int, name: str) -> None:
    """Delete the subvolume `name` in `parent_dir_fd` (read-only ones too, as root). Fails with
    ENOTEMPTY while it contains other subvolumes. Space is reclaimed later by the cleaner thread."""
    args = _VolArgs()
    args.name = _encode_name(name, PATH_NAME_MAX)
    _ioctl(parent_dir_fd, IOC_SNAP_DESTROY, args)


def get_flags(subvol_fd: int) -> int:
    flags = ctypes.c_uint64()
    _ioctl(subvol_fd, IOC_SUBVOL_GETFLAGS, flags)
    return int(flags.value)


def set_flags(subvol_fd: int, flags: int) -> None:
    _ioctl(subvol_fd, IOC_SUBVOL_SETFLAGS, ctypes.c_uint64(flags))


def is_readonly(subvol_fd: int) -> bool:
    return bool(get_flags(subvol_fd) & SUBVOL_RDONLY)


def sync(fd: int) -> None:
    """Commit the current transaction of the filesystem holding `fd` (and flush delalloc)."""
    _ioctl(fd, IOC_SYNC)


def ino_lookup(fd: int, treeid: int, objectid: int) -> tuple[int, str]:
    """(tree id, path of inode `objectid` relative to the root of subvolume `treeid`).

    treeid 0 means the subvolume `fd` is in. The path of a directory ends with '/', the
    subvolume root's path is ''. Needs CAP_SYS_ADMIN."""
    args = _InoLookupArgs()
    args.treeid = treeid
    args.objectid = objectid
    _ioctl(fd, IOC_INO_LOOKUP, args)
    return int(args.treeid), os.fsdecode(args.name)


def subvolume_id(fd: int) -> int:
    """The id of the subvolume the open file `fd` lives in (also a probe for "is this btrfs")."""
    return ino_lookup(fd, 0, FIRST_FREE_OBJECTID)[0]


@dataclass(frozen=True, slots=True)
class SearchItem:
    objectid: int
    type: int
    offset: int
    data: bytes


def tree_search(
    fd: int,
    tree_id: int,
    min_key: tuple[int, int, int],
    max_key: tuple[int, int, int],
    *,
    min_transid: int = 0,
    types: frozenset[int] | None = None,
) -> Iterator[SearchItem]:
    """Items of btrfs tree `tree_id` with keys (objectid, type, offset) in [min_key, max_key]
    (tree 0: the subvolume `fd` is in). `min_transid`: only from tree blocks written in that
    transaction or later (the items of such a block are all returned, old ones included; the
    other blocks are not even read). `types`: only items of these types are returned (the
    others in the range are skipped without being copied out).

    BTRFS_IOC_TREE_SEARCH (v1) returns up to a buffer of items per call; we resume after the
    last key returned, the same way btrfs-progs does. Needs CAP_SYS_ADMIN."""
    args = _SearchArgs()
    sk = args.key
    sk.tree_id = tree_id
    sk.min_objectid, sk.min_type, sk.min_offset = min_key
    sk.max_objectid, sk.max_type, sk.max_offset = max_key
    sk.min_transid = min_transid
    sk.max_transid = _U64_MAX
    while True:
        sk.nr_items = 4096
        _ioctl(fd, IOC_TREE_SEARCH, args)
        n = sk.nr_items
        if n == 0:
            return
        buf = bytes(args.buf)  # c_ubyte array: a raw copy (a c_char array would stop at NUL)
        pos = 0
        last = (0, 0, 0)
        for _ in range(n):
            _transid, objectid, offset, typ, length = _SEARCH_HEADER.unpack_from(buf, pos)
            pos += _SEARCH_HEADER.size
            if types is None or typ in types:
                yield SearchItem(objectid, typ, offset, buf[pos : pos + length])
            pos += length
            last = (objectid, typ, offset)
        # advance to the key right after the last one returned
        objectid, typ, offset = last
        if offset < _U64_MAX:
            offset += 1
        elif typ < 255:
            typ, offset = typ + 1, 0
        elif objectid < _U64_MAX:
            objectid, typ, offset = objectid + 1, 0, 0
        else:
            return
        if (objectid, typ, offset) > max_key:
            return
        sk.min_objectid, sk.min_type, sk.min_offset = objectid, typ, offset


_SIZE_AND_DATA = frozenset((INODE_ITEM_KEY, EXTENT_DATA_KEY))


@dataclass(frozen=True, slots=True)
class DataExtent:
    """File data of one extent: `length` bytes of inode `inode` from `offset` in the file."""

    inode: int
    offset: int
    length: int
    inline: bool  # kept in the metadata (a small file), not an extent on the disk of its own
    encoded: int = 0  # compressed on the disk: its compressed bytes (0: not compressed)

    @property
    def sent_encoded(self) -> bool:
        """Whether `btrfs send --compressed-data` streams it as it is on the disk, compressed:
        unless its compressed bytes are more than the part of the extent the file uses (then it
        decompresses that part)."""
        return 0 < self.encoded <= self.length

    @property
    def send_bytes(self) -> int:
        """What `btrfs send --compressed-data` streams of it."""
        return self.encoded if self.sent_encoded else self.length


def data_extents(
    fd: int, *, since: int = 0, stop: Callable[[], bool] = lambda: False
) -> Iterator[DataExtent]:
    """The file data of the subvolume `fd` is in that was written after transaction `since` (0:
    all of it), in the order of the tree (by inode, then offset in the file), which is the order
    `btrfs send` streams it in: holes and preallocated space left out, the last block of a file
    counted up to the file's end, a compressed extent by what it holds. Only tree blocks written
    after `since` are read. `stop()`, asked before each item, ends the walk."""
    inode, size = 0, _U64_MAX  # the file whose inode item came last, and its size
    for item in tree_search(
        fd,
        0,
        (FIRST_FREE_OBJECTID, INODE_ITEM_KEY, 0),
        (_U64_MAX, EXTENT_DATA_KEY, _U64_MAX),
        min_transid=since + 1,
        types=_SIZE_AND_DATA,
    ):
        if stop():
            return
        if item.type == INODE_ITEM_KEY and len(item.data) >= _INODE_SIZE.size:
            inode, (size,) = item.objectid, _INODE_SIZE.unpack_from(item.data)
            continue
        if item.type != EXTENT_DATA_KEY or len(item.data) < _FILE_EXTENT.size:
            continue
        generation, ram_bytes, compression, _enc, _other, kind = _FILE_EXTENT.unpack_from(item.data)
        if generation <= since:
            continue
        if kind == FILE_EXTENT_INLINE:
            encoded = len(item.data) - _FILE_EXTENT.size if compression else 0
            yield DataExtent(item.objectid, item.offset, ram_bytes, inline=True, encoded=encoded)
        elif kind == FILE_EXTENT_REG and len(item.data) >= _FILE_EXTENT.size + _FILE_EXTENT_REG.size:
            disk_bytenr, disk_bytes, _offset, num_bytes = _FILE_EXTENT_REG.unpack_from(
                item.data, _FILE_EXTENT.size
            )
            if disk_bytenr:  # 0: a hole
                # (an inode item from an older tree block than its extents' was not searched)
                end = size if item.objectid == inode else _U64_MAX
                length = min(num_bytes, end - item.offset)
                if length > 0:
                    encoded = disk_bytes if compression else 0
                    yield DataExtent(item.objectid, item.offset, length, inline=False, encoded=encoded)


def file_data_bytes(
    fd: int, *, since: int = 0, stop: Callable[[], bool] = lambda: False, compressed_data: bool = False
) -> int:
    """The bytes of data_extents(fd, since, stop): about what `btrfs send` streams (with `-p` of
    a snapshot taken in transaction `since`; with `--compressed-data` when `compressed_data`); it
    streams less where it can clone shared extents. A stop gives what was counted so far."""
    extents = data_extents(fd, since=since, stop=stop)
    if compressed_data:
        return sum(e.send_bytes for e in extents)
    return sum(e.length for e in extents)


@dataclass(frozen=True, slots=True)
class RootRef:
    subvol_id: int  # the child subvolume
    dirid: int  # inode (in the parent subvolume) of the directory holding it
    name: str


def child_subvolumes(fd: int, parent_id: int) -> list[RootRef]:
    """Subvolumes whose directory entry is directly inside subvolume `parent_id` (not deeper)."""
    out = []
    for item in tree_search(
        fd, ROOT_TREE_OBJECTID, (parent_id, ROOT_REF_KEY, 0), (parent_id, ROOT_REF_KEY, _U64_MAX)
    ):
        if item.type != ROOT_REF_KEY:
            continue
        dirid, _seq, name_len = _ROOT_REF.unpack_from(item.data)
        name = item.data[_ROOT_REF.size : _ROOT_REF.size + name_len]
        out.append(RootRef(item.offset, dirid, os.fsdecode(name)))
    return out


@dataclass(frozen=True, slots=True)
class QgroupState:
    flags: int
    exclusive: dict[int, int]  # level-0 qgroup (= subvolume id) -> exclusive bytes
    referenced: dict[int, int]

    @property
    def trustworthy(self) -> bool:
        """Full qgroup accounting that is on and consistent (simple quotas count ownership, not sharing)."""
        bad = QGROUP_STATUS_FLAG_RESCAN | QGROUP_STATUS_FLAG_INCONSISTENT | QGROUP_STATUS_FLAG_SIMPLE_MODE
        return bool(self.flags & QGROUP_STATUS_FLAG_ON) and not (self.flags & bad)


def qgroups(fd: int) -> QgroupState | None:
    """Qgroup numbers as of the last transaction commit, or None when quotas are not enabled."""
    excl: dict[int, int] = {}
    rfer: dict[int, int] = {}
    flags: int | None = None
    try:
        for item in tree_search(
            fd, QUOTA_TREE_OBJECTID, (0, QGROUP_STATUS_KEY, 0), (0, QGROUP_INFO_KEY, _U64_MAX)
        ):
            if item.type == QGROUP_STATUS_KEY:
                flags = _QGROUP_STATUS.unpack_from(item.data)[2]
            elif item.type == QGROUP_INFO_KEY and item.offset >> 48 == 0:
                _gen, r, _rc, e, _ec = _QGROUP_INFO.unpack_from(item.data)
                excl[item.offset] = e
                rfer[item.offset] = r
    except OSError as exc:
        if exc.errno == errno.ENOENT:  # no quota tree: quotas were never enabled or are disabled
            return None
        raise
    if flags is None:
        return None
    return QgroupState(flags, excl, rfer)
