"""Prometheus metrics of the daemon, fed by its events (`daemon.hooks`).

`DaemonMetrics.on_event` listens to "pass", "config_loaded", "sync" and "sync_plan" events;
`serve()` starts the HTTP exposition. Counters and the pass-duration histogram are ordinary
prometheus-client objects; everything derived from the last pass (per-scope freshness, RPO, pools,
nodes) is built by a custom collector at scrape time from one immutable snapshot, so a scrape never
sees half a pass and series of removed scopes, pools and nodes disappear instead of going stale.

RPO is evaluated at scrape time against the clock, not at pass time: if passes stop, the RPO
gauges still turn to 0 and the stale-snapshot alert fires.

Events of offsite sync (replication/manager.py; the per-target metrics have no samples until the
first "sync" event):
    "sync" {"target": str, "ok": bool, "bytes": int (sent in this sync),
            "lag_seconds": float | None (age of the newest set the target holds), "at": datetime}
    "sync_plan" {"warnings": Sequence[str]} after each sync pass
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__
from .domain import DesiredState, Frequency, ObservedState, Period, SetKind

log = logging.getLogger(__name__)

__all__ = ["DaemonMetrics", "parse_address", "rpo_window"]

# Nominal length of a calendar period, for the RPO rule "the newest set is younger than twice the
# period". Long enough for the longest instance (31-day months, leap years) so it never flaps.
_NOMINAL: dict[Frequency, timedelta] = {
    Frequency.HOURLY: timedelta(hours=1),
    Frequency.DAILY: timedelta(days=1),
    Frequency.WEEKLY: timedelta(days=7),
    Frequency.MONTHLY: timedelta(days=31),
    Frequency.YEARLY: timedelta(days=366),
}

# A pass is cheap when idle (milliseconds) and long when it cuts snapshots (minutes).
_PASS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

_ADDRESS_RE = re.compile(r"^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]*)):(\d{1,5})\Z")


def rpo_window(period: Period) -> timedelta | None:
    """How old the newest set of a period may get before its RPO counts as missed; None for a
    custom (one-shot) period, whose RPO is always met."""
    if period.frequency is Frequency.CUSTOM:
        return None
    if period.frequency is Frequency.INTERVAL:
        return 2 * period.every if period.every else None
    return 2 * _NOMINAL[period.frequency]


def parse_address(address: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` (all interfaces) -> (host, port)."""
    m = _ADDRESS_RE.match(address.strip())
    if m is None or int(m.group(3)) > 65535:
        raise ValueError(f"invalid metrics address {address!r}: expected host:port like 127.0.0.1:9479")
    host = m.group(1) or m.group(2) or "0.0.0.0"
    return host, int(m.group(3))


def _ts(dt: datetime) -> float:
    return dt.timestamp()


@dataclass(frozen=True, slots=True)
class _Binding:
    scope: str
    profile: str
    period: str
    window: timedelta | None
    last_success: datetime | None
    since: datetime  # first pass that knew this binding: the RPO clock starts here when no set exists


@dataclass(frozen=True, slots=True)
class _Pool:
    node: str
    pool: str
    sets: int = 0
    snapshots: int = 0
    logical_bytes: int = 0
    unique_bytes: int = 0
    stored_bytes: int | None = None
    free_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class _PassState:
    at: datetime
    bindings: tuple[_Binding, ...] = ()
    pools: tuple[_Pool, ...] = ()
    nodes: tuple[tuple[str, bool], ...] = ()


@dataclass
class _SetsIndex:
    """Aggregates over the observed sets, recomputed only when the observer built a new mapping
    (it reuses the same dict while no pool changed, so an idle pass costs nothing here)."""

    source: Mapping[str, Any] | None = None
    newest: dict[tuple[str, str, str], datetime] = field(default_factory=dict)
    pools: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # sets, snaps, logical, unique

    def update(self, observed: ObservedState) -> None:
        if observed.sets is self.source:
            return
        newest: dict[tuple[str, str, str], datetime] = {}
        pools: dict[tuple[str, str], list[int]] = {}
        for s in observed.sets.values():
            if s.kind is SetKind.SCHEDULED and s.complete:
                key = (s.scope, s.profile, s.period)
                prev = newest.get(key)
                if prev is None or s.created > prev:
                    newest[key] = s.created
            seen: set[tuple[str, str]] = set()
            for m in s.members:
                pk = (m.node, m.snapshot.pool)
                acc = pools.get(pk)
                if acc is None:
                    acc = pools[pk] = [0, 0, 0, 0]
                if pk not in seen:
                    seen.add(pk)
                    acc[0] += 1
                acc[1] += 1
                acc[2] += m.snapshot.logical_bytes
                acc[3] += m.snapshot.unique_bytes
        self.source, self.newest, self.pools = observed.sets, newest, pools


