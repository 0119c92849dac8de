"""How the agents run `btrfs send`/`receive` and forward the stream (replication/btrfs.py),
without root or btrfs: a socket written by a thread stands in for `btrfs send`, and small scripts
named `btrfs` on PATH for the program.

What matters to the target: a pause in the stream sends what came before it (compressed or not),
messages stay within their size, each compressed message decodes on its own, and the bytes that
arrive are the stream's, in order.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from reconciler.errors import CorruptData, FailedPrecondition, InvalidArgument
from reconciler.replication import btrfs as btrfs_repl
from reconciler.replication import wire
from reconciler.replication.btrfs import MESSAGE_SIZE, btrfs_program, forward_stream, start_btrfs
from reconciler.replication.progress import Meter, VolumeEstimate
from reconciler.v1 import replication_pb2 as rpb
from tests.replication_lab import CollectLink, unsqueeze


def _payloads(frames: list[tuple[float, bytes]], *, compression: bool = False) -> Iterator[bytes]:
    """The stream bytes of data (and sparse) messages; compressed, each message is decoded as the
    target does it, on its own."""
    for _t, frame in frames:
        d = wire.decode(frame)
        if d.kind == "sparse":
            yield unsqueeze(d)
            continue
        assert d.kind == "data" and d.data is not None
        if compression:
            yield btrfs_repl._decompress(zstandard.ZstdDecompressor(), d.data, "v")
        else:
            yield bytes(d.data)


class _CountingSocket(socket.socket):
    reads = 0

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self.reads += 1
        return super().recv(bufsize, flags)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self.reads += 1
        return super().recv_into(buffer, nbytes, flags)


def _forward(
    writes: list[bytes | float],
    *,
    compression: bool,
    meter: Meter | None = None,
    estimate: btrfs_repl.StreamEstimate | None = None,
) -> tuple[CollectLink, list[float], int, int]:
    """Run forward_stream on the socket `btrfs send` would write to, which a thread writes
    `writes` to (a float: pause that long); returns the link, when each write was done, the stream
    bytes counted and how many reads forward_stream made."""
    ours, theirs = btrfs_repl._output_socket()
    counting = _CountingSocket(fileno=ours.detach())
    link = CollectLink()
    done: list[float] = []

    def writer() -> None:
        with theirs:
            for item in writes:
                if isinstance(item, float):
                    time.sleep(item)
                else:
                    theirs.sendall(item)
                    done.append(time.monotonic())

    t = threading.Thread(target=writer)
    t.start()
    try:
        n = forward_stream(counting, link, meter or Meter(), compression=compression, estimate=estimate)
    finally:
        t.join()
        counting.close()
    return link, done, n, counting.reads


@pytest.mark.parametrize("compression", [False, True])
def test_a_pause_in_the_stream_sends_what_came_before_it(compression: bool) -> None:
    head, tail = b"btrfs-stream\0" + os.urandom(300), b"end command" * 10
    link, done, n, _reads = _forward([head, 0.5, tail], compression=compression)
    assert n == len(head) + len(tail)
    before = [(t, f) for t, f in link.frames if t < done[1]]
    assert before, "nothing left during the pause"
    assert b"".join(_payloads(before, compression=compression)) == head  # all of it, before the rest
    assert before[-1][0] - done[0] < 0.2  # within a few ms of the pause, not at the end
    assert b"".join(_payloads(link.frames[len(before) :], compression=compression)) == tail


@pytest.mark.parametrize("compression", [False, True])
def test_a_burst_travels_in_bounded_messages_and_arrives_whole(compression: bool) -> None:
    block = os.urandom(1 << 20)
    data = block * 10  # incompressible blocks: compression changes little in size
    link, _done, n, _reads = _forward([data], compression=compression)
    assert n == len(data)
    sizes = [len(f) for _t, f in link.frames]
    assert max(sizes) <= MESSAGE_SIZE + (64 << 10)  # (zstd adds a little to incompressible data)
    assert b"".join(_payloads(link.frames, compression=compression)) == data


@pytest.mark.parametrize(
    ("frame", "complaint"),
    [
        (b"not zstd at all", "not a zstd frame"),
        (
            zstandard.ZstdCompressor(write_content_size=False).compressobj().compress(b"x" * 100)
            + zstandard.ZstdCompressor(write_content_size=False).compressobj().flush(),
            "does not declare its size",
        ),
        (zstandard.ZstdCompressor().compress(bytes(MESSAGE_SIZE + 1)), f"over {MESSAGE_SIZE}"),
        (zstandard.ZstdCompressor().compress(b"x" * 100) + b"trailing", "cannot decompress"),
        (zstandard.ZstdCompressor().compress(os.urandom(1000))[:-5], "cannot decompress"),
    ],
    ids=["garbage", "no-size", "too-big", "trailing", "truncated"],
)
def test_a_compressed_message_that_is_not_one_bounded_zstd_frame_is_refused(
    frame: bytes, complaint: str
) -> None:
    with pytest.raises(CorruptData, match=complaint) as caught:
        btrfs_repl._decompress(zstandard.ZstdDecompressor(), memoryview(frame), "vm1")
    assert "'vm1'" in str(caught.value)


def test_a_steady_stream_is_read_a_tick_at_a_time_not_a_piece_at_a_time() -> None:
    """`btrfs send` writes 64-144 KiB at a time; the reader lets pieces gather in the socket and
    takes several per read (it used to wake and read for every piece)."""
    pieces = [os.urandom(4096) for _ in range(200)]
    # 16 MB/s: a piece every quarter of a millisecond, or so
    writes: list[bytes | float] = [x for piece in pieces for x in (piece, 0.00025)]
    link, _done, n, reads = _forward(writes, compression=False)
    assert n == len(pieces) * 4096
    assert b"".join(_payloads(link.frames)) == b"".join(pieces)
    assert 0 < reads <= len(pieces) // 2, f"{reads} reads for {len(pieces)} pieces"


def _fake_btrfs(directory: Path, says: str) -> Path:
    directory.mkdir()
    path = directory / "btrfs"
    path.write_text(f'#!/bin/sh\necho {says} "$@"\n')
    path.chmod(0o755)
    return path


def test_the_btrfs_program_is_found_once_again_after_it_moved_and_missing_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    btrfs_program.cache_clear()
    try:
        monkeypatch.setenv("PATH", str(tmp_path / "none"))
        with pytest.raises(FailedPrecondition, match="btrfs-progs is not installed"):
            btrfs_program()
        old = _fake_btrfs(tmp_path / "old", "old")
        monkeypatch.setenv("PATH", f"{tmp_path / 'new'}:{old.parent}")
        assert btrfs_program() == str(old)  # found now (a failed lookup is not kept) ...
        _fake_btrfs(tmp_path / "new", "new")
        assert btrfs_program() == str(old)  # ... and kept: no PATH walk for each process

        def run() -> str:
            err = os.fdopen(os.memfd_create("err"), "w+b")
            with err:
                proc = start_btrfs(
                    ["send", "x"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err
                )
                out, _ = proc.communicate()
            return out.decode().strip()

        assert run() == "old send x"
        old.unlink()  # btrfs-progs reinstalled elsewhere
        assert run() == "new send x"
    finally:
        btrfs_program.cache_clear()


@pytest.mark.parametrize(
    ("progs", "kernel", "receives", "sends"),
    [
        ("btrfs-progs v6.2", "2", 2, 2),
        ("btrfs-progs v5.18.1", "2", 2, 2),
        ("btrfs-progs v5.17", "2", 1, 1),  # too old to read or write v2
        ("btrfs-progs v6.6", "1", 2, 1),  # the kernel cannot send v2 (it can still receive it)
        ("btrfs-progs v6.6", "3", 2, 2),  # a debug kernel's v3 is not used
        ("something else", "2", 1, 1),
    ],
)
def test_the_btrfs_stream_version_is_what_both_progs_and_kernel_support(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, progs: str, kernel: str, receives: int, sends: int
) -> None:
    _fake_btrfs(tmp_path / "bin", f"'{progs}'")  # what `btrfs --version` prints, and more
    sysfs = tmp_path / "send_stream_version"
    sysfs.write_text(kernel + "\n")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(btrfs_repl, "SEND_STREAM_SYSFS", sysfs)
    btrfs_program.cache_clear()
    btrfs_repl._progs_version.cache_clear()
    try:
        assert btrfs_repl.receive_stream_version() == receives
        assert btrfs_repl.send_stream_version() == sends
    finally:
        btrfs_program.cache_clear()
        btrfs_repl._progs_version.cache_clear()


def test_without_btrfs_progs_the_stream_version_is_1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    btrfs_program.cache_clear()
    btrfs_repl._progs_version.cache_clear()
    try:
        assert btrfs_repl.receive_stream_version() == 1
        assert btrfs_repl.send_stream_version() == 1
    finally:
        btrfs_program.cache_clear()
        btrfs_repl._progs_version.cache_clear()


@pytest.mark.parametrize("size", [1, 127, 128, 16_383, 16_384, (1 << 21) + 5, MESSAGE_SIZE])
def test_a_data_message_read_from_the_socket_is_the_protobuf_encoding(size: int) -> None:
    block = os.urandom(size)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        t = threading.Thread(target=theirs.sendall, args=(block + b"rest",))
        t.start()
        msg = wire.data_message_from(ours, size)
        t.join()
        assert type(msg) is bytes
        assert msg == wire.encode_data(block)
        assert hash(msg) == hash(wire.encode_data(block))
        assert rpb.ReceiveRequest.FromString(msg).data == block
        assert ours.recv(4) == b"rest"  # not a byte more was taken


def test_a_stream_that_ends_short_of_the_block_is_an_error() -> None:
    ours, theirs = socket.socketpair()
    with ours:
        theirs.sendall(b"x" * 100)
        theirs.close()
        with pytest.raises(EOFError, match="100 bytes short"):
            wire.data_message_from(ours, 200)


def _runs_by_hand(buf: bytes, start: int, end: int) -> list[tuple[int, int]]:
    runs, i = [], start
    while i < end:
        j = i
        while j < end and buf[j] == 0:
            j += 1
        if j - i >= wire.ZERO_RUN:
            runs.append((i, j - i))
        i = max(j, i + 1)
    return runs


def test_zero_runs_are_found_exactly_wherever_they_start_and_end() -> None:
    """Runs of exactly ZERO_RUN and one byte short of it, across the sampling stride, at the
    edges of the range, and zeros that alternate with data (many zero bytes, no run)."""
    rng = random.Random(7)
    lengths = [1, 100, 2047, 2048, 2049, 4095, 4096, 4097, 6143, 6144, 8191, 8192, 8193, 20_000]
    found = 0
    for _ in range(400):
        parts = []
        for _ in range(rng.randint(0, 12)):
            n, kind = rng.choice(lengths), rng.random()
            parts.append(bytes(n) if kind < 0.5 else rng.randbytes(n) if kind < 0.8 else b"\0\1" * n)
        pre = rng.randint(0, 3)
        buf = rng.randbytes(pre) + b"".join(parts)
        start = rng.randint(0, pre)
        end = len(buf) - rng.randint(0, min(3, len(buf) - start))
        runs = wire.zero_runs(buf, start, end)
        assert runs == _runs_by_hand(buf, start, end)
        found += len(runs)
    assert found > 400


def _nonzero(n: int) -> bytes:
    return bytes(b | 1 for b in os.urandom(n))


def test_a_block_with_runs_of_zeros_travels_without_them_and_comes_back_whole() -> None:
    # (random bytes without zeros: a zero next to a run would lengthen it, 3 times in 256)
    block = _nonzero(3000) + bytes(70_000) + b"hdr" + bytes(128 << 10) + _nonzero(9000) + bytes(5000)
    msg = wire.squeeze(wire.encode_data(block), len(block))
    assert len(msg) < 12_100
    d = wire.decode(msg)
    assert d.kind == "sparse" and d.data is not None
    assert bytes(d.data) == block[:3000] + b"hdr" + block[-14000:-5000]
    assert d.runs == (3000, 70_000, 3, 128 << 10, 9000, 5000)
    assert unsqueeze(d) == block
    # exactly the protobuf encoding: any client built from replication.proto reads and writes it
    assert (
        msg == rpb.ReceiveRequest(sparse=rpb.SparseData(data=bytes(d.data), runs=d.runs)).SerializeToString()
    )
    assert rpb.ReceiveRequest.FromString(msg).sparse.runs == list(d.runs)


def test_a_block_with_few_zeros_travels_as_it_is() -> None:
    block = os.urandom(60_000) + bytes(8192) + os.urandom(1000)  # an eighth would be 8649 bytes
    msg = wire.encode_data(block)
    assert wire.squeeze(msg, len(block)) is msg
    small = wire.encode_data(bytes(100))  # all zeros, but no run
    assert wire.squeeze(small, 100) is small


@pytest.mark.parametrize(
    ("sparse", "complaint"),
    [
        (rpb.SparseData(data=b"abc", runs=[3, 4096, 5]), "do not pair up"),
        (rpb.SparseData(data=b"abc", runs=[2, 4096]), "say 2 bytes of data, it has 3"),
        (rpb.SparseData(data=b"abc", runs=[3, 1 << 40]), f"more than {wire.SPARSE_MAX} bytes"),
        (rpb.SparseData(data=b"", runs=[0, wire.SPARSE_MAX, 0, 1]), f"more than {wire.SPARSE_MAX} bytes"),
        (rpb.SparseData(data=b"", runs=[0, 0] * 1026), "more than 2050 runs"),
    ],
    ids=["odd", "short", "huge", "just-over", "too-many"],
)
def test_a_sparse_block_that_does_not_add_up_is_refused(sparse: rpb.SparseData, complaint: str) -> None:
    with pytest.raises(InvalidArgument, match=complaint):
        wire.decode(rpb.ReceiveRequest(sparse=sparse).SerializeToString())


def test_a_stream_with_zeroed_regions_is_forwarded_sparse_and_arrives_whole() -> None:
    """What `btrfs send` makes of a VM image's zeroed space: write commands full of zeros."""
    stream = b"".join(b"cmd-header" + (bytes(64 << 10) if i % 3 else os.urandom(64 << 10)) for i in range(40))
    link, _done, n, _reads = _forward([stream], compression=False)
    assert n == len(stream)
    assert b"".join(_payloads(link.frames)) == stream
    assert any(wire.decode(f).kind == "sparse" for _t, f in link.frames)
    wire_bytes = sum(len(f) for _t, f in link.frames)
    assert wire_bytes < len(stream) * 0.4, (wire_bytes, len(stream))  # two thirds were zeros


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_stream_estimate_becomes_wire_bytes_at_the_ratio_seen_and_exact_at_the_end() -> None:
    clock = _Clock()
    meter = Meter(clock=clock)
    one, two = btrfs_repl.StreamEstimate(), btrfs_repl.StreamEstimate()
    assert meter.stats.total_bytes == 0 and meter.stats.eta_seconds == -1  # nothing known yet
    one.known(meter, 100_000_000)
    assert meter.stats.total_bytes == 100_000_000  # before anything went: one wire byte per byte
    # 40 MB of the stream went out as 20 MB (zero runs or compression): the other 60 MB will too
    clock.now += 2
    meter.add(sent=40_000_000, wire=20_000_000)
    one.progress(meter, stream=40_000_000, wire=20_000_000)
    stats = meter.stats
    assert stats.total_bytes == 50_000_000
    assert stats.rate_bps == 10_000_000 and stats.eta_seconds == pytest.approx(3.0)
    two.known(meter, 8_000_000)  # the next volume's, worked out meanwhile
    assert meter.stats.total_bytes == 58_000_000
    # the stream turns out longer than estimated: nothing more is expected of it than it sent
    one.progress(meter, stream=120_000_000, wire=61_000_000)
    assert meter.stats.total_bytes == 61_000_000 + 8_000_000
    one.close(meter, wire=62_000_000)  # and at its end, what it cost
    assert meter.stats.total_bytes == 62_000_000 + 8_000_000
    one.progress(meter, stream=130_000_000, wire=70_000_000)  # (closed: no more changes)
    one.known(meter, 1)
    assert meter.stats.total_bytes == 70_000_000


