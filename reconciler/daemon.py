"""The reconciler daemon: load, observe, plan, execute, wait — level-triggered.

It holds no truth that cannot be rebuilt from the agents. An invalid config edit never stops it:
the last good config keeps running and status says why the new one was refused.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import schedule
import watchfiles

from .agent.api import SnapshotKey, SnapshotUpdate
from .agent.client import DEFAULT_DEADLINES, Deadlines
from .backends.base import FileEntry, ProgressEvent
from .config import Config, desired_state, scope_members
from .config_loader import load_config
from .domain import (
    LABEL_EXPOSED,
    LABEL_TENANT,
    Action,
    ActionKind,
    DesiredState,
    ImmutableState,
    Member,
    ObservedMember,
    ObservedState,
    Plan,
    Scope,
    ScopeKind,
    SetKind,
    SnapshotInfo,
    SnapshotSet,
    VolumeRef,
    valid_volume_name,
)
from .errors import ConfigError, FailedPrecondition, InvalidArgument, NotFound, ReconcilerError
from .executor import ActionRecord, Executor
from .logs import LogOnce
from .nodes import NodeSet
from .observed import aggregate, partition
from .observer import Observer
from .planner import plan as make_plan
from .replication.manager import SyncManager
from .restore import (
    CANCEL_WINDOW_PHASE,
    MAX_CANCEL_WINDOW,
    MAX_COPY_NUMBER,
    RestorePlan,
    RestoreRequest,
    exposed_to,
    members_of_resource,
    numbered_copy,
    plan_restore,
    tenant_can_see,
)
from .restorer import RestoreOutcome, existing_targets, run_plan
from .settings import DaemonSettings
from .syncplan import SyncPlan, kept_here_hold, kept_here_until, with_local_holds

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class ConfigState:
    config: Config
    desired: DesiredState
    loaded_at: datetime
    generation: int


@dataclass
class PoolOutcome:
    node: str
    pool: str
    ok: bool
    message: str
    problems: list[str] = field(default_factory=list)
    bytes: int = 0


def _cancelled_in_window(
    seconds: float, cancelled: threading.Event, progress: Callable[[str, ProgressEvent], None]
) -> bool:
    """Count down `seconds` (a progress event each second); True if `cancelled` was set."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        progress(
            "",
            ProgressEvent(
                phase=CANCEL_WINDOW_PHASE,
                done=round((seconds - left) * 1000),
                total=round(seconds * 1000),
                unit="ms",
                message=f"starts in {math.ceil(left)} s; cancel now (Ctrl-C) and nothing is done",
            ),
        )
        if cancelled.wait(min(1.0, left)):
            return True
    return cancelled.is_set()


@dataclass(frozen=True, slots=True)
class DryRun:
    """What a pass would do now (`reconciler plan`): the planner's plan, and offsite sync's."""

    plan: Plan
    sync: SyncPlan | None
    notes: tuple[str, ...] = ()  # for information, not problems (sets received from other sites)


@dataclass
class PassResult:
    plan: Plan
    records: list[ActionRecord] = field(default_factory=list)
    seconds: float = 0.0


