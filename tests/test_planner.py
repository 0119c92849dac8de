"""The planner's decisions, example by example, asserting the rule and the reason of each."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.domain import (
    Action,
    ActionKind,
    DesiredState,
    Frequency,
    ImmutableState,
    Keep,
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
from reconciler.planner import grace, plan

NOW = datetime(2024, 6, 3, 12, 2, tzinfo=UTC)  # a Monday, two minutes after an hourly slot
H = timedelta(hours=1)
D = timedelta(days=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def hourly(**kw: object) -> Period:
    return Period("hourly", Frequency.HOURLY, **{"retention": 2 * D, "min_snapshots": 1, **kw})  # type: ignore[arg-type]


def daily(**kw: object) -> Period:
    return Period("daily", Frequency.DAILY, **{"retention": 7 * D, "min_snapshots": 1, **kw})  # type: ignore[arg-type]


def member(node: str = "n1", volume: str = "vms/vm1/disk0", resource: str = "vm1") -> Member:
    return Member(VolumeRef(node, "pool0", volume), resource)


def binding(
    *periods: Period,
    name: str = "vm1",
    kind: ScopeKind = ScopeKind.RESOURCE,
    members: tuple[Member, ...] | None = None,
    private: bool = False,
) -> ScopeBinding:
    return ScopeBinding(
        Scope(kind, name),
        Profile("std", periods or (hourly(),)),
        (member(),) if members is None else members,
        private=private,
    )


def snapset(
    b: ScopeBinding,
    period: str,
    slot: datetime,
    *,
    created: datetime | None = None,
    members: Iterable[Member] | None = None,
    expected: int | None = None,
    immutable: ImmutableState = ImmutableState.NONE,
    holds: frozenset[str] = frozenset(),
    expires: datetime | None = None,
    kind: SetKind = SetKind.SCHEDULED,
    set_id: str | None = None,
) -> SnapshotSet:
    """A set as observe would rebuild it; members default to all of the binding's."""
    ms = tuple(b.members if members is None else members)
    created = slot if created is None else created
    sid = set_id or scheduled_set_id(b.scope, b.profile.name, period, slot)
    obs = tuple(
        ObservedMember(
            m.ref.node,
            SnapshotInfo(
                sid, "n", m.ref.pool, m.ref.volume, created, expires, immutable=immutable, holds=holds
            ),
        )
        for m in ms
    )
    return SnapshotSet(
        sid,
        set_name(b.scope, period, slot),
        b.scope.key,
        kind,
        created,
        expires,
        obs,
        len(b.members) if expected is None else expected,
        profile=b.profile.name if kind is SetKind.SCHEDULED else "",
        period=period if kind is SetKind.SCHEDULED else "",
        slot=slot if kind is SetKind.SCHEDULED else None,
    )


def observed(*sets: SnapshotSet, unreachable: Iterable[str] = ()) -> ObservedState:
    return ObservedState({s.set_id: s for s in sets}, frozenset(unreachable))


def run(bindings: Iterable[ScopeBinding], *sets: SnapshotSet, now: datetime = NOW, **kw: object) -> Plan:
    return plan(DesiredState(tuple(bindings)), observed(*sets, **kw), now)  # type: ignore[arg-type]


def creates(p: Plan) -> list[Action]:
    return [a for a in p.actions if a.kind is ActionKind.CREATE]


def deletes(p: Plan) -> dict[str, Action]:
    return {a.set_id: a for a in p.actions if a.kind is ActionKind.DELETE}


def kept(p: Plan) -> dict[str, Keep]:
    return {k.set_id: k for k in p.kept}


def hourly_history(b: ScopeBinding, hours: Iterable[int], now: datetime = NOW) -> list[SnapshotSet]:
    """Complete hourly sets for the slots `h` hours before the current one."""
    current = now.replace(minute=0, second=0, microsecond=0)
    return [snapset(b, "hourly", current - h * H) for h in hours]


# -- creates ------------------------------------------------------------------------------------


