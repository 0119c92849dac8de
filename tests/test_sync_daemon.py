"""Offsite sync run by the daemon: real agent processes over mTLS (a node and an offsite target),
the daemon in-process with an injected clock (days pass in a test), the real CLI on its control
socket.

- scheduled sets reach the target with the remote expiry; the newest common set is the base,
  held on both sides, and moves with each sync; remote retention prunes the target but never its
  base or last copy; "sync" events carry bytes and lag; status shows targets, lag, last sync;
- an unreachable target blocks nothing but its base: local pruning goes on, and it catches up;
- `reconciler sync SET --target T --wait` with a progress bar, sync windows and --now, and
  `reconciler sync --back` bringing a set deleted locally back to its origin, held there;
- two sites sharing one agent: a copy from the other site never stands for a set of ours; the
  receiving site lists, restores, clones and keeps the copies, and the sending site prunes only
  its own members of a shared set id.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from reconciler.agent.client import Deadlines
from reconciler.daemon import Daemon
from reconciler.domain import SnapshotInfo
from reconciler.metrics import DaemonMetrics
from reconciler.replication.manager import STATE_FILE, SyncRecord, dump_state, load_state
from reconciler.settings import DaemonSettings
from reconciler.syncplan import TransferState
from reconciler.tlslab import LabPKI, create_lab_pki
from tests.helpers import cli, cli_json, small_tmpfs, wait_for, write
from tests.replication_lab import Site, fill_volume, read_tree

T0 = datetime(2026, 3, 2, 10, 30, tzinfo=UTC)
FAST = Deadlines(info=2.0, call=10.0, keepalive=2.0)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def pki(tmp_path: Path) -> LabPKI:
    return create_lab_pki(tmp_path / "tls", nodes=["src", "dr"])


@pytest.fixture
def sites(pki: LabPKI, tmp_path: Path) -> Iterator[tuple[Site, Site]]:
    src = Site("src", tmp_path / "src", tmp_path / "src" / "pool", pki)
    dr = Site("dr", tmp_path / "dr", tmp_path / "dr" / "pool", pki)
    fill_volume(src.pool / "vms/vm1", seed=3, big_mb=2, small=10)
    dr.pool.mkdir(parents=True)
    src.start()
    dr.start()
    yield src, dr
    src.stop()
    dr.stop()


def config(pki: LabPKI, src: Site, dr: Site, *, target: dict[str, Any] | None = None) -> dict[str, Any]:
    def tls(name: str) -> dict[str, str]:
        return {
            "ca": str(pki["ca"]),
            "cert": str(pki["daemon"]["cert"]),
            "key": str(pki["daemon"]["key"]),
            "server_name": name,
        }

    return {
        "version": 1,
        "nodes": {
            "src": {
                "address": src.address,
                "tls": tls("src"),
                "pools": {"main": {"type": "chunkstore", "path": str(src.pool)}},
            }
        },
        "profiles": {"daily": {"periods": [{"name": "midnight", "frequency": "daily", "retention": "3d"}]}},
        "resources": {"vm1": {"kind": "vm", "volumes": ["vms/vm1"], "profile": "daily"}},
        "offsite": {
            "targets": {
                "dr": {
                    "address": dr.address,
                    "tls": tls("dr"),
                    "items": [{"from": "daily/midnight", "retention": "2d"}],
                    "retry": {"count": 3, "interval": "1m"},
                    **(target or {}),
                }
            }
        },
    }


@contextmanager
def daemon(cfg: dict[str, Any], state: Path, clock: Clock) -> Iterator[Daemon]:
    path = write(state.parent / "config.yaml", json.dumps(cfg))
    d = Daemon(path, DaemonSettings(state_dir=state), clock=clock, deadlines=FAST)
    d.start()
    try:
        yield d
    finally:
        d.stop()
        d._shutdown()


def settle(d: Daemon, dr: Site, *, expect: set[str] | None = None) -> None:
    """A daemon pass and a sync pass, then wait for transfers, then both again (holds follow)."""
    d.run_pass()
    d.sync.run_pass()
    if expect is not None:
        wait_for(lambda: expect <= set(dr.sets()), timeout=60, what=f"{sorted(expect)} on the target")
    wait_for(lambda: not d.sync.status().active, timeout=60, what="transfers to finish")
    d.run_pass()
    d.sync.run_pass()
    d.run_pass()


def holds(snaps: list[SnapshotInfo]) -> frozenset[str]:
    return frozenset().union(*(s.holds for s in snaps))


def local_sets(d: Daemon) -> dict[str, Any]:
    return {s.set_id: s for s in d.list_sets()}


def test_scheduled_sets_go_offsite_with_a_moving_base_and_remote_retention(
    pki: LabPKI, sites: tuple[Site, Site], tmp_path: Path
) -> None:
    src, dr = sites
    clock = Clock()
    events: list[dict[str, Any]] = []
    with daemon(config(pki, src, dr), tmp_path / "state", clock) as d:
        d.hooks.append(lambda ev, data: events.append(data) if ev == "sync" else None)
        d.run_pass()
        (first,) = local_sets(d)
        settle(d, dr, expect={first})
        there = dr.sets()[first]
        assert there[0].expires == there[0].created + timedelta(days=2)  # the remote retention
        assert "base:dr" in holds(there)
        assert "base:dr" in holds(src.sets()[first])
        ok = [e for e in events if e["ok"]]
        assert ok and ok[0]["target"] == "dr" and ok[0]["bytes"] > 0 and ok[0]["lag_seconds"] == 0.0

        seen = [first]
        for _ in range(4):
            clock.advance(days=1)
            d.run_pass()
            newest = max(local_sets(d), key=lambda s: local_sets(d)[s].created)
            seen.append(newest)
            settle(d, dr, expect={newest})
            # the base moved: held on the newest common set only, on both sides
            assert [s for s, m in dr.sets().items() if "base:dr" in holds(m)] == [newest]
            assert [s for s, m in src.sets().items() if "base:dr" in holds(m)] == [newest]
        # remote retention 2d: the set of two days ago expired there right now; the newest is the base
        wait_for(lambda: set(dr.sets()) == set(seen[-2:]), timeout=30, what=f"target pruned to {seen[-2:]}")
        assert dr.verify() == []

        st = cli_json(d.settings.state_dir, "status")["sync"]
        (target,) = st["targets"]
        assert (
            target["name"] == "dr" and target["reachable"] and target["pending"] == 0 and target["lag_known"]
        )
        assert target["bases"] == {"resource:vm1": seen[-1]}
        (scope,) = st["scopes"]
        assert scope["scope"] == "resource:vm1" and scope["set_id"] == seen[-1] and scope.get("synced_at")
        assert any(r["kind"] == "prune" and r["ok"] for r in st["recent"])
        human = cli(d.settings.state_dir, "status", check=True).stdout
        assert "OFFSITE" in human and "NEWEST THERE" in human and seen[-1] in human


def test_an_unreachable_target_blocks_only_its_base_and_catches_up(
    pki: LabPKI, sites: tuple[Site, Site], tmp_path: Path
) -> None:
    src, dr = sites
    clock = Clock()
    with daemon(config(pki, src, dr), tmp_path / "state", clock) as d:
        d.run_pass()
        (base,) = local_sets(d)
        settle(d, dr, expect={base})
        dr.stop()
        for _ in range(5):  # local retention is 3 days: without the hold the base would go
            clock.advance(days=1)
            settle(d, dr)
        local = local_sets(d)
        assert base in local and "base:dr" in local[base].holds  # the only thing the target keeps
        assert len(local) == 1 + 3  # base + the sets within the local retention (older ones pruned)
        st = cli_json(d.settings.state_dir, "status")["sync"]
        assert not st["targets"][0]["reachable"] and not st["targets"][0]["lag_known"]
        # what the target should get (within the remote retention of 2 days) waits for it
        due = {k for k, v in local.items() if v.created + timedelta(days=2) > clock.now}
        assert due and {w["set_id"] for w in st["waiting"]} == due

        dr.restart()
        newest = max(local, key=lambda s: local[s].created)

        def caught_up() -> bool:
            d.run_pass()  # the daemon's passes are what wake the sync (the test's clock stands still)
            d.sync.run_pass()
            return newest in dr.sets()

        wait_for(caught_up, timeout=60, interval=0.5, what="the target caught up")
        settle(d, dr)
        # the old base is released on both sides once the new one is held
        assert [s for s, m in src.sets().items() if "base:dr" in holds(m)] == [newest]


def test_plan_shows_what_offsite_sync_would_send_prune_hold_and_leave_waiting(
    pki: LabPKI, sites: tuple[Site, Site], tmp_path: Path
) -> None:
    src, dr = sites
    clock = Clock()
    item = {"from": "daily/midnight", "retention": "2d", "hold_until_synced": True}
    with daemon(config(pki, src, dr, target={"items": [item]}), tmp_path / "state", clock) as d:
        d.run_pass()
        settle(d, dr)
        for _ in range(2):
            clock.advance(days=1)
            settle(d, dr)
        on_target = sorted(dr.sets(), key=lambda s: dr.sets()[s][0].created)
        assert len(on_target) == 2  # the newest is the base
        clock.advance(days=1, hours=1)
        # the day's set, made without a pass (a pass would wake the sync loop, which sends it)
        before = set(local_sets(d))
        d.executor.run(d.compute_plan().plan.actions)
        (new,) = set(local_sets(d)) - before

        p = cli_json(d.settings.state_dir, "plan")
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for dec in p["sync"]:
            by_kind.setdefault(dec["kind"], []).append(dec)
        (send,) = by_kind["send"]
        assert send["target"] == "dr" and send["set_id"] == new and send["reason"]
        (prune,) = by_kind["prune"]  # 2 days old there; the other one is the base
        assert prune["target"] == "dr" and prune["set_id"] == on_target[0] and "expired" in prune["reason"]
        (hold,) = by_kind["hold"]  # not applied yet: the plan only shows it
        assert hold["target"] == "" and hold["set_id"] == new and hold["add_holds"] == ["sync:dr"]
        assert "sync:dr" not in holds(src.sets()[new])
        assert {k["set_id"] for k in p["remote_kept"]} == {on_target[1]}
        human = cli(d.settings.state_dir, "plan", check=True).stdout
        assert "OFFSITE" in human and f"send     dr      {new}" in human and "+sync:dr" in human

        # what the plan showed is what the passes do
        settle(d, dr, expect={new})
        assert set(dr.sets()) == {on_target[1], new}
        assert cli_json(d.settings.state_dir, "plan")["sync"] == []

        # a target that is down: the plan still answers, and says why a new set waits
        dr.stop()
        clock.advance(days=1)
        before = set(local_sets(d))
        d.executor.run(d.compute_plan().plan.actions)
        (newer,) = set(local_sets(d)) - before
        waiting = [dec for dec in cli_json(d.settings.state_dir, "plan")["sync"] if dec["kind"] == "wait"]
        # nothing is known of the target: what its retention would keep waits, the new set too
        assert newer in {w["set_id"] for w in waiting}
        assert all(w["target"] == "dr" and "unreachable" in w["reason"] for w in waiting)


def test_sync_by_hand_windows_and_sync_back(pki: LabPKI, sites: tuple[Site, Site], tmp_path: Path) -> None:
    src, dr = sites
    clock = Clock()
    # the only window is at night: a set queued by hand waits for it, unless --now
    cfg = config(pki, src, dr, target={"items": [], "windows": [{"start": "22:00", "end": "06:00"}]})
    with daemon(cfg, tmp_path / "state", clock) as d:
        state = d.settings.state_dir
        m1 = cli_json(state, "snapshot", "create", "resource:vm1", "--expires", "30d", "--request-id", "m1")[
            "set_id"
        ]
        r = cli(state, "sync", m1, "--target", "dr", check=True)
        assert f"queued {m1} for dr" in r.stdout
        d.sync.run_pass()
        waiting = {w["set_id"]: w for w in cli_json(state, "status")["sync"]["waiting"]}
        assert "outside the sync windows" in waiting[m1]["reason"]
        assert m1 not in dr.sets()
        # the dry-run says the same, and when the window opens
        (planned,) = [dec for dec in cli_json(state, "plan")["sync"] if dec["set_id"] == m1]
        assert planned["kind"] == "wait" and "outside the sync windows" in planned["reason"], planned
        assert planned["until"].startswith("2026-03-02T22:00"), planned

        r = cli(state, "sync", m1, "--target", "dr", "--wait", "--now", timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"{m1} is on dr" in r.stdout
        assert m1 in dr.sets() and dr.verify(m1) == []

        # a second set becomes the base; the first is deleted here and brought back from dr
        m2 = cli_json(state, "snapshot", "create", "resource:vm1", "--expires", "30d", "--request-id", "m2")[
            "set_id"
        ]
        assert cli(state, "sync", m2, "--target", "dr", "--wait", "--now", timeout=120).returncode == 0
        d.sync.run_pass()
        wait_for(
            lambda: cli(state, "snapshot", "delete", m1).returncode == 0, timeout=30, what=f"{m1} deletable"
        )
        assert m1 not in src.sets()
        r = cli(state, "sync", "--back", m1, "--target", "dr", "--keep", "2d", timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "back on node src" in r.stdout
        (back,) = src.sets()[m1]
        assert any(h.startswith("syncback-until:") for h in back.holds)
        assert back.labels.get("scope") == "resource:vm1"
        assert src.verify(m1) == []

        # mistakes are clear
        r = cli(state, "sync", "nope", "--target", "dr")
        assert r.returncode == 3 and "no local snapshot set 'nope'" in r.stderr
        r = cli(state, "sync", m1, "--target", "elsewhere")
        assert r.returncode == 3 and "no offsite target 'elsewhere'" in r.stderr


def test_an_embedded_node_syncs_with_the_identity_the_config_gives_the_target(
    pki: LabPKI, sites: tuple[Site, Site], tmp_path: Path
) -> None:
    _src, dr = sites
    pool = tmp_path / "embedded"
    fill_volume(pool / "vms/vm1", seed=9, big_mb=1, small=3)
    cfg = config(pki, _src, dr)
    cfg["nodes"] = {"box": {"embedded": True, "pools": {"main": {"type": "chunkstore", "path": str(pool)}}}}
    clock = Clock()
    with daemon(cfg, tmp_path / "state", clock) as d:
        d.run_pass()
        (first,) = local_sets(d)
        settle(d, dr, expect={first})
        (there,) = dr.sets()[first]
        assert there.labels["origin_node"] == "box" and dr.verify(first) == []


def test_a_transfer_pauses_when_its_window_closes_and_resumes_in_the_next(
    pki: LabPKI, sites: tuple[Site, Site], tmp_path: Path
) -> None:
    src, dr = sites
    fill_volume(src.pool / "vms/vm1", seed=4, big_mb=4, small=2)  # about 2 MB on the wire
    clock = Clock(T0.replace(hour=5, minute=59, second=56))  # the night window closes in 4 s
    cfg = config(
        pki, src, dr, target={"throttle_bps": 400_000, "windows": [{"start": "22:00", "end": "06:00"}]}
    )
    with daemon(cfg, tmp_path / "state", clock) as d:
        d.run_pass()
        (first,) = local_sets(d)
        d.sync.run_pass()
        assert d.sync.status().active, "the transfer starts inside the window"
        clock.advance(seconds=7)  # (its end was armed in real seconds; later passes see the window closed)
        wait_for(lambda: not d.sync.status().active, timeout=30, what="the pause at the window's end")
        (paused,) = [r for r in d.sync.status().recent if r.set_id == first]
        assert paused.kind == "pause" and not paused.ok and paused.wire_bytes > 0
        assert first not in dr.sets()
        d.sync.run_pass()  # 06:00:03: closed, nothing starts
        assert not d.sync.status().active
        st = cli_json(d.settings.state_dir, "status")["sync"]
        assert [w["reason"] for w in st["waiting"] if w["set_id"] == first] == ["outside the sync windows"]
        clock.now = clock.now.replace(hour=22, minute=0, second=1)
        settle(d, dr, expect={first})
        done = [r for r in d.sync.status().recent if r.set_id == first and r.kind == "sync"]
        assert done and done[-1].ok
        # what arrived before the pause was kept on the target: the rest is all that travelled
        total = paused.wire_bytes + done[-1].wire_bytes
        assert done[-1].wire_bytes < total - 0.5 * paused.wire_bytes
        assert dr.verify(first) == []
        # a pause is not a failure: no retry back-off, no "sync" failure event
        plan = d.sync.status().plan
        assert plan is None or all(w.set_id != first for w in plan.waiting)


def test_a_system_set_on_two_nodes_travels_from_both_at_once(pki: LabPKI, tmp_path: Path) -> None:
    """streams 2: the two source nodes of a full system set send side by side (manager.py); the
    target gets the whole set."""
    pki2 = create_lab_pki(tmp_path / "tls2", nodes=["src", "src2", "dr"])
    src = Site("src", tmp_path / "src", tmp_path / "src" / "pool", pki2)
    src2 = Site("src2", tmp_path / "src2", tmp_path / "src2" / "pool", pki2)
    dr = Site("dr", tmp_path / "dr", tmp_path / "dr" / "pool", pki2)
    fill_volume(src.pool / "vms/vm1", seed=3, big_mb=2, small=10)
    fill_volume(src2.pool / "vms/vm2", seed=4, big_mb=2, small=10)
    dr.pool.mkdir(parents=True)
    for s in (src, src2, dr):
        s.start()
    try:
        cfg = config(
            pki2, src, dr, target={"streams": 2, "items": [{"from": "sys/daily", "retention": "2d"}]}
        )
        cfg["nodes"]["src2"] = {**cfg["nodes"]["src"], "address": src2.address}
        cfg["nodes"]["src2"]["tls"] = {**cfg["nodes"]["src"]["tls"], "server_name": "src2"}
        cfg["nodes"]["src2"]["pools"] = {"main": {"type": "chunkstore", "path": str(src2.pool)}}
        cfg["profiles"]["sys"] = {"periods": [{"name": "daily", "frequency": "daily", "retention": "3d"}]}
        cfg["resources"] = {
            "vm1": {"kind": "vm", "volumes": ["vms/vm1"], "node": "src"},
            "vm2": {"kind": "vm", "volumes": ["vms/vm2"], "node": "src2"},
        }
        cfg["system_snapshots"] = {"all": {"type": "full", "profile": "sys"}}
        clock = Clock()
        with daemon(cfg, tmp_path / "state", clock) as d:
            d.run_pass()
            (first,) = local_sets(d)
            settle(d, dr, expect={first})
            assert sorted(s.volume for s in dr.sets()[first]) == ["vms/vm1", "vms/vm2"]
            assert dr.verify(first) == []
            (rec,) = [r for r in d.sync.status().recent if r.set_id == first]
            assert rec.ok and sorted(rec.volumes) == ["vms/vm1", "vms/vm2"]

    finally:
        for s in (src, src2, dr):
            s.stop()


def test_the_target_pool_is_chosen_by_the_config(pki: LabPKI, tmp_path: Path) -> None:
    """A target agent with two chunkstore pools: by default a set lands in the source pool's
    namesake (main); with the target's `pool: cold`, in cold."""
    src = Site("src", tmp_path / "src", tmp_path / "src" / "pool", pki)
    dr = Site(
        "dr", tmp_path / "dr", tmp_path / "dr" / "pool", pki, more_pools={"cold": tmp_path / "dr" / "cold"}
    )
    fill_volume(src.pool / "vms/vm1", seed=3, big_mb=1, small=5)
    for s in (src, dr):
        s.start()

    def on_dr(pool: str) -> set[str]:
        return {s.set_id for s in dr.client.list_snapshots(pool)[1]}

    try:
        clock = Clock()
        with daemon(config(pki, src, dr), tmp_path / "state", clock) as d:
            d.run_pass()
            (first,) = local_sets(d)
            settle(d, dr, expect={first})
            assert on_dr("main") == {first} and on_dr("cold") == set()
        clock.advance(days=1)
        with daemon(config(pki, src, dr, target={"pool": "cold"}), tmp_path / "state2", clock) as d:
            d.run_pass()
            second = max(local_sets(d), key=lambda s: local_sets(d)[s].created)
            assert second != first
            settle(d, dr)
            wait_for(lambda: second in on_dr("cold"), timeout=60, what="the new set in cold")
            assert second not in on_dr("main")
    finally:
        for s in (src, dr):
            s.stop()


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "small", "1m") as mnt:
        yield mnt


