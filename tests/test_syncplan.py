"""The offsite sync planner: unit tests of its rules and hypothesis properties over random
histories on the source and on two targets (DESIGN.md: several targets never break each other,
an unreachable target never blocks local pruning, remote pruning keeps what must be kept)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.config import Config, WindowConfig, desired_state
from reconciler.domain import (
    ActionKind,
    ImmutableState,
    ObservedMember,
    ObservedState,
    SetKind,
    SnapshotInfo,
    SnapshotSet,
)
from reconciler.observed import partition
from reconciler.planner import plan
from reconciler.syncplan import (
    HoldChange,
    ManualRequest,
    SyncPlan,
    TargetView,
    TransferState,
    base_hold,
    plan_sync,
    sync_hold,
    syncback_hold,
    window_state,
    with_local_holds,
)

NOW = datetime(2026, 5, 6, 12, 0, tzinfo=UTC)  # a Wednesday
SCOPES = ("system:all", "resource:web")
NODES = ("n1", "n2")
SETTINGS = settings(max_examples=150, deadline=None)


def config(
    *,
    targets: dict[str, dict[str, Any]] | None = None,
    retention: str = "7d",
    min_snapshots: int = 1,
) -> Config:
    raw = {
        "version": 1,
        "nodes": {n: {"address": f"{n}:7000", "insecure": True} for n in NODES},
        "profiles": {
            "daily": {
                "periods": [
                    {
                        "name": "midnight",
                        "frequency": "daily",
                        "retention": retention,
                        "min_snapshots": min_snapshots,
                    },
                    {"name": "noon", "frequency": "daily", "hour": 12, "retention": "1d"},
                ]
            }
        },
        "offsite": {
            "targets": targets
            if targets is not None
            else {"dr": {"address": "dr:7000", "insecure": True, "items": [{"from": "daily/midnight"}]}}
        },
    }
    return Config.model_validate(raw)


def snap(
    node: str,
    set_id: str,
    scope: str,
    created: datetime,
    *,
    period: str = "midnight",
    volume: str = "vol",
    holds: frozenset[str] = frozenset(),
    immutable: ImmutableState = ImmutableState.NONE,
    origin: str = "",
    expires: datetime | None = None,
) -> ObservedMember:
    labels = {
        "scope": scope,
        "kind": "scheduled",
        "profile": "daily",
        "period": period,
        "slot": created.strftime("%Y%m%dT%H%M%SZ"),
        "expected_members": "1",
    }
    if origin:
        labels["origin_node"] = origin
    return ObservedMember(
        node,
        SnapshotInfo(
            set_id=set_id,
            name=set_id,
            pool="main",
            volume=volume,
            created=created,
            expires=expires,
            labels=labels,
            holds=holds,
            immutable=immutable,
        ),
    )


def one_set(m: ObservedMember, *, expected: int = 1) -> SnapshotSet:
    s = m.snapshot
    return SnapshotSet(
        set_id=s.set_id,
        name=s.name,
        scope=s.labels["scope"],
        kind=SetKind.SCHEDULED,
        created=s.created,
        expires=s.expires,
        members=(m,),
        expected_members=expected,
        profile="daily",
        period=s.labels["period"],
        slot=s.created,
    )


def observed(*sets: SnapshotSet) -> ObservedState:
    return ObservedState(sets={s.set_id: s for s in sets})


def day(n: int) -> datetime:
    return NOW.replace(hour=0) - timedelta(days=n)


def sid(n: int, scope: str = "system:all") -> str:
    return f"{scope.replace(':', '-')}.daily.midnight.{day(n):%Y%m%dT%H%M%SZ}"


def local_sets(days: list[int], scope: str = "system:all", **kw: Any) -> list[SnapshotSet]:
    return [one_set(snap("n1", sid(d, scope), scope, day(d), **kw)) for d in days]


def remote(name: str, sets: list[SnapshotSet], *, reachable: bool = True) -> TargetView:
    moved = []
    for s in sets:
        m = s.members[0]
        labels = {**m.snapshot.labels, "origin_node": m.node}
        moved.append(replace(s, members=(ObservedMember(name, replace(m.snapshot, labels=labels)),)))
    return TargetView(name, reachable, {s.set_id: s for s in moved})


# --- unit rules ------------------------------------------------------------------------------------
def test_sends_what_the_target_lacks_oldest_first_and_holds_the_newest_common_base() -> None:
    sets = local_sets([0, 1, 2, 3])
    p = plan_sync(config(), observed(*sets), {"dr": remote("dr", sets[2:])}, now=NOW, retain=plan)
    assert [t.set_id for t in p.transfers] == [sid(1), sid(0)]
    t = p.transfers[0]
    assert t.expires == day(1) + timedelta(days=7) and t.members[0].node == "n1"
    holds = {(h.target, h.set_id): h for h in p.holds}
    assert holds[("", sid(2))].add == {base_hold("dr")}
    assert holds[("dr", sid(2))].add == {base_hold("dr")}
    assert p.targets[0].bases == {"system:all": sid(2)}
    assert p.targets[0].lag_seconds == (NOW - day(2)).total_seconds()


def test_sets_the_target_would_prune_at_once_are_not_sent() -> None:
    cfg = config(
        targets={
            "dr": {
                "address": "dr:7000",
                "insecure": True,
                "items": [{"from": "daily/midnight", "retention": "2d"}],
            }
        }
    )
    sets = local_sets([0, 1, 2, 5])
    p = plan_sync(cfg, observed(*sets), {"dr": remote("dr", [])}, now=NOW)
    assert [t.set_id for t in p.transfers] == [sid(1), sid(0)]


def test_priority_orders_items_and_hold_until_synced_holds_locally() -> None:
    cfg = config(
        targets={
            "dr": {
                "address": "dr:7000",
                "insecure": True,
                "items": [
                    {"from": "daily/midnight", "priority": 5, "hold_until_synced": True},
                    {"from": "daily/noon", "priority": 1},
                ],
            }
        }
    )
    noon = one_set(snap("n1", "noon-1", "system:all", NOW - timedelta(hours=1), period="noon"))
    sets = [*local_sets([0]), noon]
    p = plan_sync(cfg, observed(*sets), {"dr": remote("dr", [])}, now=NOW)
    assert [t.set_id for t in p.transfers] == ["noon-1", sid(0)]
    holds = {(h.target, h.set_id): h for h in p.holds}
    assert holds[("", sid(0))].add == {sync_hold("dr")}
    assert ("", "noon-1") not in holds
    # once the target has it, the hold goes
    held = local_sets([0], holds=frozenset({sync_hold("dr")}))
    p = plan_sync(cfg, observed(*held), {"dr": remote("dr", held)}, now=NOW)
    assert {(h.set_id, tuple(h.remove)) for h in p.holds if h.target == ""} >= {(sid(0), (sync_hold("dr"),))}


def test_a_read_only_plan_counts_the_holds_sync_would_add_first() -> None:
    """`reconciler plan` does not apply holds: it plans over the view with them, and gets what a
    pass gets after applying them on the agents (a set held until synced is not deleted)."""
    raw = config(
        retention="1d",
        targets={
            "dr": {
                "address": "dr:7000",
                "insecure": True,
                "items": [{"from": "daily/midnight", "retention": "7d", "hold_until_synced": True}],
            }
        },
    ).model_dump(by_alias=True, exclude_unset=True)
    cfg = Config.model_validate({**raw, "system_snapshots": {"all": {"type": "full", "profile": "daily"}}})
    desired = desired_state(cfg)
    local = observed(*local_sets([0, 1, 2, 3]))
    deletes = [a.set_id for a in plan(desired, local, NOW).actions if a.kind == ActionKind.DELETE]
    assert sorted(deletes) == sorted([sid(1), sid(2), sid(3)])  # past the local retention of 1 day

    p = plan_sync(cfg, local, {"dr": remote("dr", [])}, now=NOW, retain=plan)
    viewed = plan(desired, with_local_holds(local, p.holds), NOW)
    assert [a for a in viewed.actions if a.kind == ActionKind.DELETE] == []
    applied = observed(*local_sets([0, 1, 2, 3], holds=frozenset({sync_hold("dr")})))
    assert viewed == plan(desired, applied, NOW)
    # holds on the target's copies are not the local view's business
    remote_only = [h for h in p.holds if h.target]
    assert with_local_holds(local, remote_only) is local


def test_an_unreachable_target_keeps_its_holds_and_adds_none() -> None:
    sets = local_sets([0, 1, 2])
    sets[1] = local_sets([1], holds=frozenset({base_hold("dr")}))[0]
    p = plan_sync(
        config(), observed(*sets), {"dr": remote("dr", sets, reachable=False)}, now=NOW, retain=plan
    )
    assert p.holds == () and p.transfers == () and p.deletes == ()
    assert all("unreachable" in w.reason for w in p.waiting)
    assert p.targets[0].lag_seconds is None


def test_holds_of_removed_targets_are_released() -> None:
    sets = local_sets([0], holds=frozenset({base_hold("old"), sync_hold("old"), base_hold("dr")}))
    p = plan_sync(config(), observed(*sets), {"dr": remote("dr", sets)}, now=NOW)
    (h,) = [h for h in p.holds if h.target == ""]
    assert h.remove == {base_hold("old"), sync_hold("old")} and h.add == frozenset()


def test_retries_back_off_then_give_up_until_queued_by_hand() -> None:
    cfg = config(
        targets={
            "dr": {
                "address": "dr:7000",
                "insecure": True,
                "items": [{"from": "daily/midnight"}],
                "retry": {"count": 2, "interval": "1m", "multiplier": 3.0},
            }
        }
    )
    sets = local_sets([0])
    key = ("dr", sid(0))
    view = {"dr": remote("dr", [])}
    failed = TransferState(attempts=2, last_attempt=NOW - timedelta(minutes=2), last_error="boom")
    p = plan_sync(cfg, observed(*sets), view, now=NOW, transfers={key: failed})
    assert p.transfers == () and p.waiting[0].until == NOW + timedelta(minutes=1)  # 1m x 3^1 after the last
    p = plan_sync(cfg, observed(*sets), view, now=NOW + timedelta(minutes=2), transfers={key: failed})
    assert [t.set_id for t in p.transfers] == [sid(0)]
    exhausted = replace(failed, attempts=3)
    p = plan_sync(cfg, observed(*sets), view, now=NOW + timedelta(days=1), transfers={key: exhausted})
    assert p.transfers == () and "gave up after 3 attempts" in p.waiting[0].reason
    manual = [ManualRequest("dr", sid(0), NOW)]
    p = plan_sync(
        cfg, observed(*sets), view, now=NOW + timedelta(days=1), transfers={key: exhausted}, manual=manual
    )
    assert [(t.set_id, t.manual) for t in p.transfers] == [(sid(0), True)]


def test_windows_gate_sending_and_a_throttle_window_sets_the_limit() -> None:
    night = WindowConfig(start=time(22, 0), end=time(6, 0))
    throttled = WindowConfig.model_validate(
        {"days": ["wed"], "start": "11:00", "end": "13:00", "throttle_bps": 1000}
    )
    assert window_state([night], NOW) == (False, None, None, NOW.replace(hour=22))
    assert window_state([night], NOW.replace(hour=23)) == (
        True,
        None,
        (NOW + timedelta(days=1)).replace(hour=6),
        NOW.replace(hour=22) + timedelta(days=1),
    )
    assert window_state([night, throttled], NOW)[:3] == (True, 1000, NOW.replace(hour=13))
    assert window_state([throttled], NOW + timedelta(days=1))[0] is False  # thursday
    cfg = config(
        targets={
            "dr": {
                "address": "dr:7000",
                "insecure": True,
                "throttle_bps": 5,
                "items": [{"from": "daily/midnight"}],
                "windows": [
                    {"start": "22:00", "end": "06:00"},
                    {"days": ["wed"], "start": "11:00", "end": "13:00", "throttle_bps": 1000},
                ],
            }
        }
    )
    sets = local_sets([0])
    view = {"dr": remote("dr", [])}
    p = plan_sync(cfg, observed(*sets), view, now=NOW)
    assert p.transfers[0].throttle_bps == 1000 and p.transfers[0].window_end == NOW.replace(hour=13)
    later = NOW.replace(hour=15)
    p = plan_sync(cfg, observed(*sets), view, now=later)
    assert (
        p.transfers == ()
        and p.waiting[0].until == NOW.replace(hour=22)
        and p.next_wakeup == NOW.replace(hour=22)
    )
    p = plan_sync(
        cfg,
        observed(*sets),
        view,
        now=later,
        manual=[ManualRequest("dr", sid(0), later, ignore_windows=True)],
    )
    assert p.transfers[0].throttle_bps == 5 and p.transfers[0].window_end is None


def test_remote_retention_uses_the_remote_period_and_keeps_the_base() -> None:
    cfg = config(
        targets={
            "dr": {
                "address": "dr:7000",
                "insecure": True,
                "items": [{"from": "daily/midnight", "retention": "3d", "min_snapshots": 1}],
            }
        }
    )
    local = local_sets([0, 1])
    there = remote("dr", local_sets([0, 1, 4, 5, 6]))
    p = plan_sync(cfg, observed(*local), {"dr": there}, now=NOW, retain=plan)
    assert sorted(d.set_id for d in p.deletes) == sorted([sid(4), sid(5), sid(6)])
    assert all(d.refs[0].node == "dr" for d in p.deletes)
    # the newest common set is held on the target (and so never pruned there)
    assert any(h.target == "dr" and h.set_id == sid(0) and base_hold("dr") in h.add for h in p.holds)


def test_foreign_sets_on_the_target_are_left_alone() -> None:
    # one set id on the target, three owners: our copy (n1 sent it), another site's copy, and the
    # target site's own set (set ids come from the scope and slot, so sites share them)
    (ours,) = remote("dr", local_sets([30])).sets.values()
    snap = ours.members[0].snapshot
    unlabeled = {k: v for k, v in snap.labels.items() if k != "origin_node"}
    members = [
        ("dr", snap),
        ("dr", replace(snap, volume="vms/theirs", labels={**snap.labels, "origin_node": "elsewhere"})),
        ("dr", replace(snap, volume="vms/own", labels=unlabeled)),
    ]
    sets, foreign = partition(members, {"n1"}, unlabeled_here=False)
    assert [m.snapshot.volume for m in sets[ours.set_id].members] == [snap.volume]
    assert list(foreign) == [f"{ours.set_id}@dr+elsewhere"]
    view = TargetView("dr", True, sets, foreign=len(foreign))
    p = plan_sync(config(), observed(), {"dr": view}, now=NOW, retain=plan)
    assert p.deletes == () and any("1 set(s) from other sites" in n for n in p.notes) and not p.warnings


def test_site_names_tell_copies_apart_where_node_names_repeat() -> None:
    # site west's node n1 holds its own snapshot, a copy from site east's node n1, a copy from
    # site south's node n1, and its own set come back from a target (sync back), all under one id
    (own,) = remote("dr", local_sets([30])).sets.values()
    snap = own.members[0].snapshot
    local = replace(snap, labels={k: v for k, v in snap.labels.items() if k != "origin_node"})

    def copy(site: str, volume: str) -> SnapshotInfo:
        return replace(snap, volume=volume, labels={**snap.labels, "origin_node": "n1", "origin_site": site})

    members = [
        ("n1", local),
        ("n1", copy("east", "vms/e")),
        ("n1", copy("south", "vms/s")),
        ("n1", copy("west", "vms/back")),
    ]
    sets, foreign = partition(members, {"n1"}, our_site="west")
    assert [m.snapshot.volume for m in sets[own.set_id].members] == ["vms/back", snap.volume]
    assert sorted(foreign) == [f"{own.set_id}@east", f"{own.set_id}@south"]
    assert [m.snapshot.volume for m in foreign[f"{own.set_id}@east"].members] == ["vms/e"]
    assert foreign[f"{own.set_id}@east"].received_as == f"{own.set_id}@east"

    # a site without a name: a copy from a named site is never its own, whatever the node
    sets, foreign = partition(members, {"n1"})
    assert [m.snapshot.volume for m in sets[own.set_id].members] == [snap.volume]
    assert sorted(foreign) == [f"{own.set_id}@{s}" for s in ("east", "south", "west")]

    # east, looking at a target that holds all four: its copy is the one that names it
    sets, foreign = partition(members, {"n1"}, our_site="east", unlabeled_here=False)
    assert [m.snapshot.volume for m in sets[own.set_id].members] == ["vms/e"]
    assert sorted(foreign) == [f"{own.set_id}@n1", f"{own.set_id}@south", f"{own.set_id}@west"]


def test_a_target_named_like_one_of_our_nodes_asks_for_site_names() -> None:
    def warned(cfg: Config, agent_node: str) -> list[str]:
        view = replace(remote("dr", []), agent_node=agent_node)
        p = plan_sync(cfg, observed(), {"dr": view}, now=NOW, retain=plan)
        return [w for w in p.warnings if "site name" in w]

    (w,) = warned(config(), "n1")
    assert w.startswith("dr: its agent is named n1, like our node n1;") and "site:" in w
    assert warned(config(), "dr1") == []  # names differ
    named = config().model_copy(update={"site": "east"})
    assert warned(named, "n1") == []  # our copies carry our site's name
    same = config(targets={"dr": {"address": "n1:7000", "insecure": True, "items": []}})
    assert warned(same, "n1") == []  # the target is our node n1 itself


def test_syncback_holds_expire() -> None:
    sets = local_sets([0], holds=frozenset({syncback_hold(NOW - timedelta(minutes=1))}))
    p = plan_sync(config(targets={}), observed(*sets), {}, now=NOW)
    assert [h.remove for h in p.holds] == [{syncback_hold(NOW - timedelta(minutes=1))}]
    sets = local_sets([0], holds=frozenset({syncback_hold(NOW + timedelta(days=2))}))
    p = plan_sync(config(targets={}), observed(*sets), {}, now=NOW)
    assert p.holds == () and p.next_wakeup == NOW + timedelta(days=2)


# --- properties ------------------------------------------------------------------------------------
@st.composite
def worlds(draw: st.DrawFn) -> tuple[Config, ObservedState, dict[str, TargetView]]:
    targets: dict[str, dict[str, Any]] = {}
    for name in ("dr1", "dr2"):
        items = []
        if draw(st.booleans()):
            items.append(
                {
                    "from": "daily/midnight",
                    "priority": draw(st.integers(0, 9)),
                    "hold_until_synced": draw(st.booleans()),
                    "min_snapshots": draw(st.integers(1, 3)),
                    **(
                        {"retention": draw(st.sampled_from(["2d", "5d", "forever"]))}
                        if draw(st.booleans())
                        else {}
                    ),
                }
            )
        if draw(st.booleans()):
            items.append({"from": "daily/noon", "priority": draw(st.integers(0, 9))})
        targets[name] = {"address": f"{name}:7000", "insecure": True, "items": items}
    cfg = config(
        targets=targets, retention=draw(st.sampled_from(["3d", "7d"])), min_snapshots=draw(st.integers(1, 3))
    )
    local: list[SnapshotSet] = []
    remote_sets: dict[str, list[SnapshotSet]] = {"dr1": [], "dr2": []}
    for scope in SCOPES:
        for d in draw(st.lists(st.integers(0, 9), unique=True, max_size=7)):
            for period in ("midnight", "noon"):
                if period == "noon" and not draw(st.booleans()):
                    continue
                created = day(d) + (timedelta(hours=12) if period == "noon" else timedelta(0))
                if created > NOW:
                    continue
                holds = draw(
                    st.frozensets(
                        st.sampled_from(
                            [
                                base_hold("dr1"),
                                base_hold("dr2"),
                                sync_hold("dr1"),
                                base_hold("gone"),
                                "operator",
                            ]
                        ),
                        max_size=2,
                    )
                )
                set_id = f"{scope.replace(':', '-')}.daily.{period}.{created:%Y%m%dT%H%M%SZ}"
                m = snap(draw(st.sampled_from(NODES)), set_id, scope, created, period=period, holds=holds)
                s = one_set(m)
                if draw(st.integers(0, 9)) == 0:
                    s = replace(s, expected_members=2)  # partial locally
                local.append(s)
                for name in ("dr1", "dr2"):
                    if draw(st.booleans()):
                        rholds = draw(
                            st.frozensets(st.sampled_from([base_hold(name), "operator"]), max_size=1)
                        )
                        rimm = draw(st.sampled_from([ImmutableState.NONE] * 5 + [ImmutableState.LOCKED]))
                        rm = replace(
                            m.snapshot,
                            holds=rholds,
                            immutable=rimm,
                            labels={**m.snapshot.labels, "origin_node": m.node},
                        )
                        remote_sets[name].append(
                            replace(s, expected_members=1, members=(ObservedMember(name, rm),))
                        )
    views = {
        name: TargetView(name, draw(st.booleans()), {s.set_id: s for s in sets})
        for name, sets in remote_sets.items()
    }
    return cfg, observed(*local), views


def _apply_holds(sets: dict[str, SnapshotSet], changes: list[HoldChange]) -> dict[str, SnapshotSet]:
    out = dict(sets)
    for h in changes:
        s = out.get(h.set_id)
        if s is None:
            continue
        out[h.set_id] = replace(
            s,
            members=tuple(
                replace(m, snapshot=replace(m.snapshot, holds=(m.snapshot.holds | h.add) - h.remove))
                for m in s.members
            ),
        )
    return out


def _newest_common(local: ObservedState, view: TargetView, scope: str) -> str | None:
    common = [
        s
        for s in local.sets.values()
        if s.scope == scope and s.complete and s.set_id in view.sets and view.sets[s.set_id].complete
    ]
    return max(common, key=lambda s: (s.created, s.set_id)).set_id if common else None


@SETTINGS
@given(worlds())
def test_planning_is_deterministic(world: tuple[Config, ObservedState, dict[str, TargetView]]) -> None:
    cfg, local, views = world
    a = plan_sync(cfg, local, views, now=NOW, retain=plan)
    b = plan_sync(cfg, local, views, now=NOW, retain=plan)
    assert a == b


@SETTINGS
@given(worlds())
def test_transfers_only_send_complete_sets_the_target_lacks_in_priority_order(
    world: tuple[Config, ObservedState, dict[str, TargetView]],
) -> None:
    cfg, local, views = world
    p = plan_sync(cfg, local, views, now=NOW, retain=plan)
    for t in p.transfers:
        s = local.sets[t.set_id]
        view = views[t.target]
        assert s.complete and view.reachable
        assert t.set_id not in view.sets or not view.sets[t.set_id].complete
        assert t.expires is None or t.expires > NOW
    for name in views:
        order = [(t.priority, t.created) for t in p.transfers if t.target == name]
        assert order == sorted(order)


@SETTINGS
@given(worlds())
def test_each_reachable_target_holds_its_own_newest_common_base_on_both_sides(
    world: tuple[Config, ObservedState, dict[str, TargetView]],
) -> None:
    cfg, local, views = world
    p = plan_sync(cfg, local, views, now=NOW, retain=plan)
    after = _apply_holds(dict(local.sets), [h for h in p.holds if h.target == ""])
    for name, view in views.items():
        remote_after = _apply_holds(dict(view.sets), [h for h in p.holds if h.target == name])
        if not view.reachable:
            # nothing known: its holds stay as they were, and it holds nothing new
            for set_id, s in after.items():
                before = local.sets[set_id]
                assert (base_hold(name) in s.holds) == (base_hold(name) in before.holds)
            continue
        for scope in SCOPES:
            base = _newest_common(local, view, scope) if cfg.offsite.targets[name].items else None
            held_local = {
                sid_ for sid_, s in after.items() if s.scope == scope and base_hold(name) in s.holds
            }
            held_remote = {
                sid_ for sid_, s in remote_after.items() if s.scope == scope and base_hold(name) in s.holds
            }
            assert held_local == ({base} if base else set())
            assert held_remote == ({base} if base else set())
        # another target's holds are never touched by this one
        other = "dr2" if name == "dr1" else "dr1"
        if not views[other].reachable:
            for set_id, s in after.items():
                assert (base_hold(other) in s.holds) == (base_hold(other) in local.sets[set_id].holds)


@SETTINGS
@given(worlds())
def test_holds_never_grow_for_an_unreachable_target_without_hold_until_synced(
    world: tuple[Config, ObservedState, dict[str, TargetView]],
) -> None:
    cfg, local, views = world
    p = plan_sync(cfg, local, views, now=NOW, retain=plan)
    for name, view in views.items():
        if view.reachable:
            continue
        hus = any(i.hold_until_synced for i in cfg.offsite.targets[name].items)
        added = {hold for h in p.holds if h.target == "" for hold in h.add if hold.endswith(":" + name)}
        assert added <= ({sync_hold(name)} if hus else set())
        # and nothing is planned against it
        assert not [t for t in p.transfers if t.target == name] and not [
            d for d in p.deletes if d.target == name
        ]


@SETTINGS
@given(worlds())
def test_remote_pruning_never_deletes_held_locked_base_or_last_good_sets(
    world: tuple[Config, ObservedState, dict[str, TargetView]],
) -> None:
    cfg, local, views = world
    p = plan_sync(cfg, local, views, now=NOW, retain=plan)
    for d in p.deletes:
        view = views[d.target]
        s = view.sets[d.set_id]
        assert view.reachable
        assert not s.holds and s.immutable is ImmutableState.NONE
        assert d.set_id != _newest_common(local, view, s.scope)
        newest = max(
            (x for x in view.sets.values() if x.scope == s.scope and x.complete),
            key=lambda x: (x.created, x.set_id),
        )
        assert d.set_id != newest.set_id  # the last good copy on the target stays
        assert {m.node for m in s.members} == {d.target}


@SETTINGS
@given(worlds())
def test_after_the_transfers_arrive_nothing_is_sent_again(
    world: tuple[Config, ObservedState, dict[str, TargetView]],
) -> None:
    cfg, local, views = world
    p = plan_sync(cfg, local, views, now=NOW, retain=plan)
    arrived: dict[str, TargetView] = {}
    for name, view in views.items():
        sets = dict(view.sets)
        for t in p.transfers:
            if t.target == name:
                s = local.sets[t.set_id]
                sets[t.set_id] = replace(
                    s, members=tuple(ObservedMember(name, m.snapshot) for m in s.members)
                )
        arrived[name] = replace(view, sets=sets)
    again = plan_sync(cfg, local, arrived, now=NOW, retain=plan)
    sent = {(t.target, t.set_id) for t in p.transfers}
    assert not sent & {(t.target, t.set_id) for t in again.transfers}


def test_plan_type() -> None:
    p = plan_sync(config(), observed(), {}, now=NOW)
    assert isinstance(p, SyncPlan) and p.targets[0].reachable is False
