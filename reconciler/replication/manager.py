"""The daemon's offsite sync: observe the targets, plan (syncplan.plan_sync), run the plan.

Runs on its own thread, woken after every daemon pass and when a retry, a window or an expiry is
due, so a slow or unreachable target never slows the reconcile pass. One exception, on purpose:
the local holds a plan asks for (bases, hold_until_synced) are applied inside the pass, before
the local plan is made, so local pruning never deletes a set a moment before it would be held.

Transfers run one per target at a time (the plan orders them), each as one Replicate call per
source node holding members of the set, up to the target's `streams` of them at once (and a
node's share of the streams for its pools, see sender.py); a transfer that outlives its sync window is cancelled at
the window's end (the target keeps what arrived; the next window resumes). Everything here is
rebuilt from the agents after a restart, except the failure counts of the retry policy and the
"when did it arrive" times: the daemon keeps those in STATE_FILE of its state directory, so a
restart neither retries a failing transfer at once nor forgets how many attempts it has had.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from .. import serde
from ..agent.api import PROTOCOL_VERSION, NodeInfo, SnapshotKey, SnapshotUpdate
from ..agent.client import DEFAULT_DEADLINES, AgentClient, Deadlines
from ..config import Config, TargetConfig
from ..domain import ObservedState, SnapshotSet, VolumeRef
from ..errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ProtocolMismatch,
    ReconcilerError,
    Unavailable,
)
from ..fanout import all_or_first_failure
from ..fsutil import atomic_write
from ..logs import LogOnce
from ..observer import Observer
from ..planner import plan as make_plan
from ..syncplan import (
    HoldChange,
    ManualRequest,
    SyncPlan,
    TargetView,
    Transfer,
    TransferState,
    plan_sync,
    syncback_hold,
)
from ..v1 import agent_pb2 as pb
from .api import LABEL_ORIGIN_NODE, LABEL_ORIGIN_SITE, Peer, ReplicateOutcome, ReplicateSpec
from .client import ReplicateCancelled, ReplicationClient
from .progress import TransferStats
from .sender import register_identity

if TYPE_CHECKING:
    from ..daemon import Daemon

log = logging.getLogger(__name__)

PERMANENT = (NotFound, PermissionDenied, InvalidArgument, AlreadyExists, ProtocolMismatch, FailedPrecondition)
STATE_FILE = "sync-state.json"
STATE_VERSION = 1
MAX_KEPT = 10_000  # failure histories and arrival times kept, each: the newest
IDLE_PASS = 60.0  # seconds: targets are looked at this often even when nothing wakes the loop
DEFAULT_SYNCBACK_KEEP = timedelta(days=7)


def _tls_creds(tls: Any) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=Path(tls.ca).read_bytes(),
        private_key=Path(tls.key).read_bytes(),
        certificate_chain=Path(tls.cert).read_bytes(),
    )


class TargetClient(AgentClient):
    """An offsite target's agent. Its node name is whatever it says (the config names the target,
    not the machine); the rest is the ordinary agent client."""

    def __init__(self, name: str, cfg: TargetConfig, *, deadlines: Deadlines = DEFAULT_DEADLINES) -> None:
        creds = None if cfg.insecure or cfg.tls is None else _tls_creds(cfg.tls)
        server_name = cfg.tls.server_name if cfg.tls is not None else None
        super().__init__(name, cfg.address, credentials=creds, server_name=server_name, deadlines=deadlines)
        self.remote_node = ""

    def _where(self, rpc: str) -> str:
        return f"target {self.node} ({self.target}) {rpc}"

    def node_info(self) -> NodeInfo:
        msg = self._call("GetNodeInfo", self.stub.GetNodeInfo, pb.GetNodeInfoRequest(), self.info_timeout)
        if not isinstance(msg, pb.NodeInfo):
            raise ProtocolMismatch(f"{self._where('GetNodeInfo')}: unexpected answer {type(msg).__name__}")
        info = serde.node_info_from_pb(msg)
        if info.protocol_version != PROTOCOL_VERSION:
            raise ProtocolMismatch(
                f"{self._where('GetNodeInfo')}: agent speaks protocol {info.protocol_version}, "
                f"this daemon speaks {PROTOCOL_VERSION}; upgrade the older side"
            )
        self.remote_node = info.node
        return info


@dataclass
class Active:
    transfer: Transfer
    started: datetime
    cancel: threading.Event = field(default_factory=threading.Event)
    stats: TransferStats = field(default_factory=TransferStats)


@dataclass(frozen=True, slots=True)
class SyncRecord:
    at: datetime
    target: str
    set_id: str
    ok: bool
    error: str = ""
    wire_bytes: int = 0
    seconds: float = 0.0
    kind: str = "sync"
    volumes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Arrival:
    set_id: str
    created: datetime
    at: datetime | None  # None: it was there before this daemon started


@dataclass(frozen=True, slots=True)
class SyncStatus:
    plan: SyncPlan | None
    views: Mapping[str, TargetView]
    addresses: Mapping[str, str]
    active: tuple[Active, ...]
    recent: tuple[SyncRecord, ...]
    scopes: Mapping[tuple[str, str], Arrival]  # (scope, target) -> newest set there


def load_state(path: Path) -> tuple[dict[tuple[str, str], TransferState], dict[tuple[str, str], datetime]]:
    """The retry history and arrival times a previous daemon left in `path` (empty if none). An
    unreadable or foreign file is logged and set aside: it only paces retries and dates arrivals."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}, {}
    except OSError as exc:
        log.warning("cannot read %s: %s; sync retries start afresh", path, exc.strerror)
        return {}, {}
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION:
            raise ValueError(f"not version {STATE_VERSION} of the sync state")
        history = {
            (str(t["target"]), str(t["set_id"])): TransferState(
                attempts=int(t["attempts"]),
                last_attempt=_aware(t["last_attempt"]) if t.get("last_attempt") else None,
                last_error=str(t.get("last_error", "")),
                permanent=bool(t.get("permanent", False)),
            )
            for t in doc.get("transfers", [])
        }
        arrived = {(str(a["target"]), str(a["set_id"])): _aware(a["at"]) for a in doc.get("arrived", [])}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        aside = path.with_name(path.name + ".bad")
        log.warning("%s is not a sync state this daemon can read (%s); moved to %s", path, exc, aside)
        try:
            path.replace(aside)
        except OSError:
            pass
        return {}, {}
    return history, arrived