def test_failed_attempts_and_their_back_off_survive_a_daemon_restart(
    pki: LabPKI, tiny_fs: Path, tmp_path: Path
) -> None:
    """A target whose disk is too small fails the transfer (retryable). The failure count and the
    time of the last attempt are in the state directory: a restarted daemon does not retry before
    the interval is up, and counts on from there."""
    small = tiny_fs
    src = Site("src", tmp_path / "src", tmp_path / "src" / "pool", pki)
    dr = Site("dr", tmp_path / "dr", small / "pool", pki)
    fill_volume(src.pool / "vms/vm1", seed=3, big_mb=6, small=4)
    dr.pool.mkdir(parents=True)
    state = tmp_path / "state"
    clock = Clock()

    def attempt(d: Daemon) -> SyncRecord:
        before = len(d.sync.status().recent)
        d.run_pass()
        d.sync.run_pass()
        wait_for(lambda: len(d.sync.status().recent) > before, timeout=60, what="a sync attempt")
        wait_for(lambda: not d.sync.status().active, timeout=60, what="the attempt to end")
        return d.sync.status().recent[-1]

    def reason(set_id: str) -> str:
        waiting = {w["set_id"]: w["reason"] for w in cli_json(state, "status")["sync"]["waiting"]}
        return str(waiting[set_id])

    for s in (src, dr):
        s.start()
    try:
        with daemon(config(pki, src, dr), state, clock) as d:
            d.run_pass()
            (first,) = local_sets(d)
            rec = attempt(d)
            assert rec.set_id == first and not rec.ok and "no space left" in rec.error
            assert reason(first).startswith("retry 1 after: ") and "no space left" in reason(first)
        saved = json.loads((state / "sync-state.json").read_text())
        (t,) = saved["transfers"]
        assert (t["target"], t["set_id"], t["attempts"], t["permanent"]) == ("dr", first, 1, False)

        with daemon(config(pki, src, dr), state, clock) as d:
            d.run_pass()
            d.sync.run_pass()
            assert not d.sync.status().active and not d.sync.status().recent  # not due yet
            assert reason(first).startswith("retry 1 after: ")
            clock.advance(minutes=2)  # the retry interval is 1m
            rec = attempt(d)
            assert rec.set_id == first and not rec.ok
            assert reason(first).startswith("retry 2 after: ")
        assert json.loads((state / "sync-state.json").read_text())["transfers"][0]["attempts"] == 2
        assert dr.sets() == {}
    finally:
        for s in (src, dr):
            s.stop()


