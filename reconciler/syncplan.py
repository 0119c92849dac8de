"""Offsite sync decisions: a pure function of config, what exists locally and on each target, the
transfer history and `now` (no I/O, no clock, no grpc; the daemon's sync manager executes the plan).

Per target and sync item (`from: profile/period`):
- which complete local sets still need sending: not complete on the target yet, and not already
  expired by the remote retention (sending them would only have them pruned there). Lower priority
  first, then oldest first (so each transfer can use the previous one as its incremental parent);
  sets queued by hand go with them.
- when: inside a sync window (no windows: always; a window with throttle_bps applies that limit),
  the target reachable, and the retry policy's next attempt due (interval x multiplier^(n-1);
  after `count` retries the set waits for a config change or a manual request).
- holds: per target and scope, the newest set complete on both sides is the target's base and is
  held (`base:<target>`) on both sides while the target has sync items; `hold_until_synced` holds a
  local set (`sync:<target>`) until the target has it. Holds of targets that are gone from the
  config are released. An unreachable target keeps the holds it has (nothing is known about it)
  and never holds anything else: local pruning of every other set goes on.
- remote retention on the target: the planner's own rules (immutable, hold, last good copy,
  min_snapshots, retention, ...) over the target's sets, with the remote retention and remote
  minimum of each item; sets of periods that are not (or no longer) synced expire by the expiry
  recorded when they were sent. Sets another site sent there (origin node not ours) are left alone.
- sync back: a set on the target copied back to its origin or another node carries a hold
  `syncback-until:<time>` so local retention does not delete it before it is restored; released here.

The planner itself is passed in (`retain`), so this module imports only domain and config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta

from .config import Config, SyncItemConfig, TargetConfig, WindowConfig, profile_to_domain
from .domain import (
    DesiredState,
    Keep,
    ObservedState,
    Plan,
    Profile,
    Scope,
    ScopeBinding,
    SetKind,
    SnapshotSet,
    VolumeRef,
)

__all__ = [
    "BASE_HOLD",
    "SYNC_HOLD",
    "SYNCBACK_HOLD",
    "KEPT_HERE_HOLD",
    "SENDING_NOW",
    "HoldChange",
    "ManualRequest",
    "RemoteDelete",
    "SyncPlan",
    "TargetState",
    "TargetView",
    "Transfer",
    "TransferState",
    "Waiting",
    "base_hold",
    "plan_sync",
    "retry_at",
    "sync_hold",
    "syncback_hold",
    "kept_here_hold",
    "kept_here_until",
    "window_state",
    "with_local_holds",
]

BASE_HOLD = "base:"
SYNC_HOLD = "sync:"
SYNCBACK_HOLD = "syncback-until:"
# on a copy received from another site: this site keeps it (until a time, or for good), whatever
# the sending site's remote retention says (its planner keeps held sets)
KEPT_HERE_HOLD = "kept-here"
SENDING_NOW = "sending now"  # the reason of a Waiting entry whose transfer is running
_HOLD_TIME = "%Y%m%dT%H%M%SZ"
MAX_RETRY_DELAY = timedelta(days=1)

Retain = Callable[[DesiredState, ObservedState, datetime], Plan]


def base_hold(target: str) -> str:
    return BASE_HOLD + target


def sync_hold(target: str) -> str:
    return SYNC_HOLD + target


def syncback_hold(until: datetime) -> str:
    return SYNCBACK_HOLD + until.astimezone(UTC).strftime(_HOLD_TIME)


def kept_here_hold(until: datetime | None) -> str:
    """The hold a site puts on a copy it received to keep it until `until` (None: for good)."""
    if until is None:
        return KEPT_HERE_HOLD
    return f"{KEPT_HERE_HOLD}-until:{until.astimezone(UTC).strftime(_HOLD_TIME)}"


def kept_here_until(hold: str) -> tuple[bool, datetime | None]:
    """(is a kept-here hold, until when: None for good or when unreadable)."""
    if hold == KEPT_HERE_HOLD:
        return True, None
    prefix = f"{KEPT_HERE_HOLD}-until:"
    if not hold.startswith(prefix):
        return False, None
    try:
        return True, datetime.strptime(hold[len(prefix) :], _HOLD_TIME).replace(tzinfo=UTC)
    except ValueError:
        return True, None


def _syncback_until(hold: str) -> datetime | None:
    try:
        return datetime.strptime(hold[len(SYNCBACK_HOLD) :], _HOLD_TIME).replace(tzinfo=UTC)
    except ValueError:
        return None


# --- inputs ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TargetView:
    """What the daemon saw on a target agent this pass (members' node = the target's name)."""

    name: str
    reachable: bool
    sets: Mapping[str, SnapshotSet] = field(default_factory=dict)  # ours: what our nodes sent
    error: str = ""
    foreign: int = 0  # sets there that are not ours (the target site's own, other sites' copies)
    agent_node: str = ""  # the node name the target's agent answers to


@dataclass(frozen=True, slots=True)
class TransferState:
    """Failures of one (target, set) transfer so far (the daemon keeps them in its state directory)."""

    attempts: int = 0
    last_attempt: datetime | None = None
    last_error: str = ""
    permanent: bool = False  # an error retrying cannot fix (refused, not found): waits for a change


@dataclass(frozen=True, slots=True)
class ManualRequest:
    """`reconciler sync SET --target T`: send this set now, whatever the items say."""

    target: str
    set_id: str
    queued_at: datetime
    ignore_windows: bool = False


# --- outputs --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Transfer:
    target: str
    set_id: str
    scope: str
    created: datetime
    priority: int
    reason: str
    members: tuple[VolumeRef, ...]  # the local members to send
    expires: datetime | None  # on the target (None with never_expire)
    never_expire: bool
    name_prefix: str
    throttle_bps: int
    compression: bool
    streams: int
    window_end: datetime | None  # stop there (the next window resumes it)
    manual: bool = False


@dataclass(frozen=True, slots=True)
class Waiting:
    target: str
    set_id: str
    reason: str
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class HoldChange:
    """Add/remove holds on a set's members: on local nodes (`target` "") or on a target."""

    target: str
    set_id: str
    refs: tuple[VolumeRef, ...]
    add: frozenset[str]
    remove: frozenset[str]
    reason: str