class _PassCollector(Collector):
    def __init__(self, owner: DaemonMetrics) -> None:
        self._owner = owner

    def describe(self) -> Iterable[Metric]:
        # Describing nothing keeps registration from calling collect() before any pass.
        return []

    def collect(self) -> Iterable[Metric]:
        st = self._owner._state  # one atomic read: the whole snapshot of one pass
        now = self._owner.clock()
        scope_labels = ["scope", "profile", "period"]
        last = GaugeMetricFamily(
            "reconciler_last_success_timestamp_seconds",
            "Creation time of the newest complete scheduled snapshot set, per scope and period.",
            labels=scope_labels,
        )
        rpo = GaugeMetricFamily(
            "reconciler_rpo_met",
            "1 when the newest complete scheduled set is younger than twice the period "
            "(hourly 1h, daily 1d, weekly 7d, monthly 31d, yearly 366d, interval: its every); "
            "custom periods always 1.",
            labels=scope_labels,
        )
        target = GaugeMetricFamily(
            "reconciler_rpo_target_seconds",
            "Age at which a period's newest set misses its RPO (twice the period).",
            labels=scope_labels,
        )
        for b in st.bindings if st else ():
            lv = [b.scope, b.profile, b.period]
            if b.last_success is not None:
                last.add_metric(lv, _ts(b.last_success))
            if b.window is None:
                rpo.add_metric(lv, 1.0)
                continue
            target.add_metric(lv, b.window.total_seconds())
            ref = b.last_success if b.last_success is not None else b.since
            rpo.add_metric(lv, 1.0 if now - ref < b.window else 0.0)
        yield last
        yield rpo
        yield target

        pool_labels = ["node", "pool"]
        sets = GaugeMetricFamily(
            "reconciler_pool_sets", "Snapshot sets with at least one member in the pool.", labels=pool_labels
        )
        snaps = GaugeMetricFamily(
            "reconciler_pool_snapshots", "Member snapshots in the pool.", labels=pool_labels
        )
        logical = GaugeMetricFamily(
            "reconciler_pool_logical_bytes",
            "Sum of the logical size of the pool's snapshots (what a restore would write).",
            labels=pool_labels,
        )
        unique = GaugeMetricFamily(
            "reconciler_pool_unique_bytes",
            "Sum of the bytes only one snapshot references (freed by deleting it).",
            labels=pool_labels,
        )
        stored = GaugeMetricFamily(
            "reconciler_pool_stored_bytes",
            "Bytes the pool uses on disk, as its agent reports.",
            labels=pool_labels,
        )
        free = GaugeMetricFamily(
            "reconciler_pool_free_bytes", "Free bytes for the pool, as its agent reports.", labels=pool_labels
        )
        for p in st.pools if st else ():
            lv = [p.node, p.pool]
            sets.add_metric(lv, p.sets)
            snaps.add_metric(lv, p.snapshots)
            logical.add_metric(lv, p.logical_bytes)
            unique.add_metric(lv, p.unique_bytes)
            if p.stored_bytes is not None:
                stored.add_metric(lv, p.stored_bytes)
            if p.free_bytes is not None:
                free.add_metric(lv, p.free_bytes)
        yield from (sets, snaps, logical, unique, stored, free)

        reach = GaugeMetricFamily(
            "reconciler_node_reachable", "1 when the node's agent answered in the last pass.", labels=["node"]
        )
        for node, ok in st.nodes if st else ():
            reach.add_metric([node], 1.0 if ok else 0.0)
        yield reach

        last_pass = GaugeMetricFamily(
            "reconciler_last_pass_timestamp_seconds", "When the last reconcile pass ran."
        )
        if st is not None:
            last_pass.add_metric([], _ts(st.at))
        yield last_pass


