"""Domain types shared by the planner, the daemon, the agents and the CLI.

Plain frozen dataclasses: no protobuf (see serde.py for the gRPC boundary), no I/O.
All datetimes are timezone-aware UTC unless a field says otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

# Names of nodes, pools, resources, tenants, profiles, periods, scopes, targets.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}\Z")
# Set ids go into file names on agents: no '/', no leading '.', bounded.
SET_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,199}\Z")
# Volume names are pool-relative paths: segments of safe characters, no '..', no hidden segments.
VOLUME_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")

SLOT_FORMAT = "%Y%m%dT%H%M%SZ"


def valid_volume_name(name: str) -> bool:
    if not name or len(name) > 1024 or name.startswith("/"):
        return False
    return all(VOLUME_SEGMENT_RE.match(seg) and seg not in (".", "..") for seg in name.split("/"))


class Frequency(StrEnum):
    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    YEARLY = "yearly"
    CUSTOM = "custom"  # one run at an exact instant (`at`)
    INTERVAL = "interval"  # every N seconds (`every`), aligned to the local midnight


class ScopeKind(StrEnum):
    SYSTEM = "system"
    TENANT = "tenant"
    RESOURCE = "resource"


class ImmutableState(StrEnum):
    NONE = ""
    LOCKED = "locked"
    UNLOCKING = "unlocking"
    UNLOCKED = "unlocked"


@dataclass(frozen=True, slots=True)
class Period:
    """One schedule + retention of a profile. `retention` None means forever."""

    name: str
    frequency: Frequency
    timezone: str = "UTC"
    minute: int = 0
    hour: int = 0
    # 0=Monday .. 6=Sunday; empty means any day
    days_of_week: frozenset[int] = frozenset()
    day_of_month: int = 0  # 0 = any
    month: int = 0  # 0 = any
    at: datetime | None = None  # CUSTOM
    every: timedelta | None = None  # INTERVAL
    retention: timedelta | None = None
    min_snapshots: int = 1
    skip_missed: bool = False
    quiesce: bool = False
    quiesce_policy: str = "crash_consistent"  # or "fail"
    immutable: bool = False
    private: bool = True


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    periods: tuple[Period, ...]


@dataclass(frozen=True, slots=True)
class Scope:
    kind: ScopeKind
    name: str

    @property
    def key(self) -> str:
        return f"{self.kind.value}:{self.name}"

    @staticmethod
    def parse(key: str) -> Scope:
        kind, sep, name = key.partition(":")
        if not sep or not name:
            raise ValueError(f"scope {key!r}: expected KIND:NAME with KIND one of system, tenant, resource")
        try:
            return Scope(ScopeKind(kind), name)
        except ValueError:
            raise ValueError(f"scope {key!r}: unknown kind {kind!r} (system, tenant, resource)") from None


@dataclass(frozen=True, slots=True)
class VolumeRef:
    node: str
    pool: str
    volume: str

    @property
    def key(self) -> str:
        return f"{self.node}/{self.pool}/{self.volume}"


@dataclass(frozen=True, slots=True)
class Hooks:
    freeze: tuple[str, ...] = ()
    thaw: tuple[str, ...] = ()
    timeout: timedelta = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class Member:
    """A volume that a scope covers, with the resource it belongs to."""

    ref: VolumeRef
    resource: str
    quiesce: bool = False  # quiesce this resource when the period asks for it
    hooks: Hooks | None = None
    tenant: str = ""
    settings: str = ""  # the resource's config section (JSON), recorded with its snapshots


@dataclass(frozen=True, slots=True)
class ScopeBinding:
    """A scope bound to a profile: what the planner schedules."""

    scope: Scope
    profile: Profile
    members: tuple[Member, ...]
    private: bool = False


@dataclass(frozen=True, slots=True)
class DesiredState:
    bindings: tuple[ScopeBinding, ...]
    nodes: tuple[str, ...] = ()


# Labels recorded on every member snapshot of a set. The set is rebuilt from them on observe.
LABEL_SCOPE = "scope"
LABEL_KIND = "kind"  # "scheduled" | "manual" | "safety"
LABEL_PROFILE = "profile"
LABEL_PERIOD = "period"
LABEL_SLOT = "slot"  # SLOT_FORMAT
LABEL_DESCRIPTION = "description"
LABEL_RESOURCE = "resource"
LABEL_EXPECTED = "expected_members"
LABEL_PRIVATE = "private"
LABEL_TENANT = "tenant"
LABEL_SETTINGS = "settings"  # the resource's config section when the snapshot was taken (JSON)
LABEL_ORIGIN_NODE = "origin_node"  # on a copy received by offsite sync: the node that sent it
LABEL_ORIGIN_SITE = "origin_site"  # ... and the sending site's name (config `site:`), when it has one
LABEL_EXPOSED = "exposed_to"  # comma-separated tenants a provider set is exposed to


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """One member snapshot as an agent reports it."""

    set_id: str
    name: str
    pool: str
    volume: str
    created: datetime
    expires: datetime | None
    labels: Mapping[str, str] = field(default_factory=dict)
    immutable: ImmutableState = ImmutableState.NONE
    unlock_at: datetime | None = None
    holds: frozenset[str] = frozenset()
    logical_bytes: int = 0
    unique_bytes: int = 0
    quiesced: bool = False


class SetKind(StrEnum):
    SCHEDULED = "scheduled"
    MANUAL = "manual"
    SAFETY = "safety"


@dataclass(frozen=True, slots=True)
class ObservedMember:
    node: str
    snapshot: SnapshotInfo

    @property
    def ref(self) -> VolumeRef:
        return VolumeRef(self.node, self.snapshot.pool, self.snapshot.volume)


@dataclass(frozen=True, slots=True)
class SnapshotSet:
    """One logical snapshot of a scope, aggregated over its member snapshots on all nodes."""

    set_id: str
    name: str
    scope: str  # Scope.key
    kind: SetKind
    created: datetime
    expires: datetime | None  # as recorded on the agents (authoritative for manual sets)
    members: tuple[ObservedMember, ...]
    expected_members: int
    profile: str = ""
    period: str = ""
    slot: datetime | None = None
    description: str = ""
    private: bool = False
    # a set from elsewhere (observed.partition): the key it goes by here, SET@SITE or SET@NODE[+NODE...]
    received_as: str = ""

    @property
    def complete(self) -> bool:
        return len(self.members) >= self.expected_members > 0

    @property
    def key(self) -> str:
        """What the set goes by here: its id, or for a set from elsewhere its received_as."""
        return self.received_as or self.set_id

    @property
    def quiesced(self) -> bool:
        return bool(self.members) and all(m.snapshot.quiesced for m in self.members)

    @property
    def immutable(self) -> ImmutableState:
        states = {m.snapshot.immutable for m in self.members}
        for s in (ImmutableState.LOCKED, ImmutableState.UNLOCKING, ImmutableState.UNLOCKED):
            if s in states:
                return s
        return ImmutableState.NONE

    @property
    def holds(self) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for m in self.members:
            out |= m.snapshot.holds
        return out


@dataclass(frozen=True, slots=True)
class ObservedState:
    sets: Mapping[str, SnapshotSet]
    # nodes that could not be observed this pass: sets there may be incomplete views
    unreachable_nodes: frozenset[str] = frozenset()
    # sets from elsewhere (observed.partition), by foreign_key: never planned from
    foreign: Mapping[str, SnapshotSet] = field(default_factory=dict)


class ActionKind(StrEnum):
    CREATE = "create"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    set_id: str
    scope: str
    reason: str
    members: tuple[Member, ...] = ()  # CREATE: volumes to snapshot; DELETE: filled from observed
    delete_refs: tuple[VolumeRef, ...] = ()
    profile: str = ""
    period: str = ""
    slot: datetime | None = None
    name: str = ""
    expires: datetime | None = None
    immutable: bool = False
    quiesce: bool = False
    quiesce_policy: str = "crash_consistent"
    private: bool = False
    # total members of the whole set (a retry action carries only the missing ones); 0: len(members)
    expected_members: int = 0


@dataclass(frozen=True, slots=True)
class Keep:
    """Why an existing set is kept (for `reconciler plan` and tests)."""

    set_id: str
    scope: str
    rule: str  # "retention", "min_snapshots", "immutable", "hold", "last_good", "orphaned", "manual"
    reason: str
    expires: datetime | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    now: datetime
    actions: tuple[Action, ...]
    kept: tuple[Keep, ...]
    next_wakeup: datetime | None
    warnings: tuple[str, ...] = ()  # things to fix in the config or on the nodes
    notes: tuple[str, ...] = ()  # for information: what waits, and why (not problems)


def scheduled_set_id(scope: Scope, profile: str, period: str, slot: datetime) -> str:
    """Deterministic id of the set for a slot: creating it twice is impossible."""
    return f"{scope.kind.value}-{scope.name}.{profile}.{period}.{slot.strftime(SLOT_FORMAT)}"


def set_name(scope: Scope, period: str, slot: datetime) -> str:
    return f"{scope.name}/{period}@{slot.strftime('%Y-%m-%d %H:%M:%S')}Z"
