"""Two sites that share one agent: site A sends its sets to an agent that site B's daemon also
manages as its own node (mutual disaster recovery, with the same config on both sites).

Set ids are made from the scope, profile, period and slot, so both sites' daily full-system sets
share an id. Real agent processes over mTLS; both daemons in-process on one injected clock; the
real CLI on their control sockets.

- B still takes its own set for the slot: the copy from A does not stand for it, in the plan, in
  status or in the agents;
- B lists A's copy apart (SET@NODE), restores and clones from it as new copies, and refuses a
  restore over a source or of the whole system from it;
- A prunes its copy there by its remote retention and never touches B's members of that set id;
- B keeps A's copy longer with `snapshot expire` (a hold A's retention respects), released later.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.tlslab import LabPKI, create_lab_pki
from tests.helpers import cli, cli_json
from tests.replication_lab import Site, fill_volume, read_tree
from tests.test_sync_daemon import Clock, config, daemon, settle


@pytest.fixture
def pki(tmp_path: Path) -> LabPKI:
    return create_lab_pki(tmp_path / "tls", nodes=["src", "dr"])


@pytest.fixture
def sites(pki: LabPKI, tmp_path: Path) -> Iterator[tuple[Site, Site]]:
    src = Site("src", tmp_path / "src", tmp_path / "src" / "pool", pki)
    dr = Site("dr", tmp_path / "dr", tmp_path / "dr" / "pool", pki)
    fill_volume(src.pool / "vms/vm1", seed=3, big_mb=1, small=10)
    fill_volume(dr.pool / "vms/web", seed=5, big_mb=1, small=10)
    src.start()
    dr.start()
    yield src, dr
    src.stop()
    dr.stop()


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


def members(site: Site, set_id: str) -> list[str]:
    return sorted(s.volume for s in site.sets().get(set_id, []))


def test_a_copy_from_another_site_never_stands_for_a_set_of_ours(
    pki: LabPKI, sites: tuple[Site, Site], tmp_path: Path
) -> None:
    src, dr = sites
    clock = Clock()
    a = site_a(pki, src, dr)
    with daemon(a, tmp_path / "a" / "state", clock) as da:
        da.run_pass()
        (sid,) = da.observe().sets
        assert sid.startswith("system-full.daily.midnight.")
        settle(da, dr, expect={sid})
        assert members(dr, sid) == ["vms/vm1"]
        received = f"{sid}@src"

        bstate = tmp_path / "b" / "state"
        with daemon(site_b(a, dr), bstate, clock) as db:
            # B plans and takes its own set of the slot: A's copy under the same id is not it
            plan = cli_json(bstate, "plan")
            assert [(x["kind"], x["set_id"]) for x in plan["actions"]] == [("create", sid)]
            assert any("1 set(s) received from other sites" in w for w in plan["warnings"]), plan
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
    with daemon(a, tmp_path / "a" / "state", clock) as da:
        da.run_pass()
        (sid,) = da.observe().sets
        settle(da, dr, expect={sid})
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