def test_the_sync_state_file_round_trips_and_a_broken_one_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    assert load_state(path) == ({}, {})  # none yet
    history = {
        ("dr", "s1"): TransferState(2, T0, "disk full", False),
        ("dr", "s2"): TransferState(1, T0, "no", True),
    }
    arrived = {("dr", "s0"): T0 - timedelta(hours=1)}
    path.write_bytes(dump_state(history, arrived))
    assert load_state(path) == (history, arrived)

    for broken in (b"{not json", b'{"version": 99}', b'{"version": 1, "transfers": [{"target": "dr"}]}',
                   b'{"version": 1, "arrived": [{"target": "dr", "set_id": "s", "at": "2026-03-02T10:30:00"}]}'):  # fmt: skip
        path.write_bytes(broken)
        assert load_state(path) == ({}, {})
        assert not path.exists() and path.with_name(STATE_FILE + ".bad").read_bytes() == broken


# --- two sites sharing one agent --------------------------------------------------------------------
# Site A sends its sets to an agent that site B's daemon also manages as its own node (mutual
# disaster recovery, the same config on both sites). Set ids are made from the scope, profile,
# period and slot, so both sites' daily full-system sets share an id. Both daemons run in-process
# on one clock.


def site_a(pki: LabPKI, src: Site, dr: Site) -> dict[str, Any]:
    cfg = config(pki, src, dr)
    del cfg["resources"]["vm1"]["profile"]
    cfg["system_snapshots"] = {"full": {"type": "full", "profile": "daily"}}
    return cfg