def _aware(text: object) -> datetime:
    t = datetime.fromisoformat(str(text))
    if t.tzinfo is None:
        raise ValueError(f"time without a zone: {text!r}")
    return t


def dump_state(
    history: Mapping[tuple[str, str], TransferState], arrived: Mapping[tuple[str, str], datetime]
) -> bytes:
    doc = {
        "version": STATE_VERSION,
        "transfers": [
            {
                "target": target,
                "set_id": set_id,
                "attempts": st.attempts,
                "last_attempt": st.last_attempt.isoformat() if st.last_attempt else None,
                "last_error": st.last_error,
                "permanent": st.permanent,
            }
            for (target, set_id), st in sorted(history.items())
        ],
        "arrived": [
            {"target": t, "set_id": s, "at": at.isoformat()} for (t, s), at in sorted(arrived.items())
        ],
    }
    return json.dumps(doc, indent=1).encode() + b"\n"


class SyncManager:
    def __init__(
        self, daemon: Daemon, *, deadlines: Deadlines = DEFAULT_DEADLINES, state_dir: Path | None = None
    ) -> None:
        self.daemon = daemon
        self.deadlines = deadlines
        self._lock = threading.RLock()
        self._targets: dict[str, TargetClient] = {}
        self._target_cfg: dict[str, TargetConfig] = {}
        self._observers: dict[str, Observer] = {}
        self._views: dict[str, TargetView] = {}
        self._history: dict[tuple[str, str], TransferState] = {}
        self._manual: dict[tuple[str, str], ManualRequest] = {}
        self._active: dict[tuple[str, str], Active] = {}
        self._records: deque[SyncRecord] = deque(maxlen=200)
        self._warnings = LogOnce(log, "sync: ")  # each warning of the sync plan logged when it appears
        self._arrived: dict[tuple[str, str], datetime] = {}  # (target, set_id) -> when it arrived
        self._plan: SyncPlan | None = None
        self._observed: ObservedState | None = None
        self._next: datetime | None = None
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sync")
        self._trigger = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pass_lock = threading.Lock()
        # the retry history and arrival times, kept across restarts (see load_state)
        self._state_path = state_dir / STATE_FILE if state_dir is not None else None
        self._state_gen = 0  # bumped (under _lock) by every change to _history or _arrived
        self._saved_gen = 0
        self._save_lock = threading.Lock()
        if self._state_path is not None:
            self._history, self._arrived = load_state(self._state_path)

    def _save_state(self) -> None:
        """Write the retry history and arrival times (call after changing them, outside _lock)."""
        if self._state_path is None:
            return
        with self._lock:
            if len(self._arrived) > MAX_KEPT:
                self._arrived = dict(sorted(self._arrived.items(), key=lambda kv: kv[1])[-MAX_KEPT:])
            if len(self._history) > MAX_KEPT:
                epoch = datetime.min.replace(tzinfo=UTC)
                by_age = sorted(self._history.items(), key=lambda kv: kv[1].last_attempt or epoch)
                self._history = dict(by_age[-MAX_KEPT:])
            self._state_gen += 1
            gen = self._state_gen
            data = dump_state(self._history, self._arrived)
        with self._save_lock:
            if gen <= self._saved_gen:  # a newer state was written meanwhile
                return
            try:
                atomic_write(self._state_path, data)
            except (OSError, ReconcilerError) as exc:
                log.warning(
                    "cannot write %s: %s (a restart would start sync retries afresh)", self._state_path, exc
                )
                return
            self._saved_gen = gen

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="sync", daemon=True)
            self._thread.start()

    def shutdown(self) -> None:
        self._stop.set()
        self._trigger.set()
        with self._lock:
            for a in self._active.values():
                a.cancel.set()
        if self._thread is not None:
            self._thread.join(10)
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for c in self._targets.values():
                c.close()
            self._targets.clear()

    def apply_config(self, config: Config) -> None:
        """Connect to the configured targets (keeping unchanged connections)."""
        targets = config.offsite.targets
        with self._lock:
            for name in [n for n in self._targets if n not in targets or self._target_cfg[n] != targets[n]]:
                self._targets.pop(name).close()
                self._target_cfg.pop(name, None)
                self._observers.pop(name, None)
                self._views.pop(name, None)
            for name, cfg in targets.items():
                if name not in self._targets:
                    try:
                        self._targets[name] = TargetClient(name, cfg, deadlines=self.deadlines)
                    except OSError as exc:  # an unreadable certificate
                        self._views[name] = TargetView(name, False, error=f"cannot connect: {exc}")
                        continue
                    self._target_cfg[name] = cfg
                    self._observers[name] = Observer(target=True)
                # an embedded node dials targets with the identity the config gives for them
                creds = None
                if not cfg.insecure and cfg.tls is not None:
                    try:
                        creds = _tls_creds(cfg.tls)
                    except OSError:
                        creds = None
                register_identity(cfg.address, creds)
            # permanent failures get another chance after a config change
            self._history = {k: v for k, v in self._history.items() if k[0] in targets and not v.permanent}
            self._arrived = {k: v for k, v in self._arrived.items() if k[0] in targets}
            self._manual = {k: v for k, v in self._manual.items() if k[0] in targets}
        self._save_state()
        self._trigger.set()

    # --- the daemon's pass --------------------------------------------------------------------------
    def before_plan(self, observed: ObservedState, now: datetime) -> bool:
        """Apply the local holds the current view asks for; True when something changed."""
        config = self._config()
        if config is None:
            return False
        try:
            with self._lock:
                p = plan_sync(
                    config,
                    observed,
                    dict(self._views),
                    now=now,
                    transfers=dict(self._history),
                    manual=list(self._manual.values()),
                    running=frozenset(self._active),
                )
            changes = [h for h in p.holds if h.target == ""]
            return self._apply_holds(changes) > 0
        except Exception:  # noqa: BLE001 - the local pass goes on; the sync loop retries
            log.exception("sync: applying local holds failed")
            return False

    def after_pass(self, observed: ObservedState, now: datetime) -> None:
        with self._lock:
            self._observed = observed
        self._trigger.set()

    def next_wakeup(self) -> datetime | None:
        return self._next

    # --- the loop -----------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            timeout = IDLE_PASS
            if self._next is not None:
                timeout = min(timeout, max(0.05, (self._next - self.daemon.clock()).total_seconds()))
            self._trigger.wait(timeout)
            self._trigger.clear()
            if self._stop.is_set():
                return
            try:
                self.run_pass()
            except Exception:  # noqa: BLE001 - a bad pass must not stop syncing
                log.exception("sync pass failed")

    def _config(self) -> Config | None:
        st = self.daemon.current
        return st.config if st is not None else None

    def observe_targets(self, now: datetime) -> dict[str, TargetView]:
        with self._lock:
            targets = dict(self._targets)
            observers = dict(self._observers)
        views: dict[str, TargetView] = {}

        config = self._config()
        ours = frozenset(config.nodes) if config is not None else frozenset()
        site = (config.site or "") if config is not None else ""

        def one(name: str) -> TargetView:
            # ours there: what our nodes sent; the target site's own sets and other sites' copies
            # are left apart, even under one of our set ids
            obs = observers[name].observe({name: targets[name]}, now, our_nodes=ours, our_site=site)
            node = observers[name].nodes.get(name)
            reachable = node is not None and node.reachable
            return TargetView(
                name,
                reachable,
                dict(obs.sets),
                node.error if node is not None else "",
                len(obs.foreign),
                agent_node=targets[name].remote_node,
            )

        if len(targets) > 1:
            with ThreadPoolExecutor(
                max_workers=min(8, len(targets)), thread_name_prefix="sync-observe"
            ) as pool:
                for view in pool.map(one, sorted(targets)):
                    views[view.name] = view
        else:
            for name in targets:
                views[name] = one(name)
        with self._lock:
            for name, view in views.items():
                self._views[name] = view
            return dict(self._views)

    def run_pass(self) -> SyncPlan | None:
        with self._pass_lock:  # the loop and a caller (tests, the CLI's request) never interleave
            return self._run_pass()

    def preview(self, observed: ObservedState, now: datetime) -> SyncPlan | None:
        """What a sync pass would do now, for `reconciler plan`: the targets are looked at afresh
        (read-only), nothing is held, pruned or sent, and the sync loop is not woken."""
        config = self._config()
        if config is None:
            return None
        with self._pass_lock:  # the loop's pass and this one never observe a target at once
            views = self.observe_targets(now)
        with self._lock:
            return self._plan_now(config, observed, views, now)

    def _plan_now(
        self, config: Config, observed: ObservedState, views: dict[str, TargetView], now: datetime
    ) -> SyncPlan:
        """plan_sync over the manager's history, manual requests and running transfers (hold
        self._lock)."""
        return plan_sync(
            config,
            observed,
            views,
            now=now,
            transfers=dict(self._history),
            manual=list(self._manual.values()),
            running=frozenset(self._active),
            retain=make_plan,
        )

    def _run_pass(self) -> SyncPlan | None:
        config = self._config()
        if config is None:
            return None
        now = self.daemon.clock()
        views = self.observe_targets(now)
        # a fresh look (cheap: pools are re-listed only when their generation changed), so sets the
        # pass that woke us has just created are seen
        observed = self.daemon.observe()
        with self._lock:
            p = self._plan_now(config, observed, views, now)
            self._plan = p
            self._next = p.next_wakeup
        self._warnings.update(p.warnings)
        self.daemon._emit("sync_plan", {"warnings": p.warnings})
        local = [h for h in p.holds if h.target == ""]
        if self._apply_holds(local):
            self.daemon.wake()  # the local planner must see the new holds
        for h in p.holds:
            if h.target:
                self._apply_remote_hold(h)
        for d in p.deletes:
            self._remote_delete(d.target, d.set_id, d.refs, d.reason)
        self._start(p.transfers)
        return p

    # --- holds and deletes ---------------------------------------------------------------------------
    def _apply_holds(self, changes: Sequence[HoldChange]) -> int:
        by_node: dict[str, list[SnapshotUpdate]] = {}
        for h in changes:
            for ref in h.refs:
                by_node.setdefault(ref.node, []).append(_hold_update(h, ref))
        done = 0
        clients = self.daemon.nodes.clients
        for node, updates in sorted(by_node.items()):
            client = clients.get(node)
            if client is None:
                continue
            try:
                client.update(updates)
                done += len(updates)
            except ReconcilerError as exc:
                log.warning("sync: holds on node %s not changed: %s", node, exc)
        for h in changes:
            log.info("sync: set %s holds %s%s: %s", h.set_id, _fmt(h.add, "+"), _fmt(h.remove, "-"), h.reason)
        return done

    def _apply_remote_hold(self, h: HoldChange) -> None:
        client = self._targets.get(h.target)
        if client is None:
            return
        try:
            client.update([_hold_update(h, ref) for ref in h.refs])
            log.info(
                "sync: on %s set %s holds %s%s: %s",
                h.target,
                h.set_id,
                _fmt(h.add, "+"),
                _fmt(h.remove, "-"),
                h.reason,
            )
        except ReconcilerError as exc:
            log.warning("sync: holds on target %s not changed: %s", h.target, exc)

    def _remote_delete(self, target: str, set_id: str, refs: Sequence[VolumeRef], reason: str) -> None:
        client = self._targets.get(target)
        if client is None:
            return
        try:
            results = client.delete([SnapshotKey(set_id, r.pool, r.volume) for r in refs])
            refused = [r.error for r in results if not r.deleted]
            ok = not refused
            error = "; ".join(refused)
        except ReconcilerError as exc:
            ok, error = False, str(exc)
        (log.info if ok else log.warning)("sync: prune %s on %s: %s %s", set_id, target, reason, error)
        self._record(SyncRecord(self.daemon.clock(), target, set_id, ok, error, kind="prune"))

    # --- transfers ------------------------------------------------------------------------------------
    def _start(self, transfers: Sequence[Transfer]) -> None:
        with self._lock:
            busy = {t for t, _ in self._active}
            for t in transfers:
                key = (t.target, t.set_id)
                if t.target in busy or key in self._active or self._stop.is_set():
                    continue
                busy.add(t.target)
                active = Active(t, self.daemon.clock())
                self._active[key] = active
                self._pool.submit(self._run, active)

    def _run(self, active: Active) -> None:
        t = active.transfer
        key = (t.target, t.set_id)
        started = time.monotonic()
        timer: threading.Timer | None = None
        if t.window_end is not None:
            delay = (t.window_end - self.daemon.clock()).total_seconds()
            timer = threading.Timer(max(0.0, delay), active.cancel.set)
            timer.daemon = True
            timer.start()
        outcome: list[ReplicateOutcome] = []
        error: ReconcilerError | None = None
        try:
            outcome = self._replicate(active)
        except ReconcilerError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - reported like any failure
            log.exception("sync of %s to %s", t.set_id, t.target)
            error = ReconcilerError(f"{type(exc).__name__}: {exc}")
        finally:
            if timer is not None:
                timer.cancel()
        now = self.daemon.clock()
        wire = sum(o.totals.wire_bytes for o in outcome) if error is None else active.stats.wire_bytes
        paused = error is not None and active.cancel.is_set()
        with self._lock:
            self._active.pop(key, None)
            if error is None:
                self._history.pop(key, None)
                self._manual.pop(key, None)
                self._arrived[key] = now
            elif paused:  # the window closed (or the daemon stops): not a failure, resumed later
                log.info("sync of %s to %s paused (sync window closed or shutdown)", t.set_id, t.target)
            elif not self._stop.is_set():
                prev = self._history.get(key, TransferState())
                permanent = isinstance(error, PERMANENT)
                self._history[key] = TransferState(prev.attempts + 1, now, str(error), permanent)
                self._manual.pop(key, None)  # a request by hand is answered, not retried forever
        if not paused:
            self._save_state()
        seconds = time.monotonic() - started
        volumes = tuple(s.volume for o in outcome for s in o.snapshots)
        if error is None:
            log.info("synced %s to %s (%d bytes on the wire, %.1fs)", t.set_id, t.target, wire, seconds)
        elif not paused:
            log.warning("sync of %s to %s failed: %s", t.set_id, t.target, error)
        kind = "pause" if paused else "sync"
        self._record(
            SyncRecord(now, t.target, t.set_id, error is None, str(error or ""), wire, seconds, kind, volumes)
        )
        if not paused:
            self.daemon._emit(
                "sync",
                {
                    "target": t.target,
                    "ok": error is None,
                    "bytes": wire,
                    "lag_seconds": self._lag_after(t),
                    "at": now,
                },
            )
        self._trigger.set()
        self.daemon.wake()

    def _lag_after(self, t: Transfer) -> float | None:
        p = self._plan
        if p is None:
            return None
        for ts in p.targets:
            if ts.target == t.target:
                if ts.pending <= 1:
                    return 0.0
                newest = max(filter(None, [ts.newest_on_target, t.created]))
                return max(0.0, (self.daemon.clock() - newest).total_seconds())
        return None

    def _peer(self, target: str) -> Peer:
        cfg = self._target_cfg[target]
        client = self._targets.get(target)
        return Peer(
            address=cfg.address,
            server_name=(cfg.tls.server_name or "") if cfg.tls is not None else "",
            node=client.remote_node if client is not None else "",
            insecure=cfg.insecure,
            pool=cfg.pool or "",
        )

    def _replicate(self, active: Active) -> list[ReplicateOutcome]:
        t = active.transfer
        if t.target not in self._target_cfg:
            raise NotFound(f"target {t.target} is no longer configured")
        by_node: dict[str, list[VolumeRef]] = {}
        for ref in t.members:
            by_node.setdefault(ref.node, []).append(ref)
        clients = self.daemon.nodes.clients
        nodes = sorted(by_node)
        for node in nodes:
            if clients.get(node) is None:
                raise Unavailable(f"node {node} is not configured or not connected")
        # The source nodes send at the same time, `streams` of them at most; a node's share of
        # the streams goes to its pools (sender.py). The throttle is per node: each sends at up
        # to the target's limit divided by the nodes sending at once.
        workers = max(1, min(t.streams, len(nodes)))
        per_node = max(1, t.streams // workers)
        latest: dict[str, TransferStats] = {}
        lock = threading.Lock()
        failed = threading.Event()  # one node failed: the others stop (not a pause: active.cancel)
        site = self.daemon.site  # the copies carry it: the target site tells them from its own sets

        class _Stop:
            @staticmethod
            def is_set() -> bool:
                return active.cancel.is_set() or failed.is_set()

        def one(node: str) -> ReplicateOutcome:
            spec = ReplicateSpec(
                set_id=t.set_id,
                target=self._peer(t.target),
                refs=tuple(SnapshotKey(t.set_id, r.pool, r.volume) for r in by_node[node]),
                expires=t.expires,
                never_expire=t.never_expire,
                name_prefix=t.name_prefix,
                throttle_bps=max(1, t.throttle_bps // workers) if t.throttle_bps else 0,
                compression=t.compression,
                streams=per_node,
                labels={LABEL_ORIGIN_SITE: site} if site else {},
            )

            def progress(st: TransferStats) -> None:
                with lock:
                    latest[node] = st
                    active.stats = _sum(latest.values())

            repl = ReplicationClient(clients[node].channel, where=f"node {node}")
            try:
                out = repl.replicate(spec, progress, cancel=_Stop())
            except BaseException:
                failed.set()
                raise
            progress(out.totals)
            return out

        # the failure itself is reported, not the cancellations it caused on the other nodes
        return all_or_first_failure(
            nodes, one, workers=workers, thread_name="sync-node", consequences=(ReplicateCancelled,)
        )

    # --- by hand ---------------------------------------------------------------------------------------
    def queue(self, set_id: str, target: str, *, ignore_windows: bool = False) -> datetime:
        config = self._config()
        if config is None or target not in config.offsite.targets:
            known = ", ".join(sorted(config.offsite.targets)) if config is not None else ""
            raise NotFound(f"no offsite target {target!r} (targets: {known or 'none'})")
        s = self._local_set(set_id)
        if not s.complete:
            raise FailedPrecondition(
                f"set {set_id} is partial ({len(s.members)}/{s.expected_members} members); only complete sets are sent"
            )
        now = self.daemon.clock()
        with self._lock:
            key = (target, set_id)
            self._manual[key] = ManualRequest(target, set_id, now, ignore_windows)
            self._history.pop(key, None)
        self._save_state()
        self._trigger.set()
        return now

    def _local_set(self, set_id: str) -> SnapshotSet:
        observed = self.daemon.observe()
        s = observed.sets.get(set_id)
        if s is None and set_id in observed.foreign:
            raise FailedPrecondition(
                f"{set_id} is a copy received from another site: a site sends only its own sets offsite"
            )
        if s is None:
            raise NotFound(f"no local snapshot set {set_id!r}")
        return s

    def progress(
        self, target: str, set_id: str, since: datetime
    ) -> tuple[str, TransferStats | None, SyncRecord | None]:
        """("running" | "waiting" | "done", progress, result) of a queued transfer, for --wait."""
        key = (target, set_id)
        with self._lock:
            a = self._active.get(key)
            if a is not None:
                return "running", a.stats, None
            for r in reversed(self._records):
                if r.target == target and r.set_id == set_id and r.kind == "sync" and r.at >= since:
                    return "done", None, r
            if key not in self._manual and self._views.get(target) is not None:
                view = self._views[target]
                there = view.sets.get(set_id)
                if there is not None and there.complete:
                    return "done", None, SyncRecord(since, target, set_id, True, "already on the target")
            return "waiting", None, None

    def waiting_reason(self, target: str, set_id: str) -> str:
        with self._lock:
            p = self._plan
            if p is not None:
                for w in p.waiting:
                    if w.target == target and w.set_id == set_id:
                        until = f" until {w.until.isoformat(timespec='seconds')}" if w.until else ""
                        return w.reason + until
        return "queued"

    def sync_back(
        self,
        set_id: str,
        target: str,
        *,
        to_node: str = "",
        keep: timedelta = DEFAULT_SYNCBACK_KEEP,
        progress: Callable[[TransferStats], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> ReplicateOutcome:
        """Copy a set the target holds back to its origin node (or `to_node`); held there for `keep`."""
        config = self._config()
        if config is None or target not in config.offsite.targets:
            raise NotFound(f"no offsite target {target!r}")
        client = self._targets.get(target)
        if client is None:
            raise Unavailable(f"target {target} is not connected")
        view = self.observe_targets(self.daemon.clock()).get(target)
        if view is None or not view.reachable:
            raise Unavailable(f"target {target} is unreachable: {view.error if view else 'not observed'}")
        there = view.sets.get(set_id)
        if there is None:
            raise NotFound(f"target {target} holds no set {set_id!r}")
        if not there.complete:
            raise FailedPrecondition(f"set {set_id} on {target} is partial; nothing to bring back")
        origins = {m.snapshot.labels.get(LABEL_ORIGIN_NODE, "") for m in there.members}
        dest = to_node or (next(iter(origins)) if len(origins) == 1 else "")
        if not dest:
            raise InvalidArgument(
                f"set {set_id} came from several nodes ({', '.join(sorted(origins))}); name one with --to"
            )
        node = config.nodes.get(dest)
        if node is None:
            raise NotFound(f"no node {dest!r} in the config to bring set {set_id} back to")
        if node.embedded or node.address is None:
            raise FailedPrecondition(
                f"node {dest} is embedded (served on a unix socket): the target cannot dial it; "
                "sync back needs the node's agent listening on TCP"
            )
        members = [
            m
            for m in there.members
            if not to_node or m.snapshot.labels.get(LABEL_ORIGIN_NODE, "") in (dest, "")
        ]
        members = members or list(there.members)
        peer = Peer(
            address=node.address,
            server_name=(node.tls.server_name or dest) if node.tls is not None else "",
            node=dest,
            insecure=node.insecure or node.tls is None,
        )
        now = self.daemon.clock()
        spec = ReplicateSpec(
            set_id=set_id,
            target=peer,
            refs=tuple(SnapshotKey(set_id, m.snapshot.pool, m.snapshot.volume) for m in members),
            holds=(syncback_hold(now + keep),),
        )
        started = time.monotonic()
        try:
            out = ReplicationClient(client.channel, where=f"target {target}").replicate(
                spec, progress or (lambda _s: None), cancel=cancel
            )
        except ReconcilerError as exc:
            self._record(SyncRecord(self.daemon.clock(), target, set_id, False, str(exc), kind="sync-back"))
            raise
        self._record(
            SyncRecord(
                self.daemon.clock(),
                target,
                set_id,
                True,
                f"to {dest}",
                out.totals.wire_bytes,
                time.monotonic() - started,
                "sync-back",
                tuple(s.volume for s in out.snapshots),
            )
        )
        log.info("synced %s back from %s to node %s", set_id, target, dest)
        self.daemon.wake()
        return out

    # --- status -------------------------------------------------------------------------------------
    def _record(self, r: SyncRecord) -> None:
        with self._lock:
            self._records.append(r)

    def status(self) -> SyncStatus:
        with self._lock:
            scopes: dict[tuple[str, str], Arrival] = {}
            for name, view in self._views.items():
                for s in view.sets.values():
                    if not s.complete or not s.scope:
                        continue
                    cur = scopes.get((s.scope, name))
                    if cur is None or (s.created, s.set_id) > (cur.created, cur.set_id):
                        scopes[(s.scope, name)] = Arrival(
                            s.set_id, s.created, self._arrived.get((name, s.set_id))
                        )
            return SyncStatus(
                plan=self._plan,
                views=dict(self._views),
                addresses={n: c.address for n, c in self._target_cfg.items()},
                active=tuple(replace(a) for a in self._active.values()),
                recent=tuple(self._records),
                scopes=scopes,
            )


def _hold_update(h: HoldChange, ref: VolumeRef) -> SnapshotUpdate:
    return SnapshotUpdate(
        ref=SnapshotKey(h.set_id, ref.pool, ref.volume),
        fields=frozenset({"holds"}),
        add_holds=h.add,
        remove_holds=h.remove,
    )


def _fmt(holds: frozenset[str], sign: str) -> str:
    return "".join(f" {sign}{h}" for h in sorted(holds))


def _sum(parts: Iterable[TransferStats]) -> TransferStats:
    """The counters of transfers running side by side (one per source node) added up: phase and
    volume of the last one, the longest ETA, and a total only while every part knows its own."""
    ps = list(parts)
    if not ps:
        return TransferStats()
    return replace(
        ps[-1],
        checked_bytes=sum(p.checked_bytes for p in ps),
        scanned_bytes=sum(p.scanned_bytes for p in ps),
        sent_bytes=sum(p.sent_bytes for p in ps),
        wire_bytes=sum(p.wire_bytes for p in ps),
        total_bytes=sum(p.total_bytes for p in ps) if all(p.total_bytes for p in ps) else 0,
        rate_bps=sum(p.rate_bps for p in ps),
        eta_seconds=max(p.eta_seconds for p in ps),
        volumes_done=sum(p.volumes_done for p in ps),
        volumes_total=sum(p.volumes_total for p in ps),
        chunks_resent=sum(p.chunks_resent for p in ps),
    )