@dataclass(frozen=True, slots=True)
class RemoteDelete:
    target: str
    set_id: str
    refs: tuple[VolumeRef, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class TargetState:
    target: str
    reachable: bool
    window_open: bool
    throttle_bps: int
    pending: int  # sets that need sending
    lag_seconds: float | None  # 0: nothing pending; None: unknown (unreachable, never synced)
    newest_on_target: datetime | None
    next_window: datetime | None
    bases: Mapping[str, str] = field(default_factory=dict)  # scope -> base set id


@dataclass(frozen=True, slots=True)
class SyncPlan:
    now: datetime
    transfers: tuple[Transfer, ...]
    waiting: tuple[Waiting, ...]
    holds: tuple[HoldChange, ...]
    deletes: tuple[RemoteDelete, ...]
    kept: tuple[Keep, ...]  # remote retention decisions (scope prefixed with "<target>:")
    targets: tuple[TargetState, ...]
    next_wakeup: datetime | None
    warnings: tuple[str, ...] = ()  # something the operator should fix (status shows it, logged once)
    notes: tuple[str, ...] = ()  # for information only (plan shows them)


# --- windows and retries ----------------------------------------------------------------------------
def _at(d: date, t: time) -> datetime:
    return datetime.combine(d, t, tzinfo=UTC)


def _instances(w: WindowConfig, d: date) -> tuple[datetime, datetime] | None:
    if w.days and d.weekday() not in w.days:
        return None
    start = _at(d, w.start)
    end = _at(d, w.end) if w.end > w.start else _at(d + timedelta(days=1), w.end)
    return start, end


def window_state(
    windows: Sequence[WindowConfig], now: datetime
) -> tuple[bool, int | None, datetime | None, datetime | None]:
    """(open, throttle of the window or None for the target's own, when it closes, when the next
    one opens). Times are UTC; a window whose end is not after its start runs past midnight (the
    days name the day it starts). No windows: always open."""
    if not windows:
        return True, None, None, None
    now = now.astimezone(UTC)
    today = now.date()
    throttle: int | None = None
    is_open = False
    end: datetime | None = None
    for w in windows:
        for d in (today - timedelta(days=1), today):
            inst = _instances(w, d)
            if inst is not None and inst[0] <= now < inst[1]:
                if not is_open:
                    throttle = w.throttle_bps or None  # the first window that matches decides
                is_open = True
                end = inst[1] if end is None else max(end, inst[1])
    nxt: datetime | None = None
    for w in windows:
        for i in range(0, 9):
            inst = _instances(w, today + timedelta(days=i))
            if inst is not None and inst[0] > now:
                nxt = inst[0] if nxt is None else min(nxt, inst[0])
                break
    return is_open, throttle, end, nxt


def retry_at(state: TransferState, target: TargetConfig) -> datetime | None:
    """When the next attempt is due (None: now, or never again when retries ran out: see gave_up)."""
    if state.attempts == 0 or state.last_attempt is None:
        return None
    delay = target.retry.interval * (target.retry.multiplier ** (state.attempts - 1))
    return state.last_attempt + min(delay, MAX_RETRY_DELAY)


def _gave_up(state: TransferState, target: TargetConfig) -> bool:
    return state.permanent or state.attempts > target.retry.count


# --- the plan --------------------------------------------------------------------------------------
@dataclass
class _Candidate:
    s: SnapshotSet
    item: SyncItemConfig | None
    manual: ManualRequest | None
    expires: datetime | None


class _Planner:
    def __init__(
        self,
        config: Config,
        local: ObservedState,
        remote: Mapping[str, TargetView],
        transfers: Mapping[tuple[str, str], TransferState],
        manual: Sequence[ManualRequest],
        running: frozenset[tuple[str, str]],
        now: datetime,
        retain: Retain | None,
    ) -> None:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        self.config = config
        self.local = local
        self.remote = remote
        self.history = transfers
        self.manual = manual
        self.running = running
        self.now = now.astimezone(UTC)
        self.retain = retain
        self.transfers: list[Transfer] = []
        self.waiting: list[Waiting] = []
        # (target, set key) -> (set id, refs, holds to add, to remove, reasons)
        self.holds: dict[
            tuple[str, str], tuple[str, tuple[VolumeRef, ...], set[str], set[str], list[str]]
        ] = {}
        self.deletes: list[RemoteDelete] = []
        self.kept: list[Keep] = []
        self.targets: list[TargetState] = []
        self.warnings: list[str] = []
        self.notes: list[str] = []
        self.wakeup: datetime | None = None

    def wake(self, at: datetime | None) -> None:
        if at is not None and at > self.now and (self.wakeup is None or at < self.wakeup):
            self.wakeup = at

    def hold(self, target: str, s: SnapshotSet, *, add: str = "", remove: str = "", reason: str) -> None:
        """Queue a hold change, only when it changes something (the members' holds say)."""
        refs = tuple(m.ref for m in s.members)
        members_with = [m for m in s.members if (add and add not in m.snapshot.holds)]
        members_without = [m for m in s.members if (remove and remove in m.snapshot.holds)]
        if not members_with and not members_without:
            return
        # keyed by s.key: a copy from another site may share its set id with one of our sets
        _sid, _refs, adds, removes, why = self.holds.setdefault(
            (target, s.key), (s.set_id, refs, set(), set(), [])
        )
        if add and members_with:
            adds.add(add)
        if remove and members_without:
            removes.add(remove)
        why.append(reason)

    # -- local retention periods --
    def local_retention(self, profile: str, period: str) -> tuple[bool, timedelta | None]:
        prof = self.config.profiles.get(profile)
        if prof is None:
            return False, None
        for p in prof.periods:
            if p.name == period:
                return True, p.retention
        return False, None

    def run(self) -> SyncPlan:
        targets = self.config.offsite.targets
        complete_local = [s for s in self.local.sets.values() if s.complete]
        for name, target in sorted(targets.items()):
            self.plan_target(name, target, complete_local)
        self.release_unknown(set(targets))
        self.release_syncback()
        self.release_kept_here()
        self.transfers.sort(key=lambda t: (t.target, t.priority, t.created, t.set_id))
        holds = tuple(
            HoldChange(
                target,
                set_id,
                refs,
                frozenset(add - remove),
                frozenset(remove - add),
                "; ".join(dict.fromkeys(why)),
            )
            for (target, _key), (set_id, refs, add, remove, why) in sorted(self.holds.items())
            if add - remove or remove - add
        )
        return SyncPlan(
            now=self.now,
            transfers=tuple(self.transfers),
            waiting=tuple(self.waiting),
            holds=holds,
            deletes=tuple(sorted(self.deletes, key=lambda d: (d.target, d.set_id))),
            kept=tuple(self.kept),
            targets=tuple(self.targets),
            next_wakeup=self.wakeup,
            warnings=tuple(dict.fromkeys(self.warnings)),
            notes=tuple(dict.fromkeys(self.notes)),
        )

    # -- one target --
    def plan_target(self, name: str, target: TargetConfig, complete_local: list[SnapshotSet]) -> None:
        view = self.remote.get(name, TargetView(name, False, error="not observed yet"))
        node = self.config.nodes.get(view.agent_node)
        if not self.config.site and node is not None and node.address != target.address:
            # copies carry only the sending node's name: the site there cannot tell them apart
            self.warnings.append(
                f"{name}: its agent is named {view.agent_node}, like our node {view.agent_node}; "
                "without a site name the site there can take our copies for its own sets: "
                "give each site a name (site: at the top of its config)"
            )
        items = {(i.profile, i.period): i for i in target.items}
        is_open, throttle, window_end, next_window = window_state(target.windows, self.now)
        throttle_bps = throttle if throttle is not None else target.throttle_bps
        if not is_open:
            self.wake(next_window)
        else:
            self.wake(window_end)

        # what should be on the target
        candidates: dict[str, _Candidate] = {}
        for s in complete_local:
            if s.kind is not SetKind.SCHEDULED:
                continue
            item = items.get((s.profile, s.period))
            if item is None:
                continue
            known, local_ret = self.local_retention(s.profile, s.period)
            if not known:
                continue
            ret = item.effective_retention(local_ret)
            candidates[s.set_id] = _Candidate(s, item, None, None if ret is None else s.created + ret)
        for req in self.manual:
            if req.target != name:
                continue
            found = self.local.sets.get(req.set_id)
            if found is None or not found.complete:
                self.waiting.append(
                    Waiting(name, req.set_id, "queued by hand, but no complete local set has this id")
                )
                continue
            cand = candidates.get(req.set_id)
            if cand is not None:
                cand.manual = req
            else:
                candidates[req.set_id] = _Candidate(found, None, req, found.expires)

        pending: list[_Candidate] = []
        for cand in candidates.values():
            s = cand.s
            if view.reachable:
                there = view.sets.get(s.set_id)
                if there is not None and there.complete:
                    continue
            if cand.expires is not None and cand.expires <= self.now and cand.manual is None:
                continue  # the target would prune it at once
            pending.append(cand)
        pending.sort(key=lambda c: (c.item.priority if c.item else 0, c.s.created, c.s.set_id))
        for cand in pending:
            self.schedule(name, target, view, cand, is_open, throttle_bps, window_end, next_window)

        bases = self.plan_holds(name, target, view, candidates, pending)
        if view.reachable and self.retain is not None:
            self.plan_remote_retention(name, target, view, bases)
        self.targets.append(
            TargetState(
                target=name,
                reachable=view.reachable,
                window_open=is_open,
                throttle_bps=throttle_bps,
                pending=len(pending),
                lag_seconds=self.lag(view, candidates, pending),
                newest_on_target=self.newest_synced(view, candidates),
                next_window=next_window,
                bases=bases,
            )
        )

    def schedule(
        self,
        name: str,
        target: TargetConfig,
        view: TargetView,
        cand: _Candidate,
        is_open: bool,
        throttle_bps: int,
        window_end: datetime | None,
        next_window: datetime | None,
    ) -> None:
        s = cand.s
        key = (name, s.set_id)
        if key in self.running:
            self.waiting.append(Waiting(name, s.set_id, SENDING_NOW))
            return
        state = self.history.get(key, TransferState())
        manual = cand.manual
        if _gave_up(state, target) and manual is None:
            why = "refused" if state.permanent else f"gave up after {state.attempts} attempts"
            self.waiting.append(
                Waiting(name, s.set_id, f"{why}: {state.last_error}; queue it by hand or change the config")
            )
            return
        due = retry_at(state, target)  # a request by hand starts with a clean history (the daemon resets it)
        if due is not None and due > self.now:
            self.waiting.append(
                Waiting(name, s.set_id, f"retry {state.attempts} after: {state.last_error}", due)
            )
            self.wake(due)
            return
        if not view.reachable:
            self.waiting.append(Waiting(name, s.set_id, f"target unreachable: {view.error}"))
            return
        if not is_open and not (manual is not None and manual.ignore_windows):
            self.waiting.append(Waiting(name, s.set_id, "outside the sync windows", next_window))
            return
        item = cand.item
        if item is not None:
            reason = f"{s.profile}/{s.period} goes to {name} (priority {item.priority})"
        else:
            reason = f"queued by hand for {name}"
        if manual is not None and item is not None:
            reason += "; queued by hand"
        self.transfers.append(
            Transfer(
                target=name,
                set_id=s.set_id,
                scope=s.scope,
                created=s.created,
                priority=item.priority if item is not None else 0,
                reason=reason,
                members=tuple(m.ref for m in s.members),
                expires=cand.expires,
                never_expire=cand.expires is None,
                name_prefix=item.prefix if item is not None else "",
                throttle_bps=throttle_bps,
                compression=target.compression,
                streams=target.streams,
                window_end=None if (manual is not None and manual.ignore_windows) else window_end,
                manual=manual is not None,
            )
        )

    # -- holds --
    def plan_holds(
        self,
        name: str,
        target: TargetConfig,
        view: TargetView,
        candidates: Mapping[str, _Candidate],
        pending: list[_Candidate],
    ) -> dict[str, str]:
        bh, sh = base_hold(name), sync_hold(name)
        needs_base = bool(target.items) or any(r.target == name for r in self.manual)
        bases: dict[str, str] = {}
        if view.reachable:
            # the newest set of each scope complete on both sides
            for s in self.local.sets.values():
                if not s.complete or not s.scope:
                    continue
                there = view.sets.get(s.set_id)
                if there is None or not there.complete:
                    continue
                cur = bases.get(s.scope)
                if cur is None or (s.created, s.set_id) > self._key(cur):
                    bases[s.scope] = s.set_id
            if not needs_base:
                bases = {}
            for s in self.local.sets.values():
                if bases.get(s.scope) == s.set_id:
                    self.hold("", s, add=bh, reason=f"base of {name} for {s.scope}")
                elif any(bh in m.snapshot.holds for m in s.members):
                    self.hold("", s, remove=bh, reason=f"no longer the base of {name}")
            for s in view.sets.values():
                if bases.get(s.scope) == s.set_id:
                    self.hold(name, s, add=bh, reason=f"base of {name} for {s.scope}")
                elif any(bh in m.snapshot.holds for m in s.members):
                    self.hold(name, s, remove=bh, reason=f"no longer the base of {name}")
        else:
            # nothing is known about the target: keep what is held, hold nothing new
            for s in self.local.sets.values():
                if any(bh in m.snapshot.holds for m in s.members):
                    bases[s.scope] = s.set_id

        waiting_for = {c.s.set_id for c in pending if c.item is not None and c.item.hold_until_synced}
        for s in self.local.sets.values():
            if s.set_id in waiting_for:
                self.hold("", s, add=sh, reason=f"held until {name} has it (hold_until_synced)")
            elif any(sh in m.snapshot.holds for m in s.members):
                if not view.reachable and s.set_id in candidates:
                    continue  # cannot tell whether it arrived
                self.hold("", s, remove=sh, reason=f"{name} has it, or no longer needs it")
        return bases

    def _key(self, set_id: str) -> tuple[datetime, str]:
        s = self.local.sets[set_id]
        return s.created, s.set_id

    def release_unknown(self, targets: set[str]) -> None:
        """Holds naming targets that are no longer configured protect nothing."""
        for s in self.local.sets.values():
            for hold in sorted(s.holds):
                for prefix in (BASE_HOLD, SYNC_HOLD):
                    if hold.startswith(prefix) and hold[len(prefix) :] not in targets:
                        self.hold(
                            "", s, remove=hold, reason=f"target {hold[len(prefix) :]} is no longer configured"
                        )

    def release_kept_here(self) -> None:
        """Copies received from other sites that this site kept until a time that has come."""
        for s in self.local.foreign.values():
            for hold in sorted(s.holds):
                kept, until = kept_here_until(hold)
                if not kept or until is None:
                    continue
                if until <= self.now:
                    self.hold(
                        "",
                        s,
                        remove=hold,
                        reason="kept here until then; the sending site's retention applies again",
                    )
                else:
                    self.wake(until)

    def release_syncback(self) -> None:
        for s in self.local.sets.values():
            for hold in sorted(s.holds):
                if not hold.startswith(SYNCBACK_HOLD):
                    continue
                until = _syncback_until(hold)
                if until is None or until <= self.now:
                    self.hold("", s, remove=hold, reason="synced back: the time to restore it has passed")
                else:
                    self.wake(until)

    # -- remote retention --
    def plan_remote_retention(
        self, name: str, target: TargetConfig, view: TargetView, bases: Mapping[str, str]
    ) -> None:
        assert self.retain is not None
        bh = base_hold(name)
        ours: dict[str, SnapshotSet] = {}
        for sid, s in view.sets.items():
            if bases.get(s.scope) == sid:
                # the base hold this plan adds protects it already (the hold lands after the plan)
                s = replace(
                    s,
                    members=tuple(
                        replace(m, snapshot=replace(m.snapshot, holds=m.snapshot.holds | {bh}))
                        for m in s.members
                    ),
                )
            ours[sid] = s
        if view.foreign:
            self.notes.append(f"{name}: {view.foreign} set(s) from other sites are left alone")
        by_profile: dict[str, list[SyncItemConfig]] = {}
        for item in target.items:
            by_profile.setdefault(item.profile, []).append(item)
        profiles: dict[str, Profile] = {}
        for pname, pitems in by_profile.items():
            prof_cfg = self.config.profiles.get(pname)
            if prof_cfg is None:
                continue
            local = profile_to_domain(pname, prof_cfg)
            periods = []
            for item in pitems:
                p = next((x for x in local.periods if x.name == item.period), None)
                if p is None:
                    continue
                periods.append(
                    replace(
                        p, retention=item.effective_retention(p.retention), min_snapshots=item.min_snapshots
                    )
                )
            if periods:
                profiles[pname] = Profile(pname, tuple(periods))
        scopes = sorted({s.scope for s in ours.values() if s.scope})
        bindings = []
        for scope_key in scopes:
            try:
                scope = Scope.parse(scope_key)
            except ValueError:
                continue
            used = {s.profile for s in ours.values() if s.scope == scope_key}
            for pname in sorted(used & set(profiles)):
                bindings.append(ScopeBinding(scope=scope, profile=profiles[pname], members=()))
        desired = DesiredState(bindings=tuple(bindings), nodes=(name,))
        plan = self.retain(desired, ObservedState(sets=ours), self.now)
        for a in plan.actions:
            if a.kind.value != "delete":
                continue
            gone = ours.get(a.set_id)
            if gone is None:
                continue
            self.deletes.append(
                RemoteDelete(name, a.set_id, tuple(m.ref for m in gone.members), f"{name}: {a.reason}")
            )
        for k in plan.kept:
            self.kept.append(Keep(k.set_id, f"{name}:{k.scope}", k.rule, k.reason, k.expires))
        self.wake(plan.next_wakeup)

    # -- status --
    def newest_synced(self, view: TargetView, candidates: Mapping[str, _Candidate]) -> datetime | None:
        if not view.reachable:
            return None
        times = [s.created for s in view.sets.values() if s.complete and s.set_id in candidates]
        if not times:
            times = [s.created for s in view.sets.values() if s.complete]
        return max(times, default=None)

    def lag(
        self, view: TargetView, candidates: Mapping[str, _Candidate], pending: list[_Candidate]
    ) -> float | None:
        if not view.reachable:
            return None
        if not pending:
            return 0.0
        newest = self.newest_synced(view, candidates)
        since = newest if newest is not None else min(c.s.created for c in pending)
        return max(0.0, (self.now - since).total_seconds())


def plan_sync(
    config: Config,
    local: ObservedState,
    remote: Mapping[str, TargetView],
    *,
    now: datetime,
    transfers: Mapping[tuple[str, str], TransferState] | None = None,
    manual: Sequence[ManualRequest] = (),
    running: frozenset[tuple[str, str]] = frozenset(),
    retain: Retain | None = None,
) -> SyncPlan:
    """What offsite sync should do now. Pure and deterministic: equal inputs give equal plans.
    `retain` is the planner's `plan` (remote retention); None skips remote pruning."""
    return _Planner(config, local, remote, transfers or {}, manual, running, now, retain).run()


def with_local_holds(local: ObservedState, changes: Sequence[HoldChange]) -> ObservedState:
    """`local` as it will be once the local hold changes of a sync plan are applied (pure).

    The daemon's pass applies them on the agents before it plans; a read-only plan (`reconciler
    plan`) applies them here instead, so that it shows what the pass would really do (a set held
    until it is synced is not shown as deleted)."""
    by_set: dict[str, list[HoldChange]] = {}
    for h in changes:
        if not h.target:
            by_set.setdefault(h.set_id, []).append(h)
    if not by_set:
        return local
    sets = dict(local.sets)
    for set_id, hs in by_set.items():
        s = sets.get(set_id)
        if s is None:
            continue
        members = []
        for m in s.members:
            held = m.snapshot.holds
            for h in hs:
                if m.ref in h.refs:
                    held = (held - h.remove) | h.add
            members.append(
                m if held == m.snapshot.holds else replace(m, snapshot=replace(m.snapshot, holds=held))
            )
        sets[set_id] = replace(s, members=tuple(members))
    return replace(local, sets=sets)