def site_b(a: dict[str, Any], dr: Site) -> dict[str, Any]:
    """The same profile and system scope (a longer retention); its own node is A's offsite target."""
    tls = {**a["nodes"]["src"]["tls"], "server_name": "dr"}
    return {
        "version": 1,
        "nodes": {
            "dr": {
                "address": dr.address,
                "tls": tls,
                "pools": {"main": {"type": "chunkstore", "path": str(dr.pool)}},
            }
        },
        "profiles": {"daily": {"periods": [{"name": "midnight", "frequency": "daily", "retention": "30d"}]}},
        "resources": {"web": {"kind": "vm", "volumes": ["vms/web"]}},
        "system_snapshots": {"full": {"type": "full", "profile": "daily"}},
        # A's agent is B's target too; nothing goes there by itself here
        "offsite": {
            "targets": {"a": {"address": a["nodes"]["src"]["address"], "tls": a["nodes"]["src"]["tls"]}}
        },
    }


@contextmanager
def site_a_synced(a: dict[str, Any], dr: Site, tmp_path: Path, clock: Clock) -> Iterator[tuple[Daemon, str]]:
    """B's own volume on the shared agent, and A's daemon with its first full-system set there."""
    fill_volume(dr.pool / "vms/web", seed=5, big_mb=1, small=10)
    with daemon(a, tmp_path / "a" / "state", clock) as da:
        da.run_pass()
        (sid,) = da.observe().sets
        assert sid.startswith("system-full.daily.midnight.")
        settle(da, dr, expect={sid})
        yield da, sid


