"""The daemon's control API on a unix socket (owner-only), used by the `reconciler` CLI."""

from __future__ import annotations

import logging
import os
from concurrent import futures
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from .. import __version__
from ..domain import Action, ActionKind, Keep, Plan, SnapshotSet
from ..serde import from_ts, set_ts
from ..transport.status import abort
from ..v1 import control_pb2 as cpb
from ..v1 import control_pb2_grpc as cpb_grpc

if TYPE_CHECKING:
    from ..daemon import Daemon

log = logging.getLogger(__name__)


def set_to_pb(s: SnapshotSet) -> cpb.SnapshotSet:
    out = cpb.SnapshotSet(
        set_id=s.set_id,
        name=s.name,
        scope=s.scope,
        kind=s.kind.value,
        profile=s.profile,
        period=s.period,
        description=s.description,
        complete=s.complete,
        quiesced=s.quiesced,
        private=s.private,
        immutable=s.immutable.value,
        holds=sorted(s.holds),
        expected_members=s.expected_members,
        members=[
            cpb.SetMember(
                node=m.node,
                pool=m.snapshot.pool,
                volume=m.snapshot.volume,
                resource=m.snapshot.labels.get("resource", ""),
                logical_bytes=m.snapshot.logical_bytes,
                unique_bytes=m.snapshot.unique_bytes,
            )
            for m in s.members
        ],
    )
    set_ts(out, "slot", s.slot)
    set_ts(out, "created", s.created)
    set_ts(out, "expires", s.expires)
    return out


def action_to_pb(a: Action) -> cpb.PlannedAction:
    members = (
        [m.ref.key for m in a.members] if a.kind is ActionKind.CREATE else [r.key for r in a.delete_refs]
    )
    out = cpb.PlannedAction(
        kind=a.kind.value,
        set_id=a.set_id,
        scope=a.scope,
        profile=a.profile,
        period=a.period,
        reason=a.reason,
        members=members,
    )
    set_ts(out, "slot", a.slot)
    return out


def keep_to_pb(k: Keep) -> cpb.KeepDecision:
    return cpb.KeepDecision(set_id=k.set_id, scope=k.scope, rule=k.rule, reason=k.reason)


def plan_to_pb(p: Plan) -> cpb.PlanResponse:
    out = cpb.PlanResponse(
        actions=[action_to_pb(a) for a in p.actions],
        kept=[keep_to_pb(k) for k in p.kept],
        warnings=list(p.warnings),
    )
    set_ts(out, "now", p.now)
    set_ts(out, "next_wakeup", p.next_wakeup)
    return out


class ControlService(cpb_grpc.ControlServicer):  # type: ignore[misc]
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def GetStatus(
        self, request: cpb.GetStatusRequest, context: grpc.ServicerContext
    ) -> cpb.GetStatusResponse:
        try:
            return status_to_pb(self.daemon)
        except Exception as exc:  # noqa: BLE001
            abort(context, exc)
            raise

    def Plan(self, request: cpb.PlanRequest, context: grpc.ServicerContext) -> cpb.PlanResponse:
        try:
            return plan_to_pb(self.daemon.compute_plan())
        except Exception as exc:  # noqa: BLE001
            abort(context, exc)
            raise

    def Reload(self, request: cpb.ReloadRequest, context: grpc.ServicerContext) -> cpb.ReloadResponse:
        try:
            errors = self.daemon.reload()
            return cpb.ReloadResponse(ok=not errors, errors=errors, config_path=str(self.daemon.config_path))
        except Exception as exc:  # noqa: BLE001
            abort(context, exc)
            raise

    def ListSnapshotSets(
        self, request: cpb.ListSnapshotSetsRequest, context: grpc.ServicerContext
    ) -> cpb.ListSnapshotSetsResponse:
        try:
            return cpb.ListSnapshotSetsResponse(
                sets=[set_to_pb(s) for s in self.daemon.list_sets(request.scope)]
            )
        except Exception as exc:  # noqa: BLE001
            abort(context, exc)
            raise

    def CreateSnapshotSet(
        self, request: cpb.CreateManualSetRequest, context: grpc.ServicerContext
    ) -> cpb.CreateManualSetResponse:
        try:
            s = self.daemon.create_manual(
                scope=request.scope,
                request_id=request.request_id,
                name=request.name,
                description=request.description,
                expires=from_ts(request, "expires"),
                never_expire=request.never_expire,
                immutable=request.immutable,
                quiesce=request.quiesce,
            )
            return cpb.CreateManualSetResponse(set=set_to_pb(s))
        except Exception as exc:  # noqa: BLE001
            abort(context, exc)
            raise

    def DeleteSnapshotSet(
        self, request: cpb.DeleteSnapshotSetRequest, context: grpc.ServicerContext
    ) -> cpb.DeleteSnapshotSetResponse:
        try:
            errors = self.daemon.delete_set(request.set_id)
            return cpb.DeleteSnapshotSetResponse(deleted=not errors, errors=errors)
        except Exception as exc:  # noqa: BLE001
            abort(context, exc)
            raise


