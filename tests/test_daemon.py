"""The daemon as a real subprocess, driven through the real CLI over its control socket."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RECONCILER, ROOT, DaemonProcess, cli, cli_json, env_for, wait_for, write

CONFIG = """\
version: 1
nodes:
  local:
    embedded: true
    pools:
      main: {{type: chunkstore, path: ./pool, create: true}}
resources:
  vm1:
    kind: vm
    volumes: [vms/vm1]
    tags: [web]
  share1:
    kind: nas_volume
    volumes: [shares/share1]
{extra_resources}
profiles:
  minutely:
    periods:
      - name: every-minute
        frequency: interval
        every: 1m
        retention: 10m
        min_snapshots: 2
system_snapshots:
  full: {{type: full, profile: minutely}}
"""


def make_config(tmp_path: Path, extra_resources: str = "") -> Path:
    for vol in ("vms/vm1", "shares/share1", "vms/vm2"):
        write(tmp_path / "pool" / vol / "data.bin", "x" * 1000)
    return write(tmp_path / "config.yaml", CONFIG.format(extra_resources=extra_resources))


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    cfg = make_config(tmp_path)
    with DaemonProcess(cfg, tmp_path / "state") as d:
        yield d


def sets(d: DaemonProcess, *extra: str) -> list[Any]:
    return list(cli_json(d.state_dir, "snapshot", "list", *extra))


def test_first_pass_takes_the_latest_slot_and_status_reports_it(daemon: DaemonProcess) -> None:
    got = wait_for(lambda: [s for s in sets(daemon) if s["kind"] == "scheduled"], what="a scheduled set")
    assert len(got) == 1
    s = got[0]
    assert s["scope"] == "system:full" and s["complete"] and s["period"] == "every-minute"
    assert sorted(m["volume"] for m in s["members"]) == ["shares/share1", "vms/vm1"]
    st = cli_json(daemon.state_dir, "status")
    assert st["config_valid"] is True
    assert st["nodes"][0]["reachable"] is True
    assert [sc["scope"] for sc in st["scopes"]] == ["system:full"]
    # planning again is read-only and finds nothing to do for that slot
    p = cli_json(daemon.state_dir, "plan")
    assert not [a for a in p["actions"] if a["kind"] == "create"]
    assert len(sets(daemon)) == 1
    human = cli(daemon.state_dir, "status", check=True).stdout
    assert "system:full" in human and "local" in human


def test_invalid_edit_keeps_the_last_good_config(daemon: DaemonProcess) -> None:
    wait_for(lambda: sets(daemon), what="first set")
    cfg = daemon.config
    good = cfg.read_text()
    cfg.write_text(good.replace("retention: 10m", "retention: 10 parsecs"))
    st = wait_for(
        lambda: (s := cli_json(daemon.state_dir, "status"))["config_valid"] is False and s,
        what="status showing the invalid config",
    )
    assert any("config.yaml:" in e and "retention" in e for e in st["config_errors"])
    r = cli(daemon.state_dir, "reload")
    assert r.returncode == 1
    assert "retention" in r.stderr and "last good config" in r.stderr
    assert daemon.proc is not None and daemon.proc.poll() is None
    cfg.write_text(good)
    r = cli(daemon.state_dir, "reload")
    assert r.returncode == 0, r.stderr
    assert cli_json(daemon.state_dir, "status")["config_valid"] is True


def test_manual_snapshots_expire_or_never_and_immutable_refuses_delete(daemon: DaemonProcess) -> None:
    s = cli_json(
        daemon.state_dir,
        "snapshot",
        "create",
        "resource:vm1",
        "--expires",
        "1h",
        "--description",
        "pre-upgrade",
    )
    assert s["kind"] == "manual" and s["description"] == "pre-upgrade" and s["expires"]
    assert [m["volume"] for m in s["members"]] == ["vms/vm1"]
    n = cli_json(daemon.state_dir, "snapshot", "create", "system:full", "--never-expire", "--immutable")
    assert "expires" not in n or not n["expires"]
    assert n["immutable"] == "locked"
    r = cli(daemon.state_dir, "snapshot", "delete", n["set_id"])
    assert r.returncode == 5 and "immutable" in r.stderr
    assert cli(daemon.state_dir, "snapshot", "delete", s["set_id"]).returncode == 0
    ids = {x["set_id"] for x in sets(daemon)}
    assert n["set_id"] in ids and s["set_id"] not in ids
    # a retried request with the same id makes no second set
    a = cli_json(
        daemon.state_dir, "snapshot", "create", "resource:vm1", "--expires", "1h", "--request-id", "abc"
    )
    b = cli_json(
        daemon.state_dir, "snapshot", "create", "resource:vm1", "--expires", "1h", "--request-id", "abc"
    )
    assert a["set_id"] == b["set_id"]
    assert len([x for x in sets(daemon) if x["set_id"] == a["set_id"]]) == 1
    bad = cli(daemon.state_dir, "snapshot", "create", "resource:nope", "--expires", "1h")
    assert bad.returncode != 0 and "nope" in bad.stderr


def test_sighup_reload_and_sigterm_stop_cleanly(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    with DaemonProcess(cfg, tmp_path / "state") as d:
        wait_for(lambda: sets(d), what="first set")
        # a new resource with its own profile: after SIGHUP the daemon snapshots it
        extra = textwrap.indent("vm2:\n  kind: vm\n  volumes: [vms/vm2]\n  profile: minutely\n", "  ")
        cfg.write_text(CONFIG.format(extra_resources=extra))
        d.signal(signal.SIGHUP)
        wait_for(lambda: [s for s in sets(d) if s["scope"] == "resource:vm2"], what="set of the new resource")
        assert d.stop() == 0
    assert "shutting down" in d.output() and "stopped" in d.output()
    # nothing half-made: every catalog row has its data, no staging leftovers
    db = sqlite3.connect(tmp_path / "pool/.reconciler/catalog.db")
    assert db.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0] >= 3
    staging = tmp_path / "pool/.reconciler/staging"
    assert not staging.exists() or not os.listdir(staging)


def test_daemon_refuses_to_start_on_invalid_config(tmp_path: Path) -> None:
    cfg = write(tmp_path / "bad.yaml", "version: 1\nnodes: {local: {embedded: true, poolz: {}}}\n")
    r = cli(tmp_path / "state", "daemon", "-c", str(cfg), timeout=30)
    assert r.returncode == 1
    assert "bad.yaml:2:" in r.stderr and "did you mean" in r.stderr


def test_cli_without_daemon_says_so(tmp_path: Path) -> None:
    r = cli(tmp_path / "nostate", "status")
    assert r.returncode == 9 and "daemon is not running" in r.stderr


def test_a_reader_that_goes_away_ends_the_cli_quietly(tmp_path: Path) -> None:
    """`reconciler ... | head`: the pipe closes before the output is written; no traceback."""
    cfg = ROOT / "config.example.yaml"
    proc = subprocess.Popen(
        [*RECONCILER, "validate", str(cfg)],
        env=env_for(tmp_path / "state"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # long before the interpreter has started and written anything
    err = proc.stderr.read()
    assert proc.wait(timeout=30) == 141 and "Traceback" not in err, err


def test_verify_names_a_corrupted_chunk_and_the_daemon_keeps_running(daemon: DaemonProcess) -> None:
    wait_for(lambda: sets(daemon), what="first set")
    ok = cli(daemon.state_dir, "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    packs = sorted((daemon.config.parent / "pool/.reconciler/chunkstore/packs").rglob("*.pack"))
    assert packs
    data = bytearray(packs[0].read_bytes())
    data[10] ^= 0xFF  # flip a byte inside the first chunk
    packs[0].write_bytes(bytes(data))
    bad = cli(daemon.state_dir, "verify")
    assert bad.returncode == 7
    assert "local/main: PROBLEMS" in bad.stdout
    assert daemon.proc is not None and daemon.proc.poll() is None
    gc = cli(daemon.state_dir, "gc", "--json")
    assert gc.returncode == 0


def test_missing_volume_is_reported_and_other_work_goes_on(tmp_path: Path) -> None:
    extra = "  gone:\n    kind: nas_volume\n    volumes: [shares/gone]\n    profile: minutely\n"
    cfg = make_config(tmp_path, extra_resources=extra)
    with DaemonProcess(cfg, tmp_path / "state") as d:
        st = wait_for(
            lambda: [
                c for c in cli_json(d.state_dir, "status")["conditions"] if c["kind"] == "ActionFailing"
            ],
            what="a failing action",
        )
        assert any("shares/gone" in c["message"] and "does not exist" in c["message"] for c in st)
        assert d.proc is not None and d.proc.poll() is None


def test_schedule_prints_next_slots_in_the_profile_timezone(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "c.yaml",
        textwrap.dedent("""\
        version: 1
        nodes: {local: {embedded: true, pools: {main: {type: chunkstore, path: ./p}}}}
        profiles:
          berlin:
            timezone: Europe/Berlin
            periods:
              - {name: night, frequency: daily, hour: 2, minute: 30, retention: 7d}
        """),
    )
    out = cli_json(
        tmp_path, "schedule", "berlin", "-c", str(cfg), "--from", "2026-03-28T12:00:00+00:00", "--count", "3"
    )
    local = [s["local"] for s in out["night"]]
    # 02:30 does not exist on 2026-03-29 in Berlin (spring forward): it fires once, shifted by the gap
    assert local == ["2026-03-29T03:30:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]
    human = cli(tmp_path, "schedule", "berlin", "-c", str(cfg), "--count", "2", check=True).stdout
    assert "berlin/night: daily, retention 1w, min 1, timezone Europe/Berlin" in human
    assert " CET " in human or " CEST " in human
