"""Encoding of the Receive stream's bulk messages without protobuf objects.

The bytes on the wire are exactly the protobuf encoding of `ReceiveRequest` (any gRPC client
built from replication.proto can talk to the target), but the bulk kinds - `data` (a btrfs stream
block), `sparse` (one with its runs of zeros left out) and `chunks` (a batch of chunk payloads) -
are encoded and decoded here by hand:
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
_F_SPARSE = 8
_WT_VARINT = 0
_WT_I64 = 1
_WT_LEN = 2
_WT_I32 = 5
_TAG_CHUNKS = (_F_CHUNKS << 3) | _WT_LEN  # 0x22
_TAG_DATA = (_F_DATA << 3) | _WT_LEN  # 0x2A
_TAG_SPARSE = (_F_SPARSE << 3) | _WT_LEN  # 0x42
_S_DATA, _S_RUNS = 1, 2  # SparseData fields
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


# --- zero runs -------------------------------------------------------------------------------------
ZERO_RUN = 4096  # the shortest run of zero bytes that travels as its length
SPARSE_MAX = 4 << 20  # the most stream bytes one sparse message may stand for
_ZEROS = bytes(ZERO_RUN)
_ZERO_TAILS = tuple(bytes(1 << k) for k in range(ZERO_RUN.bit_length() - 2, -1, -1))  # 2048 .. 1


def zero_runs(buf: bytes, start: int, end: int) -> list[tuple[int, int]]:
    """(offset, length) of each run of at least ZERO_RUN zero bytes in buf[start:end].

    Without a copy of the data and with few Python steps: a run of ZERO_RUN zeros covers two
    consecutive bytes of every ZERO_RUN/2-th (the sample, taken in C), so only where two zero
    samples follow each other is the data looked at (bytes.find, then startswith a ZERO_RUN at a
    time, both in place). bytes.find alone over all of it costs 0.1 CPU-s per GB: its skip table
    moves at most 255 bytes at a time."""
    stride = ZERO_RUN // 2
    samples = buf[start:end:stride]
    runs: list[tuple[int, int]] = []
    pos = start
    k = samples.find(b"\0\0")
    while k >= 0:
        p = start + k * stride
        # p is the first zero sample of its run: the run began after the sample before it
        i = buf.find(_ZEROS, max(pos, p - stride + 1), min(end, p + ZERO_RUN))
        if i < 0:
            k = samples.find(b"\0\0", k + 1)
            continue
        j = i + ZERO_RUN
        while j + ZERO_RUN <= end and buf.startswith(_ZEROS, j):
            j += ZERO_RUN
        for tail in _ZERO_TAILS:  # what is left of the run is shorter than ZERO_RUN
            if j + len(tail) <= end and buf.startswith(tail, j):
                j += len(tail)
        runs.append((i, j - i))
        pos = j
        k = samples.find(b"\0\0", -(-(j - start) // stride))
    return runs


def squeeze(msg: bytes, size: int) -> bytes:
    """A data message whose block (its last `size` bytes) is at least an eighth runs of zeros, as
    a sparse message without them; any other, as it is.

    A VM image's zeroed space is written extents to `btrfs send`, whose stream carries every zero
    byte; through gRPC and TLS each costs as much CPU on both agents as any other (about 2 ns a
    byte on the benchmark machine), and the wire as much. Below an eighth, copying the rest of the
    block out around the zeros would cost about what leaving them out saves."""
    start = len(msg) - size
    if size > SPARSE_MAX:
        return msg
    runs = zero_runs(msg, start, len(msg))
    zeros = sum(n for _off, n in runs)
    if zeros * 8 < size:
        return msg
    view = memoryview(msg)
    pieces: list[memoryview] = []
    layout: list[int] = []
    pos = start
    for off, n in runs:
        pieces.append(view[pos:off])
        layout += (off - pos, n)
        pos = off + n
    if pos < len(msg):
        pieces.append(view[pos:])
        layout += (len(msg) - pos, 0)
    literal = size - zeros
    packed = b"".join(varint(x) for x in layout)
    head = _key(_S_DATA, _WT_LEN) + varint(literal)
    tail = _key(_S_RUNS, _WT_LEN) + varint(len(packed)) + packed
    body = len(head) + literal + len(tail)
    return b"".join([bytes((_TAG_SPARSE,)), varint(body), head, *pieces, tail])


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
    runs: tuple[int, ...] = ()  # sparse: lengths of data and zeros, alternating


# a block's pairs: each run of zeros is at least ZERO_RUN long, and a last pair may have none
_MAX_RUNS = 2 * (SPARSE_MAX // ZERO_RUN + 1)
_TOO_MANY_RUNS = f"malformed sparse block: more than {_MAX_RUNS} runs"


def _sparse(data: memoryview, runs: Sequence[int]) -> Decoded:
    if len(runs) > _MAX_RUNS:
        raise InvalidArgument(_TOO_MANY_RUNS)
    if len(runs) % 2:
        raise InvalidArgument("malformed sparse block: its runs do not pair up (data, zeros)")
    literal = sum(runs[0::2])
    if literal != len(data):
        raise InvalidArgument(
            f"malformed sparse block: its runs say {literal} bytes of data, it has {len(data)}"
        )
    if literal + sum(runs[1::2]) > SPARSE_MAX:
        raise InvalidArgument(f"malformed sparse block: it stands for more than {SPARSE_MAX} bytes")
    return Decoded("sparse", data=data, runs=tuple(runs))


def _sparse_fields(buf: memoryview) -> Decoded:
    data = memoryview(b"")
    runs: list[int] = []
    for field, wt, value in _fields(buf, 0, len(buf)):
        if field == _S_DATA and isinstance(value, memoryview):
            data = value
        elif field == _S_RUNS and isinstance(value, memoryview):  # packed, as protobuf writes it
            pos = 0
            while pos < len(value):
                if len(runs) >= _MAX_RUNS:  # before parsing a hostile list of millions
                    raise InvalidArgument(_TOO_MANY_RUNS)
                n, pos = _read_varint(value, pos, len(value))
                runs.append(n)
        elif field == _S_RUNS and isinstance(value, int) and wt == _WT_VARINT:
            runs.append(value)
    return _sparse(data, runs)


def decode(raw: bytes) -> Decoded:
    buf = memoryview(raw)
    end = len(buf)
    if end and buf[0] in (_TAG_DATA, _TAG_CHUNKS, _TAG_SPARSE):
        # the fast paths: the whole message is this one field
        n, pos = _read_varint(buf, 1, end)
        if pos + n == end:
            if buf[0] == _TAG_DATA:
                return Decoded("data", data=buf[pos:end])
            if buf[0] == _TAG_SPARSE:
                return _sparse_fields(buf[pos:end])
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
    if kind == "sparse":
        return _sparse(memoryview(msg.sparse.data), msg.sparse.runs)
    if kind == "chunks":
        return Decoded(
            "chunks",
            chunks=tuple(
                ChunkIn(c.digest, memoryview(c.payload), c.raw_len, c.flags, c.base, c.page_map)
                for c in msg.chunks.chunks
            ),
        )
    return Decoded(kind or "", msg=msg)
