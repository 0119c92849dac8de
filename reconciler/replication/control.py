"""The daemon's Sync service on the control socket (sync.proto): queue by hand, sync back, status."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import grpc

from ..errors import PermissionDenied
from ..serde import set_ts
from ..transport.status import abort
from ..v1 import sync_pb2 as spb
from ..v1 import sync_pb2_grpc as spb_grpc
from .api import stats_to_pb
from .manager import DEFAULT_SYNCBACK_KEEP, SyncManager, SyncStatus
from .progress import TransferStats

if TYPE_CHECKING:
    from ..daemon import Daemon

POLL = 0.3
_DONE = object()


def status_to_pb(st: SyncStatus) -> spb.SyncStatusResponse:
    out = spb.SyncStatusResponse()
    plan = st.plan
    states = {t.target: t for t in plan.targets} if plan is not None else {}
    for name in sorted(set(st.addresses) | set(states)):
        view = st.views.get(name)
        ts = states.get(name)
        t = spb.TargetSyncStatus(
            name=name,
            address=st.addresses.get(name, ""),
            reachable=bool(view and view.reachable),
            error=view.error if view is not None else "not observed yet",
        )
        if ts is not None:
            t.window_open = ts.window_open
            t.throttle_bps = ts.throttle_bps
            t.pending = ts.pending
            t.lag_known = ts.lag_seconds is not None
            t.lag_seconds = ts.lag_seconds or 0.0
            set_ts(t, "newest_on_target", ts.newest_on_target)
            set_ts(t, "next_window", ts.next_window)
            t.bases.update(dict(ts.bases))
        out.targets.append(t)
    for a in st.active:
        msg = spb.ActiveTransfer(
            target=a.transfer.target,
            set_id=a.transfer.set_id,
            scope=a.transfer.scope,
            manual=a.transfer.manual,
            progress=stats_to_pb(a.stats),
        )
        set_ts(msg, "started", a.started)
        out.active.append(msg)
    if plan is not None:
        for w in plan.waiting:
            wm = spb.WaitingTransfer(target=w.target, set_id=w.set_id, reason=w.reason)
            set_ts(wm, "until", w.until)
            out.waiting.append(wm)
        out.warnings.extend(plan.warnings)
    for (scope, target), arr in sorted(st.scopes.items()):
        sm = spb.ScopeSyncStatus(scope=scope, target=target, set_id=arr.set_id)
        set_ts(sm, "created", arr.created)
        set_ts(sm, "synced_at", arr.at)
        out.scopes.append(sm)
    for r in list(st.recent)[-50:]:
        rm = spb.SyncRecord(
            target=r.target,
            set_id=r.set_id,
            ok=r.ok,
            error=r.error,
            wire_bytes=r.wire_bytes,
            seconds=r.seconds,
            kind=r.kind,
        )
        set_ts(rm, "at", r.at)
        out.recent.append(rm)
    return out


class SyncService(spb_grpc.SyncServicer):  # type: ignore[misc]
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    @property
    def manager(self) -> SyncManager:
        mgr: SyncManager = self.daemon.sync
        return mgr

    def _provider(self, context: grpc.ServicerContext, what: str) -> None:
        """Offsite sync is the provider's: a tenant's token is refused."""
        from ..control.server import tenant_of

        tenant = tenant_of(self.daemon, context)
        if tenant is not None:
            raise PermissionDenied(f"tenant {tenant} may not {what}")

    def Queue(self, request: spb.QueueSyncRequest, context: grpc.ServicerContext) -> Iterator[spb.SyncEvent]:
        try:
            self._provider(context, "queue offsite syncs")
            since = self.manager.queue(request.set_id, request.target, ignore_windows=request.ignore_windows)
        except Exception as exc:  # noqa: BLE001 - every error becomes a status
            abort(context, exc)
            raise
        if not request.wait:
            yield spb.SyncEvent(
                result=spb.SyncResult(ok=True, message="queued", target=request.target, set_id=request.set_id)
            )
            return
        last = ""
        while context.is_active():
            state, stats, rec = self.manager.progress(request.target, request.set_id, since)
            if state == "running" and stats is not None:
                yield spb.SyncEvent(progress=stats_to_pb(stats))
            elif state == "done" and rec is not None:
                yield spb.SyncEvent(
                    result=spb.SyncResult(
                        ok=rec.ok,
                        message=rec.error or "synced",
                        target=rec.target,
                        set_id=rec.set_id,
                        wire_bytes=rec.wire_bytes,
                        seconds=rec.seconds,
                        volumes=list(rec.volumes),
                    )
                )
                return
            else:
                reason = self.manager.waiting_reason(request.target, request.set_id)
                if reason != last:
                    last = reason
                    yield spb.SyncEvent(waiting=reason)
            time.sleep(POLL)

    def SyncBack(
        self, request: spb.SyncBackRequest, context: grpc.ServicerContext
    ) -> Iterator[spb.SyncEvent]:
        try:
            self._provider(context, "bring sets back from offsite targets")
        except Exception as exc:  # noqa: BLE001
            abort(context, exc)
            raise
        events: queue.Queue[Any] = queue.Queue()
        outcome: dict[str, Any] = {}
        cancel = threading.Event()
        context.add_callback(cancel.set)
        keep = timedelta(seconds=request.keep_seconds) if request.keep_seconds else DEFAULT_SYNCBACK_KEEP

        def progress(st: TransferStats) -> None:
            events.put(st)

        def run() -> None:
            try:
                outcome["result"] = self.manager.sync_back(
                    request.set_id,
                    request.target,
                    to_node=request.to_node,
                    keep=keep,
                    progress=progress,
                    cancel=cancel,
                )
            except BaseException as exc:  # noqa: BLE001 - reported to the caller below
                outcome["error"] = exc
            finally:
                events.put(_DONE)

        threading.Thread(target=run, name="sync-back", daemon=True).start()
        while True:
            ev = events.get()
            if ev is _DONE:
                break
            yield spb.SyncEvent(progress=stats_to_pb(ev))
        if "error" in outcome:
            abort(context, outcome["error"])
        out = outcome["result"]
        yield spb.SyncEvent(
            result=spb.SyncResult(
                ok=True,
                message=f"back on node {out.target_node} pool {out.target_pool}",
                target=request.target,
                set_id=request.set_id,
                wire_bytes=out.totals.wire_bytes,
                seconds=out.seconds,
                volumes=[s.volume for s in out.snapshots],
            )
        )

    def GetSyncStatus(
        self, request: spb.GetSyncStatusRequest, context: grpc.ServicerContext
    ) -> spb.SyncStatusResponse:
        try:
            self._provider(context, "read the offsite sync status")
            return status_to_pb(self.manager.status())
        except Exception as exc:  # noqa: BLE001
            abort(context, exc)
            raise


def add_to_server(server: grpc.Server, daemon: Daemon) -> None:
    spb_grpc.add_SyncServicer_to_server(SyncService(daemon), server)
