"""Reading ahead of `btrfs send` (replication.readahead), on a real btrfs (root only): what it asks
the disk for is in the page cache afterwards, and nothing else is."""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
import random
import subprocess
import threading
import time
from pathlib import Path

import pytest

from reconciler.backends.btrfs import BtrfsBackend
from reconciler.replication import btrfs as btrfs_repl
from reconciler.replication.btrfs import subvol_info
from reconciler.replication.readahead import ReadAhead
from tests.helpers import wait_for

pytestmark = [pytest.mark.root, pytest.mark.btrfs]

KiB, MiB = 1 << 10, 1 << 20


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
_MAP_FAILED = ctypes.c_void_p(-1).value


def _cached(path: Path, offset: int, length: int) -> bool:
    """Whether all of [offset, offset+length) of `path` is in the page cache (mincore of a mapping
    that is never touched: looking does not read anything in, as a read would)."""
    page = mmap.PAGESIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, offset)
        if addr == _MAP_FAILED:
            raise OSError(ctypes.get_errno(), "mmap")
        try:
            vec = ctypes.create_string_buffer((length + page - 1) // page)
            if _libc.mincore(addr, length, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore")
            return all(b & 1 for b in vec.raw)
        finally:
            _libc.munmap(addr, length)
    finally:
        os.close(fd)


def _evict(snapshot: Path) -> None:
    """Drop the snapshot's file data from the page cache (it is clean: read-only and synced)."""
    _run("sync")
    for path in snapshot.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


@pytest.fixture
def snapshots(btrfs_dir: Path) -> tuple[Path, Path]:
    """s1: a 16 MiB file; s2: the same after 512 KiB at 2 MiB and at 10 MiB were rewritten in
    place and a 256 KiB file was added."""
    rng = random.Random(7)
    vol = btrfs_dir / "vol"
    _run("btrfs", "subvolume", "create", str(vol))
    (vol / "big.bin").write_bytes(rng.randbytes(16 * MiB))
    _run("btrfs", "subvolume", "snapshot", "-r", str(vol), str(btrfs_dir / "s1"))
    with open(vol / "big.bin", "r+b") as fh:
        for at in (2 * MiB, 10 * MiB):
            fh.seek(at)
            fh.write(rng.randbytes(512 * KiB))
    (vol / "new.bin").write_bytes(rng.randbytes(256 * KiB))
    _run("btrfs", "subvolume", "snapshot", "-r", str(vol), str(btrfs_dir / "s2"))
    return btrfs_dir / "s1", btrfs_dir / "s2"


def test_it_reads_what_changed_since_the_parent_and_nothing_else(snapshots: tuple[Path, Path]) -> None:
    s1, s2 = snapshots
    _evict(s2)
    assert not _cached(s2 / "big.bin", 2 * MiB, 512 * KiB)
    ahead = ReadAhead(s2, subvol_info(s1).generation).start()
    try:
        wait_for(lambda: ahead.asked == 1 * MiB + 256 * KiB, what="the changed data asked for")
    finally:
        ahead.stop()
    for path, offset, length in (
        (s2 / "big.bin", 2 * MiB, 512 * KiB),
        (s2 / "big.bin", 10 * MiB, 512 * KiB),
        (s2 / "new.bin", 0, 256 * KiB),
    ):
        wait_for(functools.partial(_cached, path, offset, length), what=f"{path.name} at {offset} read")
    # the data that did not change is left to `btrfs send` (which does not send it); looked at
    # away from what was read, which the page cache may round out to a large folio
    assert not _cached(s2 / "big.bin", 6 * MiB, 512 * KiB)
    assert not _cached(s2 / "big.bin", 14 * MiB, 512 * KiB)


def _settled_within(ahead: ReadAhead, limit: int) -> int:
    """Wait until `ahead` has asked for all it may with the stream at `limit` - window: up to the
    limit, and not a piece (at most the 1 MiB window) short of it, wherever the extents split."""
    wait_for(lambda: limit - MiB < ahead.asked <= limit, what=f"asked for up to {limit}")
    asked = ahead.asked
    time.sleep(0.2)
    assert ahead.asked == asked  # and waits there for the stream
    return asked


def test_it_stays_within_its_window_of_the_stream_and_stops_while_waiting(
    snapshots: tuple[Path, Path],
) -> None:
    _s1, s2 = snapshots
    _evict(s2)
    ahead = ReadAhead(s2, 0, window=1 * MiB).start()
    try:
        _settled_within(ahead, 1 * MiB)
        assert not _cached(s2 / "big.bin", 8 * MiB, 4 * KiB)
        ahead.advance(3 * MiB)
        asked = _settled_within(ahead, 4 * MiB)
        wait_for(lambda: _cached(s2 / "big.bin", 0, asked), what="what was asked for read")
        assert not _cached(s2 / "big.bin", 8 * MiB, 4 * KiB)
    finally:
        t0 = time.monotonic()
        ahead.stop()  # while it waits for room
        assert time.monotonic() - t0 < 1.0
    assert ahead.asked == asked


def _asked(ahead: ReadAhead, n: int) -> bool:
    return ahead.asked == n


def test_a_send_reads_ahead_of_its_stream_from_the_parent_generation_on(btrfs_dir: Path) -> None:
    """start_send starts the read-ahead with the send: of what changed since the parent for an
    incremental stream, of everything for a full one."""
    rng = random.Random(9)
    _run("btrfs", "subvolume", "create", str(btrfs_dir / "vm1"))
    (btrfs_dir / "vm1" / "disk.img").write_bytes(rng.randbytes(2 * MiB))
    backend = BtrfsBackend(pool="main", root=btrfs_dir)
    try:
        backend.snapshot(set_id="r-1", volume="vm1")
        with open(btrfs_dir / "vm1" / "disk.img", "r+b") as fh:
            fh.write(rng.randbytes(256 * KiB))
        backend.snapshot(set_id="r-2", volume="vm1")
        for set_id, parent, expected in (("r-2", "r-1", 256 * KiB), ("r-1", "", 2 * MiB)):
            sending = btrfs_repl.start_send(backend, set_id=set_id, volume="vm1", parent_set_id=parent)
            try:
                assert sending.read_ahead is not None
                wait_for(
                    functools.partial(_asked, sending.read_ahead, expected),
                    what=f"{expected} bytes asked for",
                )
            finally:
                sending.stop()
    finally:
        backend.close()


def test_compressed_extents_sent_as_they_are_are_not_read_ahead(btrfs_dir: Path) -> None:
    """`btrfs send --compressed-data` reads compressed extents from the disk as they are, past
    the page cache: reading them ahead would decompress them into the cache for nothing."""
    vol = btrfs_dir / "vol"
    _run("btrfs", "subvolume", "create", str(vol))
    _run("btrfs", "property", "set", str(vol), "compression", "zstd")
    (vol / "zeros-and-text.txt").write_bytes(b"compressible line\n" * (4 * MiB // 18))
    (vol / "random.bin").write_bytes(random.Random(3).randbytes(1 * MiB))  # stored as it is
    _run("btrfs", "subvolume", "snapshot", "-r", str(vol), str(btrfs_dir / "s1"))
    text = (4 * MiB // 18) * 18
    for compressed_data, expected in ((True, 1 * MiB), (False, 1 * MiB + text)):
        ahead = ReadAhead(btrfs_dir / "s1", 0, compressed_data=compressed_data).start()
        try:
            wait_for(functools.partial(_asked, ahead, expected), what=f"{expected} bytes asked for")
        finally:
            ahead.stop()


def test_a_snapshot_it_cannot_read_leaves_the_send_to_read_on_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hint only: a snapshot that is gone (or no btrfs, or no privilege for the tree search)
    ends the read-ahead quietly, and stop() still returns."""
    escaped: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: escaped.append(args.exc_value))
    gone = ReadAhead(tmp_path / "gone", 0).start()
    plain_dir = ReadAhead(tmp_path, 0).start()  # not a btrfs subvolume: the tree search fails
    for ahead in (gone, plain_dir):
        ahead.advance(1 << 30)
        ahead.stop()
        assert ahead.asked == 0
    assert escaped == []