def members(site: Site, set_id: str) -> list[str]:
    return sorted(s.volume for s in site.sets().get(set_id, []))


def test_a_copy_from_another_site_never_stands_for_a_set_of_ours(
    pki: LabPKI, sites: tuple[Site, Site], tmp_path: Path
) -> None:
    src, dr = sites
    clock = Clock()
    a = site_a(pki, src, dr)
    with site_a_synced(a, dr, tmp_path, clock) as (da, sid):
        assert members(dr, sid) == ["vms/vm1"]
        received = f"{sid}@src"

        bstate = tmp_path / "b" / "state"
        with daemon(site_b(a, dr), bstate, clock) as db:
            # B plans and takes its own set of the slot: A's copy under the same id is not it
            plan = cli_json(bstate, "plan")
            assert [(x["kind"], x["set_id"]) for x in plan["actions"]] == [("create", sid)]
            assert any("1 set(s) received from other sites" in n for n in plan["notes"]), plan
            assert not plan.get("warnings"), plan
            db.run_pass()
            assert members(dr, sid) == ["vms/vm1", "vms/web"]
            (own,) = db.observe().sets.values()
            assert (
                own.set_id == sid and own.complete and [m.snapshot.volume for m in own.members] == ["vms/web"]
            )
            (scope,) = cli_json(bstate, "status")["scopes"]
            assert scope["scope"] == "system:full" and scope["sets"] == 1

            # B lists A's copy apart, under SET@NODE
            listed = {s.get("received_as") or s["set_id"]: s for s in cli_json(bstate, "snapshot", "list")}
            assert set(listed) == {sid, received}
            assert listed[received]["origin_nodes"] == ["src"]
            assert [m["volume"] for m in listed[received]["members"]] == ["vms/vm1"]
            human = cli(bstate, "snapshot", "list", check=True).stdout
            assert "RECEIVED FROM OTHER SITES" in human and received in human

            # B sends only its own sets offsite
            r = cli(bstate, "sync", received, "--target", "a")
            assert r.returncode != 0 and "a site sends only its own sets" in r.stderr, r.stderr

            # A's copy is A's base there: B cannot drop it
            r = cli(bstate, "snapshot", "delete", received)
            assert r.returncode == 5 and "base:dr" in r.stderr, r.stdout + r.stderr
            assert members(dr, sid) == ["vms/vm1", "vms/web"]

            # recover A's VM at B as a new copy; its own id names B's set, which does not hold vm1
            r = cli(bstate, "restore", "resource", "vm1", "--set", sid, "--as", "vm1dr")
            assert r.returncode == 3 and received in r.stderr, r.stderr
            r = cli(bstate, "restore", "resource", "vm1", "--set", received, "--as", "vm1dr")
            assert r.returncode == 0, r.stdout + r.stderr
            assert read_tree(dr.pool / "vms/vm1dr") == read_tree(src.pool / "vms/vm1")
            r = cli(bstate, "clone", "resource", "vm1", "--set", received, "--as", "vm1test")
            assert r.returncode == 0, r.stdout + r.stderr
            files = cli_json(bstate, "files", received, "vm1")
            assert files["files"]
            for refused in (
                ["restore", "resource", "vm1", "--set", received, "--over-source", "--yes"],
                ["restore", "system", "--set", received, "--yes"],
            ):
                r = cli(bstate, *refused)
                assert r.returncode != 0 and "received from another site" in r.stderr, (refused, r.stderr)

            # B keeps A's copy 10 days, past A's remote retention of 2 days
            until = (
                clock.now + timedelta(days=10)
            ).isoformat()  # the CLI's "10d" would count from the wall clock
            r = cli(bstate, "snapshot", "expire", received, "--expires", until, check=True)
            assert "kept here" in r.stdout
            (hold,) = [
                h for s in dr.sets()[sid] if s.volume == "vms/vm1" for h in s.holds if h.startswith("kept-")
            ]

            # days pass: A makes new sets, sends them and prunes its copies there, never B's members
            for _ in range(4):
                clock.advance(days=1)
                settle(da, dr)
                db.run_pass()
                db.sync.run_pass()
                assert "vms/web" in members(dr, sid)
                assert "vms/vm1" in members(dr, sid), "kept here by B's hold"
            assert members(src, sid) == []  # A's own retention (3 days) took it at home
            assert cli_json(bstate, "snapshot", "list")  # still listable

            # the hold ends: B's sync pass releases it and A's retention prunes its copy
            clock.advance(days=7)
            db.run_pass()
            db.sync.run_pass()
            assert not any(h == hold for s in dr.sets().get(sid, []) for h in s.holds)
            settle(da, dr)
            assert "vms/vm1" not in members(dr, sid)