def status_to_pb(d: Daemon) -> cpb.GetStatusResponse:
    st = d.current
    out = cpb.GetStatusResponse(
        config_path=str(d.config_path),
        config_valid=not d.config_errors,
        config_errors=d.config_errors,
        version=__version__,
        last_pass_seconds=d.last_pass.seconds if d.last_pass else 0.0,
    )
    if st is not None:
        set_ts(out, "config_loaded_at", st.loaded_at)
    set_ts(out, "last_pass", d.last_pass_at)
    set_ts(out, "next_wakeup", d.next_wakeup)
    now = d.clock()
    for name, obs in sorted(d.observer.nodes.items()):
        ns = cpb.NodeStatus(name=name, reachable=obs.reachable, error=obs.error, address=obs.address)
        if obs.info is not None:
            for p in obs.info.pools:
                ns.pools.append(
                    cpb.PoolStatus(
                        name=p.name,
                        backend=p.backend,
                        generation=p.generation,
                        snapshot_count=p.snapshot_count,
                        logical_bytes=p.space.logical_bytes,
                        stored_bytes=p.space.stored_bytes,
                        free_bytes=p.space.free_bytes,
                    )
                )
        out.nodes.append(ns)
        cond = cpb.Condition(
            kind="NodeReachable",
            subject=name,
            ok=obs.reachable,
            reason="Reachable" if obs.reachable else "Unreachable",
            message=obs.error,
        )
        set_ts(cond, "since", obs.since)
        out.conditions.append(cond)
    out.conditions.append(
        cpb.Condition(
            kind="ConfigValid",
            subject=str(d.config_path),
            ok=not d.config_errors,
            reason="Loaded" if not d.config_errors else "Invalid",
            message=""
            if not d.config_errors
            else f"{len(d.config_errors)} error(s); the last good config keeps running",
        )
    )
    for key, error in sorted(d.executor.blocked().items()):
        out.conditions.append(
            cpb.Condition(kind="ActionFailing", subject=key, ok=False, reason="Failed", message=error)
        )
    if st is not None:
        from ..schedule import next_slot

        sets = list(d.observer.sets.values())  # the last observation, no new I/O
        for b in st.desired.bindings:
            for period in b.profile.periods:
                mine = [
                    s
                    for s in sets
                    if s.scope == b.scope.key
                    and s.period == period.name
                    and s.profile == b.profile.name
                    and s.complete
                ]
                ss = cpb.ScopeStatus(
                    scope=b.scope.key, profile=b.profile.name, period=period.name, sets=len(mine)
                )
                set_ts(ss, "last_success", max((s.created for s in mine), default=None))
                set_ts(ss, "next_slot", next_slot(period, now))
                out.scopes.append(ss)
    for r in list(d.executor.records)[-50:]:
        ar = cpb.ActionRecord(
            kind=r.kind, set_id=r.set_id, scope=r.scope, node=r.node, ok=r.ok, reason=r.reason, error=r.error
        )
        set_ts(ar, "at", r.at)
        out.recent_actions.append(ar)
    return out


def start_control_server(daemon: Daemon, socket: Path) -> grpc.Server:
    socket.parent.mkdir(parents=True, exist_ok=True)
    if socket.exists() or socket.is_symlink():
        socket.unlink()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="control"),
        options=[("grpc.max_receive_message_length", 4 * 1024 * 1024)],
    )
    cpb_grpc.add_ControlServicer_to_server(ControlService(daemon), server)
    server.add_insecure_port(f"unix:{socket}")
    old = os.umask(0o077)  # owner-only socket: the control API can delete snapshots
    try:
        server.start()
    finally:
        os.umask(old)
    os.chmod(socket, 0o600)
    log.info("control API on %s", socket)
    return server
