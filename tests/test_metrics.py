"""Prometheus metrics: realistic daemon events in, exposition values out, checked by promtool."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.agent.api import NodeInfo, PoolInfo, SpaceInfo
from reconciler.domain import (
    DesiredState,
    Frequency,
    Member,
    ObservedMember,
    ObservedState,
    Period,
    Plan,
    Profile,
    Scope,
    ScopeBinding,
    ScopeKind,
    SetKind,
    SnapshotInfo,
    SnapshotSet,
    VolumeRef,
)
from reconciler.executor import ActionRecord
from reconciler.metrics import DaemonMetrics, parse_address, rpo_window
from reconciler.observer import NodeObservation

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)

HOURLY = Period("hourly", Frequency.HOURLY, retention=timedelta(days=1))
DAILY = Period("daily", Frequency.DAILY, hour=2, retention=timedelta(days=7))
MINUTELY = Period("every-minute", Frequency.INTERVAL, every=timedelta(minutes=1))
ONCE = Period("before-upgrade", Frequency.CUSTOM, at=datetime(2026, 1, 1, tzinfo=UTC))
PROFILE = Profile("std", (HOURLY, DAILY, MINUTELY, ONCE))

FULL = Scope(ScopeKind.SYSTEM, "full")
WEB = Scope(ScopeKind.RESOURCE, "web01")
REFS = (VolumeRef("a", "main", "vms/web01/disk0"), VolumeRef("b", "fast", "shares/data"))


def desired() -> DesiredState:
    members = tuple(Member(r, "web01" if "web01" in r.volume else "data") for r in REFS)
    return DesiredState(
        bindings=(
            ScopeBinding(FULL, PROFILE, members),
            ScopeBinding(WEB, Profile("std", (DAILY,)), members[:1]),
        ),
        nodes=("a", "b", "c"),
    )


def snap(set_id: str, ref: VolumeRef, created: datetime, size: int, unique: int = 0) -> SnapshotInfo:
    return SnapshotInfo(
        set_id=set_id,
        name=set_id,
        pool=ref.pool,
        volume=ref.volume,
        created=created,
        expires=None,
        logical_bytes=size,
        unique_bytes=unique,
    )


def sset(
    set_id: str,
    scope: Scope,
    period: str,
    created: datetime,
    refs: tuple[VolumeRef, ...],
    *,
    expected: int | None = None,
    kind: SetKind = SetKind.SCHEDULED,
    size: int = 1000,
) -> SnapshotSet:
    return SnapshotSet(
        set_id=set_id,
        name=set_id,
        scope=scope.key,
        kind=kind,
        created=created,
        expires=None,
        members=tuple(ObservedMember(r.node, snap(set_id, r, created, size, size // 10)) for r in refs),
        expected_members=expected if expected is not None else len(refs),
        profile="std" if kind is SetKind.SCHEDULED else "",
        period=period if kind is SetKind.SCHEDULED else "",
    )


def observed() -> ObservedState:
    sets = [
        # hourly: complete at 11:00 and 12:00; a newer partial one at 12:30 must not count
        sset("h1", FULL, "hourly", NOW - timedelta(minutes=90), REFS),
        sset("h2", FULL, "hourly", NOW - timedelta(minutes=30), REFS),
        sset("h3", FULL, "hourly", NOW - timedelta(minutes=1), REFS[:1], expected=2),
        # daily: the newest is 3 days old -> RPO (2 x 1d) missed
        sset("d1", FULL, "daily", NOW - timedelta(days=3), REFS),
        # every-minute: newest 90 s old -> within 2 x 1 min
        sset("m1", FULL, "every-minute", NOW - timedelta(seconds=90), REFS),
        # a manual set is no scheduled success, but it does count in the pools
        sset("man1", FULL, "", NOW - timedelta(seconds=5), REFS, kind=SetKind.MANUAL, size=5),
        # web01/daily: none yet
    ]
    return ObservedState(sets={s.set_id: s for s in sets}, unreachable_nodes=frozenset({"c"}))


def nodes() -> dict[str, NodeObservation]:
    def info(name: str, pool: str, backend: str) -> NodeInfo:
        return NodeInfo(
            node=name,
            protocol_version=1,
            agent_version="0.1.0",
            pools=(PoolInfo(pool, backend, 7, 6, SpaceInfo(10_000, 4_000, 100, 1 << 30)),),
            now=NOW,
        )

    return {
        "a": NodeObservation("a", "embedded", True, info=info("a", "main", "chunkstore")),
        "b": NodeObservation("b", "10.0.0.2:7443", True, info=info("b", "fast", "btrfs")),
        "c": NodeObservation("c", "10.0.0.3:7443", False, error="connection refused"),
    }


def records() -> list[ActionRecord]:
    return [
        ActionRecord(NOW, "create", "h3", FULL.key, "a", True, "slot"),
        ActionRecord(NOW, "create", "h3", FULL.key, "b", False, "slot", "unavailable", retryable=True),
        ActionRecord(NOW, "delete", "old", FULL.key, "a", True, "expired"),
        ActionRecord(NOW, "delete", "old", FULL.key, "b", False, "expired", "refused: immutable"),
        ActionRecord(NOW, "create", "x", WEB.key, "a", False, "slot", "invalid volume"),
    ]


def pass_event(first_seen: datetime = NOW) -> dict[str, object]:
    return {
        "seconds": 0.42,
        "records": records(),
        "plan": Plan(now=first_seen, actions=(), kept=(), next_wakeup=None),
        "observed": observed(),
        "desired": desired(),
        "nodes": nodes(),
        "now": first_seen,
    }


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def samples(metrics: DaemonMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(metrics.registry).decode()
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(
    data: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return data.get((name, frozenset(labels.items())))


@pytest.fixture
def fed() -> tuple[DaemonMetrics, Clock]:
    clock = Clock(NOW)
    m = DaemonMetrics(CollectorRegistry(), clock=clock)
    m.on_event("started", {})
    m.on_event("config_loaded", {"ok": True, "at": NOW - timedelta(hours=1)})
    m.on_event("config_loaded", {"ok": False, "at": NOW - timedelta(minutes=10)})
    # first pass a day ago teaches when web01/daily appeared; the second one is now
    m.on_event("pass", pass_event(NOW - timedelta(days=1)))
    m.on_event("pass", pass_event(NOW))
    return m, clock


def test_rpo_window() -> None:
    assert rpo_window(HOURLY) == timedelta(hours=2)
    assert rpo_window(DAILY) == timedelta(days=2)
    assert rpo_window(Period("w", Frequency.WEEKLY)) == timedelta(days=14)
    assert rpo_window(Period("m", Frequency.MONTHLY)) == timedelta(days=62)
    assert rpo_window(Period("y", Frequency.YEARLY)) == timedelta(days=732)
    assert rpo_window(MINUTELY) == timedelta(minutes=2)
    assert rpo_window(ONCE) is None


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:9479") == ("127.0.0.1", 9479)
    assert parse_address("[::1]:9479") == ("::1", 9479)
    assert parse_address(":9479") == ("0.0.0.0", 9479)
    with pytest.raises(ValueError):
        parse_address("localhost")
    with pytest.raises(ValueError):
        parse_address("localhost:99999")


def test_exposition_values(fed: tuple[DaemonMetrics, Clock]) -> None:
    m, clock = fed
    d = samples(m)
    full = {"scope": "system:full", "profile": "std"}
    # freshness: the newest *complete scheduled* set per period
    assert (
        value(d, "reconciler_last_success_timestamp_seconds", **full, period="hourly")
        == (NOW - timedelta(minutes=30)).timestamp()
    )
    assert (
        value(d, "reconciler_last_success_timestamp_seconds", **full, period="daily")
        == (NOW - timedelta(days=3)).timestamp()
    )
    assert (
        value(
            d,
            "reconciler_last_success_timestamp_seconds",
            scope="resource:web01",
            profile="std",
            period="daily",
        )
        is None
    )
    # RPO: hourly 30 min < 2h; daily 3d > 2d; interval 90s < 2min; custom always met;
    # web01/daily has no set yet but was first seen a day ago (< 2d): still met
    assert value(d, "reconciler_rpo_met", **full, period="hourly") == 1
    assert value(d, "reconciler_rpo_met", **full, period="daily") == 0
    assert value(d, "reconciler_rpo_met", **full, period="every-minute") == 1
    assert value(d, "reconciler_rpo_met", **full, period="before-upgrade") == 1
    assert value(d, "reconciler_rpo_met", scope="resource:web01", profile="std", period="daily") == 1
    assert value(d, "reconciler_rpo_target_seconds", **full, period="hourly") == 7200
    assert value(d, "reconciler_rpo_target_seconds", **full, period="before-upgrade") is None

    # RPO is judged at scrape time: with no new pass, time passing turns it to 0
    clock.now = NOW + timedelta(minutes=2)
    d2 = samples(m)
    assert value(d2, "reconciler_rpo_met", **full, period="every-minute") == 0
    assert value(d2, "reconciler_rpo_met", **full, period="hourly") == 1
    clock.now = NOW + timedelta(days=1, minutes=1)
    assert value(samples(m), "reconciler_rpo_met", scope="resource:web01", profile="std", period="daily") == 0

    # pools: 6 sets touch both pools (h3 only pool a/main); bytes summed over member snapshots
    assert value(d, "reconciler_pool_sets", node="a", pool="main") == 6
    assert value(d, "reconciler_pool_sets", node="b", pool="fast") == 5
    assert value(d, "reconciler_pool_snapshots", node="a", pool="main") == 6
    assert value(d, "reconciler_pool_logical_bytes", node="a", pool="main") == 5 * 1000 + 5
    assert value(d, "reconciler_pool_logical_bytes", node="b", pool="fast") == 4 * 1000 + 5
    assert value(d, "reconciler_pool_unique_bytes", node="b", pool="fast") == 4 * 100
    assert value(d, "reconciler_pool_free_bytes", node="a", pool="main") == 1 << 30
    assert value(d, "reconciler_pool_stored_bytes", node="b", pool="fast") == 4000

    # nodes: c is configured but unreachable
    assert value(d, "reconciler_node_reachable", node="a") == 1
    assert value(d, "reconciler_node_reachable", node="b") == 1
    assert value(d, "reconciler_node_reachable", node="c") == 0

    # counters over two passes
    assert value(d, "reconciler_actions_total", kind="create", result="ok") == 2
    assert value(d, "reconciler_actions_total", kind="create", result="failed") == 4
    assert value(d, "reconciler_actions_total", kind="delete", result="ok") == 2
    assert value(d, "reconciler_action_errors_total", kind="create", error="retryable") == 2
    assert value(d, "reconciler_action_errors_total", kind="create", error="permanent") == 2
    assert value(d, "reconciler_action_errors_total", kind="delete", error="refused") == 2
    assert value(d, "reconciler_reconcile_duration_seconds_count") == 2
    assert value(d, "reconciler_reconcile_duration_seconds_sum") == pytest.approx(0.84)
    assert value(d, "reconciler_reconcile_duration_seconds_bucket", le="0.5") == 2
    assert value(d, "reconciler_last_pass_timestamp_seconds") == NOW.timestamp()

    # config: one good load, then a refused edit
    assert value(d, "reconciler_config_reloads_total", result="success") == 1
    assert value(d, "reconciler_config_reloads_total", result="failure") == 1
    assert value(d, "reconciler_config_last_reload_successful") == 0
    assert (
        value(d, "reconciler_config_last_reload_timestamp_seconds")
        == (NOW - timedelta(minutes=10)).timestamp()
    )
    assert (
        value(d, "reconciler_config_last_reload_success_timestamp_seconds")
        == (NOW - timedelta(hours=1)).timestamp()
    )


def test_warnings_per_source(fed: tuple[DaemonMetrics, Clock]) -> None:
    m, _ = fed
    d = samples(m)
    assert value(d, "reconciler_warnings", source="plan") == 0
    assert value(d, "reconciler_warnings", source="sync") == 0  # exported before any sync pass
    ev = pass_event(NOW)
    ev["plan"] = Plan(now=NOW, actions=(), kept=(), next_wakeup=None, warnings=("a", "b"))
    m.on_event("pass", ev)
    m.on_event("sync_plan", {"warnings": ("dr: its agent is named n1, like our node n1",)})
    d = samples(m)
    assert value(d, "reconciler_warnings", source="plan") == 2
    assert value(d, "reconciler_warnings", source="sync") == 1
    m.on_event("pass", pass_event(NOW))
    assert value(samples(m), "reconciler_warnings", source="plan") == 0


def test_replication_metrics_exist_before_and_after_sync(fed: tuple[DaemonMetrics, Clock]) -> None:
    m, _ = fed
    text = generate_latest(m.registry).decode()
    # defined (HELP/TYPE) before offsite sync feeds them, with no samples
    assert "# TYPE reconciler_replication_lag_seconds gauge" in text
    assert "# TYPE reconciler_replication_sent_bytes_total counter" in text
    assert "reconciler_replication_lag_seconds{" not in text
    m.on_event("sync", {"target": "dr", "ok": True, "bytes": 4096, "lag_seconds": 30.0, "at": NOW})
    m.on_event("sync", {"target": "dr", "ok": False, "bytes": 100, "lag_seconds": 3700.0, "at": NOW})
    d = samples(m)
    assert value(d, "reconciler_replication_lag_seconds", target="dr") == 3700
    assert value(d, "reconciler_replication_sent_bytes_total", target="dr") == 4196
    assert value(d, "reconciler_replication_syncs_total", target="dr", result="success") == 1
    assert value(d, "reconciler_replication_syncs_total", target="dr", result="failure") == 1
    assert value(d, "reconciler_replication_last_success_timestamp_seconds", target="dr") == NOW.timestamp()


def test_removed_scopes_and_nodes_disappear(fed: tuple[DaemonMetrics, Clock]) -> None:
    m, _ = fed
    shrunk = DesiredState(bindings=desired().bindings[1:], nodes=("a",))
    ev = pass_event(NOW)
    ev.update(desired=shrunk, nodes={"a": nodes()["a"]}, records=[])
    m.on_event("pass", ev)
    d = samples(m)
    assert value(d, "reconciler_rpo_met", scope="system:full", profile="std", period="hourly") is None
    assert value(d, "reconciler_rpo_met", scope="resource:web01", profile="std", period="daily") == 1
    assert value(d, "reconciler_node_reachable", node="c") is None


def test_before_any_pass_the_exposition_is_valid() -> None:
    m = DaemonMetrics()  # own registry with process metrics
    text = generate_latest(m.registry).decode()
    assert "reconciler_info{version=" in text
    assert 'reconciler_config_reloads_total{result="failure"} 0.0' in text
    _promtool_check_metrics(text)


# --- promtool ---------------------------------------------------------------------------------
def _promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(
            "promtool is missing and cannot be installed (not root or no apt-get): apt install prometheus"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600, check=False)
    res = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    found = shutil.which("promtool")
    if not found:
        pytest.skip(f"installing Debian's prometheus package failed: {res.stderr.strip()[-500:]}")
    return found


def _promtool_check_metrics(text: str) -> None:
    res = subprocess.run(
        [_promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
    )
    # promtool prints lint problems (naming, units, missing HELP) and exits 1 on any
    assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), (
        f"promtool check metrics:\n{res.stdout}{res.stderr}\n--- exposition ---\n{text}"
    )


def test_promtool_check_metrics(fed: tuple[DaemonMetrics, Clock]) -> None:
    m, _ = fed
    m.on_event("sync", {"target": "dr", "ok": True, "bytes": 1, "lag_seconds": 0.0, "at": NOW})
    _promtool_check_metrics(generate_latest(m.registry).decode())


def test_promtool_check_alert_rules() -> None:
    rules = ROOT / "deploy" / "prometheus" / "alerts.yml"
    res = subprocess.run(
        [_promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr


def test_alert_rules_only_use_exported_metrics(fed: tuple[DaemonMetrics, Clock]) -> None:
    import re

    m, _ = fed
    text = generate_latest(m.registry).decode()
    exported = set(re.findall(r"^# TYPE (\S+) (\S+)", text, re.M))
    names = set()
    for name, kind in exported:
        names.add(name)
        if kind == "counter":
            names.add(name + "_total")
        if kind == "histogram":
            names.update(name + s for s in ("_bucket", "_sum", "_count"))
    rules = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()
    used = set(re.findall(r"\b(reconciler_[a-z_]+)\b", rules))
    assert used, "no reconciler metrics in the alert rules"
    assert used <= names, f"alert rules use metrics the daemon does not export: {sorted(used - names)}"


# --- HTTP ---------------------------------------------------------------------------------------
@pytest.fixture
def served(fed: tuple[DaemonMetrics, Clock]) -> Iterator[DaemonMetrics]:
    m, _ = fed
    m.serve("127.0.0.1:0")
    try:
        yield m
    finally:
        m.close()


def test_serve_http(served: DaemonMetrics) -> None:
    assert served.port
    with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/metrics", timeout=10) as resp:
        body = resp.read().decode()
        assert resp.status == 200
    assert 'reconciler_node_reachable{node="c"} 0.0' in body


ALERT_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'reconciler_rpo_met{{instance="r1", scope="system:full", profile="std", period="hourly"}}'
        values: '1 1 0x15'
      - series: 'reconciler_node_reachable{{instance="r1", node="b"}}'
        values: '1 0x10'
      - series: 'reconciler_config_last_reload_successful{{instance="r1"}}'
        values: '1 0x5'
      - series: 'reconciler_replication_syncs_total{{instance="r1", target="dr", result="failure"}}'
        values: '0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20'
      - series: 'reconciler_replication_syncs_total{{instance="r1", target="dr", result="success"}}'
        values: '0x20'
      - series: 'reconciler_warnings{{instance="r1", source="sync"}}'
        values: '0 1x70'
    alert_rule_test:
      - eval_time: 10m
        alertname: ReconcilerSnapshotsStale
        exp_alerts: []
      - eval_time: 13m
        alertname: ReconcilerSnapshotsStale
        exp_alerts:
          - exp_labels: {{severity: critical, instance: r1, scope: "system:full", profile: std, period: hourly}}
            exp_annotations:
              summary: "Snapshots of system:full (std/hourly) are stale"
              description: "The newest complete snapshot set of system:full for period std/hourly is older than its RPO (twice the period). Check `reconciler status` and `reconciler plan` on r1."
      - eval_time: 7m
        alertname: ReconcilerNodeUnreachable
        exp_alerts:
          - exp_labels: {{severity: critical, instance: r1, node: b}}
            exp_annotations:
              summary: "Node b is unreachable"
              description: "The daemon on r1 cannot reach the agent of node b: no snapshots are taken or deleted there. See `reconciler status` for the error."
      - eval_time: 3m
        alertname: ReconcilerConfigReloadFailed
        exp_alerts:
          - exp_labels: {{severity: warning, instance: r1}}
            exp_annotations:
              summary: "reconciler refused its config file"
              description: "The last change to the config on r1 is invalid; the daemon keeps running the last good config. `reconciler validate /etc/reconciler/config.yaml` lists the problems."
      - eval_time: 20m
        alertname: ReconcilerSyncFailing
        exp_alerts:
          - exp_labels: {{severity: warning, instance: r1, target: dr, result: failure}}
            exp_annotations:
              summary: "Offsite sync to dr keeps failing"
              description: "No sync to target dr succeeded in the last hour, and some failed."
      - eval_time: 60m
        alertname: ReconcilerWarnings
        exp_alerts: []
      - eval_time: 62m
        alertname: ReconcilerWarnings
        exp_alerts:
          - exp_labels: {{severity: info, instance: r1, source: sync}}
            exp_annotations:
              summary: "reconciler's sync has 1 warning(s)"
              description: "`reconciler status` on r1 lists them."
"""


def test_promtool_alerts_fire(tmp_path: Path) -> None:
    """The alerts fire on the series the daemon exports, after their `for:` delays."""
    rules = ROOT / "deploy" / "prometheus" / "alerts.yml"
    spec = tmp_path / "alerts_test.yml"
    spec.write_text(ALERT_TESTS.format(rules=str(rules)))
    res = subprocess.run(
        [_promtool(), "test", "rules", str(spec)], capture_output=True, text=True, timeout=60, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr
