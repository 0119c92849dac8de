"""Snapshot manifests of the chunkstore backend: the tree of one snapshot and the chunks it uses.

    b"RCMANI01" | u32 len | zstd(meta JSON) | u32 n | n * 32-byte digests | u32 len | zstd(entries JSON)
    | blake3(all of the above)[:16]

The digest table is kept apart and uncompressed so GC, space accounting and verify can read
which chunks a snapshot uses without parsing its entries. A file entry lists indices into the
table in block order; ZERO_BLOCK marks an all-zero block, restored as a hole.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

import blake3
import zstandard

MAGIC = b"RCMANI01"
FORMAT = 1
ZERO_BLOCK = -1
FILE, DIR, SYMLINK = "file", "dir", "symlink"
_KIND_CODE = {FILE: 0, DIR: 1, SYMLINK: 2}
_CODE_KIND = {v: k for k, v in _KIND_CODE.items()}
_U32 = struct.Struct("<I")
_SUM_LEN = 16
DIGEST_LEN = 32


class CorruptManifest(Exception):
    pass


@dataclass(slots=True)
class Entry:
    path: str  # relative to the volume root, '/'-separated; '' is the root itself
    kind: str
    mode: int  # permission bits (stat.S_IMODE)
    uid: int
    gid: int
    mtime_ns: int
    size: int = 0
    # stat-cache identity of a regular file, compared by the next snapshot of the volume
    ctime_ns: int = 0
    ino: int = 0
    target: str = ""  # symlink target, stored verbatim and never followed
    chunks: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Manifest:
    set_id: str
    volume: str
    block_size: int
    started_ns: int
    committed_ns: int = 0
    logical_bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    table: list[bytes] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)


def encode(m: Manifest) -> bytes:
    meta = {
        "format": FORMAT,
        "set_id": m.set_id,
        "volume": m.volume,
        "block_size": m.block_size,
        "started_ns": m.started_ns,
        "committed_ns": m.committed_ns,
        "logical_bytes": m.logical_bytes,
        "warnings": m.warnings,
    }
    rows = []
    for e in m.entries:
        extra: object = e.chunks if e.kind == FILE else (e.target if e.kind == SYMLINK else None)
        rows.append(
            [e.path, _KIND_CODE[e.kind], e.mode, e.uid, e.gid, e.mtime_ns, e.size, e.ctime_ns, e.ino, extra]
        )
    cctx = zstandard.ZstdCompressor(level=3)
    # ensure_ascii keeps undecodable file names (surrogate escapes) representable
    meta_z = cctx.compress(json.dumps(meta).encode())
    rows_z = cctx.compress(json.dumps(rows, separators=(",", ":")).encode())
    body = b"".join(
        [
            MAGIC,
            _U32.pack(len(meta_z)),
            meta_z,
            _U32.pack(len(m.table)),
            *m.table,
            _U32.pack(len(rows_z)),
            rows_z,
        ]
    )
    return body + blake3.blake3(body).digest(length=_SUM_LEN)


def decode(data: bytes, *, with_entries: bool = True) -> Manifest:
    try:
        return _decode(data, with_entries)
    except CorruptManifest:
        raise
    except (ValueError, KeyError, TypeError, IndexError, struct.error, zstandard.ZstdError) as exc:
        raise CorruptManifest(f"cannot parse: {exc}") from None


def _decode(data: bytes, with_entries: bool) -> Manifest:
    if len(data) < len(MAGIC) + _SUM_LEN or not data.startswith(MAGIC):
        raise CorruptManifest("not a chunkstore manifest")
    body, checksum = data[:-_SUM_LEN], data[-_SUM_LEN:]
    if blake3.blake3(body).digest(length=_SUM_LEN) != checksum:
        raise CorruptManifest("checksum mismatch")
    dctx = zstandard.ZstdDecompressor()
    pos = len(MAGIC)
    (n,) = _U32.unpack_from(body, pos)
    pos += 4
    meta = json.loads(dctx.decompress(body[pos : pos + n]))
    pos += n
    if meta.get("format") != FORMAT:
        raise CorruptManifest(f"unsupported format {meta.get('format')!r}")
    (count,) = _U32.unpack_from(body, pos)
    pos += 4
    table = [body[i : i + DIGEST_LEN] for i in range(pos, pos + count * DIGEST_LEN, DIGEST_LEN)]
    pos += count * DIGEST_LEN
    m = Manifest(
        set_id=meta["set_id"],
        volume=meta["volume"],
        block_size=meta["block_size"],
        started_ns=meta["started_ns"],
        committed_ns=meta["committed_ns"],
        logical_bytes=meta["logical_bytes"],
        warnings=list(meta["warnings"]),
        table=table,
    )
    if not with_entries:
        return m
    (n,) = _U32.unpack_from(body, pos)
    pos += 4
    rows = json.loads(dctx.decompress(body[pos : pos + n]))
    for path, code, mode, uid, gid, mtime_ns, size, ctime_ns, ino, extra in rows:
        kind = _CODE_KIND[code]
        e = Entry(path, kind, mode, uid, gid, mtime_ns, size, ctime_ns, ino)
        if kind == FILE:
            e.chunks = extra
            if any(not -1 <= c < count for c in extra):
                raise CorruptManifest(f"entry {path!r} refers to a chunk outside the table")
        elif kind == SYMLINK:
            e.target = extra
        m.entries.append(e)
    return m
