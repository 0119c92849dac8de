"""Rebuild snapshot sets from the member snapshots the agents report (pure).

The daemon holds no truth of its own: every set, its scope, kind, slot and expected size come
from labels recorded on the member snapshots when they were created.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime

from .domain import (
    LABEL_DESCRIPTION,
    LABEL_EXPECTED,
    LABEL_KIND,
    LABEL_ORIGIN_NODE,
    LABEL_ORIGIN_SITE,
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


def origin_node(node: str, snap: SnapshotInfo, *, unlabeled_here: bool = True) -> str:
    """The node a snapshot was taken on: the node that sent it, for a copy received by offsite sync
    (its origin label); otherwise the node it is on (or "" when unlabeled_here is False)."""
    return snap.labels.get(LABEL_ORIGIN_NODE) or (node if unlabeled_here else "")


def is_ours(site: str, origin: str, our_nodes: Collection[str], our_site: str) -> bool:
    """Whether a snapshot was taken by this site: a copy from a site with a name (config `site:`)
    carries it (`site`, its origin_site label), and is ours exactly when the name is ours; anything
    else is ours when the node it was taken on (`origin`, see origin_node) is one of our nodes."""
    return site == our_site if site else origin in our_nodes


def foreign_key(set_id: str, origins: Iterable[str]) -> str:
    """How a set from elsewhere is named beside our own: SET@SITE for a copy from a site with a
    name, else SET@NODE[+NODE...], the nodes it came from (its id alone may be the id of one of our
    sets: set ids are made from the scope and the slot)."""
    return f"{set_id}@{'+'.join(sorted(set(origins))) or '?'}"


def partition(
    members: Iterable[tuple[str, SnapshotInfo]],
    our_nodes: Collection[str],
    *,
    our_site: str = "",
    unlabeled_here: bool = True,
) -> tuple[dict[str, SnapshotSet], dict[str, SnapshotSet]]:
    """Group (node, snapshot) pairs into our sets (taken by this site: see is_ours) and the sets from
    elsewhere: copies other sites sent here by offsite sync, and (unlabeled_here=False, when
    looking at a target) the target site's own snapshots. The two never mix, even under one set id,
    so a copy from elsewhere never stands for a set of ours (nor the reverse), and nothing of
    ours is ever planned from one. Sets from elsewhere are keyed by foreign_key, one per sending
    site where the sites have names."""
    ours: dict[str, list[ObservedMember]] = {}
    theirs: dict[tuple[str, str], list[ObservedMember]] = {}
    origins: dict[tuple[str, str], set[str]] = {}
    for node, snap in members:
        site = snap.labels.get(LABEL_ORIGIN_SITE, "")
        origin = origin_node(node, snap, unlabeled_here=unlabeled_here)
        if is_ours(site, origin, our_nodes, our_site):
            ours.setdefault(snap.set_id, []).append(ObservedMember(node, snap))
            continue
        theirs.setdefault((snap.set_id, site), []).append(ObservedMember(node, snap))
        origins.setdefault((snap.set_id, site), set()).add(site or origin or node)
    foreign: dict[str, list[ObservedMember]] = {}
    for group, ms in theirs.items():
        foreign.setdefault(foreign_key(group[0], origins[group]), []).extend(ms)
    return (
        {set_id: build_set(set_id, ms) for set_id, ms in ours.items()},
        {key: replace(build_set(ms[0].snapshot.set_id, ms), received_as=key) for key, ms in foreign.items()},
    )


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