def test_due_slot_is_created_with_the_period_settings() -> None:
    p = hourly(immutable=True, quiesce=True, quiesce_policy="fail")
    b = binding(p)
    result = run([b], *hourly_history(b, [1, 2]))
    (a,) = creates(result)
    slot = utc(2024, 6, 3, 12)
    assert a.reason == "slot 2024-06-03T12:00:00Z of period hourly is due"
    assert a.set_id == scheduled_set_id(b.scope, "std", "hourly", slot)
    assert a.name == set_name(b.scope, "hourly", slot)
    assert (a.scope, a.profile, a.period, a.slot) == ("resource:vm1", "std", "hourly", slot)
    assert a.expires == NOW + 2 * D  # counted from the creation, not from the slot
    assert (a.immutable, a.quiesce, a.quiesce_policy, a.private) == (True, True, "fail", False)
    assert a.members == b.members and a.expected_members == 1
    assert result.warnings == ()


def test_forever_retention_creates_without_expiry() -> None:
    b = binding(hourly(retention=None))
    (a,) = creates(run([b]))
    assert a.expires is None


@pytest.mark.parametrize(
    ("kind", "binding_private", "period_private", "expected"),
    [
        (ScopeKind.SYSTEM, True, True, True),
        (ScopeKind.SYSTEM, False, True, False),
        (ScopeKind.SYSTEM, True, False, False),
        (ScopeKind.TENANT, True, True, False),
        (ScopeKind.RESOURCE, True, True, False),
    ],
)
def test_private_only_for_system_scopes(
    kind: ScopeKind, binding_private: bool, period_private: bool, expected: bool
) -> None:
    b = binding(hourly(private=period_private), kind=kind, private=binding_private)
    (a,) = creates(run([b]))
    assert a.private is expected


def test_existing_slot_is_not_created_again() -> None:
    b = binding()
    result = run([b], *hourly_history(b, [0, 1]))
    assert creates(result) == []


def test_set_for_a_later_slot_suppresses_the_create() -> None:
    b = binding()
    result = run([b], *hourly_history(b, [-1, 1]))  # a set one slot ahead (clock moved back)
    assert creates(result) == []


def test_grace_decides_due_or_catch_up() -> None:
    b = binding()
    history = hourly_history(b, [1], now=utc(2024, 6, 3, 12))
    on_time = creates(run([b], *history, now=utc(2024, 6, 3, 12, 5)))
    assert on_time[0].reason.endswith("is due")
    late = creates(run([b], *history, now=utc(2024, 6, 3, 12, 5, 1)))
    assert late[0].reason.startswith("catching up missed slot 2024-06-03T12:00:00Z")
    assert "0 earlier missed slots are not taken" in late[0].reason


def test_grace_is_half_a_short_interval() -> None:
    assert grace(hourly()) == timedelta(minutes=5)
    assert grace(daily()) == timedelta(minutes=5)
    assert grace(Period("i", Frequency.INTERVAL, every=timedelta(minutes=2))) == timedelta(minutes=1)
    assert grace(Period("i", Frequency.INTERVAL, every=timedelta(hours=2))) == timedelta(minutes=5)


def test_catch_up_after_downtime_creates_only_the_latest_slot() -> None:
    b = binding(hourly(), daily())
    last_seen = utc(2024, 6, 1)
    history = [snapset(b, "hourly", last_seen), snapset(b, "daily", last_seen)]
    now = utc(2024, 6, 3, 12, 30)
    result = run([b], *history, now=now)
    by_period = {a.period: a for a in creates(result)}
    assert set(by_period) == {"hourly", "daily"}
    assert by_period["hourly"].slot == utc(2024, 6, 3, 12)
    # 01:00..23:00 on the 1st, 24 on the 2nd, 00:00..11:00 on the 3rd
    assert by_period["hourly"].reason == (
        "catching up missed slot 2024-06-03T12:00:00Z of period hourly (30m late); "
        "59 earlier missed slots are not taken"
    )
    assert by_period["daily"].slot == utc(2024, 6, 3)
    assert by_period["daily"].reason == (
        "catching up missed slot 2024-06-03T00:00:00Z of period daily (12h30m late); "
        "1 earlier missed slots are not taken"
    )


def test_first_run_catches_up_with_one_set() -> None:
    b = binding(daily())
    (a,) = creates(run([b]))
    assert a.slot == utc(2024, 6, 3)
    assert a.reason.endswith("no earlier set of this period exists")


