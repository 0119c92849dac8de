"""Property tests for the planner's rules (DESIGN.md, "Rules that must always hold").

Random profiles, bindings and observed histories (partial sets, locks, holds, manual and orphaned
sets, unreachable nodes); the assertions recompute each rule independently of the planner.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.domain import (
    Action,
    ActionKind,
    DesiredState,
    Frequency,
    ImmutableState,
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
from reconciler.schedule import latest_slot, slots

NODES = ("n1", "n2", "n3")
START = datetime(2024, 3, 20, tzinfo=UTC)  # history spans the Berlin spring-forward
SETTINGS = settings(max_examples=120, deadline=None)

# -- strategies ---------------------------------------------------------------------------------

retentions = st.one_of(
    st.none(),
    st.sampled_from([timedelta(minutes=30), timedelta(hours=3), timedelta(days=1), timedelta(days=4)]),
)


@st.composite
def periods(draw: st.DrawFn, name: str) -> Period:
    kind = draw(st.sampled_from(["hourly", "daily", "weekly", "interval"]))
    common = {
        "timezone": draw(st.sampled_from(["UTC", "Europe/Berlin", "Asia/Kathmandu"])),
        "retention": draw(retentions),
        "min_snapshots": draw(st.integers(0, 3)),
        "skip_missed": draw(st.booleans()),
        "immutable": draw(st.booleans()),
    }
    if kind == "hourly":
        return Period(name, Frequency.HOURLY, minute=draw(st.sampled_from([0, 30])), **common)  # type: ignore[arg-type]
    if kind == "daily":
        return Period(name, Frequency.DAILY, hour=draw(st.sampled_from([0, 2, 13])), **common)  # type: ignore[arg-type]
    if kind == "weekly":
        dows = draw(st.frozensets(st.integers(0, 6), min_size=1, max_size=2))
        return Period(name, Frequency.WEEKLY, hour=3, days_of_week=dows, **common)  # type: ignore[arg-type]
    every = draw(st.sampled_from([timedelta(minutes=20), timedelta(hours=5)]))
    return Period(name, Frequency.INTERVAL, every=every, **common)  # type: ignore[arg-type]


@st.composite
def bindings(draw: st.DrawFn, index: int) -> ScopeBinding:
    names = draw(st.lists(st.sampled_from(["p1", "p2", "p3"]), min_size=1, max_size=3, unique=True))
    profile = Profile("prof", tuple(draw(periods(n)) for n in names))
    nodes = draw(st.lists(st.sampled_from(NODES), min_size=0, max_size=2, unique=True))
    kind = draw(st.sampled_from(list(ScopeKind)))
    members = tuple(Member(VolumeRef(n, "pool", f"vol{index}"), f"r{index}") for n in nodes)
    return ScopeBinding(Scope(kind, f"s{index}"), profile, members, private=draw(st.booleans()))


def _member(
    set_id: str, ref: VolumeRef, created: datetime, expires: datetime | None, **kw: object
) -> ObservedMember:
    return ObservedMember(ref.node, SnapshotInfo(set_id, "n", ref.pool, ref.volume, created, expires, **kw))  # type: ignore[arg-type]


# Strategies are built once: building them inside each draw costs more than the planning.
DELAYS = st.sampled_from([timedelta(0), timedelta(minutes=3), timedelta(hours=2)])
EXPIRIES = st.sampled_from([None, -1, 1])  # none, an hour ago, in an hour
IMMUTABLES = st.sampled_from([ImmutableState.NONE] * 6 + list(ImmutableState))
HOLDS = st.sampled_from([frozenset()] * 8 + [frozenset({"operator"})])
MASKS = st.integers(1, 2 ** len(NODES) - 1)
PICKS = st.lists(st.integers(0, 10_000), max_size=6)


@st.composite
def history_set(
    draw: st.DrawFn, b: ScopeBinding, profile: str, period: str, slot: datetime, now: datetime, kind: SetKind
) -> SnapshotSet:
    refs = [m.ref for m in b.members] or [VolumeRef("n1", "pool", "gone")]
    mask = draw(MASKS)
    present = [r for i, r in enumerate(refs) if mask >> i & 1] or refs[:1]
    created = min(now, slot + draw(DELAYS))
    expiry = draw(EXPIRIES)
    expires = None if expiry is None else now + expiry * timedelta(hours=1)
    immutable = draw(IMMUTABLES)
    holds = draw(HOLDS)
    if kind is SetKind.SCHEDULED:
        set_id = scheduled_set_id(b.scope, profile, period, slot)
    else:
        set_id = f"{kind.value}-{b.scope.name}-{slot:%Y%m%d%H%M}"
    ordered = sorted(present, key=lambda r: r.key)
    return SnapshotSet(
        set_id,
        set_name(b.scope, period, slot),
        b.scope.key,
        kind,
        created,
        expires,
        tuple(_member(set_id, r, created, expires, immutable=immutable, holds=holds) for r in ordered),
        len(refs),
        profile=profile if kind is SetKind.SCHEDULED else "",
        period=period if kind is SetKind.SCHEDULED else "",
        slot=slot if kind is SetKind.SCHEDULED else None,
    )


@dataclass
class World:
    desired: DesiredState
    observed: ObservedState
    now: datetime


@st.composite
def worlds(draw: st.DrawFn, *, gap: timedelta = timedelta(0)) -> World:
    """Bindings and a history of sets up to `history_end`; `now` is `gap` later (downtime)."""
    bs = [draw(bindings(i)) for i in range(draw(st.integers(1, 3)))]
    history_end = START + draw(st.integers(0, 10 * 24 * 60)) * timedelta(minutes=1)
    now = history_end + gap
    sets: dict[str, SnapshotSet] = {}
    for b in bs:
        for p in b.profile.periods:
            candidates = list(
                slots(p, history_end - timedelta(days=10), history_end + timedelta(microseconds=1))
            )
            if not candidates:
                continue
            picked = {candidates[i % len(candidates)] for i in draw(PICKS)}
            if draw(st.booleans()):
                picked.add(candidates[-1])  # often the latest slot exists already
            for slot in sorted(picked):
                s = draw(history_set(b, b.profile.name, p.name, slot, now, SetKind.SCHEDULED))
                sets[s.set_id] = s
        extra = draw(st.lists(st.sampled_from(["manual", "safety", "orphan"]), max_size=3))
        for i, what in enumerate(extra):
            slot = history_end - timedelta(hours=7 * i + 1)
            if what == "orphan":
                s = draw(history_set(b, b.profile.name, "retired", slot, now, SetKind.SCHEDULED))
            else:
                s = draw(history_set(b, "", "", slot, now, SetKind(what)))
            sets[s.set_id] = s
    unreachable = draw(st.sampled_from([frozenset()] * 3 + [frozenset({"n2"}), frozenset({"n1", "n3"})]))
    return World(DesiredState(tuple(bs)), ObservedState(sets, unreachable), now)


# -- helpers ------------------------------------------------------------------------------------


def complete(s: SnapshotSet) -> bool:
    return len(s.members) >= s.expected_members > 0


def creates(p: Plan) -> list[Action]:
    return [a for a in p.actions if a.kind is ActionKind.CREATE]


def deleted_ids(p: Plan) -> set[str]:
    return {a.set_id for a in p.actions if a.kind is ActionKind.DELETE}


def apply(w: World, p: Plan) -> ObservedState:
    """What the agents would report after the plan ran: creates became complete (or, for members on
    unreachable nodes, still partial) sets created at `now`; deletes are gone."""
    sets = {k: v for k, v in w.observed.sets.items() if k not in deleted_ids(p)}
    for a in creates(p):
        assert a.slot is not None
        new = tuple(_member(a.set_id, m.ref, w.now, a.expires) for m in a.members)
        old = sets.get(a.set_id)
        if old is not None:
            sets[a.set_id] = SnapshotSet(
                old.set_id,
                old.name,
                old.scope,
                old.kind,
                old.created,
                old.expires,
                old.members + new,
                old.expected_members,
                old.profile,
                old.period,
                old.slot,
            )
        else:
            sets[a.set_id] = SnapshotSet(
                a.set_id,
                a.name,
                a.scope,
                SetKind.SCHEDULED,
                w.now,
                a.expires,
                new,
                a.expected_members or len(a.members),
                a.profile,
                a.period,
                a.slot,
            )
    return ObservedState(sets, w.observed.unreachable_nodes)


# -- properties ---------------------------------------------------------------------------------


@SETTINGS
@given(worlds())
def test_plan_is_deterministic(w: World) -> None:
    first = plan(w.desired, w.observed, w.now)
    assert plan(w.desired, w.observed, w.now) == first
    shuffled = ObservedState(dict(reversed(list(w.observed.sets.items()))), w.observed.unreachable_nodes)
    assert plan(w.desired, shuffled, w.now) == first


@SETTINGS
@given(worlds())
def test_every_set_is_kept_or_deleted_once_with_a_reason(w: World) -> None:
    p = plan(w.desired, w.observed, w.now)
    decided = Counter(
        [k.set_id for k in p.kept] + [a.set_id for a in p.actions if a.kind is ActionKind.DELETE]
    )
    assert decided == Counter(list(w.observed.sets))
    assert all(k.reason and k.rule for k in p.kept)
    assert all(a.reason for a in p.actions)
    assert [k.set_id for k in p.kept] == sorted(k.set_id for k in p.kept)


@SETTINGS
@given(worlds())
def test_never_deletes_a_protected_set(w: World) -> None:
    p = plan(w.desired, w.observed, w.now)
    gone = deleted_ids(p)
    sets = w.observed.sets

    # immutable-locked or unlocking, or held
    for set_id in gone:
        s = sets[set_id]
        states = {m.snapshot.immutable for m in s.members}
        assert not states & {ImmutableState.LOCKED, ImmutableState.UNLOCKING}, set_id
        assert not any(m.snapshot.holds for m in s.members), set_id
        assert not any(m.node in w.observed.unreachable_nodes for m in s.members), set_id
        if w.observed.unreachable_nodes:
            assert complete(s), set_id

    # the newest complete set of each scope
    by_scope: dict[str, list[SnapshotSet]] = {}
    for s in sets.values():
        if complete(s):
            by_scope.setdefault(s.scope, []).append(s)
    for scope, group in by_scope.items():
        newest = max(group, key=lambda s: (s.created, s.set_id))
        assert newest.set_id not in gone, scope

    # the newest min_snapshots complete sets of each configured period
    for b in w.desired.bindings:
        for period in b.profile.periods:
            mine = [
                s
                for s in sets.values()
                if s.kind is SetKind.SCHEDULED
                and (s.scope, s.profile, s.period) == (b.scope.key, b.profile.name, period.name)
                and complete(s)
            ]
            mine.sort(key=lambda s: (s.slot, s.set_id), reverse=True)
            for s in mine[: period.min_snapshots]:
                assert s.set_id not in gone, (s.set_id, period.min_snapshots)

    # unexpired scheduled sets of configured periods (by the current retention) and manual sets
    configured = {
        (b.scope.key, b.profile.name, p.name): p for b in w.desired.bindings for p in b.profile.periods
    }
    for set_id in gone:
        s = sets[set_id]
        current = configured.get((s.scope, s.profile, s.period)) if s.kind is SetKind.SCHEDULED else None
        if current is not None:
            assert current.retention is not None and s.created + current.retention <= w.now, set_id
        else:
            assert s.expires is not None and s.expires <= w.now, set_id


@SETTINGS
@given(worlds())
def test_creates_only_the_latest_slot_once_per_scope_and_period(w: World) -> None:
    p = plan(w.desired, w.observed, w.now)
    per_group = Counter((a.scope, a.profile, a.period) for a in creates(p))
    assert all(n == 1 for n in per_group.values())
    periods = {
        (b.scope.key, b.profile.name, q.name): (b, q) for b in w.desired.bindings for q in b.profile.periods
    }
    for a in creates(p):
        b, q = periods[(a.scope, a.profile, a.period)]
        assert a.slot == latest_slot(q, w.now)
        assert a.members, "a create always has members"
        assert all(m.ref.node not in w.observed.unreachable_nodes for m in a.members)
        assert set(a.members) <= set(b.members)


@SETTINGS
@given(worlds())
def test_applying_a_plan_then_planning_again_creates_nothing(w: World) -> None:
    first = plan(w.desired, w.observed, w.now)
    after = apply(w, first)
    second = plan(w.desired, after, w.now)
    assert creates(second) == []
    # A new set may release an older one that only min_snapshots or the last-good rule kept (the
    # design's "no delete" holds only for sets no newer set can release); nothing else may go.
    rules = {k.set_id: k.rule for k in first.kept}
    for set_id in deleted_ids(second):
        assert rules[set_id] in {"min_snapshots", "last_good"}, (set_id, rules[set_id])
    # ... and after that second pass the state is a fixed point
    third = plan(w.desired, apply(World(w.desired, after, w.now), second), w.now)
    assert third.actions == ()


@settings(max_examples=100, deadline=None)
@given(worlds(gap=timedelta(days=30)))
def test_no_burst_after_downtime(w: World) -> None:
    p = plan(w.desired, w.observed, w.now)
    n_periods = sum(len(b.profile.periods) for b in w.desired.bindings)
    assert len(creates(p)) <= n_periods
    periods = {(b.scope.key, q.name): q for b in w.desired.bindings for q in b.profile.periods}
    for a in creates(p):
        # one set for the latest slot, never one of the slots missed during the 30 days
        assert a.slot == latest_slot(periods[(a.scope, a.period)], w.now)
        assert a.slot is not None and w.now - a.slot < timedelta(days=7)


@SETTINGS
@given(worlds())
def test_next_wakeup_is_in_the_future_and_not_after_the_next_slot(w: World) -> None:
    from reconciler.schedule import next_slot

    p = plan(w.desired, w.observed, w.now)
    nexts = [next_slot(q, w.now) for b in w.desired.bindings for q in b.profile.periods]
    earliest = min((t for t in nexts if t is not None), default=None)
    if p.next_wakeup is not None:
        assert p.next_wakeup > w.now
    if earliest is not None:
        assert p.next_wakeup is not None and p.next_wakeup <= earliest
