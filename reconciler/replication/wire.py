"""Encoding of the Receive stream's bulk messages without protobuf objects.

The bytes on the wire are exactly the protobuf encoding of `ReceiveRequest` (any gRPC client
built from replication.proto can talk to the target), but the two bulk kinds - `data` (a btrfs
stream block) and `chunks` (a batch of chunk payloads) - are encoded and decoded here by hand:
building and parsing MiB-sized protobuf messages copies every payload two or three more times
and holds the GIL while doing it, which halved the throughput of a transfer (measured: 250 vs
420 MiB/s through gRPC with TLS on the benchmark machine). Everything else goes through protobuf.

The decoder is strict about what it reads (bounds, wire types) and skips fields it does not know,
like protobuf does; garbage is an InvalidArgument naming what is wrong.
"""

from __future__ import annotations

import ctypes
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidArgument
from ..v1 import replication_pb2 as rpb

# ReceiveRequest field numbers (replication.proto) and protobuf wire types
_F_CHUNKS = 4
_F_DATA = 5
_WT_VARINT = 0
_WT_I64 = 1
_WT_LEN = 2
_WT_I32 = 5
_TAG_CHUNKS = (_F_CHUNKS << 3) | _WT_LEN  # 0x22
_TAG_DATA = (_F_DATA << 3) | _WT_LEN  # 0x2A
# Chunk fields
_C_DIGEST, _C_PAYLOAD, _C_RAW_LEN, _C_FLAGS, _C_BASE, _C_PAGE_MAP = 1, 2, 3, 4, 5, 6


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return varint((field << 3) | wire_type)


@dataclass(frozen=True, slots=True)
class ChunkIn:
    digest: bytes
    payload: memoryview
    raw_len: int
    flags: int
    base: bytes
    page_map: bytes


@dataclass(frozen=True, slots=True)
class ChunkOut:
    digest: bytes
    payload: bytes
    raw_len: int
    flags: int
    base: bytes = b""
    page_map: bytes = b""


def encode_data(block: bytes) -> bytes:
    """ReceiveRequest{data: block}."""
    return b"".join((bytes((_TAG_DATA,)), varint(len(block)), block))


_PyBytes_FromStringAndSize = ctypes.pythonapi.PyBytes_FromStringAndSize
_PyBytes_FromStringAndSize.argtypes = [ctypes.c_char_p, ctypes.c_ssize_t]
_PyBytes_FromStringAndSize.restype = ctypes.py_object


def data_message_from(sock: socket.socket, size: int) -> bytes:
    """ReceiveRequest{data: the next `size` bytes of `sock`}, read straight into the message.

    gRPC wants each message as one `bytes`; reading the block and joining it behind its field
    header copied every byte of a btrfs stream once more in user space (0.1-0.2 CPU-s per GB on
    the benchmark machine). Instead the message is allocated as C code does it - uninitialized,
    PyBytes_FromStringAndSize(NULL, n), documented to be filled by its creator before anyone
    else sees it - and the socket's bytes are received into it. `size` bytes must be waiting in
    `sock` (SIOCINQ said so), or its peer must be sending them."""
    head = bytes((_TAG_DATA,)) + varint(size)
    msg: bytes = _PyBytes_FromStringAndSize(None, len(head) + size)
    address = ctypes.cast(ctypes.c_char_p(msg), ctypes.c_void_p).value
    assert address is not None
    view = memoryview((ctypes.c_char * len(msg)).from_address(address)).cast("B")
    view[: len(head)] = head
    got = len(head)
    while got < len(msg):
        n = sock.recv_into(view[got:])
        if not n:
            raise EOFError(f"the stream ended {len(msg) - got} bytes short of a {size}-byte block")
        got += n
    return msg


