"""Domain-level requests and results of the agent API (protobuf-free; see serde.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..domain import Hooks, SnapshotInfo

PROTOCOL_VERSION = 1


@dataclass(frozen=True, slots=True)
class SpaceInfo:
    logical_bytes: int = 0
    stored_bytes: int = 0
    unique_bytes: int = 0
    free_bytes: int = 0


@dataclass(frozen=True, slots=True)
class PoolInfo:
    name: str
    backend: str
    generation: int
    snapshot_count: int
    space: SpaceInfo
    path: str = ""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node: str
    protocol_version: int
    agent_version: str
    pools: tuple[PoolInfo, ...]
    now: datetime


@dataclass(frozen=True, slots=True)
class Target:
    pool: str
    volume: str
    resource: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)  # member-level, over the set's labels


@dataclass(frozen=True, slots=True)
class QuiesceGroup:
    resource: str
    hooks: Hooks


@dataclass(frozen=True, slots=True)
class CreateSetRequest:
    set_id: str
    name: str
    targets: tuple[Target, ...]
    created: datetime
    labels: Mapping[str, str] = field(default_factory=dict)
    expires: datetime | None = None
    immutable: bool = False
    quiesce: tuple[QuiesceGroup, ...] = ()
    quiesce_fail: bool = False  # True: a failed freeze fails the set; False: crash-consistent with a warning
    freeze_budget: timedelta = timedelta(seconds=10)
    site: str = ""  # the asking daemon's site name (config `site:`)


@dataclass(frozen=True, slots=True)
class CreateSetResult:
    snapshots: tuple[SnapshotInfo, ...]
    quiesced: bool
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SnapshotKey:
    set_id: str
    pool: str
    volume: str


@dataclass(frozen=True, slots=True)
class DeleteResult:
    ref: SnapshotKey
    deleted: bool
    error: str = ""


UPDATE_FIELDS = frozenset({"expires", "holds", "lock", "unlock", "labels"})


@dataclass(frozen=True, slots=True)
class SnapshotUpdate:
    ref: SnapshotKey
    fields: frozenset[str]
    expires: datetime | None = None
    add_holds: frozenset[str] = frozenset()
    remove_holds: frozenset[str] = frozenset()
    unlock_delay: timedelta = timedelta(0)
    set_labels: Mapping[str, str] = field(default_factory=dict)
    remove_labels: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class OperationResult:
    ok: bool
    message: str = ""
    problems: tuple[str, ...] = ()
    safety_set_id: str = ""
    volume: str = ""
    bytes: int = 0
