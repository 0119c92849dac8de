"""Planner benchmark: 10,000 resources and 1,000,000 existing scheduled sets (DESIGN.md target:
planned in under 2 s and 1.5 GB RSS).

    .venv/bin/python bench/bench_planner.py [--resources N] [--sets-per-resource M]

Each resource is its own ScopeBinding with one volume and a shared three-period profile (hourly,
daily, weekly); every resource has 100 scheduled sets spread over the periods. `now` is an hourly
slot, so each resource also gets one due create. Two cases:

- steady: retention matches the history, so about one set per resource expires (a normal pass);
- retention-cut: every retention halved, so about half of all sets are deleted in one pass (the
  pass after an operator shortens retention).

Prints plan() wall time (best of 3), the time to build the inputs (not counted), the load average
(on a shared machine other work inflates the wall time), and the peak RSS of the whole process
(ru_maxrss, which includes the inputs). Exits 1 if the steady case misses a target.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial

from reconciler.domain import (
    LABEL_EXPECTED,
    LABEL_KIND,
    LABEL_PERIOD,
    LABEL_PROFILE,
    LABEL_RESOURCE,
    LABEL_SCOPE,
    ActionKind,
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
    scheduled_set_id,
    set_name,
)
from reconciler.planner import plan

TARGET_SECONDS = 2.0
TARGET_RSS_BYTES = 1.5 * 1024**3
NOW = datetime(2024, 6, 3, 12, 0, tzinfo=UTC)  # a Monday, on an hourly slot

# (period, step between slots, number of sets per 100): history matches the retention below.
HISTORY = (
    ("hourly", timedelta(hours=1), 50),
    ("daily", timedelta(days=1), 40),
    ("weekly", timedelta(weeks=1), 10),
)


def make_profile(cut: bool) -> Profile:
    div = 2 if cut else 1
    return Profile(
        "std",
        (
            Period("hourly", Frequency.HOURLY, retention=timedelta(hours=50) / div, min_snapshots=3),
            Period("daily", Frequency.DAILY, retention=timedelta(days=40) / div, min_snapshots=3),
            Period("weekly", Frequency.WEEKLY, retention=timedelta(weeks=10) / div, min_snapshots=2),
        ),
    )


def build(resources: int, per_resource: int) -> tuple[DesiredState, ObservedState]:
    """Inputs shaped like the observe layer's output. Labels are shared per (resource, period): the
    planner reads the parsed SnapshotSet fields, and a dict per snapshot would only measure dicts."""
    profile = make_profile(cut=False)
    scale = per_resource / 100
    bindings: list[ScopeBinding] = []
    sets: dict[str, SnapshotSet] = {}
    # slot instants are shared between resources, like the datetimes the observe layer would intern
    slots = {
        period: [NOW - step * (i + 1 if period == "hourly" else i) for i in range(round(count * scale))]
        for period, step, count in HISTORY
    }
    daily_start = NOW.replace(hour=0)
    slots["daily"] = [daily_start - timedelta(days=i) for i in range(len(slots["daily"]))]
    slots["weekly"] = [daily_start - timedelta(weeks=i) for i in range(len(slots["weekly"]))]
    for r in range(resources):
        name = f"vm{r:05d}"
        node = f"node{r % 100:03d}"
        scope = Scope(ScopeKind.RESOURCE, name)
        ref = VolumeRef(node, "pool0", f"vms/{name}/disk0")
        bindings.append(ScopeBinding(scope, profile, (Member(ref, name),)))
        for period, _step, _count in HISTORY:
            labels = {
                LABEL_SCOPE: scope.key,
                LABEL_KIND: SetKind.SCHEDULED.value,
                LABEL_PROFILE: profile.name,
                LABEL_PERIOD: period,
                LABEL_RESOURCE: name,
                LABEL_EXPECTED: "1",
            }
            for slot in slots[period]:
                set_id = scheduled_set_id(scope, profile.name, period, slot)
                sname = set_name(scope, period, slot)
                snap = SnapshotInfo(set_id, sname, ref.pool, ref.volume, slot, None, labels)
                sets[set_id] = SnapshotSet(
                    set_id,
                    sname,
                    scope.key,
                    SetKind.SCHEDULED,
                    slot,
                    None,
                    (ObservedMember(node, snap),),
                    1,
                    profile.name,
                    period,
                    slot,
                )
    return DesiredState(tuple(bindings)), ObservedState(sets)


def best_of(n: int, fn: Callable[[], Plan]) -> tuple[float, tuple[int, int, int]]:
    """Best wall time of n runs, and (creates, deletes, kept) of the plan."""
    best = float("inf")
    counts = (0, 0, 0)
    for _ in range(n):
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
        creates = sum(1 for a in result.actions if a.kind is ActionKind.CREATE)
        counts = (creates, len(result.actions) - creates, len(result.kept))
        del result  # never hold two plans at once: peak RSS should reflect one pass
    return best, counts


def peak_rss_bytes() -> int:
    # ru_maxrss is KiB on Linux, bytes on macOS
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resources", type=int, default=10_000)
    ap.add_argument("--sets-per-resource", type=int, default=100)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    desired, observed = build(args.resources, args.sets_per_resource)
    build_s = time.perf_counter() - t0
    rss_inputs = peak_rss_bytes()
    cut_profile = make_profile(cut=True)
    desired_cut = DesiredState(tuple(replace(b, profile=cut_profile) for b in desired.bindings))

    rows: list[tuple[str, float, tuple[int, int, int]]] = []
    for case, d in (("steady", desired), ("retention-cut", desired_cut)):
        seconds, counts = best_of(3, partial(plan, d, observed, NOW))
        rows.append((case, seconds, counts))
    rss = peak_rss_bytes()

    print(
        f"planner benchmark: {args.resources} resources, {len(observed.sets)} existing sets "
        f"(build {build_s:.2f} s, not counted; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs)"
    )
    print(f"{'case':<14} {'plan() best of 3':>17} {'creates':>8} {'deletes':>8} {'kept':>8}")
    for case, seconds, (creates, deletes, kept) in rows:
        print(f"{case:<14} {seconds:>15.3f} s {creates:>8} {deletes:>8} {kept:>8}")
    print(
        f"peak RSS (whole process, inputs included): {rss / 1024**2:.0f} MiB "
        f"(inputs alone: {rss_inputs / 1024**2:.0f} MiB)"
    )

    full = args.resources >= 10_000 and len(observed.sets) >= 1_000_000
    steady_s = rows[0][1]  # wall time, as the design states the target
    ok = steady_s < TARGET_SECONDS and rss < TARGET_RSS_BYTES
    verdict = "met" if ok else "MISSED"
    print(
        f"target (steady, < {TARGET_SECONDS:.1f} s and < {TARGET_RSS_BYTES / 1024**3:.1f} GiB): {verdict}"
        + ("" if full else " (reduced size: not the design target)")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