def test_a_copy_from_another_site_is_never_taken_for_a_snapshot_of_our_volume(
    pki: LabPKI, sites: tuple[Site, Site], tmp_path: Path
) -> None:
    """B has a volume of the same path in the pool A's copies land in: B's create of the shared
    set id must fail loudly, not find A's copy and call its own volume snapshotted."""
    src, dr = sites
    fill_volume(dr.pool / "vms/vm1", seed=9, big_mb=1, small=5)
    clock = Clock()
    a = site_a(pki, src, dr)
    with site_a_synced(a, dr, tmp_path, clock) as (_da, sid):
        b = site_b(a, dr)
        b["resources"] = {"vm1": {"kind": "vm", "volumes": ["vms/vm1"]}}
        bstate = tmp_path / "b" / "state"
        with daemon(b, bstate, clock) as db:
            db.run_pass()
            assert db.observe().sets == {}
            (copy,) = dr.sets()[sid]
            assert copy.labels["origin_node"] == "src"
            st = cli_json(bstate, "status")
            failing = [c["message"] for c in st["conditions"] if c["kind"] == "ActionFailing"]
            assert any("copy received from node src" in m and "a pool of their own" in m for m in failing), st


# --- mirrored sites: the same node names, told apart by their site names ------------------------------
# Two sites deployed from one template: each calls its node n1 and has a vm1 at vms/vm1. With
# `site: east` / `site: west`, copies carry their site and never pass for the other site's own.


