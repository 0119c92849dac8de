"""The daemon's control API on a unix socket (owner-only), used by the `reconciler` CLI."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc

from .. import __version__
from ..backends.base import ProgressEvent
from ..domain import LABEL_ORIGIN_NODE, LABEL_ORIGIN_SITE, Action, ActionKind, Keep, SnapshotSet
from ..errors import PermissionDenied
from ..restore import RestorePlan, RestoreRequest, exposed_to
from ..serde import from_ts, set_ts
from ..syncplan import SENDING_NOW, SyncPlan
from ..transport.status import abort
from ..v1 import control_pb2 as cpb
from ..v1 import control_pb2_grpc as cpb_grpc

if TYPE_CHECKING:
    from ..daemon import Daemon, DryRun

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
        exposed_to=sorted(exposed_to(s)),
        received_as=s.received_as,
        origin_nodes=sorted({m.snapshot.labels.get(LABEL_ORIGIN_NODE, "") for m in s.members} - {""})
        if s.received_as
        else [],
        origin_site=s.members[0].snapshot.labels.get(LABEL_ORIGIN_SITE, "") if s.received_as else "",
        logical_bytes=sum(m.snapshot.logical_bytes for m in s.members),
        unique_bytes=sum(m.snapshot.unique_bytes for m in s.members),
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
    unlocks = [m.snapshot.unlock_at for m in s.members if m.snapshot.unlock_at is not None]
    set_ts(out, "unlock_at", max(unlocks, default=None))
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


def sync_plan_to_pb(p: SyncPlan) -> list[cpb.PlannedSync]:
    out = [
        cpb.PlannedSync(
            kind="send", target=t.target, set_id=t.set_id, scope=t.scope, reason=t.reason, priority=t.priority
        )
        for t in p.transfers
    ]
    for w in p.waiting:
        ps = cpb.PlannedSync(
            kind="sending" if w.reason == SENDING_NOW else "wait",
            target=w.target,
            set_id=w.set_id,
            reason=w.reason,
        )
        set_ts(ps, "until", w.until)
        out.append(ps)
    out += [
        cpb.PlannedSync(kind="prune", target=d.target, set_id=d.set_id, reason=d.reason) for d in p.deletes
    ]
    out += [
        cpb.PlannedSync(
            kind="hold",
            target=h.target,
            set_id=h.set_id,
            reason=h.reason,
            add_holds=sorted(h.add),
            remove_holds=sorted(h.remove),
        )
        for h in p.holds
    ]
    return out


def plan_to_pb(dry: DryRun) -> cpb.PlanResponse:
    p = dry.plan
    out = cpb.PlanResponse(
        actions=[action_to_pb(a) for a in p.actions],
        kept=[keep_to_pb(k) for k in p.kept],
        warnings=list(p.warnings),
        notes=list(dry.notes),
    )
    if dry.sync is not None:
        out.sync.extend(sync_plan_to_pb(dry.sync))
        out.remote_kept.extend(keep_to_pb(k) for k in dry.sync.kept)
        out.warnings.extend(dry.sync.warnings)
        out.notes.extend(dry.sync.notes)
        wake = min(filter(None, [p.next_wakeup, dry.sync.next_wakeup]), default=None)
    else:
        wake = p.next_wakeup
    set_ts(out, "now", p.now)
    set_ts(out, "next_wakeup", wake)
    return out


def tenant_of(daemon: Daemon, context: grpc.ServicerContext) -> str | None:
    """The tenant a request acts for (from `authorization: Bearer <token>`), or None for the provider.

    A token that matches no tenant is refused rather than treated as the provider."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            token = text.removeprefix("Bearer ").strip()
            digest = hashlib.sha256(token.encode()).hexdigest()
            for name, t in daemon.state().config.tenants.items():
                if t.api_token_sha256 and hmac.compare_digest(t.api_token_sha256, digest):
                    return name
            raise PermissionDenied("the API token matches no tenant")
    return None


def _provider_only(tenant: str | None, what: str) -> None:
    if tenant is not None:
        raise PermissionDenied(f"tenant {tenant} may not {what}")


_T = TypeVar("_T")


def _guard(context: grpc.ServicerContext, fn: Callable[[], _T]) -> _T:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - every error becomes a status with a clear message
        abort(context, exc)
        raise


