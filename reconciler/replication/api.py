"""Domain-level requests and results of replication, and their protobuf conversion (the only
module of the package, with service.py, that builds Replicate messages)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from .. import serde
from ..agent.api import SnapshotKey
from ..domain import LABEL_ORIGIN_NODE as LABEL_ORIGIN_NODE  # re-exported: receivers write it
from ..domain import LABEL_ORIGIN_SITE as LABEL_ORIGIN_SITE  # ... and senders send it
from ..domain import SnapshotInfo
from ..v1 import replication_pb2 as rpb
from .progress import TransferStats

# 2: a compressed btrfs data message is a zstd frame of its own; btrfs blocks may go sparse
REPLICATION_PROTOCOL = 2

# Labels a received snapshot carries: where the data was first snapshotted.
LABEL_ORIGIN_POOL = "origin_pool"


@dataclass(frozen=True, slots=True)
class Peer:
    """Another agent to replicate to: its address, TLS name, expected node name and pool."""

    address: str
    server_name: str = ""
    node: str = ""
    insecure: bool = False
    pool: str = ""

    @property
    def label(self) -> str:
        return self.node or self.address


@dataclass(frozen=True, slots=True)
class ReplicateSpec:
    set_id: str
    target: Peer
    refs: tuple[SnapshotKey, ...] = ()
    expires: datetime | None = None
    never_expire: bool = False  # neither: the target keeps the source's expiry
    name_prefix: str = ""
    holds: tuple[str, ...] = ()
    throttle_bps: int = 0
    compression: bool = True
    streams: int = 1
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VolumeReport:
    volume: str
    parent_set_id: str = ""
    wire_bytes: int = 0
    sent_bytes: int = 0
    already_present: bool = False


@dataclass(frozen=True, slots=True)
class ReplicateOutcome:
    snapshots: tuple[SnapshotInfo, ...]
    target_node: str
    target_pool: str
    totals: TransferStats
    volumes: tuple[VolumeReport, ...] = ()
    seconds: float = 0.0
    streams: int = 1  # the most Receive streams the transfer had open at once


# --- protobuf -----------------------------------------------------------------------------------
def peer_to_pb(p: Peer) -> rpb.ReplicationPeer:
    return rpb.ReplicationPeer(
        address=p.address, server_name=p.server_name, node=p.node, insecure=p.insecure, pool=p.pool
    )


def peer_from_pb(m: rpb.ReplicationPeer) -> Peer:
    return Peer(address=m.address, server_name=m.server_name, node=m.node, insecure=m.insecure, pool=m.pool)


def spec_to_pb(s: ReplicateSpec) -> rpb.ReplicateRequest:
    out = rpb.ReplicateRequest(
        set_id=s.set_id,
        target=peer_to_pb(s.target),
        refs=[serde.key_to_pb(r) for r in s.refs],
        never_expire=s.never_expire,
        name_prefix=s.name_prefix,
        holds=list(s.holds),
        throttle_bps=s.throttle_bps,
        compression=s.compression,
        streams=s.streams,
        labels=dict(s.labels),
    )
    serde.set_ts(out, "expires", s.expires)
    return out


def spec_from_pb(m: rpb.ReplicateRequest) -> ReplicateSpec:
    return ReplicateSpec(
        set_id=m.set_id,
        target=peer_from_pb(m.target),
        refs=tuple(serde.key_from_pb(r) for r in m.refs),
        expires=serde.from_ts(m, "expires"),
        never_expire=m.never_expire,
        name_prefix=m.name_prefix,
        holds=tuple(m.holds),
        throttle_bps=m.throttle_bps,
        compression=m.compression,
        streams=max(1, m.streams),
        labels=dict(m.labels),
    )


def stats_to_pb(s: TransferStats) -> rpb.TransferProgress:
    return rpb.TransferProgress(
        phase=s.phase,
        volume=s.volume,
        checked_bytes=s.checked_bytes,
        scanned_bytes=s.scanned_bytes,
        sent_bytes=s.sent_bytes,
        wire_bytes=s.wire_bytes,
        total_bytes=s.total_bytes,
        rate_bps=s.rate_bps,
        eta_seconds=s.eta_seconds,
        volumes_done=s.volumes_done,
        volumes_total=s.volumes_total,
        parent_set_id=s.parent_set_id,
        chunks_resent=s.chunks_resent,
    )


def stats_from_pb(m: rpb.TransferProgress) -> TransferStats:
    return TransferStats(
        phase=m.phase,
        volume=m.volume,
        checked_bytes=m.checked_bytes,
        scanned_bytes=m.scanned_bytes,
        sent_bytes=m.sent_bytes,
        wire_bytes=m.wire_bytes,
        total_bytes=m.total_bytes,
        rate_bps=m.rate_bps,
        eta_seconds=m.eta_seconds,
        volumes_done=m.volumes_done,
        volumes_total=m.volumes_total,
        parent_set_id=m.parent_set_id,
        chunks_resent=m.chunks_resent,
    )


def outcome_to_pb(o: ReplicateOutcome) -> rpb.ReplicateResult:
    return rpb.ReplicateResult(
        snapshots=[serde.snapshot_to_pb(s) for s in o.snapshots],
        target_node=o.target_node,
        target_pool=o.target_pool,
        totals=stats_to_pb(o.totals),
        volumes=[
            rpb.VolumeReport(
                volume=v.volume,
                parent_set_id=v.parent_set_id,
                wire_bytes=v.wire_bytes,
                sent_bytes=v.sent_bytes,
                already_present=v.already_present,
            )
            for v in o.volumes
        ],
        seconds=o.seconds,
        streams=o.streams,
    )


def outcome_from_pb(m: rpb.ReplicateResult) -> ReplicateOutcome:
    return ReplicateOutcome(
        snapshots=tuple(serde.snapshot_from_pb(s) for s in m.snapshots),
        target_node=m.target_node,
        target_pool=m.target_pool,
        totals=stats_from_pb(m.totals),
        volumes=tuple(
            VolumeReport(
                volume=v.volume,
                parent_set_id=v.parent_set_id,
                wire_bytes=v.wire_bytes,
                sent_bytes=v.sent_bytes,
                already_present=v.already_present,
            )
            for v in m.volumes
        ),
        seconds=m.seconds,
        streams=max(1, m.streams),
    )