@pytest.fixture
def mirrored(tmp_path: Path) -> Iterator[tuple[Site, Site, dict[str, Any], dict[str, Any]]]:
    pki = create_lab_pki(tmp_path / "tls", nodes=["n1"])
    east = Site("n1", tmp_path / "east", tmp_path / "east" / "pool", pki)
    west = Site(
        "n1", tmp_path / "west", tmp_path / "west" / "pool", pki, more_pools={"offsite": tmp_path / "off"}
    )
    fill_volume(east.pool / "vms/vm1", seed=3, big_mb=1, small=10)
    fill_volume(west.pool / "vms/vm1", seed=9, big_mb=1, small=10)
    east.start()
    west.start()

    def site(name: str, home: Site, other: Site) -> dict[str, Any]:
        cfg = config(pki, home, other)
        cfg["site"] = name
        node = cfg["nodes"].pop("src")
        node["tls"]["server_name"] = "n1"
        cfg["nodes"]["n1"] = node
        cfg["offsite"]["targets"]["dr"]["tls"]["server_name"] = "n1"
        del cfg["resources"]["vm1"]["profile"]
        cfg["system_snapshots"] = {"full": {"type": "full", "profile": "daily"}}
        if name == "west":  # west sends nothing to east here
            del cfg["offsite"]["targets"]["dr"]["items"]
        return cfg

    yield east, west, site("east", east, west), site("west", west, east)
    east.stop()
    west.stop()