class DaemonMetrics:
    """The daemon's metrics. Append `on_event` to `daemon.hooks`; call `serve("127.0.0.1:9479")`.

    `clock` is the time RPO is judged against at scrape time (the daemon's clock in tests).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if registry is None:
            # A registry of our own (not the global one) so several daemons in one test process
            # never collide; the process/platform/GC metrics are added explicitly.
            registry = CollectorRegistry()
            for c in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                registry.register(c)
        self.registry = registry
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._state: _PassState | None = None
        self._index = _SetsIndex()
        self._since: dict[tuple[str, str, str], datetime] = {}
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

        r = registry
        info = Gauge("reconciler_info", "Always 1; the version is a label.", ["version"], registry=r)
        info.labels(__version__).set(1)
        self.actions = Counter(
            "reconciler_actions",
            "Actions executed on nodes, by kind and result.",
            ["kind", "result"],
            registry=r,
        )
        self.errors = Counter(
            "reconciler_action_errors",
            "Failed actions by kind and error class (retryable: retried with backoff; permanent: "
            "parked until the config changes; refused: a rule such as immutability said no).",
            ["kind", "error"],
            registry=r,
        )
        self.pass_duration = Histogram(
            "reconciler_reconcile_duration_seconds",
            "Duration of a reconcile pass (observe, plan, execute).",
            buckets=_PASS_BUCKETS,
            registry=r,
        )
        self.reloads = Counter(
            "reconciler_config_reloads",
            "Config loads (start, reload, file change) by result.",
            ["result"],
            registry=r,
        )
        for result in ("success", "failure"):
            self.reloads.labels(result)  # both series exist from the start, so rate() works at once
        self.reload_time = Gauge(
            "reconciler_config_last_reload_timestamp_seconds",
            "When the config was last loaded or refused.",
            registry=r,
        )
        self.reload_success_time = Gauge(
            "reconciler_config_last_reload_success_timestamp_seconds",
            "When a config was last loaded successfully.",
            registry=r,
        )
        self.reload_ok = Gauge(
            "reconciler_config_last_reload_successful",
            "1 when the last load of the config file succeeded; 0 while the daemon runs the last good "
            "config because the file is invalid.",
            registry=r,
        )
        # Offsite sync feeds these through "sync" events (see the module docstring).
        self.replication_lag = Gauge(
            "reconciler_replication_lag_seconds",
            "Age of the newest snapshot set the target holds (0 when fully synced).",
            ["target"],
            registry=r,
        )
        self.replication_bytes = Counter(
            "reconciler_replication_sent_bytes", "Bytes sent to the target.", ["target"], registry=r
        )
        self.replication_syncs = Counter(
            "reconciler_replication_syncs",
            "Sync runs to the target, by result.",
            ["target", "result"],
            registry=r,
        )
        self.replication_last_success = Gauge(
            "reconciler_replication_last_success_timestamp_seconds",
            "When a sync to the target last succeeded.",
            ["target"],
            registry=r,
        )
        self.warnings = Gauge(
            "reconciler_warnings",
            "Warnings of the last pass's plan (source=plan) and of the last offsite sync plan "
            "(source=sync): things to fix, listed by `reconciler status`.",
            ["source"],
            registry=r,
        )
        for source in ("plan", "sync"):
            self.warnings.labels(source).set(0)
        r.register(_PassCollector(self))

    # --- events ----------------------------------------------------------------------------
    def on_event(self, event: str, data: Mapping[str, Any]) -> None:
        """A `daemon.hooks` listener. Unknown events are ignored."""
        if event == "pass":
            self._on_pass(data)
        elif event == "config_loaded":
            self._on_config(bool(data.get("ok")), data.get("at"))
        elif event == "sync":
            self._on_sync(data)
        elif event == "sync_plan":
            self.warnings.labels("sync").set(len(data.get("warnings", ())))

    def _on_config(self, ok: bool, at: datetime | None) -> None:
        ts = _ts(at) if isinstance(at, datetime) else _ts(self.clock())
        self.reloads.labels("success" if ok else "failure").inc()
        self.reload_time.set(ts)
        self.reload_ok.set(1 if ok else 0)
        if ok:
            self.reload_success_time.set(ts)

    def _on_sync(self, data: Mapping[str, Any]) -> None:
        target = str(data["target"])
        ok = bool(data.get("ok"))
        for result in ("success", "failure"):
            self.replication_syncs.labels(target, result)  # both series, so increase() sees the first failure
        self.replication_syncs.labels(target, "success" if ok else "failure").inc()
        self.replication_bytes.labels(target).inc(max(0, int(data.get("bytes") or 0)))
        lag = data.get("lag_seconds")
        if lag is not None:
            self.replication_lag.labels(target).set(float(lag))
        if ok:
            at = data.get("at")
            self.replication_last_success.labels(target).set(
                _ts(at if isinstance(at, datetime) else self.clock())
            )

    def _on_pass(self, data: Mapping[str, Any]) -> None:
        self.pass_duration.observe(float(data.get("seconds", 0.0)))
        plan = data.get("plan")
        if plan is not None:
            self.warnings.labels("plan").set(len(plan.warnings))
        for rec in data.get("records", ()):
            result = "ok" if rec.ok else "failed"
            self.actions.labels(rec.kind, result).inc()
            if not rec.ok:
                if rec.error.startswith("refused"):
                    cls = "refused"
                else:
                    cls = "retryable" if rec.retryable else "permanent"
                self.errors.labels(rec.kind, cls).inc()
        desired: DesiredState | None = data.get("desired")
        observed: ObservedState | None = data.get("observed")
        now: datetime = data.get("now") or self.clock()
        nodes: Mapping[str, Any] = data.get("nodes") or {}
        with self._lock:  # on_event may come from more than one thread (passes, operator requests)
            if observed is not None:
                self._index.update(observed)
            self._state = self._build(desired, nodes, now)

    def _build(self, desired: DesiredState | None, nodes: Mapping[str, Any], now: datetime) -> _PassState:
        bindings: list[_Binding] = []
        live: set[tuple[str, str, str]] = set()
        for b in desired.bindings if desired is not None else ():
            for period in b.profile.periods:
                key = (b.scope.key, b.profile.name, period.name)
                live.add(key)
                since = self._since.setdefault(key, now)
                bindings.append(
                    _Binding(key[0], key[1], key[2], rpo_window(period), self._index.newest.get(key), since)
                )
        for key in [k for k in self._since if k not in live]:
            del self._since[key]  # a binding that comes back later starts its RPO clock afresh

        pools: dict[tuple[str, str], _Pool] = {}
        for pk, (n_sets, n_snaps, logical, unique) in self._index.pools.items():
            pools[pk] = _Pool(pk[0], pk[1], n_sets, n_snaps, logical, unique)
        for name, obs in nodes.items():
            info = getattr(obs, "info", None)
            for p in getattr(info, "pools", ()) or ():
                base = pools.get((name, p.name), _Pool(name, p.name))
                pools[(name, p.name)] = _Pool(
                    name,
                    p.name,
                    base.sets,
                    base.snapshots,
                    base.logical_bytes,
                    base.unique_bytes,
                    p.space.stored_bytes,
                    p.space.free_bytes,
                )
        node_names = set(nodes) | set(desired.nodes if desired is not None else ())
        reach = tuple(sorted((n, bool(getattr(nodes.get(n), "reachable", False))) for n in node_names))
        return _PassState(
            at=now,
            bindings=tuple(sorted(bindings, key=lambda b: (b.scope, b.profile, b.period))),
            pools=tuple(pools[k] for k in sorted(pools)),
            nodes=reach,
        )

    # --- exposition --------------------------------------------------------------------------
    def serve(self, address: str) -> None:
        """Serve /metrics on host:port in a background thread (port 0: any free port, see .port)."""
        host, port = parse_address(address)
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._server, self._thread = server, thread
        self.port = int(server.server_address[1])
        log.info("metrics on http://%s:%d/metrics", host, self.port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