class ControlService(cpb_grpc.ControlServicer):  # type: ignore[misc]
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def _tenant(self, context: grpc.ServicerContext) -> str | None:
        return tenant_of(self.daemon, context)

    def GetStatus(
        self, request: cpb.GetStatusRequest, context: grpc.ServicerContext
    ) -> cpb.GetStatusResponse:
        def run() -> cpb.GetStatusResponse:
            _provider_only(self._tenant(context), "read the daemon status")
            return status_to_pb(self.daemon)

        return _guard(context, run)

    def Plan(self, request: cpb.PlanRequest, context: grpc.ServicerContext) -> cpb.PlanResponse:
        def run() -> cpb.PlanResponse:
            _provider_only(self._tenant(context), "read the plan")
            return plan_to_pb(self.daemon.compute_plan())

        return _guard(context, run)

    def Reload(self, request: cpb.ReloadRequest, context: grpc.ServicerContext) -> cpb.ReloadResponse:
        def run() -> cpb.ReloadResponse:
            _provider_only(self._tenant(context), "reload the config")
            errors = self.daemon.reload()
            return cpb.ReloadResponse(ok=not errors, errors=errors, config_path=str(self.daemon.config_path))

        return _guard(context, run)

    def ListSnapshotSets(
        self, request: cpb.ListSnapshotSetsRequest, context: grpc.ServicerContext
    ) -> cpb.ListSnapshotSetsResponse:
        def run() -> cpb.ListSnapshotSetsResponse:
            sets = self.daemon.list_sets(
                request.scope, tenant=self._tenant(context), with_usage=request.with_usage
            )
            return cpb.ListSnapshotSetsResponse(sets=[set_to_pb(s) for s in sets])

        return _guard(context, run)

    def CreateSnapshotSet(
        self, request: cpb.CreateManualSetRequest, context: grpc.ServicerContext
    ) -> cpb.CreateManualSetResponse:
        def run() -> cpb.CreateManualSetResponse:
            tenant = self._tenant(context)
            if tenant is not None:
                self._check_tenant_scope(tenant, request.scope)
            s = self.daemon.create_manual(
                scope=request.scope,
                request_id=request.request_id,
                name=request.name,
                description=request.description,
                expires=from_ts(request, "expires"),
                never_expire=request.never_expire,
                immutable=request.immutable,
                quiesce=request.quiesce,
                private=request.private if request.HasField("private") else None,
            )
            return cpb.CreateManualSetResponse(set=set_to_pb(s))

        return _guard(context, run)

    def _check_tenant_scope(self, tenant: str, scope: str) -> None:
        config = self.daemon.state().config
        kind, _, name = scope.partition(":")
        if kind == "tenant" and name == tenant:
            return
        if kind == "resource" and name in config.resources and config.resources[name].tenant == tenant:
            return
        raise PermissionDenied(f"tenant {tenant} may not snapshot scope {scope}")

    def DeleteSnapshotSet(
        self, request: cpb.DeleteSnapshotSetRequest, context: grpc.ServicerContext
    ) -> cpb.DeleteSnapshotSetResponse:
        def run() -> cpb.DeleteSnapshotSetResponse:
            tenant = self._tenant(context)
            if tenant is not None:
                s = self.daemon.get_set(request.set_id, tenant=tenant)
                self._check_tenant_scope(tenant, s.scope)
            errors = self.daemon.delete_set(request.set_id)
            return cpb.DeleteSnapshotSetResponse(deleted=not errors, errors=errors)

        return _guard(context, run)

    def UpdateSnapshotSet(
        self, request: cpb.UpdateSnapshotSetRequest, context: grpc.ServicerContext
    ) -> cpb.SnapshotSet:
        def run() -> cpb.SnapshotSet:
            _provider_only(self._tenant(context), "change snapshot sets")
            s = self.daemon.update_set(
                request.set_id,
                request.action,
                unlock_wait=timedelta(seconds=request.unlock_wait_s) if request.unlock_wait_s else None,
                expires=from_ts(request, "expires"),
                never_expire=request.never_expire,
                tenant_name=request.tenant,
            )
            return set_to_pb(s)

        return _guard(context, run)

    def ListFiles(
        self, request: cpb.ListSetFilesRequest, context: grpc.ServicerContext
    ) -> cpb.ListSetFilesResponse:
        def run() -> cpb.ListSetFilesResponse:
            ref, files, truncated = self.daemon.list_files(
                request.set_id,
                request.resource,
                request.volume,
                request.prefix,
                request.limit,
                tenant=self._tenant(context),
            )
            return cpb.ListSetFilesResponse(
                node=ref.node,
                pool=ref.pool,
                volume=ref.volume,
                truncated=truncated,
                files=[
                    cpb.SetFile(path=f.path, kind=f.kind, size=f.size, mode=f.mode, mtime=f.mtime)
                    for f in files
                ],
            )

        return _guard(context, run)

    def Verify(
        self, request: cpb.MaintenanceRequest, context: grpc.ServicerContext
    ) -> cpb.MaintenanceResponse:
        return _guard(context, lambda: self._maintain("verify", request, context))

    def CollectGarbage(
        self, request: cpb.MaintenanceRequest, context: grpc.ServicerContext
    ) -> cpb.MaintenanceResponse:
        return _guard(context, lambda: self._maintain("gc", request, context))

    def _maintain(
        self, kind: str, request: cpb.MaintenanceRequest, context: grpc.ServicerContext
    ) -> cpb.MaintenanceResponse:
        _provider_only(self._tenant(context), f"run {kind}")
        res = self.daemon.maintain(kind, node=request.node, pool=request.pool, set_id=request.set_id)
        return cpb.MaintenanceResponse(
            pools=[
                cpb.PoolMaintenance(
                    node=r.node, pool=r.pool, ok=r.ok, message=r.message, problems=r.problems, bytes=r.bytes
                )
                for r in res
            ]
        )

    def Restore(
        self, request: cpb.SetRestoreRequest, context: grpc.ServicerContext
    ) -> Iterator[cpb.RestoreEvent]:
        """Plan first, then progress, then the result; the restore runs to its end even if the
        client disconnects (each volume is swapped atomically, stopping halfway helps nobody),
        unless it disconnects within the request's cancel window: then nothing is done."""
        events: queue.Queue[cpb.RestoreEvent | None] = queue.Queue()
        failure: list[BaseException] = []
        gone = threading.Event()  # the call ended: cancelled by the client, or done
        context.add_callback(gone.set)
        req = RestoreRequest(
            set_id=request.set_id,
            level=request.level,
            name=request.name,
            mode=request.mode or "to_new",
            new_name=request.new_name,
            confirm=request.confirm,
            skip_safety_snapshot=request.skip_safety_snapshot,
            with_settings=request.with_settings,
            paths=tuple(request.paths),
            volume=request.volume,
            dry_run=request.dry_run,
            pool=request.pool,
        )

        def on_plan(plan: RestorePlan) -> None:
            events.put(
                cpb.RestoreEvent(
                    plan=cpb.RestorePlan(
                        summary=plan.summary,
                        safety_snapshot=plan.safety_snapshot,
                        warnings=list(plan.warnings),
                        steps=[
                            cpb.RestoreStep(
                                node=st.ref.node,
                                pool=st.ref.pool,
                                volume=st.ref.volume,
                                target=st.target,
                                target_pool=st.dest_pool,
                                what=st.what,
                            )
                            for st in plan.steps
                        ],
                    )
                )
            )

        def progress(volume: str, ev: ProgressEvent) -> None:
            events.put(
                cpb.RestoreEvent(
                    progress=cpb.RestoreProgress(
                        phase=ev.phase,
                        done=ev.done,
                        total=ev.total,
                        unit=ev.unit,
                        message=ev.message,
                        volume=volume,
                    )
                )
            )

        def work() -> None:
            try:
                out = self.daemon.restore(
                    req,
                    on_plan=on_plan,
                    progress=progress,
                    tenant=self._tenant(context),
                    cancel_window=float(request.cancel_window),
                    cancelled=gone,
                )
                events.put(
                    cpb.RestoreEvent(
                        result=cpb.RestoreResult(
                            ok=out.ok,
                            message=out.message,
                            safety_set_id=out.safety_set_id,
                            volumes=out.volumes,
                            settings_file=out.settings_file,
                            errors=out.errors,
                        )
                    )
                )
            except BaseException as exc:  # noqa: BLE001 - sent to the client below
                failure.append(exc)
            finally:
                events.put(None)

        threading.Thread(target=work, name="restore", daemon=True).start()
        while (ev := events.get()) is not None:
            yield ev
        if failure:
            abort(context, failure[0])


def status_to_pb(d: Daemon) -> cpb.GetStatusResponse:
    st = d.current
    out = cpb.GetStatusResponse(
        config_path=str(d.config_path),
        config_valid=not d.config_errors,
        config_errors=d.config_errors,
        version=__version__,
        last_pass_seconds=d.last_pass.seconds if d.last_pass else 0.0,
        site=d.site,
    )
    if d.last_pass is not None:
        out.warnings.extend(d.last_pass.plan.warnings)
        out.notes.extend(d.last_pass.plan.notes)
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
    from ..replication.control import add_to_server as add_sync_service  # offsite sync (sync.proto)

    add_sync_service(server, daemon)
    server.add_insecure_port(f"unix:{socket}")
    old = os.umask(0o077)  # owner-only socket: the control API can delete snapshots
    try:
        server.start()
    finally:
        os.umask(old)
    os.chmod(socket, 0o600)
    log.info("control API on %s", socket)
    return server
