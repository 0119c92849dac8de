"""Load: many manual snapshot requests at once against a real daemon process.

200 concurrent creates (150 distinct request ids, 50 repeats of some of them) must each be answered
with the set for its request id; afterwards exactly 150 sets exist, one member each — nothing
duplicated, nothing lost. Then 150 concurrent deletes leave nothing behind, on the daemon's view
and in the agent's catalog.
"""

from __future__ import annotations

import random
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from reconciler.control.client import ControlClient
from tests.helpers import DaemonProcess, write

CONFIG = """\
version: 1
nodes:
  local:
    embedded: true
    pools:
      main: {type: chunkstore, path: ./pool, create: true}
resources:
  vm1:
    kind: vm
    volumes: [vms/vm1]
"""
DISTINCT = 150
REPEATS = 50
THREADS = 64


def test_concurrent_manual_snapshots_are_each_answered_and_never_duplicated(tmp_path: Path) -> None:
    write(tmp_path / "pool" / "vms" / "vm1" / "disk.img", "d" * 20_000)
    cfg = write(tmp_path / "config.yaml", CONFIG)
    rng = random.Random(7)
    ids = [f"load-{i:03d}" for i in range(DISTINCT)]
    requests = ids + [rng.choice(ids) for _ in range(REPEATS)]
    rng.shuffle(requests)
    expires = datetime.now(UTC) + timedelta(hours=1)

    with DaemonProcess(cfg, tmp_path / "state") as d:
        clients = [ControlClient(d.state_dir / "control.sock", timeout=120) for _ in range(4)]
        try:
            clients[0].status()  # connected before the clock starts

            def create(i: int) -> tuple[str, dict[str, Any] | BaseException]:
                rid = requests[i]
                try:
                    s = clients[i % len(clients)].create_set(
                        scope="resource:vm1", request_id=rid, expires=expires, description=f"load {rid}"
                    )
                    return rid, s
                except BaseException as exc:  # noqa: BLE001 - reported below with its request
                    return rid, exc

            def read(i: int) -> object:  # status and listings keep being answered meanwhile
                c = clients[i % len(clients)]
                return c.status() if i % 2 else c.list_sets()

            started = time.monotonic()
            with ThreadPoolExecutor(THREADS) as pool:
                reads = [pool.submit(read, i) for i in range(20)]
                answers = list(pool.map(create, range(len(requests))))
                for r in reads:
                    r.result()
            create_seconds = time.monotonic() - started

            errors = [(rid, a) for rid, a in answers if isinstance(a, BaseException)]
            assert not errors, errors[:5]
            assert len(answers) == DISTINCT + REPEATS
            for rid, s in answers:
                assert isinstance(s, dict)
                assert s["set_id"] == f"resource-vm1.manual.{rid}", (rid, s["set_id"])
                assert s["complete"] and s["kind"] == "manual" and s["scope"] == "resource:vm1"
                assert [m["volume"] for m in s["members"]] == ["vms/vm1"]
            by_request = {rid: {s["set_id"] for r, s in answers if r == rid} for rid in ids}  # type: ignore[index]
            assert all(len(v) == 1 for v in by_request.values())  # a repeat got the same set

            listed = clients[0].list_sets()
            set_ids = [s["set_id"] for s in listed]
            assert len(set_ids) == len(set(set_ids)) == DISTINCT
            assert set(set_ids) == {f"resource-vm1.manual.{rid}" for rid in ids}
            assert all(len(s["members"]) == 1 for s in listed)
            db = tmp_path / "pool" / ".reconciler" / "catalog.db"
            with sqlite3.connect(db) as con:
                assert con.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0] == DISTINCT

            def delete(set_id: str) -> dict[str, Any] | BaseException:
                try:
                    return clients[hash(set_id) % len(clients)].delete_set(set_id)
                except BaseException as exc:  # noqa: BLE001
                    return exc

            started = time.monotonic()
            with ThreadPoolExecutor(THREADS) as pool:
                deleted = list(pool.map(delete, set_ids))
            delete_seconds = time.monotonic() - started
            bad = [
                (sid, r)
                for sid, r in zip(set_ids, deleted, strict=True)
                if not isinstance(r, dict) or not r["deleted"]
            ]
            assert not bad, bad[:5]
            assert clients[0].list_sets() == []
            with sqlite3.connect(db) as con:
                assert con.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0] == 0
            # generous bounds: a regression to per-request pool re-listing or serialisation shows up
            assert create_seconds < 30 and delete_seconds < 30, (create_seconds, delete_seconds)
        finally:
            for c in clients:
                c.close()
    assert d.proc is not None and d.proc.returncode == 0, d.output()[-3000:]
