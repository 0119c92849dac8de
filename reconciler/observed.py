"""Rebuild snapshot sets from the member snapshots the agents report (pure).

The daemon holds no truth of its own: every set, its scope, kind, slot and expected size come
from labels recorded on the member snapshots when they were created.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from .domain import (
    LABEL_DESCRIPTION,
    LABEL_EXPECTED,
    LABEL_KIND,
    LABEL_PERIOD,
    LABEL_PRIVATE,
    LABEL_PROFILE,
    LABEL_SCOPE,
    LABEL_SLOT,
    SLOT_FORMAT,
    ObservedMember,
    SetKind,
    SnapshotInfo,
    SnapshotSet,
)


def parse_slot(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, SLOT_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def aggregate(members: Iterable[tuple[str, SnapshotInfo]]) -> dict[str, SnapshotSet]:
    """Group (node, snapshot) pairs by set id into SnapshotSets."""
    grouped: dict[str, list[ObservedMember]] = {}
    for node, snap in members:
        grouped.setdefault(snap.set_id, []).append(ObservedMember(node, snap))
    return {set_id: build_set(set_id, ms) for set_id, ms in grouped.items()}


def build_set(set_id: str, members: list[ObservedMember]) -> SnapshotSet:
    members.sort(key=lambda m: (m.node, m.snapshot.pool, m.snapshot.volume))
    first = members[0].snapshot
    labels: Mapping[str, str] = first.labels
    try:
        kind = SetKind(labels.get(LABEL_KIND, SetKind.MANUAL.value))
    except ValueError:
        kind = SetKind.MANUAL
    try:
        expected = int(labels.get(LABEL_EXPECTED, "0")) or len(members)
    except ValueError:
        expected = len(members)
    return SnapshotSet(
        set_id=set_id,
        name=first.name,
        scope=labels.get(LABEL_SCOPE, ""),
        kind=kind,
        created=min(m.snapshot.created for m in members),
        # the earliest recorded expiry of any member: a set is as old as its oldest part says
        expires=min((m.snapshot.expires for m in members if m.snapshot.expires), default=None),
        members=tuple(members),
        expected_members=expected,
        profile=labels.get(LABEL_PROFILE, ""),
        period=labels.get(LABEL_PERIOD, ""),
        slot=parse_slot(labels.get(LABEL_SLOT, "")),
        description=labels.get(LABEL_DESCRIPTION, ""),
        private=labels.get(LABEL_PRIVATE, "") == "true",
    )
