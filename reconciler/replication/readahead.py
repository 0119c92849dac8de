"""Reading ahead of `btrfs send`: the file data its stream is about to carry is asked of the disk
before `btrfs send` gets there, many extents at once.

`btrfs send` reads the data it streams one extent after the other, each read waiting for the
disk before the next one is asked for; only within an extent does the kernel read ahead. An
incremental stream is mostly scattered extents of a few hundred KiB, so it spends most of its
time waiting for one read at a time: bench_replication's 1% incremental (15 extents, 8 MiB) took
77-103 ms with `btrfs send | btrfs receive` from a cold cache, and 51-57 ms with those extents
asked for ahead (POSIX_FADV_WILLNEED), the disk serving them side by side.

The extents are walked in the order `btrfs send` streams them (btrfs_ioctl.data_extents: by
inode, then offset, only what was written after the parent), and asked for at most WINDOW bytes
ahead of the stream's position (advance), so a long stream does not flood the page cache with
data that would be evicted before it is sent. It is a hint only: a file that cannot be opened,
or any error, leaves `btrfs send` to read on its own, as it would without it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

from ..backends import btrfs_ioctl as ioc

log = logging.getLogger(__name__)

WINDOW = 64 << 20  # how far ahead of the stream data is asked for, at most
PIECE = 4 << 20  # one request at most (an extent may be 128 MiB), or the window if smaller
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


class ReadAhead:
    """Asks for the file data of read-only snapshot `snapshot` written after transaction `since`
    (0: all of it), on a thread, staying within `window` bytes of the stream's position.
    `compressed_data`: the stream carries compressed extents as they are (`btrfs send
    --compressed-data`), read from the disk past the page cache, so those are left out (reading
    them ahead would only decompress them into the cache for nothing)."""

    def __init__(
        self, snapshot: Path, since: int, *, window: int = WINDOW, compressed_data: bool = False
    ) -> None:
        self._snapshot = snapshot
        self._since = since
        self._window = window
        self._compressed_data = compressed_data
        self._cond = threading.Condition()
        self._position = 0  # how far the stream has come (advance)
        self._asked = 0  # file data asked for so far
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="send-readahead", daemon=True)

    @property
    def asked(self) -> int:
        """The bytes of file data asked for so far."""
        with self._cond:
            return self._asked

    def start(self) -> ReadAhead:
        self._thread.start()
        return self

    def advance(self, position: int) -> None:
        """The stream has come `position` bytes: what lies within the window of it may be asked for."""
        with self._cond:
            if position > self._position:
                self._position = position
                self._cond.notify()

    def stop(self) -> None:
        """No more asking (the stream ended or was given up); returns once the thread is done."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread.ident is not None:
            self._thread.join()

    def _room_for(self, n: int) -> bool:
        """Wait until `n` more bytes fit in the window; False: stopped."""
        with self._cond:
            while not self._stopped and self._asked + n > self._position + self._window:
                self._cond.wait()
            return not self._stopped

    def _run(self) -> None:
        try:
            root = os.open(self._snapshot, _DIR_FLAGS)
        except OSError as exc:
            log.debug("no read-ahead for %s: %s", self._snapshot, exc)
            return
        inode, fd = 0, -1
        try:
            for extent in ioc.data_extents(root, since=self._since, stop=lambda: self._stopped):
                if extent.inline:  # in the metadata, which `btrfs send` has read already
                    continue
                if self._compressed_data and extent.sent_encoded:
                    continue  # read from the disk as it is, past the page cache
                if extent.inode != inode:
                    if fd >= 0:
                        os.close(fd)
                    inode, fd = extent.inode, _open_inode(root, extent.inode)
                if fd < 0:
                    continue
                end = extent.offset + extent.length
                piece = min(PIECE, self._window)
                for start in range(extent.offset, end, piece):
                    n = min(piece, end - start)
                    if not self._room_for(n):
                        return
                    os.posix_fadvise(fd, start, n, os.POSIX_FADV_WILLNEED)
                    with self._cond:
                        self._asked += n
        except OSError as exc:  # a hint only: `btrfs send` reads what it needs regardless
            log.debug("read-ahead for %s stopped: %s", self._snapshot, exc)
        finally:
            if fd >= 0:
                os.close(fd)
            os.close(root)


def _open_inode(root: int, inode: int) -> int:
    """File descriptor of inode `inode` of the subvolume `root` is the root of, or -1 when it
    cannot be opened (a file that has only extended references, say). The snapshot is read-only:
    the path found is the path opened."""
    with contextlib.suppress(OSError):
        _tree, path = ioc.ino_lookup(root, 0, inode)
        return os.open(path.rstrip("/"), _FILE_FLAGS, dir_fd=root)
    return -1
