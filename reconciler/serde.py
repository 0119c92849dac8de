"""Conversion between protobuf messages and domain types: the only module that knows both."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .agent.api import (
    CreateSetRequest,
    CreateSetResult,
    DeleteResult,
    NodeInfo,
    OperationResult,
    PoolInfo,
    QuiesceGroup,
    SnapshotKey,
    SnapshotUpdate,
    SpaceInfo,
    Target,
)
from .backends.base import ProgressEvent
from .domain import Hooks, ImmutableState, SnapshotInfo
from .pbtime import from_ts as from_ts  # (re-exported: serde.from_ts, serde.set_ts)
from .pbtime import set_ts as set_ts
from .v1 import agent_pb2 as pb

_IMMUTABLE_TO_PB = {
    ImmutableState.NONE: pb.IMMUTABLE_STATE_UNSPECIFIED,
    ImmutableState.LOCKED: pb.IMMUTABLE_STATE_LOCKED,
    ImmutableState.UNLOCKING: pb.IMMUTABLE_STATE_UNLOCKING,
    ImmutableState.UNLOCKED: pb.IMMUTABLE_STATE_UNLOCKED,
}
_IMMUTABLE_FROM_PB = {v: k for k, v in _IMMUTABLE_TO_PB.items()}


# --- timestamps (pbtime.py) ----------------------------------------------------------------


# --- node info -------------------------------------------------------------------------------
def node_info_to_pb(info: NodeInfo) -> pb.NodeInfo:
    out = pb.NodeInfo(node=info.node, agent_version=info.agent_version)
    out.protocol_version = info.protocol_version  # type: ignore[assignment]
    set_ts(out, "now", info.now)
    for p in info.pools:
        out.pools.append(
            pb.PoolInfo(
                name=p.name,
                backend=p.backend,
                generation=p.generation,
                snapshot_count=p.snapshot_count,
                path=p.path,
                space=pb.SpaceUsage(
                    logical_bytes=p.space.logical_bytes,
                    stored_bytes=p.space.stored_bytes,
                    unique_bytes=p.space.unique_bytes,
                    free_bytes=p.space.free_bytes,
                ),
            )
        )
    return out


def node_info_from_pb(msg: pb.NodeInfo) -> NodeInfo:
    return NodeInfo(
        node=msg.node,
        protocol_version=int(msg.protocol_version),
        agent_version=msg.agent_version,
        pools=tuple(
            PoolInfo(
                name=p.name,
                backend=p.backend,
                generation=p.generation,
                snapshot_count=p.snapshot_count,
                path=p.path,
                space=SpaceInfo(
                    p.space.logical_bytes, p.space.stored_bytes, p.space.unique_bytes, p.space.free_bytes
                ),
            )
            for p in msg.pools
        ),
        now=from_ts(msg, "now") or datetime.now(UTC),
    )


# --- snapshots -------------------------------------------------------------------------------
def snapshot_to_pb(s: SnapshotInfo) -> pb.Snapshot:
    out = pb.Snapshot(
        set_id=s.set_id,
        name=s.name,
        pool=s.pool,
        volume=s.volume,
        labels=dict(s.labels),
        immutable=_IMMUTABLE_TO_PB[s.immutable],
        holds=sorted(s.holds),
        logical_bytes=s.logical_bytes,
        unique_bytes=s.unique_bytes,
        quiesced=s.quiesced,
    )
    set_ts(out, "created", s.created)
    set_ts(out, "expires", s.expires)
    set_ts(out, "unlock_at", s.unlock_at)
    return out


def snapshot_from_pb(m: pb.Snapshot) -> SnapshotInfo:
    return SnapshotInfo(
        set_id=m.set_id,
        name=m.name,
        pool=m.pool,
        volume=m.volume,
        created=from_ts(m, "created") or datetime.fromtimestamp(0, UTC),
        expires=from_ts(m, "expires"),
        labels=dict(m.labels),
        immutable=_IMMUTABLE_FROM_PB.get(m.immutable, ImmutableState.NONE),
        unlock_at=from_ts(m, "unlock_at"),
        holds=frozenset(m.holds),
        logical_bytes=m.logical_bytes,
        unique_bytes=m.unique_bytes,
        quiesced=m.quiesced,
    )


def key_to_pb(k: SnapshotKey) -> pb.SnapshotRef:
    return pb.SnapshotRef(set_id=k.set_id, pool=k.pool, volume=k.volume)


def key_from_pb(m: pb.SnapshotRef) -> SnapshotKey:
    return SnapshotKey(set_id=m.set_id, pool=m.pool, volume=m.volume)


# --- create ----------------------------------------------------------------------------------
def create_to_pb(r: CreateSetRequest) -> pb.CreateSnapshotSetRequest:
    out = pb.CreateSnapshotSetRequest(
        set_id=r.set_id,
        name=r.name,
        labels=dict(r.labels),
        immutable=r.immutable,
        quiesce_policy=pb.QUIESCE_POLICY_FAIL
        if r.quiesce_fail
        else pb.QUIESCE_POLICY_CRASH_CONSISTENT_ON_FAILURE,
        freeze_budget_ms=int(r.freeze_budget.total_seconds() * 1000),
        site=r.site,
        targets=[
            pb.SnapshotTarget(pool=t.pool, volume=t.volume, resource=t.resource, labels=dict(t.labels))
            for t in r.targets
        ],
        quiesce=[
            pb.QuiesceGroup(
                resource=g.resource,
                hooks=pb.QuiesceHooks(
                    freeze=list(g.hooks.freeze),
                    thaw=list(g.hooks.thaw),
                    timeout_ms=int(g.hooks.timeout.total_seconds() * 1000),
                ),
            )
            for g in r.quiesce
        ],
    )
    set_ts(out, "expires", r.expires)
    set_ts(out, "created", r.created)
    return out


def create_from_pb(m: pb.CreateSnapshotSetRequest) -> CreateSetRequest:
    return CreateSetRequest(
        set_id=m.set_id,
        name=m.name,
        targets=tuple(
            Target(pool=t.pool, volume=t.volume, resource=t.resource, labels=dict(t.labels))
            for t in m.targets
        ),
        created=from_ts(m, "created") or datetime.now(UTC),
        labels=dict(m.labels),
        expires=from_ts(m, "expires"),
        immutable=m.immutable,
        quiesce=tuple(
            QuiesceGroup(
                resource=g.resource,
                hooks=Hooks(
                    freeze=tuple(g.hooks.freeze),
                    thaw=tuple(g.hooks.thaw),
                    timeout=timedelta(milliseconds=g.hooks.timeout_ms or 30_000),
                ),
            )
            for g in m.quiesce
        ),
        quiesce_fail=m.quiesce_policy == pb.QUIESCE_POLICY_FAIL,
        freeze_budget=timedelta(milliseconds=m.freeze_budget_ms or 10_000),
        site=m.site,
    )


def create_result_to_pb(r: CreateSetResult) -> pb.CreateSnapshotSetResponse:
    return pb.CreateSnapshotSetResponse(
        snapshots=[snapshot_to_pb(s) for s in r.snapshots], quiesced=r.quiesced, warnings=list(r.warnings)
    )


def create_result_from_pb(m: pb.CreateSnapshotSetResponse) -> CreateSetResult:
    return CreateSetResult(
        snapshots=tuple(snapshot_from_pb(s) for s in m.snapshots),
        quiesced=m.quiesced,
        warnings=tuple(m.warnings),
    )


# --- delete / update -------------------------------------------------------------------------
def delete_result_to_pb(r: DeleteResult) -> pb.DeleteResult:
    return pb.DeleteResult(ref=key_to_pb(r.ref), deleted=r.deleted, error=r.error)


def delete_result_from_pb(m: pb.DeleteResult) -> DeleteResult:
    return DeleteResult(ref=key_from_pb(m.ref), deleted=m.deleted, error=m.error)


def update_to_pb(u: SnapshotUpdate) -> pb.SnapshotUpdate:
    out = pb.SnapshotUpdate(
        ref=key_to_pb(u.ref),
        fields=sorted(u.fields),
        add_holds=sorted(u.add_holds),
        remove_holds=sorted(u.remove_holds),
        unlock_delay_s=int(u.unlock_delay.total_seconds()),
        set_labels=dict(u.set_labels),
        remove_labels=sorted(u.remove_labels),
    )
    set_ts(out, "expires", u.expires)
    return out


def update_from_pb(m: pb.SnapshotUpdate) -> SnapshotUpdate:
    return SnapshotUpdate(
        ref=key_from_pb(m.ref),
        fields=frozenset(m.fields),
        expires=from_ts(m, "expires"),
        add_holds=frozenset(m.add_holds),
        remove_holds=frozenset(m.remove_holds),
        unlock_delay=timedelta(seconds=m.unlock_delay_s),
        set_labels=dict(m.set_labels),
        remove_labels=frozenset(m.remove_labels),
    )


# --- long operations -------------------------------------------------------------------------
def progress_to_pb(p: ProgressEvent) -> pb.OperationEvent:
    return pb.OperationEvent(
        progress=pb.Progress(phase=p.phase, done=p.done, total=p.total, unit=p.unit, message=p.message)
    )


def progress_from_pb(m: pb.Progress) -> ProgressEvent:
    return ProgressEvent(phase=m.phase, done=m.done, total=m.total, unit=m.unit, message=m.message)


def result_to_pb(r: OperationResult) -> pb.OperationEvent:
    return pb.OperationEvent(
        result=pb.OperationResult(
            ok=r.ok,
            message=r.message,
            problems=list(r.problems),
            safety_set_id=r.safety_set_id,
            volume=r.volume,
            bytes=r.bytes,
        )
    )


def result_from_pb(m: pb.OperationResult) -> OperationResult:
    return OperationResult(
        ok=m.ok,
        message=m.message,
        problems=tuple(m.problems),
        safety_set_id=m.safety_set_id,
        volume=m.volume,
        bytes=m.bytes,
    )