def test_skip_missed_takes_no_catch_up() -> None:
    b = binding(hourly(skip_missed=True))
    result = run([b], *hourly_history(b, [3]), now=utc(2024, 6, 3, 12, 30))
    assert creates(result) == []
    assert result.warnings == (
        "resource:vm1: missed slot 2024-06-03T12:00:00Z of period hourly skipped (skip_missed)",
    )
    # ... but a slot that is due is still taken
    assert len(creates(run([b], *hourly_history(b, [3]), now=utc(2024, 6, 3, 12, 1)))) == 1


def test_binding_without_members_creates_nothing_and_warns() -> None:
    b = binding(members=())
    result = run([b])
    assert creates(result) == []
    assert result.warnings == ("resource:vm1: profile std has no members to snapshot; nothing is created",)


def test_custom_period_fires_once() -> None:
    at = utc(2024, 6, 3, 12)
    b = binding(Period("once", Frequency.CUSTOM, at=at, retention=D))
    (a,) = creates(run([b]))
    assert a.slot == at and a.reason.endswith("is due")
    assert creates(run([b], snapset(b, "once", at))) == []
    assert creates(run([b], now=utc(2024, 6, 3, 11))) == []  # not yet


# -- partial sets and unreachable nodes ---------------------------------------------------------


def two_members() -> tuple[Member, ...]:
    return (member("n1", "vms/vm1/disk0"), member("n2", "vms/vm1/disk1"))


def test_partial_set_is_retried_with_only_the_missing_members() -> None:
    b = binding(members=two_members())
    slot = utc(2024, 6, 3, 12)
    partial = snapset(b, "hourly", slot, members=[b.members[0]])
    result = run([b], *hourly_history(b, [1]), partial)
    (a,) = creates(result)
    assert a.set_id == partial.set_id
    assert a.members == (b.members[1],)
    assert a.expected_members == 2
    assert a.reason == "retrying partial set for slot 2024-06-03T12:00:00Z: missing n2/pool0/vms/vm1/disk1"
    # the partial set is kept meanwhile, and the newest complete one stays the last good copy
    assert kept(result)[partial.set_id].rule == "retention"


def test_partial_sets_do_not_count_for_min_snapshots_or_last_good() -> None:
    b = binding(hourly(retention=H, min_snapshots=1), members=two_members())
    complete = snapset(b, "hourly", utc(2024, 6, 3, 9))
    old_partial = snapset(b, "hourly", utc(2024, 6, 3, 10), members=[b.members[0]])
    newer_partial = snapset(b, "hourly", utc(2024, 6, 3, 11), members=[b.members[1]])
    result = run([b], complete, old_partial, newer_partial)
    assert kept(result)[complete.set_id].rule == "last_good"
    assert set(deletes(result)) == {old_partial.set_id, newer_partial.set_id}


def test_expired_partial_set_of_the_current_slot_is_kept_while_retried() -> None:
    b = binding(hourly(retention=timedelta(minutes=1)), members=two_members())
    partial = snapset(b, "hourly", utc(2024, 6, 3, 12), members=[b.members[0]])
    result = run([b], *hourly_history(b, [1]), partial)
    k = kept(result)[partial.set_id]
    assert k.rule == "retrying"
    assert k.reason == "partial set for the current slot (1/2 members) is being retried"
    assert [a.set_id for a in creates(result)] == [partial.set_id]


def test_set_of_the_current_slot_outlives_a_short_retention() -> None:
    # weekly with a 1h retention: deleting this week's set would only make the next pass take it again
    b = binding(Period("weekly", Frequency.WEEKLY, retention=H, min_snapshots=0))
    this_week = snapset(b, "weekly", utc(2024, 6, 3))
    last_week = snapset(b, "weekly", utc(2024, 5, 27))
    manual = snapset(b, "x", utc(2024, 6, 3, 6), kind=SetKind.MANUAL, set_id="m")  # the last good copy
    result = run([b], this_week, last_week, manual)
    k = kept(result)[this_week.set_id]
    assert k.rule == "current_slot"
    assert (
        k.reason
        == "set of the current slot 2024-06-03T00:00:00Z: kept until the next slot, or it would be taken again"
    )
    assert set(deletes(result)) == {last_week.set_id}
    assert creates(result) == []
    # once the next slot has come, it goes like any other expired set
    later = run([b], this_week, manual, snapset(b, "weekly", utc(2024, 6, 10)), now=utc(2024, 6, 10, 0, 1))
    assert this_week.set_id in deletes(later)


