"""`reconciler sync --wait`'s progress line (pure: what the daemon's progress events turn into)."""

from __future__ import annotations

from reconciler.replication.api import stats_to_pb
from reconciler.replication.cli import Bar
from reconciler.replication.progress import TransferStats


def test_the_bar_shows_the_share_of_the_total_and_the_eta() -> None:
    stats = TransferStats(
        phase="send",
        volume="vms/a",
        checked_bytes=100 << 20,
        scanned_bytes=50 << 20,
        sent_bytes=50 << 20,
        wire_bytes=25 << 20,
        total_bytes=100 << 20,
        rate_bps=5 << 20,
        eta_seconds=75.0,
        volumes_done=1,
        volumes_total=3,
    )
    line = Bar("set-1 -> dr").line(stats_to_pb(stats))
    assert line.startswith("set-1 -> dr [######------------------]  25.0% send vol 1/3"), line
    assert "wire 25.0 MiB" in line and "5.0 MiB/s" in line and line.endswith("ETA 1m15s"), line


def test_without_a_total_the_bar_says_it_does_not_know() -> None:
    stats = TransferStats(phase="connect", wire_bytes=1000)
    line = Bar("s").line(stats_to_pb(stats))
    assert "[" + "?" * Bar.WIDTH + "]   ?  " in line and line.endswith("ETA --"), line