def encode_chunks(chunks: Sequence[ChunkOut]) -> bytes:
    """ReceiveRequest{chunks: ChunkBatch{chunks: [...]}}."""
    parts: list[bytes] = []
    for c in chunks:
        fields = [
            _key(_C_DIGEST, _WT_LEN),
            varint(len(c.digest)),
            c.digest,
            _key(_C_PAYLOAD, _WT_LEN),
            varint(len(c.payload)),
            c.payload,
            _key(_C_RAW_LEN, _WT_VARINT),
            varint(c.raw_len),
            _key(_C_FLAGS, _WT_VARINT),
            varint(c.flags),
        ]
        if c.base:
            fields += [_key(_C_BASE, _WT_LEN), varint(len(c.base)), c.base]
        if c.page_map:
            fields += [_key(_C_PAGE_MAP, _WT_LEN), varint(len(c.page_map)), c.page_map]
        size = sum(len(f) for f in fields)
        parts += [_key(1, _WT_LEN), varint(size), *fields]
    batch_len = sum(len(p) for p in parts)
    return b"".join([bytes((_TAG_CHUNKS,)), varint(batch_len), *parts])


def encode(msg: rpb.ReceiveRequest) -> bytes:
    out: bytes = msg.SerializeToString()
    return out


# --- decoding -------------------------------------------------------------------------------------
def _read_varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end or shift > 63:
            raise InvalidArgument("malformed replication message: truncated or overlong varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview, pos: int, end: int) -> list[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of one message; LEN values as memoryview slices."""
    out: list[tuple[int, int, int | memoryview]] = []
    while pos < end:
        key, pos = _read_varint(buf, pos, end)
        field, wt = key >> 3, key & 7
        if field == 0:
            raise InvalidArgument("malformed replication message: field number 0")
        if wt == _WT_VARINT:
            value, pos = _read_varint(buf, pos, end)
            out.append((field, wt, value))
        elif wt == _WT_LEN:
            n, pos = _read_varint(buf, pos, end)
            if n > end - pos:
                raise InvalidArgument("malformed replication message: a field runs past the end")
            out.append((field, wt, buf[pos : pos + n]))
            pos += n
        elif wt == _WT_I64:
            pos += 8
        elif wt == _WT_I32:
            pos += 4
        else:
            raise InvalidArgument(f"malformed replication message: wire type {wt}")
        if pos > end:
            raise InvalidArgument("malformed replication message: truncated")
    return out


def _chunk(buf: memoryview) -> ChunkIn:
    digest = b""
    payload = memoryview(b"")
    raw_len = flags = 0
    base = page_map = b""
    for field, wt, value in _fields(buf, 0, len(buf)):
        if isinstance(value, memoryview):
            if wt != _WT_LEN:  # pragma: no cover - _fields pairs them
                continue
            if field == _C_DIGEST:
                digest = bytes(value)
            elif field == _C_PAYLOAD:
                payload = value
            elif field == _C_BASE:
                base = bytes(value)
            elif field == _C_PAGE_MAP:
                page_map = bytes(value)
        elif field == _C_RAW_LEN:
            raw_len = value & 0xFFFFFFFF
        elif field == _C_FLAGS:
            flags = value & 0xFFFFFFFF
    return ChunkIn(digest, payload, raw_len, flags, base, page_map)


@dataclass(frozen=True, slots=True)
class Decoded:
    kind: str  # a ReceiveRequest oneof name
    data: memoryview | None = None
    chunks: tuple[ChunkIn, ...] = ()
    msg: rpb.ReceiveRequest | None = None


def decode(raw: bytes) -> Decoded:
    buf = memoryview(raw)
    end = len(buf)
    if end and buf[0] in (_TAG_DATA, _TAG_CHUNKS):
        # the fast paths: the whole message is this one field
        n, pos = _read_varint(buf, 1, end)
        if pos + n == end:
            if buf[0] == _TAG_DATA:
                return Decoded("data", data=buf[pos:end])
            chunks = tuple(
                _chunk(value)
                for field, wt, value in _fields(buf, pos, end)
                if field == 1 and wt == _WT_LEN and isinstance(value, memoryview)
            )
            return Decoded("chunks", chunks=chunks)
    try:
        msg = rpb.ReceiveRequest.FromString(raw)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise InvalidArgument(f"malformed replication message: {exc}") from None
    kind = msg.WhichOneof("msg")
    if kind == "data":
        return Decoded("data", data=memoryview(msg.data))
    if kind == "chunks":
        return Decoded(
            "chunks",
            chunks=tuple(
                ChunkIn(c.digest, memoryview(c.payload), c.raw_len, c.flags, c.base, c.page_map)
                for c in msg.chunks.chunks
            ),
        )
    return Decoded(kind or "", msg=msg)
