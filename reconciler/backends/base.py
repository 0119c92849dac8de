"""The storage backend interface. Adding a backend is one module implementing `Backend`.

A backend only moves data: it snapshots a volume into its own store, lists and drops what it
stored, writes a snapshot's content into a fresh directory (restore, clone), verifies and collects
garbage. Metadata (expiry, holds, immutability) lives in the agent's catalog, and the agent decides
what may be deleted; path confinement is done here once for every backend.
"""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..domain import valid_volume_name
from ..errors import NotFound, PathEscapes

META_DIR = ".reconciler"


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    phase: str
    done: int = 0
    total: int = 0
    unit: str = "bytes"
    message: str = ""


ProgressFn = Callable[[ProgressEvent], None]


def no_progress(_: ProgressEvent) -> None:
    return None


@dataclass(frozen=True, slots=True)
class VolumeEntry:
    volume: str
    logical_bytes: int


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    logical_bytes: int


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str  # relative to the volume root, '/'-separated
    kind: str  # "file" | "dir" | "symlink"
    size: int
    mode: int
    mtime: float


@dataclass(frozen=True, slots=True)
class GcResult:
    objects_freed: int
    bytes_freed: int


class Backend(ABC):
    """One pool. `root` is where the live volumes are; the backend keeps its data under root/.reconciler."""

    kind: ClassVar[str]

    def __init__(self, *, pool: str, root: Path, options: Mapping[str, object] | None = None) -> None:
        self.pool = pool
        self.root = root
        self.options: Mapping[str, object] = options or {}
        self.meta_dir = root / META_DIR
        self.staging_dir = self.meta_dir / "staging"

    # --- lifecycle -------------------------------------------------------------------------
    @abstractmethod
    def open(self, known: set[tuple[str, str]]) -> None:
        """Create or check the store and recover from a crash: remove staging leftovers and any
        stored snapshot data whose (set_id, volume) is not in `known` (the catalog's keys)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    # --- volumes -------------------------------------------------------------------------
    def volume_path(self, volume: str, *, must_exist: bool = True) -> Path:
        """The live path of a volume, refusing anything that leaves the pool."""
        if not valid_volume_name(volume):
            raise PathEscapes(
                f"pool {self.pool}: volume name {volume!r} is not a pool-relative path of safe segments "
                "(no '..', no absolute path, no hidden segment)"
            )
        path = self.root
        for seg in volume.split("/"):
            path = path / seg
            if path.is_symlink():
                raise PathEscapes(
                    f"pool {self.pool}: volume {volume!r}: {path} is a symlink; refusing to follow it"
                )
        real_root = os.path.realpath(self.root)
        real = os.path.realpath(path)
        if os.path.commonpath([real_root, real]) != real_root:
            raise PathEscapes(
                f"pool {self.pool}: volume {volume!r} resolves to {real}, outside the pool {real_root}"
            )
        if must_exist and not path.is_dir():
            raise NotFound(f"pool {self.pool}: volume {volume!r} does not exist at {path}")
        return path

    def list_volumes(self, names: Sequence[str] | None = None) -> list[VolumeEntry]:
        """Which of `names` exist (with their size). Without names: the top-level directories.
        Backends that can discover their volumes (btrfs subvolumes) override this."""
        if names is None:
            names = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        out = []
        for name in names:
            try:
                path = self.volume_path(name)
            except NotFound:
                continue
            out.append(VolumeEntry(name, tree_size(path)))
        return out

    # --- snapshots -------------------------------------------------------------------------
    @abstractmethod
    def snapshot(self, *, set_id: str, volume: str, progress: ProgressFn = no_progress) -> StoredSnapshot:
        """Store a point-in-time copy of the volume. Data must be complete and durable on return;
        if it raises, nothing of this snapshot may remain that `open` would not clean up."""

    @abstractmethod
    def drop(self, *, set_id: str, volume: str) -> None:
        """Remove stored data of one snapshot. Missing data is not an error."""

    @abstractmethod
    def stored_keys(self) -> set[tuple[str, str]]:
        """(set_id, volume) of every snapshot whose data is stored."""

    @abstractmethod
    def materialize(
        self,
        *,
        set_id: str,
        volume: str,
        dest: Path,
        paths: Sequence[str] | None = None,
        progress: ProgressFn = no_progress,
    ) -> int:
        """Write the snapshot's content (or only `paths` inside it) into `dest`, which must not exist
        and is on the pool's filesystem. Creates `dest` as a writable volume (a directory, or a
        subvolume on btrfs). Returns bytes written."""

    @abstractmethod
    def list_files(self, *, set_id: str, volume: str, prefix: str = "") -> Iterator[FileEntry]:
        """Entries of a snapshot under `prefix`, recursively."""

    @abstractmethod
    def verify(self, keys: Iterable[tuple[str, str]] | None, progress: ProgressFn = no_progress) -> list[str]:
        """Re-read stored data; one line per problem found (empty: all good)."""

    @abstractmethod
    def collect_garbage(self, progress: ProgressFn = no_progress) -> GcResult:
        """Reclaim space that no stored snapshot references."""

    @abstractmethod
    def unique_bytes(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Bytes that only this snapshot holds (what deleting it alone would free)."""

    @abstractmethod
    def stored_bytes(self) -> int:
        """Bytes the snapshot store occupies on disk."""

    def remove_volume_tree(self, path: Path) -> None:
        """Remove a directory tree that was a volume (btrfs overrides this for subvolumes)."""
        shutil.rmtree(path, ignore_errors=False)

    def make_empty_volume(self, path: Path) -> None:
        """Create `path` (which must not exist) as an empty volume of this pool's kind: a
        directory here, a subvolume on btrfs."""
        os.mkdir(path, 0o700)

    def takes_as_volume(self, path: Path) -> bool:
        """Whether the directory tree at `path`, moved into this pool, is a volume it can
        snapshot (btrfs: only a subvolume is)."""
        return True

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize


def tree_size(path: Path) -> int:
    """Apparent size of the regular files under `path` (symlinks not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except FileNotFoundError:
                continue
            if not os.path.islink(os.path.join(dirpath, f)):
                total += st.st_size
    return total
