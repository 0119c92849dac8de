"""Chunkstore: a content-addressed, deduplicating, compressing snapshot store in a directory.

Layout under <root>/.reconciler/:

    chunkstore/FORMAT                               format marker
    chunkstore/lock                                 flock: one backend instance per store
    chunkstore/packs/<2 hex>/<32 hex>.pack          chunk payloads + their own table (chunkstore_packs)
    chunkstore/snapshots/<set_id>/<volume>.manifest one per snapshot, '/' in volume as '%2F'
    staging/                                        unsealed packs and manifest temp files (wiped by open)

Chunks are named by the BLAKE3 of their raw content. Files up to `block_size` are one chunk;
larger files are cut into fixed `block_size` blocks, which is what keeps an in-place change in a
disk image to a few new chunks. All-zero blocks (and holes found with SEEK_DATA) are stored as a
marker and restored as holes. A snapshot is visible once its manifest is renamed into place,
which happens only after every pack it needs is fsynced, renamed and its directory fsynced.

Unchanged files are not read: the previous manifest of the volume is the stat cache (size,
mtime, ctime, inode). Deleting a snapshot removes its manifest; `collect_garbage` then deletes
packs nobody references and rewrites packs whose live share fell below `gc_min_live_ratio`.
Snapshots, restores and drops run concurrently (a shared lock); GC runs alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import logging
import os
import shutil
import stat
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

import blake3
import zstandard

from ..domain import SET_ID_RE, valid_volume_name
from ..errors import (
    AlreadyExists,
    CorruptData,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PathEscapes,
    PermissionDenied,
    ReconcilerError,
    StorageFull,
)
from ..fsutil import fsync_dir, rename_noreplace
from . import chunkstore_packs as packs
from .base import Backend, FileEntry, GcResult, ProgressEvent, ProgressFn, StoredSnapshot, no_progress
from .chunkstore_manifest import (
    DIR,
    FILE,
    SYMLINK,
    ZERO_BLOCK,
    CorruptManifest,
    Entry,
    Manifest,
    decode,
    encode,
)
from .chunkstore_packs import FLAG_ZSTD, ChunkIndex, ChunkLoc, CorruptPack, PackWriter

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_R = TypeVar("_R")

KiB = 1 << 10
MiB = 1 << 20
FORMAT_MARKER = b"reconciler-chunkstore 1\n"
# Measured on bench/datasets.py (1 GB, 1% in-place change in 64 KiB-1 MiB runs): CPU is the same
# from 128 KiB to 1 MiB; stored growth per changed byte is 1.20x/1.32x/1.60x/2.00x for
# 128K/256K/512K/1M while the first snapshot grows by 3.6%/2%/0/-1.2%. 256 KiB balances the two
# (and the index: one entry per 256 KiB of unique data).
DEFAULT_BLOCK_SIZE = 256 * KiB
DEFAULT_PACK_SIZE = 32 * MiB
# Compressed output must save at least this share, otherwise the chunk is stored raw (cheaper to read).
MIN_SAVING = 0.03
# Bytes read ahead of the hashing/compression workers per snapshot run (bounds memory).
READ_AHEAD_BYTES = 24 * MiB
READ_AHEAD_CHUNKS = 64
# A file whose ctime is this close to the start of the snapshot that read it may have changed
# again within the same timestamp tick; the stat cache does not trust it ("racy clean" in git).
RACY_MARGIN_NS = 20_000_000
COARSE_RACY_MARGIN_NS = 2_000_000_000  # filesystems with whole-second timestamps
PROGRESS_EVERY_BYTES = 64 * MiB
WRITEBACK_EVERY_BYTES = 32 * MiB


def _open_source(path: str) -> int:
    """Open a live file for reading. O_NONBLOCK: a file swapped for a FIFO after the walk must not
    hang the snapshot; O_NOFOLLOW: nor may a swapped-in symlink lead out of the volume."""
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)


class _Codec(threading.local):
    """zstd contexts are not thread-safe: one pair per worker thread."""

    def __init__(self, level: int) -> None:
        self.cctx = zstandard.ZstdCompressor(level=level, write_checksum=False)
        self.dctx = zstandard.ZstdDecompressor()


class _RWLock:
    """Snapshots, restores and drops share the store; GC needs it alone (it moves chunks).
    Writers are preferred so a stream of snapshots cannot starve GC forever."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


@dataclass(frozen=True, slots=True)
class _Options:
    compression: str
    level: int
    block_size: int
    pack_size: int
    workers: int
    gc_min_live_ratio: float


