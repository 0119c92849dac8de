"""Deterministic benchmark data: a VM-like disk image plus a tree of small files.

The same seed always yields the same bytes, so runs on different days compare. Content is a mix a
storage appliance sees: zero runs (half of them holes, half written zeros), text-like regions
(compressible, but unique so nothing dedups by accident) and incompressible random regions.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import blake3

MiB = 1 << 20
KiB = 1 << 10
SECTOR = 4096
# The shape: ~800 MiB image + ~5,000 small files (~160 MiB) = 960 MiB, just over 1 GB.
DEFAULT_SIZE_MB = 960
IMAGE_SHARE = 5 / 6
SMALL_FILES_PER_960MB = 5000


@dataclass(frozen=True)
class Dataset:
    root: Path
    image: Path
    image_bytes: int
    small_files: int
    small_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.image_bytes + self.small_bytes


class _Content:
    """Fast deterministic generators (pure Python would be far too slow byte by byte)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self._counter = 0
        letters = b"abcdefghijklmnopqrstuvwxyz"
        vocab = [bytes(self.rng.choices(letters, k=self.rng.randint(2, 10))) for _ in range(4000)]
        # Log/document-like lines: random choices of a line pool are unique at block level but
        # compress about as well as real text (zstd -3: ~0.35, lz4: ~0.5).
        self.lines = [
            b" ".join(self.rng.choices(vocab, k=self.rng.randint(3, 16))) + b"\n" for _ in range(50000)
        ]

    def text(self, n: int) -> bytes:
        parts: list[bytes] = []
        have = 0
        while have < n:
            chunk = b"".join(self.rng.choices(self.lines, k=max(16, min(20000, (n - have) // 60 + 16))))
            parts.append(chunk)
            have += len(chunk)
        return b"".join(parts)[:n]

    def random(self, n: int) -> bytes:
        self._counter += 1
        return blake3.blake3(f"{self.seed}:{self._counter}".encode()).digest(length=n)


def _write_image(path: Path, size: int, gen: _Content) -> None:
    rng = gen.rng
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)  # starts fully sparse, like a fresh raw image
        off = 0
        while off < size:
            # region lengths 64 KiB .. 8 MiB, log-uniform, sector aligned
            length = int(2 ** rng.uniform(16, 23)) // SECTOR * SECTOR
            length = min(length, size - off)
            kind = rng.choices(("zero", "text", "random"), weights=(30, 35, 35))[0]
            if kind == "zero":
                if rng.random() < 0.5:
                    _pwrite_all(fd, bytes(length), off)  # written zeros (a freed, zeroed area)
                # else: leave the hole
            elif kind == "text":
                _write_chunked(fd, off, length, gen.text)
            else:
                _write_chunked(fd, off, length, gen.random)
            off += length
    finally:
        os.close(fd)


def _write_chunked(fd: int, off: int, length: int, make: Callable[[int], bytes]) -> None:
    done = 0
    while done < length:
        n = min(4 * MiB, length - done)
        _pwrite_all(fd, make(n), off + done)
        done += n


def _pwrite_all(fd: int, data: bytes, off: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, off)
        view = view[n:]
        off += n


def _write_small_files(root: Path, count: int, gen: _Content) -> int:
    rng = gen.rng
    total = 0
    written: list[bytes] = []
    for i in range(count):
        d = root / f"d{i % 50:02d}" / f"e{(i // 50) % 10}"
        d.mkdir(parents=True, exist_ok=True)
        size = rng.randint(1 * KiB, 64 * KiB)
        kind = rng.choices(("text", "random", "mixed", "dup"), weights=(45, 30, 20, 5))[0]
        if kind == "dup" and written:
            data = rng.choice(written)
        elif kind == "random":
            data = gen.random(size)
        elif kind == "mixed":
            half = size // 2
            data = gen.text(half) + gen.random(size - half)
        else:
            data = gen.text(size)
        if len(written) < 200:
            written.append(data)
        ext = {"text": "txt", "random": "bin", "mixed": "dat", "dup": "copy"}[kind]
        (d / f"f{i:05d}.{ext}").write_bytes(data)
        total += len(data)
    return total


def generate(dest: Path, *, size_mb: int = DEFAULT_SIZE_MB, seed: int = 1) -> Dataset:
    """Create `dest` (must not exist) with `image.raw` and `files/`; about `size_mb` MiB in total."""
    dest.mkdir(parents=True)
    gen = _Content(seed)
    image_bytes = int(size_mb * MiB * IMAGE_SHARE) // SECTOR * SECTOR
    image = dest / "image.raw"
    _write_image(image, image_bytes, gen)
    count = max(1, round(SMALL_FILES_PER_960MB * size_mb / DEFAULT_SIZE_MB))
    small_bytes = _write_small_files(dest / "files", count, gen)
    return Dataset(
        root=dest, image=image, image_bytes=image_bytes, small_files=count, small_bytes=small_bytes
    )


def apply_change(image: Path, *, fraction: float = 0.01, seed: int = 2) -> int:
    """Overwrite `fraction` of the image in place (same inode) with new random data.

    The change is a set of sector-aligned runs of 64 KiB .. 1 MiB at random places, which is how
    guests dirty a disk (file extents, journal areas), not single scattered sectors. Returns the
    number of bytes overwritten.
    """
    rng = random.Random(seed)
    size = image.stat().st_size
    target = int(size * fraction)
    done = 0
    n = 0
    fd = os.open(image, os.O_WRONLY)
    try:
        while done < target:
            length = min(rng.randint(16, 256) * SECTOR, target - done)
            length = max(SECTOR, length // SECTOR * SECTOR)
            off = rng.randrange(0, (size - length) // SECTOR) * SECTOR
            n += 1
            _pwrite_all(fd, blake3.blake3(f"change:{seed}:{n}".encode()).digest(length=length), off)
            done += length
    finally:
        os.close(fd)
    return done