class Daemon:
    def __init__(
        self,
        config_path: Path,
        settings: DaemonSettings,
        *,
        clock: Clock = utcnow,
        deadlines: Deadlines = DEFAULT_DEADLINES,
    ) -> None:
        self.config_path = config_path.resolve()
        self.settings = settings
        self.clock = clock
        self.nodes = NodeSet(settings.state_dir, deadlines=deadlines)
        self.observer = Observer()
        self.executor = Executor(lambda: self.nodes.clients, clock=clock, site=lambda: self.site)
        # offsite sync (replication/manager.py); its retry history lives in the state directory
        self.sync = SyncManager(self, deadlines=deadlines, state_dir=settings.state_dir)
        self.current: ConfigState | None = None
        self.config_errors: list[str] = []
        self.last_pass: PassResult | None = None
        self._plan_warnings = LogOnce(log, "plan: ")  # each planner warning logged when it appears
        self._plan_notes = LogOnce(log, "plan: ", logging.INFO)
        self.last_pass_at: datetime | None = None
        self.next_wakeup: datetime | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._reload_requested = threading.Event()
        self._lock = threading.RLock()  # config swaps and passes
        # sets restores are reading now (set id -> how many): their deletion waits until they end
        self._restoring: dict[str, int] = {}
        self._restoring_lock = threading.Lock()
        self._scheduler = schedule.Scheduler()
        self._threads: list[threading.Thread] = []
        self._control: Any = None
        self.hooks: list[Callable[[str, dict[str, Any]], None]] = []  # metrics and notify listen here

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Load the config (it must be valid to start), connect nodes, serve the control API."""
        config = load_config(self.config_path)
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self._apply(config)
        from .control.server import start_control_server

        self._control = start_control_server(self, self.settings.control_socket_path)
        self.sync.start()
        self._scheduler.every(max(1, int(self.settings.safety_interval))).seconds.do(self.wake)
        # the daemon's own housekeeping: space of deleted sets back, and (optionally) scrubbing
        if self.settings.gc_interval > 0:
            self._scheduler.every(max(1, int(self.settings.gc_interval))).seconds.do(self._periodic, "gc")
        if self.settings.verify_interval > 0:
            self._scheduler.every(max(1, int(self.settings.verify_interval))).seconds.do(
                self._periodic, "verify"
            )
        t = threading.Thread(target=self._watch_config, name="config-watch", daemon=True)
        t.start()
        self._threads.append(t)
        self._emit("started", {})

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())

    def run_forever(self) -> None:
        while not self._stop.is_set():
            if self._reload_requested.is_set():
                self._reload_requested.clear()
                self.reload()
            try:
                self.run_pass()
            except Exception:  # noqa: BLE001 - a bad pass must not kill the daemon
                log.exception("reconcile pass failed")
            self._scheduler.run_pending()
            timeout = self._seconds_until_wakeup()
            self._wake.wait(timeout)
            self._wake.clear()
        self._shutdown()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def request_reload(self) -> None:
        self._reload_requested.set()
        self._wake.set()

    def _shutdown(self) -> None:
        log.info("shutting down")
        self._emit("stopping", {})
        if self._control is not None:
            self._control.stop(5).wait()
        self.sync.shutdown()
        self.executor.shutdown()
        self.nodes.close()
        log.info("stopped")

    def _seconds_until_wakeup(self) -> float:
        now = self.clock()
        candidates = [self.settings.safety_interval]
        if self.next_wakeup is not None:
            candidates.append((self.next_wakeup - now).total_seconds())
        retry = self.executor.next_retry()
        if retry is not None:
            candidates.append((retry - now).total_seconds())
        idle = self._scheduler.idle_seconds
        if idle is not None:
            candidates.append(idle)
        return max(0.05, float(min(candidates)))

    # --- config ----------------------------------------------------------------------------
    def _apply(self, config: Config) -> None:
        with self._lock:
            desired = desired_state(config)
            self.nodes.apply(config)
            for gone in [n for n in self.observer.nodes if n not in config.nodes]:
                self.observer.forget_node(gone)
            gen = (self.current.generation + 1) if self.current else 1
            self.current = ConfigState(config, desired, self.clock(), gen)
            self.config_errors = []
            self.executor.config_changed()
            self.sync.apply_config(config)
        self._emit("config_loaded", {"ok": True, "at": self.clock()})

    def reload(self) -> list[str]:
        """Load the config file again. Returns the errors (empty: applied)."""
        self._emit("reloading", {})
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            self.config_errors = list(exc.errors)
            log.error("config reload refused; the last good config keeps running:\n%s", "\n".join(exc.errors))
            self._emit("config_loaded", {"ok": False, "at": self.clock()})
            return self.config_errors
        try:
            self._apply(config)
        except ReconcilerError as exc:
            self.config_errors = [f"{self.config_path}: {exc}"]
            log.error("config reload failed: %s", exc)
            self._emit("config_loaded", {"ok": False, "at": self.clock()})
            return self.config_errors
        log.info("config reloaded from %s", self.config_path)
        self.wake()
        return []

    def _watch_config(self) -> None:
        target = self.config_path
        # Watch the directory: editors replace files by rename, which a file watch would lose.
        for changes in watchfiles.watch(
            target.parent,
            stop_event=self._stop,
            debounce=50,
            step=20,
            rust_timeout=500,
            yield_on_timeout=True,
            recursive=False,
        ):
            if self._stop.is_set():
                return
            if any(Path(p).resolve() == target for _, p in changes):
                log.info("config file changed")
                self.request_reload()

    # --- one pass ---------------------------------------------------------------------------
    def healthy(self) -> bool:
        """For the systemd watchdog: the daemon is not wedged (a pass holds the lock only briefly;
        executing actions happens outside it)."""
        if not self._lock.acquire(timeout=30):
            return False
        self._lock.release()
        return not self._stop.is_set()

    def state(self) -> ConfigState:
        if self.current is None:
            raise FailedPrecondition("no config loaded")
        return self.current

    @property
    def site(self) -> str:
        """The config's site name ("" without one or before a config is loaded)."""
        st = self.current
        return (st.config.site or "") if st is not None else ""

    def observe(self) -> ObservedState:
        return self.observer.observe(self.nodes.clients, self.clock(), our_site=self.site)

    def _without_deletes_of_restoring(self, p: Plan) -> Plan:
        """The plan without the deletes of sets a restore is reading (a note says each waits: it is
        not a problem, and the delete follows the restore)."""
        with self._restoring_lock:
            busy = set(self._restoring)
        waits = [a for a in p.actions if a.kind is ActionKind.DELETE and a.set_id in busy]
        if not waits:
            return p
        notes = tuple(f"deleting set {a.set_id} waits: a restore is reading it ({a.reason})" for a in waits)
        return replace(p, actions=tuple(a for a in p.actions if a not in waits), notes=p.notes + notes)

    @contextmanager
    def _restoring_from(self, set_id: str) -> Iterator[None]:
        with self._restoring_lock:
            self._restoring[set_id] = self._restoring.get(set_id, 0) + 1
        try:
            yield
        finally:
            with self._restoring_lock:
                self._restoring[set_id] -= 1
                if not self._restoring[set_id]:
                    del self._restoring[set_id]

    def compute_plan(self) -> DryRun:
        """Read-only: plan as a pass would, offsite sync included. As in a pass, the local holds
        offsite sync asks for count before planning (here applied to the view, not the agents)."""
        with self._lock:
            st = self.state()
            observed = self.observe()
            now = self.clock()
        # the targets are observed outside the lock: a slow target must not hold up the passes
        sync = self.sync.preview(observed, now)
        if sync is not None:
            observed = with_local_holds(observed, sync.holds)
        plan = self._without_deletes_of_restoring(make_plan(st.desired, observed, now))
        notes: tuple[str, ...] = ()
        if observed.foreign:
            notes = (
                f"{len(observed.foreign)} set(s) received from other sites (SET@SITE in snapshot list) "
                "are left to the sites that sent them",
            )
        return DryRun(plan, sync, plan.notes + notes)

    def run_pass(self) -> PassResult:
        started = time.monotonic()
        with self._lock:
            st = self.state()
            observed = self.observe()
            if self.sync.before_plan(observed, self.clock()):  # offsite holds first: see SyncManager
                observed = self.observe()
            now = self.clock()
            planned = make_plan(st.desired, observed, now)
            p = self._without_deletes_of_restoring(planned)
        self._plan_warnings.update(planned.warnings)
        self._plan_notes.update(p.notes)
        records = self.executor.run(p.actions) if p.actions else []
        self.sync.after_pass(observed, now)
        result = PassResult(p, records, time.monotonic() - started)
        self.last_pass = result
        self.last_pass_at = now
        self.next_wakeup = p.next_wakeup
        if records:
            # something changed on the agents: look again soon, so status and the next plan see it
            self.next_wakeup = min(filter(None, [p.next_wakeup, self.clock() + timedelta(seconds=1)]))
        self._emit(
            "pass",
            {
                "seconds": result.seconds,
                "records": records,
                "plan": p,
                "observed": observed,
                "desired": st.desired,
                "nodes": dict(self.observer.nodes),
                "now": now,
            },
        )
        return result

    # --- operator requests -------------------------------------------------------------------
    def list_sets(
        self, scope: str = "", *, tenant: str | None = None, with_usage: bool = False
    ) -> list[SnapshotSet]:
        if with_usage:
            # unique bytes need the stores' reference counts: a fresh listing, not the cache
            members: list[tuple[str, SnapshotInfo]] = []
            for node, client in sorted(self.nodes.clients.items()):
                try:
                    info = client.node_info()
                except ReconcilerError:
                    continue
                for pool in info.pools:
                    _gen, snaps = client.list_snapshots(pool.name, with_usage=True)
                    members.extend((node, s) for s in snaps)
            ours, foreign = partition(members, self.nodes.clients, our_site=self.site)
        else:
            observed = self.observe()
            ours, foreign = dict(observed.sets), dict(observed.foreign)
        # copies received from other sites are the provider's: a tenant sees only its own site's sets
        listed = [*ours.values(), *(foreign.values() if tenant is None else ())]
        sets = [
            s
            for s in listed
            if (not scope or s.scope == scope) and (tenant is None or tenant_can_see(s, tenant))
        ]
        return sorted(sets, key=lambda s: (s.created, s.set_id, s.received_as))

    def get_set(self, set_id: str, *, tenant: str | None = None) -> SnapshotSet:
        """One of our sets by its id, or (for the provider) a copy received from another site by
        the key it goes by here (SET@SITE or SET@NODE, see observed.foreign_key)."""
        observed = self.observe()
        s = observed.sets.get(set_id)
        if s is None and tenant is None:
            s = observed.foreign.get(set_id)
            if s is None:
                there = _copies_under(observed.foreign, set_id)
                if there:
                    raise NotFound(
                        f"no snapshot set {set_id!r} of this site; received from other sites: "
                        + ", ".join(there)
                    )
        if s is None or (tenant is not None and not tenant_can_see(s, tenant)):
            raise NotFound(f"no snapshot set {set_id!r}")
        return s

    def _received_hint(self, s: SnapshotSet, tenant: str | None) -> str:
        """For one of our sets that lacks what was asked: the copies received from other sites
        under the same id (sites share set ids), which may hold it."""
        if s.received_as or tenant is not None:
            return ""
        there = _copies_under(self.observer.foreign, s.set_id)
        return f"; copies received from other sites under this id: {', '.join(there)}" if there else ""

    def restore(
        self,
        req: RestoreRequest,
        *,
        on_plan: Callable[[RestorePlan], None],
        progress: Callable[[str, ProgressEvent], None],
        tenant: str | None = None,
        cancel_window: float = 0.0,
        cancelled: threading.Event | None = None,
    ) -> RestoreOutcome:
        """Plan (refusing up front whatever can be known), show the plan, then execute it.

        With a `cancel_window`, wait that long after showing the plan, counting down in progress
        events; `cancelled` set in that time (the client went away) stops it before anything was
        done. Once started, a restore runs to its end."""
        if not 0 <= cancel_window <= MAX_CANCEL_WINDOW:
            raise InvalidArgument(f"cancel window {cancel_window:g} s: 0-{MAX_CANCEL_WINDOW} seconds")
        st = self.state()
        s = self.get_set(req.set_id, tenant=tenant)
        clients = self.nodes.clients
        try:
            base = plan_restore(st.config, s, req, tenant=tenant)
        except NotFound as exc:
            raise NotFound(str(exc) + self._received_hint(s, tenant)) from None
        draft, existing = base, existing_targets(base, clients)
        if existing and not req.new_name and base.new_name:
            # an earlier restore took the default name: the first free copy number
            for n in range(2, MAX_COPY_NUMBER + 1):
                draft = plan_restore(st.config, s, numbered_copy(base, n), tenant=tenant)
                existing = existing_targets(draft, clients)
                if not existing:
                    break
        plan = plan_restore(st.config, s, draft.request, tenant=tenant, existing=existing)
        on_plan(plan)
        if req.dry_run:
            return RestoreOutcome(True, f"dry run: {plan.summary}")
        with self._restoring_from(s.set_id):  # no pass deletes the set while a restore reads it
            if cancel_window > 0 and _cancelled_in_window(
                cancel_window, cancelled or threading.Event(), progress
            ):
                log.warning("restore from set %s cancelled in its window: nothing was done", req.set_id)
                return RestoreOutcome(False, "cancelled before it started: nothing was changed")
            outcome = run_plan(
                plan,
                s,
                clients,
                now=self.clock(),
                progress=progress,
                settings_dir=self.settings.state_dir / "restored-settings",
            )
        self.wake()
        return outcome

    def list_files(
        self,
        set_id: str,
        resource: str,
        volume: str = "",
        prefix: str = "",
        limit: int = 0,
        *,
        tenant: str | None = None,
    ) -> tuple[VolumeRef, list[FileEntry], bool]:
        s = self.get_set(set_id, tenant=tenant)
        members = members_of_resource(s, resource)
        if tenant is not None and any(m.snapshot.labels.get(LABEL_TENANT) != tenant for m in members):
            raise NotFound(f"set {set_id} does not contain resource {resource!r}")
        if volume:
            members = [m for m in members if m.snapshot.volume == volume]
        if not members:
            raise NotFound(
                f"set {set_id} has no volume {volume or '(any)'} of resource {resource!r}"
                + self._received_hint(s, tenant)
            )
        if len(members) > 1:
            raise InvalidArgument(
                f"resource {resource} has several volumes in the set "
                f"({', '.join(m.snapshot.volume for m in members)}); pick one with --volume"
            )
        m = members[0]
        client = self.nodes.clients.get(m.node)
        if client is None:
            raise NotFound(f"node {m.node} is not configured")
        files, truncated = client.list_files(
            SnapshotKey(s.set_id, m.snapshot.pool, m.snapshot.volume), prefix, limit
        )
        return m.ref, files, truncated

    def update_set(
        self,
        set_id: str,
        action: str,
        *,
        unlock_wait: timedelta | None = None,
        expires: datetime | None = None,
        never_expire: bool = False,
        tenant_name: str = "",
    ) -> SnapshotSet:
        s = self.get_set(set_id)
        fields: frozenset[str]
        kw: dict[str, Any] = {}
        if action == "lock":
            fields = frozenset({"lock"})
        elif action == "unlock":
            if s.immutable is ImmutableState.NONE:
                raise FailedPrecondition(f"set {set_id} is not immutable")
            fields = frozenset({"unlock"})
            kw["unlock_delay"] = (
                unlock_wait if unlock_wait is not None else self.state().config.immutability.unlock_wait
            )
        elif action == "expires":
            if (expires is None) == (not never_expire):
                raise InvalidArgument("give a new expiry or never_expire")
            if s.received_as:
                return self._keep_here(s, expires)
            if s.kind is SetKind.SCHEDULED:
                raise FailedPrecondition(
                    f"set {set_id} is scheduled: its expiry follows the period's retention in the config"
                )
            fields = frozenset({"expires"})
            kw["expires"] = expires
        elif action in ("expose", "unexpose"):
            if s.received_as:
                raise FailedPrecondition(
                    f"set {s.received_as} is a copy received from another site: its tenants are that site's"
                )
            st = self.state()
            if tenant_name not in st.config.tenants:
                raise NotFound(f"no tenant {tenant_name!r} in the config")
            now_exposed = exposed_to(s)
            now_exposed = now_exposed | {tenant_name} if action == "expose" else now_exposed - {tenant_name}
            fields = frozenset({"labels"})
            if now_exposed:
                kw["set_labels"] = {LABEL_EXPOSED: ",".join(sorted(now_exposed))}
            else:
                kw["remove_labels"] = frozenset({LABEL_EXPOSED})
        else:
            raise InvalidArgument(f"unknown update {action!r} (lock, unlock, expires, expose, unexpose)")
        self._update_members(
            s,
            lambda m: SnapshotUpdate(SnapshotKey(s.set_id, m.snapshot.pool, m.snapshot.volume), fields, **kw),
        )
        log.info("set %s: %s", set_id, action, extra={"set_id": set_id, "action": action, "scope": s.scope})
        self.wake()
        return self.get_set(set_id)

    def _update_members(self, s: SnapshotSet, update: Callable[[ObservedMember], SnapshotUpdate]) -> None:
        """Send each member of `s` its update, one call per node."""
        by_node: dict[str, list[SnapshotUpdate]] = {}
        for m in s.members:
            by_node.setdefault(m.node, []).append(update(m))
        for node, updates in sorted(by_node.items()):
            client = self.nodes.clients.get(node)
            if client is None:
                raise NotFound(f"node {node} is not configured")
            client.update(updates)

    def _keep_here(self, s: SnapshotSet, until: datetime | None) -> SnapshotSet:
        """A copy received from another site: the sending site prunes it by its remote retention,
        which keeps held sets; this site keeps it until `until` (None: for good) with a hold that
        the sync pass releases then. Earlier than the sending site would is not possible this way
        (`snapshot delete` drops it now)."""
        if until is not None and until <= self.clock():
            raise InvalidArgument(f"expiry {until.isoformat()} is in the past")
        new = kept_here_hold(until)
        self._update_members(
            s,
            lambda m: SnapshotUpdate(
                SnapshotKey(s.set_id, m.snapshot.pool, m.snapshot.volume),
                frozenset({"holds"}),
                add_holds=frozenset({new}),
                remove_holds=frozenset(h for h in m.snapshot.holds if kept_here_until(h)[0] and h != new),
            ),
        )
        log.info(
            "set %s (received from another site): kept here %s",
            s.key,
            f"until {until.isoformat()}" if until is not None else "for good",
            extra={"set_id": s.set_id, "action": "expires"},
        )
        self.wake()  # its pass, then the sync pass that will release the hold, look again
        return self.get_set(s.key)

    def create_manual(
        self,
        *,
        scope: str,
        request_id: str,
        name: str = "",
        description: str = "",
        expires: datetime | None = None,
        never_expire: bool = False,
        immutable: bool = False,
        quiesce: bool = False,
        private: bool | None = None,
    ) -> SnapshotSet:
        """A manual set of `scope`. `private` (hidden from tenants) is for system scopes, where
        it is the default; a tenant sees a non-private system set's own resources in it."""
        try:
            sc = Scope.parse(scope)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        if private is None:
            private = sc.kind is ScopeKind.SYSTEM
        elif private and sc.kind is not ScopeKind.SYSTEM:
            raise InvalidArgument(f"private applies to system snapshots only, not to {scope}")
        if not request_id or not valid_volume_name(request_id) or "/" in request_id:
            raise InvalidArgument(f"request id {request_id!r} is not valid")
        if expires is None and not never_expire:
            raise InvalidArgument("a manual snapshot needs an expiry (--expires) or --never-expire")
        if expires is not None and never_expire:
            raise InvalidArgument("--expires and --never-expire together")
        now = self.clock()
        if expires is not None and expires <= now:
            raise InvalidArgument(f"expiry {expires.isoformat()} is in the past")
        st = self.state()
        try:
            members: tuple[Member, ...] = scope_members(st.config, sc)
        except KeyError as exc:
            raise NotFound(str(exc.args[0])) from None
        if not members:
            raise FailedPrecondition(f"scope {scope} covers no volumes")
        set_id = f"{sc.kind.value}-{sc.name}.manual.{request_id}"
        unreachable = sorted(
            {m.ref.node for m in members} - {n for n, o in self.observer.nodes.items() if o.reachable}
        )
        action = Action(
            kind=ActionKind.CREATE,
            set_id=set_id,
            scope=sc.key,
            reason=description or "manual snapshot",
            members=members,
            name=name or f"{sc.name}/manual@{now.strftime('%Y-%m-%d %H:%M:%S')}Z",
            expires=expires,
            immutable=immutable,
            quiesce=quiesce,
            private=private,
        )
        records = self.executor.run_one(action, force=True)
        failed = [r for r in records if not r.ok]
        if failed:
            hint = f" (unreachable: {', '.join(unreachable)})" if unreachable else ""
            raise FailedPrecondition(
                f"manual snapshot {set_id} failed on {len(failed)} node(s){hint}: "
                + "; ".join(r.error for r in failed)
            )
        self.wake()
        # The agents answered with the members they hold: the set is built from those, without
        # re-listing whole pools on the request path (the next pass observes the new generations).
        created = aggregate((r.node, snap) for r in records for snap in r.snapshots).get(set_id)
        if created is None:
            raise NotFound(f"set {set_id} was created but the agents reported no member of it")
        return created

    def delete_set(self, set_id: str) -> list[str]:
        s = self.get_set(set_id)
        with self._restoring_lock:
            if s.set_id in self._restoring:
                raise FailedPrecondition(
                    f"set {set_id} is being restored from; delete it once that has ended"
                )
        action = Action(
            kind=ActionKind.DELETE,
            set_id=s.set_id,
            scope=s.scope,
            reason="deleted by the operator",
            delete_refs=tuple(m.ref for m in s.members),
        )
        records = self.executor.run_one(action, force=True)
        self.wake()
        return [r.error for r in records if not r.ok]

    def maintain(self, kind: str, *, node: str = "", pool: str = "", set_id: str = "") -> list[PoolOutcome]:
        """Verify or garbage-collect pools (all, one node's, or one), each pool's result or error."""
        if kind not in ("verify", "gc"):
            raise InvalidArgument(f"unknown maintenance {kind!r}")
        clients = self.nodes.clients
        if node and node not in clients:
            raise NotFound(f"no node {node!r} in the config")
        out: list[PoolOutcome] = []
        for name in sorted(clients) if not node else [node]:
            client = clients[name]
            try:
                pools = [p.name for p in client.node_info().pools]
            except ReconcilerError as exc:
                out.append(PoolOutcome(name, pool or "*", False, str(exc)))
                continue
            if pool and pool not in pools:
                if node:
                    raise NotFound(f"node {name} has no pool {pool!r}")
                continue
            for p in [pool] if pool else pools:
                try:
                    res = client.verify(p, set_id) if kind == "verify" else client.collect_garbage(p)
                    out.append(PoolOutcome(name, p, res.ok, res.message, list(res.problems), res.bytes))
                    if res.problems:
                        log.error(
                            "verify of %s/%s found %d problem(s): %s",
                            name,
                            p,
                            len(res.problems),
                            "; ".join(res.problems[:5]),
                            extra={"node": name, "action": kind},
                        )
                except ReconcilerError as exc:
                    out.append(PoolOutcome(name, p, False, str(exc)))
        self._emit(kind, {"results": out})
        return out

    def _periodic(self, kind: str) -> None:
        # on a thread of its own: a long verify must not delay the next slot
        threading.Thread(
            target=self._run_periodic, args=(kind,), name=f"periodic-{kind}", daemon=True
        ).start()

    def _run_periodic(self, kind: str) -> None:
        try:
            for r in self.maintain(kind):
                log.info(
                    "%s %s/%s: %s", kind, r.node, r.pool, r.message, extra={"node": r.node, "action": kind}
                )
        except Exception:  # noqa: BLE001 - housekeeping must not kill the daemon
            log.exception("periodic %s failed", kind)

    # --- events ------------------------------------------------------------------------------
    def _emit(self, event: str, data: dict[str, Any]) -> None:
        for hook in self.hooks:
            try:
                hook(event, data)
            except Exception:  # noqa: BLE001 - observers must not break the daemon
                log.exception("event hook failed")


def _copies_under(foreign: Mapping[str, SnapshotSet], set_id: str) -> list[str]:
    """The keys of the copies received from other sites that carry `set_id` (sites share ids)."""
    return sorted(k for k, f in foreign.items() if f.set_id == set_id)