def test_an_estimate_that_comes_after_its_stream_ended_adds_nothing() -> None:
    meter = Meter()
    late = btrfs_repl.StreamEstimate()
    late.close(meter, wire=5_000)
    late.known(meter, 4_000)
    assert meter.stats.total_bytes == 0 and late.settled


@pytest.mark.parametrize("compression", [False, True])
def test_forward_stream_leaves_the_total_at_the_wire_bytes_its_data_cost(compression: bool) -> None:
    rng = random.Random(7)
    data = rng.randbytes(3 << 20) + bytes(2 << 20) + b"text " * 200_000
    meter = Meter()
    estimate = btrfs_repl.StreamEstimate()
    estimate.known(meter, len(data) // 2)  # a poor estimate: the end puts it right
    link, _done, n, _reads = _forward([data], compression=compression, meter=meter, estimate=estimate)
    assert n == len(data)
    frames = sum(len(f) for _t, f in link.frames)
    assert meter.stats.total_bytes == frames < len(data)


def test_a_volume_estimate_is_replaced_by_what_the_volume_costs() -> None:
    meter = Meter()
    guessed, unguessed, late = VolumeEstimate(), VolumeEstimate(), VolumeEstimate()
    guessed.guess(meter, 1_000)
    guessed.guess(meter, 1_500)  # a better guess replaces the first
    assert meter.stats.total_bytes == 1_500
    guessed.settle(meter, 1_200)  # the need list: what it costs
    unguessed.settle(meter, 300)  # (the chunkstore's need list counts with or without a guess)
    assert meter.stats.total_bytes == 1_500
    late.settle(meter, 700, if_guessed=True)  # (a btrfs stream without an estimate adds nothing)
    late.guess(meter, 5_000)
    guessed.guess(meter, 9_000)
    assert meter.stats.total_bytes == 1_500 and late.settled