def test_members_on_unreachable_nodes_are_not_asked_for() -> None:
    b = binding(members=two_members())
    result = run([b], *hourly_history(b, [1]), unreachable=["n2"])
    (a,) = creates(result)
    assert a.members == (b.members[0],)
    assert a.expected_members == 2  # the set stays partial, so it is retried once n2 is back
    assert result.warnings == (
        "resource:vm1: period hourly: member n2/pool0/vms/vm1/disk1 is on unreachable node n2; "
        "not snapshotted this pass",
    )


def test_retry_skips_unreachable_members() -> None:
    b = binding(members=two_members())
    partial = snapset(b, "hourly", utc(2024, 6, 3, 12), members=[b.members[0]])
    result = run([b], *hourly_history(b, [1]), partial, unreachable=["n2"])
    assert creates(result) == []
    assert any("unreachable node n2" in w for w in result.warnings)


def test_expired_sets_that_cannot_be_fully_seen_are_kept() -> None:
    b = binding(hourly(retention=H), members=two_members())
    old_on_n2 = snapset(b, "hourly", utc(2024, 6, 3, 5))  # has a member on n2
    old_seen_partially = snapset(b, "hourly", utc(2024, 6, 3, 6), members=[b.members[0]])
    history = hourly_history(b, [0])
    result = run([b], old_on_n2, old_seen_partially, *history, unreachable=["n2"])
    for s in (old_on_n2, old_seen_partially):
        k = kept(result)[s.set_id]
        assert k.rule == "unreachable"
        assert k.reason == "cannot see all members: unreachable node(s) n2"
    assert deletes(result) == {}
    # with every node reachable both go
    assert set(deletes(run([b], old_on_n2, old_seen_partially, *history))) == {
        old_on_n2.set_id,
        old_seen_partially.set_id,
    }


# -- retention ----------------------------------------------------------------------------------


def test_retention_edit_applies_to_existing_sets() -> None:
    b = binding(hourly(retention=2 * D))
    old = snapset(b, "hourly", utc(2024, 6, 1, 10), expires=utc(2030, 1, 1))  # recorded expiry ignored
    history = hourly_history(b, [0, 1, 2])
    result = run([b], old, *history)
    d = deletes(result)[old.set_id]
    assert d.reason == "expired at 2024-06-03T10:00:00Z (retention 2d); 3 newer complete sets remain"
    assert d.delete_refs == (VolumeRef("n1", "pool0", "vms/vm1/disk0"),)
    # lengthen the retention and the same set is kept, though its recorded expiry has passed
    longer = binding(hourly(retention=3 * D))
    old_recorded_past = replace(old, expires=utc(2024, 6, 2))
    k = kept(run([longer], old_recorded_past, *history))[old.set_id]
    assert (k.rule, k.reason, k.expires) == (
        "retention",
        "within retention 3d of period hourly",
        utc(2024, 6, 4, 10),
    )


def test_min_snapshots_holds_expired_sets_with_a_held_reason() -> None:
    b = binding(daily(retention=D, min_snapshots=3))
    sets = [snapset(b, "daily", utc(2024, 6, 3) - n * D) for n in range(1, 6)]  # 1..5 days ago
    result = run([b], *sets)
    k = kept(result)
    assert k[sets[0].set_id].rule == "last_good"
    assert k[sets[1].set_id].rule == "min_snapshots"
    assert k[sets[1].set_id].reason == "held: expired 1d12h ago, kept for min_snapshots=3"
    assert k[sets[2].set_id].reason == "held: expired 2d12h ago, kept for min_snapshots=3"
    assert set(deletes(result)) == {sets[3].set_id, sets[4].set_id}
    assert deletes(result)[sets[3].set_id].reason.endswith("3 newer complete sets remain")