def _parse_options(pool: str, options: Mapping[str, object]) -> _Options:
    known = {"compression", "compression_level", "block_size", "pack_size", "workers", "gc_min_live_ratio"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InvalidArgument(
            f"pool {pool}: unknown chunkstore option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )

    def integer(name: str, default: int, lo: int, hi: int) -> int:
        value = options.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise InvalidArgument(
                f"pool {pool}: option {name} must be an integer in {lo}..{hi}, got {value!r}"
            )
        return value

    compression = options.get("compression", "zstd")
    if compression not in ("zstd", "none"):
        raise InvalidArgument(
            f"pool {pool}: option compression must be 'zstd' or 'none', got {compression!r}"
        )
    block_size = integer("block_size", DEFAULT_BLOCK_SIZE, 64 * KiB, 16 * MiB)
    if block_size & (block_size - 1):
        raise InvalidArgument(f"pool {pool}: option block_size must be a power of two, got {block_size}")
    ratio = options.get("gc_min_live_ratio", 0.5)
    if not isinstance(ratio, int | float) or isinstance(ratio, bool) or not 0.0 <= ratio <= 1.0:
        raise InvalidArgument(
            f"pool {pool}: option gc_min_live_ratio must be a number in 0..1, got {ratio!r}"
        )
    return _Options(
        compression=str(compression),
        level=integer("compression_level", 3, -7, 22),
        block_size=block_size,
        pack_size=integer("pack_size", DEFAULT_PACK_SIZE, 64 * KiB, 1024 * MiB),
        workers=integer("workers", 2, 1, 32),
        gc_min_live_ratio=float(ratio),
    )


def _volume_file(volume: str) -> str:
    return volume.replace("/", "%2F") + ".manifest"


def _clean_rel(path: str, *, what: str) -> str:
    """A snapshot-relative path in canonical form; refuses anything that could leave the tree."""
    if path.startswith("/") or "\0" in path:
        raise PathEscapes(f"{what} {path!r} must be relative to the volume root")
    segs = [s for s in path.split("/") if s not in ("", ".")]
    if ".." in segs:
        raise PathEscapes(f"{what} {path!r} contains '..'")
    return "/".join(segs)


def _under(path: str, prefix: str) -> bool:
    return not prefix or path == prefix or path.startswith(prefix + "/")


def _is_zero(data: bytes, zero_block: bytes) -> bool:
    # the cheap end-byte test rejects almost all data before any full comparison
    if not data or data[0] or data[-1]:
        return False
    return data == zero_block if len(data) == len(zero_block) else data.count(0) == len(data)


def _data_extents(fd: int, size: int) -> list[tuple[int, int]] | None:
    """Data regions of a sparse file (None: the filesystem cannot tell, read everything)."""
    out: list[tuple[int, int]] = []
    off = 0
    try:
        while off < size:
            start = os.lseek(fd, off, os.SEEK_DATA)
            end = os.lseek(fd, start, os.SEEK_HOLE)
            out.append((start, end))
            off = end
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # ENXIO: no data after `off`
            return None
    return out


@dataclass(slots=True)
class _Prepared:
    digest: bytes | None  # None: all-zero block
    payload: bytes | None  # None: already stored, nothing to write
    flags: int
    raw_len: int


@dataclass(slots=True)
class _Walked:
    entry: Entry
    abspath: str
    dev: int
    ino: int


class ChunkstoreBackend(Backend):
    """Options: compression ('zstd'|'none', default zstd), compression_level (default 3),
    block_size (bytes, power of two, default 256 KiB), pack_size (default 32 MiB), workers
    (hash/compress threads, default 2), gc_min_live_ratio (rewrite packs below this, default 0.5)."""

    kind: ClassVar[str] = "chunkstore"

    def __init__(self, *, pool: str, root: Path, options: Mapping[str, object] | None = None) -> None:
        super().__init__(pool=pool, root=root, options=options)
        self._opts = _parse_options(pool, self.options)
        self.store_dir = self.meta_dir / "chunkstore"
        self.packs_dir = self.store_dir / "packs"
        self.snapshots_dir = self.store_dir / "snapshots"
        self._index = ChunkIndex()
        self._rw = _RWLock()
        self._meta_lock = threading.Lock()
        self._codec = _Codec(self._opts.level)
        self._pool: ThreadPoolExecutor | None = None
        self._lock_fd: int | None = None
        self._bad_packs: dict[str, str] = {}
        # volume -> (commit time, set_id) of its newest snapshot: the stat cache's reference
        self._latest: dict[str, tuple[int, str]] = {}
        self._table_cache: dict[Path, tuple[tuple[int, int], frozenset[bytes]]] = {}

    # --- lifecycle -------------------------------------------------------------------------
    def open(self, known: set[tuple[str, str]]) -> None:
        self.close()
        try:
            for d in (self.meta_dir, self.staging_dir, self.store_dir, self.packs_dir, self.snapshots_dir):
                d.mkdir(exist_ok=True)
            marker = self.store_dir / "FORMAT"
            if not marker.exists():
                marker.write_bytes(FORMAT_MARKER)
            elif marker.read_bytes() != FORMAT_MARKER:
                raise FailedPrecondition(
                    f"pool {self.pool}: {self.store_dir} holds an unsupported chunkstore format"
                )
            self._take_lock()
            self._clean_staging()
            self._drop_unknown(known)
            self._load_index()
            self._load_latest()
        except OSError as exc:
            self.close()
            raise self._store_error(exc, "opening the store") from exc
        except BaseException:
            self.close()
            raise
        self._pool = ThreadPoolExecutor(
            max_workers=self._opts.workers, thread_name_prefix=f"chunkstore-{self.pool}"
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _take_lock(self) -> None:
        fd = os.open(self.store_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FailedPrecondition(
                f"pool {self.pool}: the chunkstore at {self.store_dir} is open in another process or backend instance"
            ) from None
        self._lock_fd = fd

    def _clean_staging(self) -> None:
        # Everything in staging belongs to an operation that did not finish: unsealed packs,
        # manifest temp files, half-written restore trees.
        for child in self.staging_dir.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()

    def _drop_unknown(self, known: set[tuple[str, str]]) -> None:
        for set_dir in list(self.snapshots_dir.iterdir()):
            if not set_dir.is_dir():
                continue
            for f in list(set_dir.iterdir()):
                key = self._key_of(set_dir.name, f.name)
                if key is None or key not in known:
                    log.info("pool %s: removing snapshot data %s not in the catalog", self.pool, f)
                    f.unlink()
            self._rmdir_if_empty(set_dir)
        fsync_dir(self.snapshots_dir)

    def _load_index(self) -> None:
        self._index = ChunkIndex()
        self._bad_packs = {}
        for sub in sorted(self.packs_dir.iterdir()):
            if not sub.is_dir():
                continue
            for p in sorted(sub.iterdir()):
                if p.suffix != ".pack" or not p.is_file():
                    log.warning("pool %s: ignoring %s in the pack directory", self.pool, p)
                    continue
                try:
                    size, entries = packs.read_pack_table(p)
                except CorruptPack as exc:
                    self._bad_packs[p.stem] = str(exc)
                    log.error("pool %s: %s", self.pool, exc)
                    continue
                self._index.add_pack(p.stem, size, entries)

    def _load_latest(self) -> None:
        latest: dict[str, tuple[int, str]] = {}
        for set_id, volume in self.stored_keys():
            try:
                mtime = self._manifest_path(set_id, volume).stat().st_mtime_ns
            except FileNotFoundError:
                continue
            if volume not in latest or latest[volume] < (mtime, set_id):
                latest[volume] = (mtime, set_id)
        with self._meta_lock:
            self._latest = latest

    def _check_open(self) -> ThreadPoolExecutor:
        if self._pool is None:
            raise FailedPrecondition(f"pool {self.pool}: chunkstore backend used before open()")
        return self._pool

    # --- names -----------------------------------------------------------------------------
    def _check_key(self, set_id: str, volume: str) -> None:
        if not SET_ID_RE.match(set_id):
            raise InvalidArgument(f"pool {self.pool}: invalid set id {set_id!r}")
        if not valid_volume_name(volume):
            raise PathEscapes(
                f"pool {self.pool}: volume name {volume!r} is not a pool-relative path of safe segments"
            )

    def _manifest_path(self, set_id: str, volume: str) -> Path:
        return self.snapshots_dir / set_id / _volume_file(volume)

    @staticmethod
    def _key_of(set_name: str, file_name: str) -> tuple[str, str] | None:
        if not file_name.endswith(".manifest") or file_name.startswith("."):
            return None
        volume = file_name[: -len(".manifest")].replace("%2F", "/")
        if not SET_ID_RE.match(set_name) or not valid_volume_name(volume):
            return None
        return (set_name, volume)

    def _rmdir_if_empty(self, d: Path) -> None:
        try:
            d.rmdir()
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                raise

    def _store_error(self, exc: OSError, doing: str) -> ReconcilerError:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StorageFull(
                f"pool {self.pool}: no space left on the chunkstore ({self.store_dir}) while {doing}"
            )
        return ReconcilerError(f"pool {self.pool}: chunkstore I/O error while {doing}: {exc}")

    # --- manifests -----------------------------------------------------------------------------
    def _read_manifest(self, set_id: str, volume: str, *, with_entries: bool = True) -> Manifest:
        path = self._manifest_path(set_id, volume)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"pool {self.pool}: no stored snapshot {set_id} of volume {volume!r}") from None
        try:
            return decode(data, with_entries=with_entries)
        except CorruptManifest as exc:
            raise CorruptData(
                f"pool {self.pool}: manifest of snapshot {set_id} of volume {volume!r} ({path}): {exc}"
            ) from None

    def _chunk_set(self, set_id: str, volume: str) -> frozenset[bytes]:
        """The digests a snapshot references, cached by manifest identity (they never change)."""
        path = self._manifest_path(set_id, volume)
        st = path.stat()
        ident = (st.st_mtime_ns, st.st_size)
        with self._meta_lock:
            hit = self._table_cache.get(path)
        if hit is not None and hit[0] == ident:
            return hit[1]
        chunks = frozenset(self._read_manifest(set_id, volume, with_entries=False).table)
        with self._meta_lock:
            self._table_cache[path] = (ident, chunks)
        return chunks

    def stored_keys(self) -> set[tuple[str, str]]:
        keys = set()
        for set_dir in self.snapshots_dir.iterdir():
            if not set_dir.is_dir():
                continue
            for f in set_dir.iterdir():
                key = self._key_of(set_dir.name, f.name)
                if key is not None:
                    keys.add(key)
        return keys

    # --- snapshot -----------------------------------------------------------------------------
    def snapshot(self, *, set_id: str, volume: str, progress: ProgressFn = no_progress) -> StoredSnapshot:
        pool = self._check_open()
        self._check_key(set_id, volume)
        src = self.volume_path(volume)
        if self._manifest_path(set_id, volume).exists():
            raise AlreadyExists(f"pool {self.pool}: snapshot {set_id} of volume {volume!r} is already stored")
        with self._rw.shared():
            run = _SnapshotRun(self, pool, set_id=set_id, volume=volume, src=src, progress=progress)
            try:
                manifest = run.run()
            except OSError as exc:
                run.abort()
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise StorageFull(
                        f"pool {self.pool}: no space left on the chunkstore ({self.store_dir}) while storing snapshot "
                        f"{set_id} of volume {volume!r}; nothing of it was kept and existing snapshots are intact"
                    ) from exc
                raise ReconcilerError(
                    f"pool {self.pool}: snapshot {set_id} of volume {volume!r} failed: {exc}; nothing of it was kept"
                ) from exc
            except BaseException:
                run.abort()
                raise
        with self._meta_lock:
            cur = self._latest.get(volume)
            if cur is None or cur < (manifest.committed_ns, set_id):
                self._latest[volume] = (manifest.committed_ns, set_id)
        return StoredSnapshot(logical_bytes=manifest.logical_bytes)

    def _commit_manifest(self, m: Manifest) -> None:
        """Write the manifest durably in staging, then rename it into place: the visibility point."""
        final = self._manifest_path(m.set_id, m.volume)
        tmp = self.staging_dir / f"cs-manifest-{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
        data = encode(m)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                packs.write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            set_dir = final.parent
            if not set_dir.exists():
                set_dir.mkdir(exist_ok=True)
                fsync_dir(self.snapshots_dir)
            try:
                rename_noreplace(tmp, final)
            except FailedPrecondition:
                raise AlreadyExists(
                    f"pool {self.pool}: snapshot {m.set_id} of volume {m.volume!r} is already stored"
                ) from None
        finally:
            tmp.unlink(missing_ok=True)

    def _previous(self, volume: str) -> Manifest | None:
        with self._meta_lock:
            latest = self._latest.get(volume)
        if latest is None:
            return None
        try:
            return self._read_manifest(latest[1], volume)
        except (NotFound, CorruptData) as exc:
            log.warning("pool %s: no stat cache for volume %r: %s", self.pool, volume, exc)
            return None

    # --- drop / listing -------------------------------------------------------------------------
    def drop(self, *, set_id: str, volume: str) -> None:
        self._check_key(set_id, volume)
        path = self._manifest_path(set_id, volume)
        with self._rw.shared():
            try:
                path.unlink()
            except FileNotFoundError:
                return
            fsync_dir(path.parent)
            self._rmdir_if_empty(path.parent)
            with self._meta_lock:
                self._table_cache.pop(path, None)
                if self._latest.get(volume, (0, ""))[1] == set_id:
                    del self._latest[volume]
                    # the next-newest snapshot of the volume becomes the stat cache reference
                    for s, v in self.stored_keys():
                        if v == volume:
                            try:
                                mtime = self._manifest_path(s, v).stat().st_mtime_ns
                            except FileNotFoundError:
                                continue
                            if volume not in self._latest or self._latest[volume] < (mtime, s):
                                self._latest[volume] = (mtime, s)

    def list_files(self, *, set_id: str, volume: str, prefix: str = "") -> Iterator[FileEntry]:
        self._check_key(set_id, volume)
        prefix = _clean_rel(prefix, what="prefix")
        m = self._read_manifest(set_id, volume)
        for e in m.entries:
            if e.path and _under(e.path, prefix):
                yield FileEntry(path=e.path, kind=e.kind, size=e.size, mode=e.mode, mtime=e.mtime_ns / 1e9)

    # --- restore --------------------------------------------------------------------------------
    def materialize(
        self,
        *,
        set_id: str,
        volume: str,
        dest: Path,
        paths: Sequence[str] | None = None,
        progress: ProgressFn = no_progress,
    ) -> int:
        pool = self._check_open()
        self._check_key(set_id, volume)
        wanted = None if paths is None else [_clean_rel(p, what="restore path") for p in paths]
        m = self._read_manifest(set_id, volume)
        entries = self._select(m, wanted, set_id=set_id, volume=volume)
        self._check_space(m, entries, dest, set_id=set_id, volume=volume)
        try:
            os.mkdir(dest, 0o700)
        except FileExistsError:
            raise AlreadyExists(f"pool {self.pool}: restore destination {dest} already exists") from None
        except FileNotFoundError:
            raise NotFound(
                f"pool {self.pool}: parent directory of restore destination {dest} does not exist"
            ) from None
        try:
            with self._rw.shared(), _PackReader(self) as reader:
                return _Restore(self, pool, reader, m, dest, progress).run(entries)
        except BaseException as exc:
            shutil.rmtree(dest, ignore_errors=True)
            if isinstance(exc, OSError):
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise StorageFull(
                        f"pool {self.pool}: no space left while restoring snapshot {set_id} of volume {volume!r} into {dest}"
                    ) from exc
                raise ReconcilerError(
                    f"pool {self.pool}: restoring snapshot {set_id} of volume {volume!r} into {dest} failed: {exc}"
                ) from exc
            raise

    def _check_space(
        self, m: Manifest, entries: list[Entry], dest: Path, *, set_id: str, volume: str
    ) -> None:
        """Refuse a restore that cannot fit before writing anything: the blocks it writes (holes
        stay holes), each rounded up to the filesystem's block, against the space free there."""
        try:
            st = os.statvfs(dest.parent)
        except FileNotFoundError:
            return  # materialize names the missing parent
        frag = st.f_frsize or 4096
        free = (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * frag
        bs = m.block_size
        need = 0
        for e in entries:
            need += frag  # its inode's directory entry / a directory block, roughly
            if e.kind != FILE:
                continue
            for i, c in enumerate(e.chunks):
                if c != ZERO_BLOCK:
                    n = min(bs, e.size - i * bs)
                    need += -(-n // frag) * frag
        if need > free:
            raise StorageFull(
                f"pool {self.pool}: no space to restore snapshot {set_id} of volume {volume!r}: it needs about "
                f"{_human(need)}, {_human(free)} are free on {dest.parent}; nothing was written"
            )

    def _select(self, m: Manifest, wanted: list[str] | None, *, set_id: str, volume: str) -> list[Entry]:
        if wanted is None or "" in wanted:
            return m.entries
        by_path = {e.path: e for e in m.entries}
        keep: set[str] = set()
        for w in wanted:
            if w not in by_path:
                raise NotFound(f"pool {self.pool}: {w!r} is not in snapshot {set_id} of volume {volume!r}")
            parts = w.split("/")
            keep.update("/".join(parts[:i]) for i in range(len(parts)))  # ancestors, so the tree exists
        return [e for e in m.entries if e.path in keep or any(_under(e.path, w) for w in wanted)]

    # --- verify / gc / accounting ------------------------------------------------------------
    def verify(self, keys: Iterable[tuple[str, str]] | None, progress: ProgressFn = no_progress) -> list[str]:
        pool = self._check_open()
        problems = [f"pool {self.pool}: {msg}" for msg in self._bad_packs.values()]
        with self._rw.shared():
            stored = self.stored_keys()
            selected = sorted(stored if keys is None else set(keys))
            wanted: set[bytes] = set()
            for set_id, volume in selected:
                if (set_id, volume) not in stored:
                    problems.append(
                        f"pool {self.pool}: snapshot {set_id} of volume {volume!r}: no stored data"
                    )
                    continue
                try:
                    wanted.update(self._read_manifest(set_id, volume).table)
                except CorruptData as exc:
                    problems.append(str(exc))
            bad: dict[bytes, str] = {}
            todo: list[tuple[bytes, ChunkLoc]] = []
            for d in wanted:
                loc = self._index.get(d)
                if loc is None:
                    bad[d] = "missing from the store"
                else:
                    todo.append((d, loc))
            todo.sort(key=lambda t: (t[1].pack, t[1].offset))
            with _PackReader(self) as reader:
                done = 0
                for d, err in _windowed(pool, todo, lambda t: reader.check(*t), window=16):
                    done += 1
                    if err:
                        bad[d] = err
                    if done % 256 == 0:
                        progress(ProgressEvent("verify", done, len(todo), "chunks"))
            progress(ProgressEvent("verify", len(todo), len(todo), "chunks"))
            if bad:
                refs = self._references(set(bad), stored)
                for d in sorted(bad):
                    loc = self._index.get(d)
                    where = f" (pack {loc.pack}, offset {loc.offset})" if loc else ""
                    users = ", ".join(refs.get(d, [])) or "no snapshot"
                    problems.append(
                        f"pool {self.pool}: chunk {d.hex()}{where}: {bad[d]}; referenced by {users}"
                    )
        return problems

    def _references(self, digests: set[bytes], keys: set[tuple[str, str]]) -> dict[bytes, list[str]]:
        out: dict[bytes, list[str]] = {}
        for set_id, volume in sorted(keys):
            try:
                m = self._read_manifest(set_id, volume)
            except (CorruptData, NotFound):
                continue
            hits = {i for i, d in enumerate(m.table) if d in digests}
            if not hits:
                continue
            for e in m.entries:
                for i in set(e.chunks) & hits:
                    out.setdefault(m.table[i], []).append(f"{set_id}/{volume}:{e.path}")
        return out

    def collect_garbage(self, progress: ProgressFn = no_progress) -> GcResult:
        self._check_open()
        with self._rw.exclusive():
            live: set[bytes] = set()
            for set_id, volume in self.stored_keys():
                # a damaged manifest means we cannot know what is live: refuse rather than guess
                live |= self._chunk_set(set_id, volume)
            for child in self.staging_dir.glob("cs-*"):
                child.unlink(missing_ok=True)  # leftovers of aborted runs; nothing is in flight now
            groups = self._index.by_pack()
            sizes = dict(self._index.pack_sizes)
            dead_packs: list[str] = []
            rewrite: list[tuple[str, list[tuple[bytes, ChunkLoc]]]] = []
            small: list[tuple[str, list[tuple[bytes, ChunkLoc]]]] = []
            dead_count: dict[str, int] = {}
            for pid, entries in groups.items():
                alive = [(d, loc) for d, loc in entries if d in live]
                live_bytes = sum(loc.stored_len for _, loc in alive)
                dead_count[pid] = len(entries) - len(alive)
                if not alive:
                    dead_packs.append(pid)
                elif live_bytes < self._opts.gc_min_live_ratio * sizes.get(pid, 0):
                    rewrite.append((pid, alive))
                elif sizes.get(pid, 0) < self._opts.pack_size // 8:
                    small.append((pid, alive))
            if len(small) > 1:  # many tiny packs (small incremental snapshots): merge them
                rewrite.extend(small)
            old_bytes = sum(sizes.get(pid, 0) for pid in dead_packs)
            new_bytes = 0
            rewritten: set[str] = set()
            if rewrite:
                writer = PackWriter(
                    staging=self.staging_dir,
                    packs_dir=self.packs_dir,
                    index=self._index,
                    target_size=self._opts.pack_size,
                )
                try:
                    with _PackReader(self) as reader:
                        for n, (pid, alive) in enumerate(rewrite):
                            progress(ProgressEvent("gc", n, len(rewrite), "packs"))
                            payloads = []
                            for d, loc in alive:
                                payload, err = reader.read_verified(d, loc)
                                if err:
                                    break
                                payloads.append((d, payload, loc))
                            else:
                                for d, payload, loc in payloads:
                                    writer.add(d, payload, loc.raw_len, loc.flags)
                                rewritten.add(pid)
                                continue
                            log.error("pool %s: gc leaves pack %s as it is: %s", self.pool, pid, err)
                    moved = writer.finish()
                except OSError as exc:
                    writer.abort()
                    raise self._store_error(exc, "collecting garbage") from exc
                self._index.replace(moved)
                new_bytes = writer.sealed_bytes
                old_bytes += sum(sizes.get(pid, 0) for pid in rewritten)
            gone = set(dead_packs) | rewritten
            freed_objects = sum(dead_count[pid] for pid in gone)
            self._index.remove_packs(gone)
            pack_dirs = set()
            for pid in gone:
                path = packs.pack_path(self.packs_dir, pid)
                path.unlink(missing_ok=True)
                pack_dirs.add(path.parent)
            for pack_dir in pack_dirs:
                fsync_dir(pack_dir)
            progress(ProgressEvent("gc", len(rewrite), len(rewrite), "packs"))
            return GcResult(objects_freed=freed_objects, bytes_freed=max(0, old_bytes - new_bytes))

    def unique_bytes(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
        self._check_open()
        with self._rw.shared():
            sets = {key: self._chunk_set(*key) for key in self.stored_keys()}
            refs: Counter[bytes] = Counter()
            for s in sets.values():
                refs.update(s)
            out = {}
            for key in keys:
                chunks = sets.get(key)
                if chunks is None:
                    out[key] = 0
                    continue
                total = self._manifest_path(*key).stat().st_blocks * 512
                for d in chunks:
                    loc = self._index.get(d)
                    if loc is not None and refs[d] == 1:
                        total += loc.stored_len
                out[key] = total
            return out

    def stored_bytes(self) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.store_dir):
            for f in files:
                try:
                    total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
                except FileNotFoundError:
                    continue
        return total


def _windowed(
    pool: ThreadPoolExecutor, items: Iterable[_T], fn: Callable[[_T], _R], *, window: int
) -> Iterator[_R]:
    """Run fn over items on the pool with at most `window` in flight, yielding results in order."""
    q: deque[Future[_R]] = deque()
    for item in items:
        q.append(pool.submit(fn, item))
        if len(q) >= window:
            yield q.popleft().result()
    while q:
        yield q.popleft().result()


class _PackReader:
    """Open pack files for reading, shared by worker threads; verifies chunks against their hash.
    Keeps at most MAX_OPEN_PACKS descriptors, closing only ones no thread is reading from."""

    MAX_OPEN_PACKS = 128

    def __init__(self, backend: ChunkstoreBackend) -> None:
        self._b = backend
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._users: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __enter__(self) -> _PackReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    @contextmanager
    def _open(self, pack_id: str) -> Iterator[int]:
        with self._lock:
            fd = self._fds.get(pack_id)
            if fd is None:
                path = packs.pack_path(self._b.packs_dir, pack_id)
                fd = self._fds[pack_id] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                for old in [p for p in self._fds if p != pack_id and not self._users[p]]:
                    if len(self._fds) <= self.MAX_OPEN_PACKS:
                        break
                    os.close(self._fds.pop(old))
            self._fds.move_to_end(pack_id)
            self._users[pack_id] += 1
        try:
            yield fd
        finally:
            with self._lock:
                self._users[pack_id] -= 1

    def _read(self, digest: bytes, loc: ChunkLoc) -> tuple[bytes, bytes, str]:
        """(stored payload, raw content, problem or '')."""
        try:
            with self._open(loc.pack) as fd:
                payload = os.pread(fd, loc.stored_len, loc.offset)
        except OSError as exc:
            return b"", b"", f"cannot read pack: {exc}"
        if len(payload) != loc.stored_len:
            return b"", b"", "pack is truncated"
        try:
            raw = self._b._codec.dctx.decompress(payload) if loc.flags & FLAG_ZSTD else payload
        except zstandard.ZstdError as exc:
            return b"", b"", f"cannot decompress: {exc}"
        if len(raw) != loc.raw_len or blake3.blake3(raw).digest() != digest:
            return b"", b"", "content does not match its hash"
        return payload, raw, ""

    def read_verified(self, digest: bytes, loc: ChunkLoc) -> tuple[bytes, str]:
        """(stored payload, problem or '')."""
        payload, _raw, err = self._read(digest, loc)
        return payload, err

    def raw(self, digest: bytes, loc: ChunkLoc) -> bytes:
        """Uncompressed, verified content; CorruptData if damaged."""
        _payload, raw, err = self._read(digest, loc)
        if err:
            raise CorruptData(
                f"pool {self._b.pool}: chunk {digest.hex()} (pack {loc.pack}, offset {loc.offset}): {err}"
            )
        return raw

    def check(self, digest: bytes, loc: ChunkLoc) -> tuple[bytes, str]:
        return digest, self.read_verified(digest, loc)[1]


class _SnapshotRun:
    """One snapshot() call: walk, read, hand blocks to the workers, store new chunks, commit."""

    def __init__(
        self,
        backend: ChunkstoreBackend,
        pool: ThreadPoolExecutor,
        *,
        set_id: str,
        volume: str,
        src: Path,
        progress: ProgressFn,
    ) -> None:
        self.b = backend
        self.pool = pool
        self.set_id = set_id
        self.volume = volume
        self.src = src
        self.progress = progress
        self.bs = backend._opts.block_size
        self.zero = bytes(self.bs)
        self.compress = backend._opts.compression == "zstd"
        self.index = backend._index
        self.writer = PackWriter(
            staging=backend.staging_dir,
            packs_dir=backend.packs_dir,
            index=backend._index,
            target_size=backend._opts.pack_size,
        )
        self.table: dict[bytes, int] = {}
        self.written: set[bytes] = set()
        self.inflight: deque[tuple[Entry, int, Future[_Prepared]]] = deque()
        self.inflight_bytes = 0
        self.warnings: list[str] = []
        self.done_bytes = 0
        self.total_bytes = 0
        self.next_progress = PROGRESS_EVERY_BYTES

    # -- the workers' part (runs on the pool; blake3 and zstd release the GIL) --
    def prepare(self, data: bytes) -> _Prepared:
        n = len(data)
        if _is_zero(data, self.zero):
            return _Prepared(None, None, 0, n)
        digest = blake3.blake3(data).digest()
        if digest in self.index or digest in self.written:
            return _Prepared(digest, None, 0, n)
        if self.compress:
            packed = self.b._codec.cctx.compress(data)
            if len(packed) <= n - n * MIN_SAVING:
                return _Prepared(digest, packed, FLAG_ZSTD, n)
        return _Prepared(digest, data, 0, n)

    # -- the driving thread's part --
    def run(self) -> Manifest:
        started = time.time_ns()
        prev = self.b._previous(self.volume)
        walked, root = self.walk()
        files = [w for w in walked if w.entry.kind == FILE]
        self.total_bytes = sum(w.entry.size for w in files)
        cache = self.stat_cache(prev)
        for w in files:
            hit = cache.get(w.entry.path)
            if hit is not None and self.reuse(w.entry, hit):
                self.advance(w.entry.size)
                continue
            self.read_file(w)
        while self.inflight:
            self.complete_one()
        self.writer.finish()
        entries = [root] + [w.entry for w in walked if w.entry.kind != FILE or w.entry.chunks is not _SKIPPED]
        m = Manifest(
            set_id=self.set_id,
            volume=self.volume,
            block_size=self.bs,
            started_ns=started,
            logical_bytes=sum(e.size for e in entries if e.kind == FILE),
            warnings=self.warnings,
            table=list(self.table),
            entries=entries,
        )
        m.committed_ns = time.time_ns()
        self.b._commit_manifest(m)
        self.progress(ProgressEvent("snapshot", self.total_bytes, self.total_bytes))
        return m

    def abort(self) -> None:
        for _e, _i, fut in self.inflight:
            fut.cancel()
        for _e, _i, fut in self.inflight:
            if not fut.cancelled():
                with suppress(BaseException):  # the original error is what matters
                    fut.result()
        self.inflight.clear()
        self.writer.abort()

    def warn(self, msg: str) -> None:
        text = f"{self.volume}: {msg}"
        log.warning("pool %s: %s", self.b.pool, text)
        self.warnings.append(msg)
        self.progress(ProgressEvent("warning", message=text))

    def advance(self, n: int) -> None:
        self.done_bytes += n
        if self.done_bytes >= self.next_progress:
            self.next_progress = self.done_bytes + PROGRESS_EVERY_BYTES
            self.progress(ProgressEvent("snapshot", self.done_bytes, self.total_bytes))

    def unreadable(self, rel: str, path: str, exc: OSError) -> ReconcilerError:
        what = f"pool {self.b.pool}: volume {self.volume!r}: cannot read {rel or '.'!r} ({path})"
        if exc.errno in (errno.EACCES, errno.EPERM):
            return PermissionDenied(
                f"{what}: permission denied; no snapshot was stored — fix its permissions and retry"
            )
        return InvalidArgument(f"{what}: {exc.strerror or exc}; no snapshot was stored")

    def walk(self) -> tuple[list[_Walked], Entry]:
        """Every entry of the volume, parents before children. Directories are listed through a
        descriptor checked against the inode seen in the parent, so a directory swapped for a
        symlink mid-walk cannot lead outside the volume."""
        src = str(self.src)
        st = os.lstat(src)
        root = Entry("", DIR, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns)
        out: list[_Walked] = []
        stack: list[tuple[str, str, int, int]] = [("", src, st.st_dev, st.st_ino)]
        while stack:
            rel, path, dev, ino = stack.pop()
            try:
                dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                self.warn(f"directory {rel!r} vanished during the snapshot")
                continue
            except OSError as exc:
                if exc.errno == errno.ELOOP or exc.errno == errno.ENOTDIR:
                    self.warn(f"directory {rel!r} was replaced during the snapshot; skipped")
                    continue
                raise self.unreadable(rel, path, exc) from exc
            try:
                dst = os.fstat(dfd)
                if (dst.st_dev, dst.st_ino) != (dev, ino):
                    self.warn(f"directory {rel!r} was replaced during the snapshot; skipped")
                    continue
                try:
                    with os.scandir(dfd) as it:
                        items = sorted(it, key=lambda de: de.name)
                except OSError as exc:
                    raise self.unreadable(rel, path, exc) from exc
                subdirs = []
                for de in items:
                    r = f"{rel}/{de.name}" if rel else de.name
                    p = os.path.join(path, de.name)
                    try:
                        s = de.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    mode = s.st_mode
                    e = Entry(r, FILE, stat.S_IMODE(mode), s.st_uid, s.st_gid, s.st_mtime_ns)
                    if stat.S_ISREG(mode):
                        e.size, e.ctime_ns, e.ino = s.st_size, s.st_ctime_ns, s.st_ino
                    elif stat.S_ISDIR(mode):
                        e.kind = DIR
                        subdirs.append((r, p, s.st_dev, s.st_ino))
                    elif stat.S_ISLNK(mode):
                        e.kind = SYMLINK
                        try:
                            e.target = os.readlink(de.name, dir_fd=dfd)
                        except FileNotFoundError:
                            continue
                    else:
                        # never open devices, sockets or FIFOs (a FIFO would block the snapshot)
                        self.warn(f"skipped special file {r!r} ({_special_kind(mode)})")
                        continue
                    out.append(_Walked(e, p, s.st_dev, s.st_ino))
                stack.extend(reversed(subdirs))
            finally:
                os.close(dfd)
        return out, root

    def stat_cache(self, prev: Manifest | None) -> dict[str, tuple[Entry, Manifest]]:
        if prev is None or prev.block_size != self.bs:
            return {}
        return {e.path: (e, prev) for e in prev.entries if e.kind == FILE}

    def reuse(self, e: Entry, hit: tuple[Entry, Manifest]) -> bool:
        p, prev = hit
        if (p.size, p.mtime_ns, p.ctime_ns, p.ino) != (e.size, e.mtime_ns, e.ctime_ns, e.ino):
            return False
        coarse = p.mtime_ns % 1_000_000_000 == 0 and p.ctime_ns % 1_000_000_000 == 0
        if p.ctime_ns >= prev.started_ns - (COARSE_RACY_MARGIN_NS if coarse else RACY_MARGIN_NS):
            return False
        digests = [None if c == ZERO_BLOCK else prev.table[c] for c in p.chunks]
        if any(d is not None and d not in self.index for d in digests):
            return False  # a chunk went missing (damaged pack): read the file again
        e.chunks = [ZERO_BLOCK if d is None else self.ref(d) for d in digests]
        return True

    def ref(self, digest: bytes) -> int:
        i = self.table.get(digest)
        if i is None:
            i = self.table[digest] = len(self.table)
        return i

    def read_file(self, w: _Walked) -> None:
        e = w.entry
        try:
            fd = _open_source(w.abspath)
        except FileNotFoundError:
            self.warn(f"file {e.path!r} vanished during the snapshot")
            e.chunks = _SKIPPED
            return
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self.warn(f"file {e.path!r} was replaced by a symlink during the snapshot; skipped")
                e.chunks = _SKIPPED
                return
            raise self.unreadable(e.path, w.abspath, exc) from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (w.dev, w.ino):
                self.warn(f"file {e.path!r} was replaced during the snapshot; skipped")
                e.chunks = _SKIPPED
                return
            # the identity we store is the one of the content we read
            e.size, e.mtime_ns, e.ctime_ns = st.st_size, st.st_mtime_ns, st.st_ctime_ns
            e.mode, e.uid, e.gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
            self.read_blocks(e, fd, st)
        except OSError as exc:
            raise self.unreadable(e.path, w.abspath, exc) from exc
        finally:
            os.close(fd)

    def read_blocks(self, e: Entry, fd: int, st: os.stat_result) -> None:
        size = e.size
        nblocks = (size + self.bs - 1) // self.bs
        e.chunks = [ZERO_BLOCK] * nblocks
        # holes are known to be zero without reading them
        extents = _data_extents(fd, size) if size > self.bs and st.st_blocks * 512 < size else None
        ext_i = 0
        for i in range(nblocks):
            off = i * self.bs
            n = min(self.bs, size - off)
            if extents is not None:
                while ext_i < len(extents) and extents[ext_i][1] <= off:
                    ext_i += 1
                if ext_i == len(extents) or extents[ext_i][0] >= off + n:
                    self.advance(n)
                    continue
            data = os.pread(fd, n, off)
            while len(data) < n:
                more = os.pread(fd, n - len(data), off + len(data))
                if not more:
                    break
                data += more
            if len(data) < n:
                self.warn(
                    f"file {e.path!r} shrank while it was read; stored its first {off + len(data)} bytes"
                )
                e.size = off + len(data)
                del e.chunks[(e.size + self.bs - 1) // self.bs :]
                if data:
                    self.submit(e, i, data)
                return
            self.submit(e, i, data)

    def submit(self, e: Entry, i: int, data: bytes) -> None:
        self.inflight.append((e, i, self.pool.submit(self.prepare, data)))
        self.inflight_bytes += len(data)
        while self.inflight_bytes > READ_AHEAD_BYTES or len(self.inflight) > READ_AHEAD_CHUNKS:
            self.complete_one()

    def complete_one(self) -> None:
        e, i, fut = self.inflight.popleft()
        r = fut.result()
        self.inflight_bytes -= r.raw_len
        self.advance(r.raw_len)
        if r.digest is None:
            e.chunks[i] = ZERO_BLOCK
            return
        if r.payload is not None and r.digest not in self.written and r.digest not in self.index:
            self.writer.add(r.digest, r.payload, r.raw_len, r.flags)
            self.written.add(r.digest)
        e.chunks[i] = self.ref(r.digest)


def _human(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


# marks a file entry that vanished or changed type after the walk (left out of the manifest)
_SKIPPED: list[int] = []


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    return "unknown type"


class _Restore:
    """Writes a snapshot's entries into a fresh directory. Workers fetch, decompress, verify and
    pwrite chunks (small files go to a worker whole); holes are left unwritten, so zero blocks
    come back sparse. The result is durable before returning (one syncfs instead of an fsync per
    file, which cost ~1 ms each): the agent swaps it in for the live volume, and a crash right
    after that swap must not expose lost data."""

    def __init__(
        self,
        backend: ChunkstoreBackend,
        pool: ThreadPoolExecutor,
        reader: _PackReader,
        m: Manifest,
        dest: Path,
        progress: ProgressFn,
    ) -> None:
        self.b = backend
        self.pool = pool
        self.reader = reader
        self.m = m
        self.dest = dest
        self.progress = progress
        self.as_root = os.geteuid() == 0
        self.total = sum(e.size for e in m.entries if e.kind == FILE)
        self.done = 0
        self.next_progress = PROGRESS_EVERY_BYTES
        self.small: deque[Future[int]] = deque()

    def run(self, entries: list[Entry]) -> int:
        made_dirs = {""}
        dirs: list[Entry] = []
        root: Entry | None = None
        written = 0
        try:
            for e in entries:
                if e.path == "":
                    root = e
                    continue
                rel = _clean_rel(e.path, what="manifest path")
                parent = rel.rpartition("/")[0]
                if rel != e.path or parent not in made_dirs:
                    raise CorruptData(
                        f"pool {self.b.pool}: manifest of {self.m.set_id}/{self.m.volume} has a bad entry {e.path!r}"
                    )
                target = os.path.join(self.dest, rel)
                if e.kind == DIR:
                    os.mkdir(target, 0o700)  # real mode later: a read-only dir must still get its children
                    made_dirs.add(rel)
                    dirs.append(e)
                elif e.kind == SYMLINK:
                    os.symlink(e.target, target)
                    if self.as_root:
                        os.lchown(target, e.uid, e.gid)
                    os.utime(target, ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)
                elif len(e.chunks) <= 1:
                    self.small.append(self.pool.submit(self.restore_small, e, target))
                    while len(self.small) > 32:
                        self.advance(self.small.popleft().result())
                    written += e.size
                else:
                    self.restore_large(e, target)
                    written += e.size
            while self.small:
                self.advance(self.small.popleft().result())
        except BaseException:
            _cancel_and_wait(self.small)
            raise
        for e in reversed(dirs):
            self.apply_dir(os.path.join(self.dest, e.path), e)
        if root is not None:
            self.apply_dir(str(self.dest), root)
        _syncfs(self.dest)
        self.progress(ProgressEvent("restore", self.total, self.total))
        return written

    def apply_dir(self, path: str, e: Entry) -> None:
        if self.as_root:
            os.lchown(path, e.uid, e.gid)
        os.chmod(path, e.mode)
        os.utime(path, ns=(e.mtime_ns, e.mtime_ns))

    def _create(self, target: str) -> int:
        return os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)

    def _finish_file(self, fd: int, e: Entry) -> None:
        os.ftruncate(fd, e.size)  # also creates the trailing hole of a sparse file
        if self.as_root:
            os.fchown(fd, e.uid, e.gid)
        os.fchmod(fd, e.mode)
        os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))

    def _loc(self, e: Entry, c: int) -> tuple[bytes, ChunkLoc]:
        digest = self.m.table[c]
        loc = self.b._index.get(digest)
        if loc is None:
            raise CorruptData(
                f"pool {self.b.pool}: chunk {digest.hex()} of {e.path!r} in snapshot "
                f"{self.m.set_id}/{self.m.volume} is missing from the store"
            )
        return digest, loc

    def restore_small(self, e: Entry, target: str) -> int:
        fd = self._create(target)
        try:
            if e.chunks and e.chunks[0] != ZERO_BLOCK:
                _pwrite_all(fd, self.reader.raw(*self._loc(e, e.chunks[0])), 0)
            self._finish_file(fd, e)
        finally:
            os.close(fd)
        return e.size

    def restore_large(self, e: Entry, target: str) -> None:
        bs = self.m.block_size
        fd = self._create(target)
        q: deque[Future[int]] = deque()
        unflushed = 0
        try:
            for i, c in enumerate(e.chunks):
                if c == ZERO_BLOCK:
                    continue
                digest, loc = self._loc(e, c)
                q.append(self.pool.submit(self.write_chunk, fd, digest, loc, i * bs))
                if len(q) >= 16:
                    n = q.popleft().result()
                    self.advance(n)
                    unflushed += n
                    if unflushed >= WRITEBACK_EVERY_BYTES:
                        # start writeback now so the final syncfs does not write it all at once
                        _start_writeback(fd)
                        unflushed = 0
            while q:
                self.advance(q.popleft().result())
            self._finish_file(fd, e)
        except BaseException:
            _cancel_and_wait(q)  # nothing may still write to fd once it is closed
            raise
        finally:
            os.close(fd)

    def write_chunk(self, fd: int, digest: bytes, loc: ChunkLoc, off: int) -> int:
        return _pwrite_all(fd, self.reader.raw(digest, loc), off)

    def advance(self, n: int) -> None:
        self.done += n
        if self.done >= self.next_progress:
            self.next_progress = self.done + PROGRESS_EVERY_BYTES
            self.progress(ProgressEvent("restore", self.done, self.total))


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc_syncfs = getattr(_libc, "syncfs", None)
_libc_sync_file_range = getattr(_libc, "sync_file_range", None)
if _libc_sync_file_range is not None:
    _libc_sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
_SYNC_FILE_RANGE_WRITE = 2


def _syncfs(path: Path) -> None:
    """Make everything written on path's filesystem durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _libc_syncfs is None or _libc_syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _start_writeback(fd: int) -> None:
    if _libc_sync_file_range is not None:
        _libc_sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # a hint: errors do not matter


def _pwrite_all(fd: int, data: bytes, off: int) -> int:
    view = memoryview(data)
    while view:
        k = os.pwrite(fd, view, off)
        view = view[k:]
        off += k
    return len(data)


def _cancel_and_wait(futures: Iterable[Future[int]]) -> None:
    pending = list(futures)
    for f in pending:
        f.cancel()
    for f in pending:
        if not f.cancelled():
            with suppress(BaseException):
                f.result()
