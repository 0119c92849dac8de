"""PipeFeeder: buffers go into a pipe by reference (vmsplice), intact, and stay referenced for as
long as the pipe may still hold their pages."""

from __future__ import annotations

import fcntl
import os
import random
import sys
import threading
from pathlib import Path

import pytest

from reconciler.pipefeed import F_GETPIPE_SZ, PipeFeeder


def _drain(fd: int, out: list[bytes], *, size: int = 1 << 16) -> None:
    while True:
        chunk = os.read(fd, size)
        if not chunk:
            return
        out.append(chunk)


def test_what_is_fed_arrives_whole_and_in_order() -> None:
    r, w = os.pipe()
    rng = random.Random(7)
    sent = [rng.randbytes(rng.choice([1, 100, 4096, 70_000, 1 << 20, 3 << 20])) for _ in range(60)]
    got: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(r, got), kwargs={"size": 12_345})
    reader.start()
    feeder = PipeFeeder(w)
    try:
        for i, block in enumerate(sent):
            # bytes, and memoryview slices of them (what the receiver hands over: a view into a message)
            feeder.write(block if i % 2 else memoryview(b"head" + block + b"tail")[4:-4])
        feeder.write(b"")
    finally:
        os.close(w)
        reader.join()
        os.close(r)
    feeder.release()
    assert b"".join(got) == b"".join(sent)


def test_the_pipe_reads_the_buffer_itself_so_it_is_kept_until_a_pipe_full_follows() -> None:
    r, w = os.pipe()
    capacity = fcntl.fcntl(w, F_GETPIPE_SZ)
    feeder = PipeFeeder(w)
    try:
        buf = bytearray(b"A" * 8192)
        feeder.write(memoryview(buf))
        buf[:4] = b"BBBB"  # (a bytearray only to show it: what is fed for real never changes)
        assert os.read(r, 8) == b"BBBBAAAA", "vmsplice is not in use: the pipe holds a copy"
        os.read(r, 8192 - 8)

        held = bytes(range(256)) * 16
        before = sys.getrefcount(held)
        feeder.write(held)
        assert sys.getrefcount(held) == before + 1  # kept: the pipe may still hold its pages
        filler = b"x" * (capacity // 4)
        got: list[bytes] = []
        reader = threading.Thread(target=_drain, args=(r, got))
        reader.start()
        for _ in range(3):
            feeder.write(filler)
        assert sys.getrefcount(held) == before + 1  # 3/4 of a pipe after it: still kept
        feeder.write(filler)
        assert sys.getrefcount(held) == before  # a pipe's worth after it: consumed, let go
        feeder.release()
    finally:
        os.close(w)
    reader.join()
    os.close(r)
    assert b"".join(got) == held + filler * 4


def test_a_reader_that_went_away_is_a_broken_pipe() -> None:
    r, w = os.pipe()
    os.close(r)
    try:
        with pytest.raises(BrokenPipeError):
            PipeFeeder(w).write(b"data")
    finally:
        os.close(w)


def test_what_is_not_a_pipe_is_written_to_plainly(tmp_path: Path) -> None:
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        feeder = PipeFeeder(fd)
        feeder.write(b"one ")
        feeder.write(memoryview(b"two three")[:3])
    finally:
        os.close(fd)
    assert path.read_bytes() == b"one two"