def test_min_snapshots_within_retention_is_reported_as_retention() -> None:
    b = binding(hourly(min_snapshots=3))
    result = run([b], *hourly_history(b, [0, 1]))
    assert {k.rule for k in result.kept} == {"last_good", "retention"}


def test_immutable_and_held_sets_are_never_deleted() -> None:
    b = binding(hourly(retention=H))
    old = utc(2024, 6, 1)
    locked = snapset(b, "hourly", old, immutable=ImmutableState.LOCKED)
    unlocking = snapset(b, "hourly", old + H, immutable=ImmutableState.UNLOCKING)
    unlocked = snapset(b, "hourly", old + 2 * H, immutable=ImmutableState.UNLOCKED)
    held = snapset(b, "hourly", old + 3 * H, holds=frozenset({"sync:offsite", "operator"}))
    result = run([b], locked, unlocking, unlocked, held, *hourly_history(b, [0]))
    k = kept(result)
    assert (k[locked.set_id].rule, k[locked.set_id].reason) == (
        "immutable",
        "immutable (locked): cannot be deleted until unlocked",
    )
    assert k[unlocking.set_id].reason == "immutable (unlocking): cannot be deleted until unlocked"
    assert (k[held.set_id].rule, k[held.set_id].reason) == ("hold", "held by operator, sync:offsite")
    assert set(deletes(result)) == {unlocked.set_id}


def test_last_good_copy_survives_every_retention_rule() -> None:
    b = binding(hourly(retention=H, min_snapshots=0))
    sets = hourly_history(b, [30, 40, 50])
    result = run([b], *sets)
    k = kept(result)[sets[0].set_id]
    assert (k.rule, k.reason) == (
        "last_good",
        "newest complete set of resource:vm1: the last good copy is never deleted",
    )
    assert set(deletes(result)) == {sets[1].set_id, sets[2].set_id}


def test_last_good_is_per_scope_across_periods_and_kinds() -> None:
    b = binding(hourly(retention=H, min_snapshots=0), daily(retention=H, min_snapshots=0))
    newest_daily = snapset(b, "daily", utc(2024, 6, 2))
    older_hourly = snapset(b, "hourly", utc(2024, 6, 1, 23))
    result = run([b], newest_daily, older_hourly)
    assert kept(result)[newest_daily.set_id].rule == "last_good"
    assert older_hourly.set_id in deletes(result)
    # a newer manual set takes the role
    manual = snapset(
        b, "x", utc(2024, 6, 2, 6), kind=SetKind.MANUAL, set_id="manual-1", expires=utc(2024, 6, 2, 7)
    )
    result = run([b], newest_daily, older_hourly, manual)
    assert kept(result)["manual-1"].rule == "last_good"
    assert newest_daily.set_id in deletes(result)


def test_manual_sets_keep_their_recorded_expiry() -> None:
    b = binding(hourly(retention=H))
    history = hourly_history(b, [0])
    future = snapset(b, "x", utc(2024, 5, 1), kind=SetKind.MANUAL, set_id="m-future", expires=utc(2024, 7, 1))
    forever = snapset(b, "x", utc(2024, 5, 1), kind=SetKind.MANUAL, set_id="m-forever")
    past = snapset(b, "x", utc(2024, 5, 1), kind=SetKind.MANUAL, set_id="m-past", expires=utc(2024, 6, 1))
    safety = snapset(b, "x", utc(2024, 5, 1), kind=SetKind.SAFETY, set_id="s-past", expires=utc(2024, 6, 1))
    result = run([b], future, forever, past, safety, *history)
    k = kept(result)
    assert (k["m-future"].rule, k["m-future"].reason) == (
        "manual",
        "manual set kept until 2024-07-01T00:00:00Z",
    )
    assert k["m-future"].expires == utc(2024, 7, 1)
    assert (k["m-forever"].rule, k["m-forever"].reason) == ("manual", "manual set never expires")
    assert (
        deletes(result)["m-past"].reason == "expired at 2024-06-01T00:00:00Z (recorded expiry of manual set)"
    )
    assert (
        deletes(result)["s-past"].reason == "expired at 2024-06-01T00:00:00Z (recorded expiry of safety set)"
    )


