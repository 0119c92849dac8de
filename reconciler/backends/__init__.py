"""Storage backends. Each is one module implementing backends.base.Backend."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..errors import InvalidArgument
from .base import Backend

BACKENDS = ("chunkstore", "btrfs")


def make_backend(kind: str, *, pool: str, root: Path, options: Mapping[str, object] | None = None) -> Backend:
    # imported lazily: a chunkstore-only node never needs the btrfs ioctl module, and vice versa
    if kind == "chunkstore":
        from .chunkstore import ChunkstoreBackend

        return ChunkstoreBackend(pool=pool, root=root, options=options)
    if kind == "btrfs":
        from .btrfs import BtrfsBackend

        return BtrfsBackend(pool=pool, root=root, options=options)
    raise InvalidArgument(f"pool {pool}: unknown backend {kind!r} (one of {', '.join(BACKENDS)})")
