"""Config edit -> first resulting action in the running daemon (target: under 1 s).

Starts the real daemon on a temporary config, waits until it is idle, then appends a resource with
its own profile to the config file and measures the time until that resource's first snapshot is
visible in the pool catalog (the action has not just started but completed). Repeated N times.

    python bench/bench_config_latency.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 1.0

BASE = """\
version: 1
nodes:
  local:
    embedded: true
    pools:
      main: {type: chunkstore, path: ./pool, create: true}
resources:
  base:
    kind: nas_volume
    volumes: [base]
    profile: p
profiles:
  p:
    periods:
      - {name: hourly, frequency: hourly, retention: 1d}
"""


def added(i: int) -> str:
    return f"  extra{i}:\n    kind: nas_volume\n    volumes: [extra{i}]\n    profile: p\n"


def count(db: Path, volume: str) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.05)
        try:
            return int(con.execute("SELECT COUNT(*) FROM snapshots WHERE volume=?", (volume,)).fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def run(runs: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="reconciler-latency-") as tmp:
        d = Path(tmp)
        for i in range(runs):
            (d / "pool" / f"extra{i}").mkdir(parents=True)
            (d / "pool" / f"extra{i}" / "f").write_text("x")
        (d / "pool" / "base").mkdir(parents=True, exist_ok=True)
        cfg = d / "config.yaml"
        cfg.write_text(BASE)
        env = dict(os.environ, RECONCILER_STATE_DIR=str(d / "state"), PYTHONPATH=str(ROOT))
        proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler.cli", "daemon", "-c", str(cfg)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(d / "daemon.log", "wb"),
            cwd=d,
        )
        db = d / "pool" / ".reconciler" / "catalog.db"
        try:
            deadline = time.monotonic() + 30
            while count(db, "base") == 0:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(
                        f"daemon did not take its first snapshot:\n{(d / 'daemon.log').read_text()}"
                    )
                time.sleep(0.05)
            time.sleep(0.5)
            text = BASE.replace("profiles:", "PROFILES_MARK")
            results = []
            extra = ""
            for i in range(runs):
                extra += added(i)
                new = text.replace("PROFILES_MARK", extra + "profiles:")
                t0 = time.monotonic()
                cfg.write_text(new)
                while count(db, f"extra{i}") == 0:
                    if time.monotonic() - t0 > 10:
                        raise SystemExit(f"no action within 10 s:\n{(d / 'daemon.log').read_text()[-3000:]}")
                    time.sleep(0.002)
                results.append(time.monotonic() - t0)
                time.sleep(0.3)
            return results
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ns = ap.parse_args()
    res = run(ns.runs)
    med, worst = statistics.median(res), max(res)
    print(
        f"config edit -> first action completed: median {med * 1000:.0f} ms, worst {worst * 1000:.0f} ms "
        f"over {len(res)} edits (target < {TARGET_S * 1000:.0f} ms)"
    )
    return 0 if worst < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