def test_orphaned_sets_expire_by_their_recorded_expiry() -> None:
    b = binding(hourly())
    gone = binding(daily(), name="vm1")  # the daily period was removed from the config
    history = hourly_history(b, [0])
    keep = snapset(gone, "daily", utc(2024, 5, 1), expires=utc(2024, 7, 1))
    drop = snapset(gone, "daily", utc(2024, 5, 2), expires=utc(2024, 6, 1))
    result = run([b], keep, drop, *history)
    k = kept(result)[keep.set_id]
    assert k.rule == "orphaned"
    assert k.reason == (
        "period daily of profile std is no longer configured for resource:vm1; "
        "kept until 2024-07-01T00:00:00Z (recorded expiry)"
    )
    assert deletes(result)[drop.set_id].reason == (
        "expired at 2024-06-01T00:00:00Z (recorded expiry of orphaned scheduled set)"
    )


def test_orphaned_scope_keeps_its_last_good_copy() -> None:
    removed = binding(daily(), name="old-vm")
    newest = snapset(removed, "daily", utc(2024, 5, 2), expires=utc(2024, 5, 3))
    older = snapset(removed, "daily", utc(2024, 5, 1), expires=utc(2024, 5, 2))
    result = run([binding()], newest, older)
    assert kept(result)[newest.set_id].rule == "last_good"
    assert older.set_id in deletes(result)


# -- next wakeup, order, determinism ------------------------------------------------------------


def test_next_wakeup_is_the_next_slot_or_an_earlier_expiry() -> None:
    b = binding(hourly(retention=2 * D, min_snapshots=0))
    history = hourly_history(b, [0, 1])
    assert run([b], *history).next_wakeup == utc(2024, 6, 3, 13)
    expiring = snapset(b, "hourly", utc(2024, 6, 1, 12, 30))  # expires 12:30 today
    assert run([b], *history, expiring).next_wakeup == utc(2024, 6, 3, 12, 30)
    manual = snapset(
        b, "x", utc(2024, 6, 1), kind=SetKind.MANUAL, set_id="m", expires=utc(2024, 6, 3, 12, 10)
    )
    assert run([b], *history, manual).next_wakeup == utc(2024, 6, 3, 12, 10)


def test_next_wakeup_none_when_nothing_is_scheduled() -> None:
    assert run([]).next_wakeup is None
    b = binding(Period("once", Frequency.CUSTOM, at=utc(2024, 1, 1), retention=None))
    assert run([b], snapset(b, "once", utc(2024, 1, 1))).next_wakeup is None


def test_output_is_sorted_and_deterministic() -> None:
    bs = [binding(hourly(retention=H, min_snapshots=0), daily(), name=f"vm{i}") for i in (3, 1, 2)]
    sets = [s for b in bs for s in hourly_history(b, [2, 3, 4])]
    first = run(bs, *sets)
    again = plan(DesiredState(tuple(bs)), observed(*reversed(sets)), NOW)
    assert first == again
    kinds = [a.kind for a in first.actions]
    assert kinds == sorted(kinds, key=lambda k: k is ActionKind.DELETE)
    assert [(a.scope, a.period) for a in creates(first)] == sorted(
        (a.scope, a.period) for a in creates(first)
    )
    del_ids = list(deletes(first))
    assert del_ids == sorted(del_ids) and len(del_ids) == 6
    assert [k.set_id for k in first.kept] == sorted(k.set_id for k in first.kept)


def test_every_observed_set_is_either_kept_or_deleted_once() -> None:
    b = binding(hourly(retention=3 * H, min_snapshots=2), daily())
    sets = hourly_history(b, range(0, 10)) + [
        snapset(b, "x", utc(2024, 5, 1), kind=SetKind.MANUAL, set_id="m")
    ]
    result = run([b], *sets)
    ids = [k.set_id for k in result.kept] + list(deletes(result))
    assert sorted(ids) == sorted(s.set_id for s in sets)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        plan(DesiredState(()), observed(), datetime(2024, 1, 1))


def test_duplicate_binding_warns() -> None:
    b = binding()
    result = run([b, b])
    assert len(creates(result)) == 1
    assert result.warnings == (
        "resource:vm1: profile std period hourly is bound twice; the first binding is used",
    )