def test_site_names_keep_mirrored_sites_apart_where_node_names_repeat(
    mirrored: tuple[Site, Site, dict[str, Any], dict[str, Any]], tmp_path: Path
) -> None:
    east, west, a, b = mirrored
    a["offsite"]["targets"]["dr"]["pool"] = "offsite"  # east's copies land in a pool of their own
    clock = Clock()
    with daemon(a, tmp_path / "a" / "state", clock) as da:
        da.run_pass()
        (sid,) = da.observe().sets
        da.sync.run_pass()
        wait_for(lambda: sid in west.sets("offsite"), timeout=60, what="east's copy on west's node")
        (copy,) = west.sets("offsite")[sid]
        assert (copy.pool, copy.labels["origin_node"], copy.labels["origin_site"]) == (
            "offsite",
            "n1",
            "east",
        )

        bstate = tmp_path / "b" / "state"
        with daemon(b, bstate, clock) as db:
            # west's node n1 holds a copy from a node n1: it is east's, not a set of west's
            plan = cli_json(bstate, "plan")
            assert [(x["kind"], x["set_id"]) for x in plan["actions"]] == [("create", sid)]
            db.run_pass()
            (own,) = db.observe().sets.values()
            assert own.complete and [(m.snapshot.pool, m.snapshot.volume) for m in own.members] == [
                ("main", "vms/vm1")
            ]
            listed = {s.get("received_as") or s["set_id"]: s for s in cli_json(bstate, "snapshot", "list")}
            assert set(listed) == {sid, f"{sid}@east"}
            assert cli_json(bstate, "status")["site"] == "west"
            assert "  site west  config " in cli(bstate, "status", check=True).stdout
            assert listed[f"{sid}@east"]["origin_site"] == "east"
            assert listed[f"{sid}@east"]["origin_nodes"] == ["n1"]
            kept = cli(bstate, "snapshot", "expire", f"{sid}@east", "--never-expire", check=True).stdout
            assert "received from site east (n1)" in kept and "kept here" in kept, kept
            assert "kept-here" in west.sets("offsite")[sid][0].holds
            r = cli(bstate, "restore", "resource", "vm1", "--set", f"{sid}@east", "--as", "vm1east")
            assert r.returncode == 0, r.stdout + r.stderr
            # the new copy is made in the pool the copy is in
            assert read_tree(west.more_pools["offsite"] / "vms/vm1east") == read_tree(east.pool / "vms/vm1")
            # or, with --pool, in another pool of the node: beside west's own vm1, which stays as it was
            own_vm1 = read_tree(west.pool / "vms/vm1")
            r = cli(
                bstate,
                "restore",
                "resource",
                "vm1",
                "--set",
                f"{sid}@east",
                "--as",
                "vm1e2",
                "--pool",
                "main",
            )
            assert r.returncode == 0, r.stdout + r.stderr
            assert read_tree(west.pool / "vms/vm1e2") == read_tree(east.pool / "vms/vm1")
            assert read_tree(west.pool / "vms/vm1") == own_vm1 != read_tree(east.pool / "vms/vm1")
            assert not (west.more_pools["offsite"] / "vms/vm1e2").exists()

            # east, looking at the target, counts its copy and nothing of west's
            view = da.sync.observe_targets(clock.now)["dr"]
            assert [m.snapshot.pool for m in view.sets[sid].members] == ["offsite"] and view.foreign == 1
            da.sync.run_pass()
            assert not da.sync.status().active


def test_a_copy_from_a_named_site_never_passes_for_a_snapshot_taken_here(
    mirrored: tuple[Site, Site, dict[str, Any], dict[str, Any]], tmp_path: Path
) -> None:
    """Both sites keep vms/vm1 in pool main, where east's copies land: whichever comes second is
    refused loudly, by the receiving agent or by west's create; neither takes the other's data."""
    east, west, a, b = mirrored
    clock = Clock()
    bstate = tmp_path / "b" / "state"
    with daemon(a, tmp_path / "a" / "state", clock) as da, daemon(b, bstate, clock) as db:
        # west first: east's copy of the same set id would land on west's own snapshot of vms/vm1
        db.run_pass()
        (sid,) = db.observe().sets
        da.run_pass()
        da.sync.run_pass()
        wait_for(lambda: not da.sync.status().active, timeout=60, what="the transfer to end")
        (snap,) = west.sets()[sid]
        assert "origin_node" not in snap.labels  # west's own, untouched
        assert sid not in da.sync.observe_targets(clock.now)["dr"].sets  # east knows it has no copy
        (fail,) = [r for r in da.sync.status().recent if r.set_id == sid]
        assert not fail.ok and "from node n1; the copy from node n1 of site east would collide" in fail.error

        # the next day east goes first: west's create of the same id finds east's copy and refuses
        clock.advance(days=1)
        da.run_pass()
        (sid2,) = set(da.observe().sets) - {sid}
        da.sync.run_pass()
        wait_for(lambda: sid2 in west.sets(), timeout=60, what="east's copy on west's node")
        db.run_pass()
        assert sid2 not in db.observe().sets
        st = cli_json(bstate, "status")
        failing = [c["message"] for c in st["conditions"] if c["kind"] == "ActionFailing"]
        assert any("copy received from node n1 of site east" in m for m in failing), st


def test_status_warns_when_a_target_is_named_like_our_node_and_the_site_has_no_name(
    mirrored: tuple[Site, Site, dict[str, Any], dict[str, Any]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without site names, the target's agent n1 and our node n1 are the same name: status (not only
    plan) says so, and the daemon logs it once, not on every sync pass."""
    _east, _west, a, _b = mirrored
    del a["site"]
    astate = tmp_path / "a" / "state"
    metrics = DaemonMetrics(CollectorRegistry())
    with caplog.at_level(logging.WARNING, logger="reconciler"), daemon(a, astate, Clock()) as da:
        da.hooks.append(metrics.on_event)
        for _ in range(3):
            da.sync.run_pass()
        assert metrics.registry.get_sample_value("reconciler_warnings", {"source": "sync"}) == 1
        warning = "dr: its agent is named n1, like our node n1"
        st = cli_json(astate, "status")
        assert any(warning in w for w in st["sync"]["warnings"]), st["sync"]
        human = cli(astate, "status", check=True).stdout
        assert "warning: " + warning in human, human
        assert len([r for r in caplog.records if warning in r.getMessage()]) == 1
