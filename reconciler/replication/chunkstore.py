"""Chunkstore replication: offer the manifest, send only the chunks the target lacks, verify each.

Source side (`send_volume`): the manifest travels first (zstd against the parent's manifest when
both sides hold one: the digest table of an unchanged volume then costs almost nothing); the target
answers with the digests it lacks; only those chunks travel, as stored (compressed). A chunk that
replaces a block the target holds (same file, same block, in the common parent) travels as a delta:
the changed 4 KiB pages only. The target rebuilds, hashes and stores it like any other chunk.

Target side (`ChunkstoreSink`): every chunk is verified (decompressed, length and BLAKE3 checked) as
it arrives; a bad one is rejected (DATA_LOSS, named) and asked for again in the next need round.
Good chunks go into packs that are sealed durably as they fill, so an interrupted transfer keeps what
arrived and the next one does not resend it. Manifests are committed (renamed into place) only after
every chunk they reference is durable; the agent inserts the catalog rows last.

Everything touching the backend's internals lives in `_Store`, so a change there is one place here.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import cast

import blake3
import zstandard

from ..backends.chunkstore import ChunkstoreBackend, _PackReader
from ..backends.chunkstore_manifest import FILE, ZERO_BLOCK, CorruptManifest, Manifest, decode
from ..backends.chunkstore_packs import FLAG_ZSTD, ChunkLoc, PackWriter
from ..errors import CorruptData, FailedPrecondition, InvalidArgument, NotFound, ReconcilerError
from ..fsutil import fsync_dir, rename_noreplace
from ..v1 import replication_pb2 as rpb
from .link import Link
from .progress import Meter, VolumeEstimate
from .wire import ChunkIn, ChunkOut, encode_chunks

log = logging.getLogger(__name__)

Buffer = bytes | memoryview

DIGEST_LEN = 32
PAGE = 4096
BATCH_BYTES = 1 << 20  # chunk payload per message: ~1 MiB messages are what gRPC streams fastest
BATCH_CHUNKS = 512
NEED_PER_MESSAGE = 16_384  # digests per need message (512 KiB)
MANIFEST_PART = 1 << 20
MAX_ROUNDS = 4  # need rounds per volume: the first plus resends of rejected chunks
MAX_CHUNK = 16 << 20  # the chunkstore's largest block
DICT_LIMIT = 64 << 20  # manifests above this travel without the parent as dictionary
DELTA_MAX_SHARE = 0.5  # above this share of changed pages a chunk travels whole
MIN_SAVING = 0.03
VERIFY_WINDOW = 8  # batches being verified ahead of the writer
RECEIVE_PACK_SIZE = 8 << 20
MANIFEST_SUM_LEN = 16  # chunkstore_manifest: blake3(body)[:16] ends every manifest


class _Store:
    """The chunkstore internals replication needs, in one place."""

    def __init__(self, backend: ChunkstoreBackend) -> None:
        self.b = backend
        backend._check_open()

    @property
    def pool(self) -> str:
        return self.b.pool

    def shared(self) -> AbstractContextManager[None]:
        """Snapshots, restores and transfers share the store; GC (which moves chunks) waits."""
        return self.b._rw.shared()

    def manifest_bytes(self, set_id: str, volume: str) -> bytes:
        self.b._check_key(set_id, volume)
        try:
            return self.b._manifest_path(set_id, volume).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"pool {self.pool}: no stored snapshot {set_id} of volume {volume!r}") from None

    def has_manifest(self, set_id: str, volume: str) -> bool:
        return self.b._manifest_path(set_id, volume).exists()

    def loc(self, digest: bytes) -> ChunkLoc | None:
        return self.b._index.get(digest)

    def has(self, digest: bytes) -> bool:
        return digest in self.b._index

    def reader(self) -> _PackReader:
        return _PackReader(self.b)

    def payload(self, reader: _PackReader, loc: ChunkLoc) -> bytes:
        """The stored bytes of a chunk, unverified (the target verifies what it receives)."""
        with reader._open(loc.pack) as fd:
            data = os.pread(fd, loc.stored_len, loc.offset)
        if len(data) != loc.stored_len:
            raise CorruptData(f"pool {self.pool}: pack {loc.pack} is truncated at offset {loc.offset}")
        return data

    def writer(self) -> PackWriter:
        # Received packs are sealed (made durable and indexed) every few MiB: that is how much an
        # interrupted transfer can lose and has to receive again.
        return PackWriter(
            staging=self.b.staging_dir,
            packs_dir=self.b.packs_dir,
            index=self.b._index,
            target_size=min(self.b._opts.pack_size, RECEIVE_PACK_SIZE),
        )

    def compress(self, raw: bytes) -> tuple[bytes, int]:
        """How this pool would store `raw`: (payload, flags)."""
        if self.b._opts.compression == "zstd":
            packed = self.b._codec.cctx.compress(raw)
            if len(packed) <= len(raw) - len(raw) * MIN_SAVING:
                return packed, FLAG_ZSTD
        return raw, 0

    def decompress(self, payload: bytes, raw_len: int) -> bytes:
        return _decompress(self.b._codec.dctx, payload, raw_len)

    def commit_manifest(self, set_id: str, volume: str, data: bytes) -> None:
        """Write the manifest bytes durably in staging, then rename them into place."""
        self.b._check_key(set_id, volume)
        final = self.b._manifest_path(set_id, volume)
        tmp = (
            self.b.staging_dir
            / f"cs-manifest-recv-{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
        )
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            if not final.parent.exists():
                final.parent.mkdir(exist_ok=True)
                fsync_dir(self.b.snapshots_dir)
            rename_noreplace(tmp, final)
            fsync_dir(final.parent)
        finally:
            tmp.unlink(missing_ok=True)

    def drop(self, set_id: str, volume: str) -> None:
        self.b.drop(set_id=set_id, volume=volume)

    def store_error(self, exc: OSError, doing: str) -> ReconcilerError:
        return self.b._store_error(exc, doing)


def _decompress(dctx: zstandard.ZstdDecompressor, payload: Buffer, raw_len: int) -> bytes:
    # The frame must announce exactly the size the sender claims: a hostile frame cannot make us
    # allocate more than one block.
    try:
        size = zstandard.frame_content_size(payload)
    except zstandard.ZstdError as exc:
        raise CorruptData(f"not a zstd frame: {exc}") from None
    if size != raw_len:
        raise CorruptData(f"zstd frame announces {size} bytes, the chunk has {raw_len}")
    try:
        return dctx.decompress(payload)
    except zstandard.ZstdError as exc:
        raise CorruptData(f"cannot decompress: {exc}") from None


def decode_manifest(data: bytes, *, pool: str, set_id: str, volume: str) -> Manifest:
    try:
        m = decode(data)
    except CorruptManifest as exc:
        raise CorruptData(f"pool {pool}: manifest of snapshot {set_id} of volume {volume!r}: {exc}") from None
    if m.set_id != set_id or m.volume != volume:
        raise InvalidArgument(
            f"manifest is for {m.set_id}/{m.volume!r}, not for the announced {set_id}/{volume!r}"
        )
    return m


def _manifest_dict(data: bytes) -> zstandard.ZstdCompressionDict:
    return zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def pack_manifest(data: bytes, parent: bytes | None) -> tuple[bytes, bool]:
    """(bytes to send, compressed against the parent). The manifest itself is mostly compressed
    already; the digest table of unchanged blocks is what the parent removes."""
    if parent is None or len(data) > DICT_LIMIT or len(parent) > DICT_LIMIT:
        return data, False
    cctx = zstandard.ZstdCompressor(level=3, dict_data=_manifest_dict(parent))
    packed = cctx.compress(data)
    return (packed, True) if len(packed) < len(data) else (data, False)


def unpack_manifest(payload: bytes, parent: bytes | None, *, limit: int) -> bytes:
    if parent is None:
        raise InvalidArgument("manifest compressed against a parent the target does not hold")
    dctx = zstandard.ZstdDecompressor(dict_data=_manifest_dict(parent), max_window_size=1 << 31)
    try:
        size = zstandard.frame_content_size(payload)
        if size < 0 or size > limit:
            raise CorruptData(f"manifest frame announces {size} bytes (limit {limit})")
        out: bytes = dctx.decompress(payload)
        return out
    except zstandard.ZstdError as exc:
        raise CorruptData(f"cannot decompress the manifest: {exc}") from None


# --- deltas --------------------------------------------------------------------------------------
def make_delta(new: bytes, old: bytes) -> tuple[bytes, bytes] | None:
    """(page map, changed pages) of `new` against `old`, or None when it does not pay."""
    n = len(new)
    if n != len(old) or n <= PAGE:
        return None
    pages = (n + PAGE - 1) // PAGE
    bitmap = bytearray((pages + 7) // 8)
    parts: list[bytes] = []
    nv, ov = memoryview(new), memoryview(old)
    for i in range(pages):
        lo, hi = i * PAGE, min(n, (i + 1) * PAGE)
        if nv[lo:hi] != ov[lo:hi]:
            bitmap[i >> 3] |= 1 << (i & 7)
            parts.append(new[lo:hi])
    if len(parts) > pages * DELTA_MAX_SHARE:
        return None
    return bytes(bitmap), b"".join(parts)


def apply_delta(old: bytes, page_map: bytes, pages_data: Buffer) -> bytes:
    n = len(old)
    pages = (n + PAGE - 1) // PAGE
    if len(page_map) != (pages + 7) // 8:
        raise CorruptData(
            f"delta page map has {len(page_map)} bytes, the base chunk needs {(pages + 7) // 8}"
        )
    out = bytearray(old)
    pos = 0
    for i in range(pages):
        if page_map[i >> 3] >> (i & 7) & 1:
            lo, hi = i * PAGE, min(n, (i + 1) * PAGE)
            piece = pages_data[pos : pos + hi - lo]
            if len(piece) != hi - lo:
                raise CorruptData("delta is shorter than its page map says")
            out[lo:hi] = piece
            pos += hi - lo
    if pos != len(pages_data):
        raise CorruptData("delta is longer than its page map says")
    return bytes(out)


# --- source side ----------------------------------------------------------------------------------
@dataclass
class VolumeOutcome:
    wire_bytes: int = 0
    sent_bytes: int = 0
    chunks_sent: int = 0
    chunks_delta: int = 0
    chunks_resent: int = 0


def send_volume(
    backend: ChunkstoreBackend,
    link: Link,
    meter: Meter,
    *,
    set_id: str,
    volume: str,
    parent_set_id: str,
    logical_bytes: int,
    estimate: VolumeEstimate | None = None,
) -> VolumeOutcome:
    """`estimate`: this volume's guessed part of the transfer's total (chunks_cost), which
    the need list replaces with what the chunks it asks for cost."""
    store = _Store(backend)
    out = VolumeOutcome()
    wire0 = meter.stats.wire_bytes
    sent0 = meter.stats.sent_bytes
    with store.shared():
        data = store.manifest_bytes(set_id, volume)
        m = decode_manifest(data, pool=store.pool, set_id=set_id, volume=volume)
        parent_data: bytes | None = None
        parent: Manifest | None = None
        if parent_set_id:
            try:
                parent_data = store.manifest_bytes(parent_set_id, volume)
                parent = decode_manifest(parent_data, pool=store.pool, set_id=parent_set_id, volume=volume)
            except (NotFound, CorruptData, InvalidArgument) as exc:
                log.warning(
                    "set %s/%s: parent %s not usable (%s); sending without it",
                    set_id,
                    volume,
                    parent_set_id,
                    exc,
                )
                parent_set_id, parent_data, parent = "", None, None
        body, with_dict = pack_manifest(data, parent_data)
        meter.update(phase="offer", volume=volume, parent_set_id=parent_set_id)
        link.send(
            rpb.ReceiveRequest(
                volume=rpb.VolumeBegin(
                    volume=volume,
                    parent_set_id=parent_set_id,
                    manifest_size=len(body),
                    manifest_dict=with_dict,
                    logical_bytes=logical_bytes,
                )
            )
        )
        for i in range(0, len(body), MANIFEST_PART):
            link.send(rpb.ReceiveRequest(manifest=body[i : i + MANIFEST_PART]))
        bases = _delta_bases(m, parent) if parent is not None else {}
        with store.reader() as reader:
            rounds = 0
            need: list[bytes] = []
            first = True
            while True:
                resp = link.recv()
                kind = resp.WhichOneof("msg")
                if kind == "need":
                    d = resp.need.digests
                    if len(d) % DIGEST_LEN:
                        raise CorruptData("need list with a partial digest")
                    need.extend(d[i : i + DIGEST_LEN] for i in range(0, len(d), DIGEST_LEN))
                    if not resp.need.last:
                        continue
                    if first:
                        meter.add(checked=m.logical_bytes)
                    rounds += 1
                    if rounds > MAX_ROUNDS:
                        raise CorruptData(
                            f"set {set_id} volume {volume!r}: {len(need)} chunk(s) still not accepted by the "
                            f"target after {MAX_ROUNDS} rounds (first: {need[0].hex()}); the source copy may be damaged"
                        )
                    if not first:
                        out.chunks_resent += len(need)
                        meter.add(resent=len(need))
                    todo, need = need, []
                    settles = estimate if first else None
                    _send_chunks(store, reader, link, meter, todo, bases if first else {}, out, settles)
                    link.send(rpb.ReceiveRequest(volume_end=rpb.VolumeEnd()))
                    first = False
                elif kind == "rejected":
                    log.warning(
                        "set %s volume %s: target rejected chunk %s: %s; it is sent again",
                        set_id,
                        volume,
                        resp.rejected.digest.hex(),
                        resp.rejected.reason,
                    )
                elif kind == "volume_done":
                    break
                else:
                    raise CorruptData(f"unexpected answer {kind!r} from the target while sending {volume!r}")
    out.wire_bytes = meter.stats.wire_bytes - wire0
    out.sent_bytes = meter.stats.sent_bytes - sent0
    return out


def chunks_cost(
    backend: ChunkstoreBackend, set_id: str, volume: str, parent_set_id: str, given_up: Callable[[], bool]
) -> int:
    """What sending (set_id, volume) against parent_set_id will cost (a CostFn for
    progress.estimate_each): the stored size of the chunks its manifest has and the parent's has
    not (the target holds the parent's), so that the total and ETA cover every volume from the
    start, not only those whose need list has come. (One manifest or two: no point giving up.)"""
    store = _Store(backend)

    def table(of_set: str) -> set[bytes]:
        data = store.manifest_bytes(of_set, volume)
        return set(decode_manifest(data, pool=store.pool, set_id=of_set, volume=volume).table)

    with store.shared():
        held = table(parent_set_id) if parent_set_id else set()
        total = 0
        for d in table(set_id) - held:
            loc = store.loc(d)
            total += loc.stored_len if loc is not None else 0
    return total


def _delta_bases(m: Manifest, parent: Manifest) -> dict[bytes, bytes]:
    """new digest -> the parent's digest at the same file and block (a delta candidate)."""
    old: dict[str, list[int]] = {e.path: e.chunks for e in parent.entries if e.kind == FILE}
    out: dict[bytes, bytes] = {}
    for e in m.entries:
        if e.kind != FILE:
            continue
        prev = old.get(e.path)
        if not prev:
            continue
        for i, c in enumerate(e.chunks):
            if c == ZERO_BLOCK or i >= len(prev) or prev[i] == ZERO_BLOCK:
                continue
            d, od = m.table[c], parent.table[prev[i]]
            if d != od and d not in out:
                out[d] = od
    return out


def _send_chunks(
    store: _Store,
    reader: _PackReader,
    link: Link,
    meter: Meter,
    digests: list[bytes],
    bases: dict[bytes, bytes],
    out: VolumeOutcome,
    settles: VolumeEstimate | None = None,
) -> None:
    """`settles`: the volume's estimate, which what these chunks cost replaces (the first need
    list); without one, their cost adds to the transfer's total (chunks sent again)."""
    locs: list[tuple[bytes, ChunkLoc]] = []
    total = 0
    for d in dict.fromkeys(digests):
        loc = store.loc(d)
        if loc is None:
            raise CorruptData(f"pool {store.pool}: chunk {d.hex()} is missing from the source store")
        locs.append((d, loc))
        total += loc.stored_len
    locs.sort(key=lambda t: (t[1].pack, t[1].offset))
    if settles is not None:
        settles.settle(meter, total)
    else:
        meter.expect(total)
    meter.update(phase="send")
    dctx = zstandard.ZstdDecompressor()
    batch: list[ChunkOut] = []
    size = 0
    for d, loc in locs:
        payload = store.payload(reader, loc)
        meter.add(scanned=loc.raw_len)
        chunk = None
        base = bases.get(d)
        if base is not None:
            chunk = _delta_chunk(store, reader, dctx, d, loc, payload, base)
        if chunk is None:
            chunk = ChunkOut(d, payload, loc.raw_len, loc.flags)
        else:
            out.chunks_delta += 1
            meter.expect(len(chunk.payload) + len(chunk.page_map) - len(payload))
        out.chunks_sent += 1
        meter.add(sent=loc.raw_len)
        batch.append(chunk)
        size += len(chunk.payload) + 64
        if size >= BATCH_BYTES or len(batch) >= BATCH_CHUNKS:
            link.send_raw(encode_chunks(batch))
            batch, size = [], 0
    if batch:
        link.send_raw(encode_chunks(batch))


def _delta_chunk(
    store: _Store,
    reader: _PackReader,
    dctx: zstandard.ZstdDecompressor,
    digest: bytes,
    loc: ChunkLoc,
    payload: bytes,
    base: bytes,
) -> ChunkOut | None:
    base_loc = store.loc(base)
    if base_loc is None or base_loc.raw_len != loc.raw_len:
        return None
    try:
        new = _decompress(dctx, payload, loc.raw_len) if loc.flags & FLAG_ZSTD else payload
        old_payload = store.payload(reader, base_loc)
        old = _decompress(dctx, old_payload, base_loc.raw_len) if base_loc.flags & FLAG_ZSTD else old_payload
    except CorruptData:
        return None  # send it whole; the target's verification has the last word
    delta = make_delta(new, old)
    if delta is None:
        return None
    page_map, pages = delta
    flags = 0
    packed = zstandard.ZstdCompressor(level=3).compress(pages)
    if len(packed) <= len(pages) - len(pages) * MIN_SAVING:
        pages, flags = packed, FLAG_ZSTD
    if len(pages) + len(page_map) >= len(payload):
        return None
    return ChunkOut(digest, pages, loc.raw_len, flags, base=base, page_map=page_map)


# --- target side ----------------------------------------------------------------------------------
@dataclass
class _Incoming:
    volume: str
    parent_set_id: str
    manifest_size: int
    manifest_dict: bool
    logical_bytes: int
    body: bytearray
    manifest: Manifest | None = None
    data: bytes = b""
    rounds: int = 0
    stored_bytes: int = 0


@dataclass(frozen=True, slots=True)
class _Checked:
    digest: bytes
    payload: Buffer
    raw_len: int
    flags: int
    error: str = ""


class ChunkstoreSink:
    """The target's end for one source pool: holds the store's shared lock from open to close."""

    MAX_MANIFEST = 1 << 31

    def __init__(self, backend: ChunkstoreBackend, *, set_id: str) -> None:
        self.store = _Store(backend)
        self.set_id = set_id
        self._shared = self.store.shared()
        self._shared.__enter__()
        self._reader = self.store.reader()
        self._writer = self.store.writer()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="recv-verify")
        self._codec = threading.local()
        self._pending: deque[Future[list[_Checked]]] = deque()
        self._written: set[bytes] = set()
        self._rejected: list[tuple[bytes, str]] = []
        self.cur: _Incoming | None = None
        self.staged: list[tuple[str, bytes]] = []  # (volume, manifest bytes) ready to commit
        self._closed = False

    # -- protocol --
    def begin_volume(self, msg: rpb.VolumeBegin) -> None:
        if self.cur is not None:
            raise InvalidArgument("a volume began before the previous one ended")
        if msg.manifest_size > self.MAX_MANIFEST:
            raise InvalidArgument(f"manifest of {msg.manifest_size} bytes is too large")
        self.cur = _Incoming(
            volume=msg.volume,
            parent_set_id=msg.parent_set_id,
            manifest_size=msg.manifest_size,
            manifest_dict=msg.manifest_dict,
            logical_bytes=msg.logical_bytes,
            body=bytearray(),
        )

    def manifest_part(self, data: bytes) -> Iterator[rpb.ReceiveResponse]:
        cur = self._current()
        if cur.manifest is not None:
            raise InvalidArgument("manifest data after the manifest was complete")
        cur.body += data
        if len(cur.body) > cur.manifest_size:
            raise InvalidArgument("more manifest bytes than announced")
        if len(cur.body) < cur.manifest_size:
            return
        body = bytes(cur.body)
        cur.body = bytearray()
        if cur.manifest_dict:
            parent = self._parent_manifest(cur)
            body = unpack_manifest(body, parent, limit=self.MAX_MANIFEST)
        cur.manifest = decode_manifest(body, pool=self.store.pool, set_id=self.set_id, volume=cur.volume)
        cur.data = body
        yield from self._need_round(cur)

    def chunks(self, batch: Sequence[ChunkIn]) -> Iterator[rpb.ReceiveResponse]:
        cur = self._current()
        if cur.manifest is None:
            raise InvalidArgument("chunks before the manifest")
        self._pending.append(self._pool.submit(self._check_batch, batch))
        while len(self._pending) > VERIFY_WINDOW:
            yield from self._store_one()

    def end_volume(self) -> Iterator[rpb.ReceiveResponse]:
        cur = self._current()
        if cur.manifest is None:
            raise InvalidArgument("volume end before the manifest")
        while self._pending:
            yield from self._store_one()
        missing = self._missing(cur.manifest)
        if not missing:
            self.staged.append((cur.volume, cur.data))
            done = rpb.ReceiveResponse(
                volume_done=rpb.VolumeReceived(volume=cur.volume, bytes=cur.stored_bytes)
            )
            self.cur = None
            yield done
            return
        if cur.rounds >= MAX_ROUNDS:
            first = self._rejected[-1][1] if self._rejected else "never arrived"
            raise CorruptData(
                f"pool {self.store.pool}: set {self.set_id} volume {cur.volume!r}: {len(missing)} chunk(s) did "
                f"not verify after {cur.rounds} rounds ({first})"
            )
        yield from self._need_round(cur, missing)

    def commit(self) -> list[str]:
        """Make every staged volume's chunks durable, then its manifest; returns the volumes."""
        if self.cur is not None:
            raise InvalidArgument(f"commit while volume {self.cur.volume!r} is incomplete")
        try:
            self._writer.finish()
        except OSError as exc:
            raise self.store.store_error(exc, f"storing received chunks of set {self.set_id}") from exc
        done: list[str] = []
        try:
            for volume, data in self.staged:
                m = decode_manifest(data, pool=self.store.pool, set_id=self.set_id, volume=volume)
                lost = [d for d in m.table if not self.store.has(d)]
                if lost:
                    raise CorruptData(
                        f"pool {self.store.pool}: set {self.set_id} volume {volume!r}: {len(lost)} chunk(s) "
                        f"missing at commit (first {lost[0].hex()})"
                    )
                try:
                    self.store.commit_manifest(self.set_id, volume, data)
                except OSError as exc:
                    raise self.store.store_error(
                        exc, f"committing set {self.set_id} volume {volume!r}"
                    ) from exc
                done.append(volume)
        except BaseException:
            for volume in done:
                self.drop(volume)
            raise
        return done

    def drop(self, volume: str) -> None:
        try:
            self.store.drop(self.set_id, volume)
        except Exception:  # noqa: BLE001 - open() removes manifests the catalog does not list
            log.exception("pool %s: could not drop received %s/%s", self.store.pool, self.set_id, volume)

    def close(self) -> None:
        """Keep what arrived (sealed durably: the next transfer does not resend it), drop the rest."""
        if self._closed:
            return
        self._closed = True
        try:
            for fut in self._pending:
                fut.cancel()
            for fut in self._pending:
                if not fut.cancelled():
                    try:
                        for c in fut.result():
                            if not c.error:
                                self._add(c)
                    except Exception:  # noqa: BLE001 - the session failed already
                        pass
            self._pending.clear()
            try:
                self._writer.finish()
            except Exception:  # noqa: BLE001 - a full disk: nothing more can be kept
                log.warning("pool %s: could not keep the chunks of an interrupted transfer", self.store.pool)
                self._writer.abort()
        finally:
            self._pool.shutdown(wait=True)
            self._reader.__exit__(None, None, None)
            self._shared.__exit__(None, None, None)

    # -- helpers --
    def _current(self) -> _Incoming:
        if self.cur is None:
            raise InvalidArgument("data outside a volume")
        return self.cur

    def _parent_manifest(self, cur: _Incoming) -> bytes | None:
        if not cur.parent_set_id:
            return None
        try:
            return self.store.manifest_bytes(cur.parent_set_id, cur.volume)
        except (NotFound, InvalidArgument):
            return None

    def _missing(self, m: Manifest) -> list[bytes]:
        seen: set[bytes] = set()
        out = []
        for d in m.table:
            if d in seen:
                continue
            seen.add(d)
            if d not in self._written and not self.store.has(d):
                out.append(d)
        return out

    def _need_round(
        self, cur: _Incoming, missing: list[bytes] | None = None
    ) -> Iterator[rpb.ReceiveResponse]:
        assert cur.manifest is not None
        if missing is None:
            missing = self._missing(cur.manifest)
        cur.rounds += 1
        for i in range(0, len(missing), NEED_PER_MESSAGE):
            part = missing[i : i + NEED_PER_MESSAGE]
            yield rpb.ReceiveResponse(
                need=rpb.NeedChunks(digests=b"".join(part), last=i + NEED_PER_MESSAGE >= len(missing))
            )
        if not missing:
            yield rpb.ReceiveResponse(need=rpb.NeedChunks(last=True))

    def _dctx(self) -> zstandard.ZstdDecompressor:
        d: zstandard.ZstdDecompressor | None = getattr(self._codec, "dctx", None)
        if d is None:
            d = self._codec.dctx = zstandard.ZstdDecompressor()
        return d

    def _check_batch(self, items: Sequence[ChunkIn]) -> list[_Checked]:
        return [self._check(c.digest, c.payload, c.raw_len, c.flags, c.base, c.page_map) for c in items]

    def _check(
        self, digest: bytes, payload: Buffer, raw_len: int, flags: int, base: bytes, page_map: bytes
    ) -> _Checked:
        def bad(reason: str) -> _Checked:
            return _Checked(digest, b"", raw_len, flags, reason)

        if len(digest) != DIGEST_LEN:
            return bad("digest is not 32 bytes")
        if not 0 < raw_len <= MAX_CHUNK:
            return bad(f"raw length {raw_len} out of range")
        if flags & ~FLAG_ZSTD:
            return bad(f"unknown flags {flags:#x}")
        raw: Buffer
        try:
            if base:
                loc = self.store.loc(base)
                if loc is None:
                    return bad(f"delta base {base.hex()} is not held here")
                old = self._reader.raw(base, loc)
                if len(old) != raw_len:
                    return bad("delta base has another length")
                pages = (
                    _decompress(self._dctx(), payload, _frame_size(payload)) if flags & FLAG_ZSTD else payload
                )
                raw = apply_delta(old, page_map, pages)
            else:
                raw = _decompress(self._dctx(), payload, raw_len) if flags & FLAG_ZSTD else payload
        except CorruptData as exc:
            return bad(str(exc))
        if len(raw) != raw_len:
            return bad(f"{len(raw)} bytes, {raw_len} announced")
        if blake3.blake3(raw).digest() != digest:
            return bad("content does not match its BLAKE3 hash")
        if base:
            stored, sflags = self.store.compress(bytes(raw))  # rebuilt from a delta: bytes already
            return _Checked(digest, stored, raw_len, sflags)
        return _Checked(digest, payload, raw_len, flags)

    def _store_one(self) -> Iterator[rpb.ReceiveResponse]:
        checked = self._pending.popleft().result()
        cur = self._current()
        for c in checked:
            if c.error:
                reason = f"DATA_LOSS: chunk {c.digest.hex()}: {c.error}; asking the source to send it again"
                log.warning("pool %s: set %s volume %s: %s", self.store.pool, self.set_id, cur.volume, reason)
                self._rejected.append((c.digest, reason))
                yield rpb.ReceiveResponse(rejected=rpb.ChunkRejected(digest=c.digest, reason=reason))
                continue
            cur.stored_bytes += self._add(c)

    def _add(self, c: _Checked) -> int:
        if c.digest in self._written or self.store.has(c.digest):
            return 0
        try:
            # PackWriter copies the payload through a memoryview: a view of the message is fine
            self._writer.add(c.digest, cast(bytes, c.payload), c.raw_len, c.flags)
        except OSError as exc:
            raise self.store.store_error(exc, f"storing received chunks of set {self.set_id}") from exc
        self._written.add(c.digest)
        return len(c.payload)


def _frame_size(payload: Buffer) -> int:
    """The content size a zstd frame announces (a delta's pages are at most one block)."""
    try:
        size = zstandard.frame_content_size(payload)
    except zstandard.ZstdError as exc:
        raise CorruptData(f"not a zstd frame: {exc}") from None
    if not 0 <= size <= MAX_CHUNK:
        raise CorruptData(f"zstd frame announces {size} bytes")
    return int(size)


def identity_of(backend: ChunkstoreBackend, set_id: str, volume: str) -> bytes:
    """The manifest's own checksum (its last 16 bytes): equal on both sides exactly when the
    manifests are (they travel verbatim)."""
    try:
        with open(backend._manifest_path(set_id, volume), "rb") as fh:
            fh.seek(-MANIFEST_SUM_LEN, os.SEEK_END)
            return fh.read(MANIFEST_SUM_LEN)
    except OSError:
        return b""


def check_backend(backend: object) -> ChunkstoreBackend:
    if not isinstance(backend, ChunkstoreBackend):
        raise FailedPrecondition(f"pool {getattr(backend, 'pool', '?')} is not a chunkstore pool")
    return backend
