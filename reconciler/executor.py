"""Execute a plan against the agents: one operation in flight per scope, bounded concurrency,
exponential backoff on retryable errors, and permanent errors parked until the config changes."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from .agent.api import CreateSetRequest, QuiesceGroup, SnapshotKey, Target
from .agent.client import AgentClient
from .domain import (
    LABEL_DESCRIPTION,
    LABEL_EXPECTED,
    LABEL_KIND,
    LABEL_PERIOD,
    LABEL_PRIVATE,
    LABEL_PROFILE,
    LABEL_SCOPE,
    LABEL_SETTINGS,
    LABEL_SLOT,
    LABEL_TENANT,
    SLOT_FORMAT,
    Action,
    ActionKind,
    Member,
    SetKind,
    SnapshotInfo,
)
from .errors import NotFound, QuiesceFailed, ReconcilerError, Unavailable
from .fanout import per_node

log = logging.getLogger(__name__)
_T = TypeVar("_T")

MAX_BACKOFF = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class ActionRecord:
    at: datetime
    kind: str
    set_id: str
    scope: str
    node: str
    ok: bool
    reason: str
    error: str = ""
    warnings: tuple[str, ...] = ()
    retryable: bool = False
    # create: the member snapshots the agent reported (the daemon answers a manual create with them)
    snapshots: tuple[SnapshotInfo, ...] = ()


@dataclass
class _Failure:
    attempts: int
    retry_at: datetime | None  # None: permanent, parked until the config changes
    error: str


class Executor:
    def __init__(
        self,
        clients: Callable[[], Mapping[str, AgentClient]],
        *,
        clock: Callable[[], datetime],
        max_workers: int = 8,
        history: int = 200,
        on_record: Callable[[ActionRecord], None] | None = None,
        site: Callable[[], str] = lambda: "",
    ) -> None:
        """site: the config's site name, sent with each create (agent/core.py's create_set)."""
        self._clients = clients
        self._clock = clock
        self._site = site
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="exec")
        self._scope_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._failures: dict[str, _Failure] = {}
        self.records: deque[ActionRecord] = deque(maxlen=history)
        self._on_record = on_record

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def config_changed(self) -> None:
        """A new config: permanent failures get another chance."""
        with self._guard:
            self._failures = {k: f for k, f in self._failures.items() if f.retry_at is not None}

    def next_retry(self) -> datetime | None:
        with self._guard:
            times = [f.retry_at for f in self._failures.values() if f.retry_at is not None]
        return min(times, default=None)

    def blocked(self) -> dict[str, str]:
        with self._guard:
            return {k: f.error for k, f in self._failures.items()}

    def _scope_lock(self, scope: str) -> threading.Lock:
        with self._guard:
            return self._scope_locks.setdefault(scope, threading.Lock())

    # --- running a plan ------------------------------------------------------------------------
    def run(self, actions: Sequence[Action]) -> list[ActionRecord]:
        """Run the actions (grouped per scope, scopes in parallel) and wait for all of them."""
        by_scope: dict[str, list[Action]] = {}
        for a in actions:
            by_scope.setdefault(a.scope, []).append(a)
        futures = [
            self._pool.submit(self._run_scope, scope, acts) for scope, acts in sorted(by_scope.items())
        ]
        out: list[ActionRecord] = []
        for f in futures:
            out.extend(f.result())
        return out

    def _run_scope(self, scope: str, actions: list[Action]) -> list[ActionRecord]:
        out: list[ActionRecord] = []
        with self._scope_lock(scope):
            for a in actions:
                out.extend(self.run_one(a))
        return out

    def run_one(self, action: Action, *, force: bool = False) -> list[ActionRecord]:
        key = f"{action.kind.value}:{action.set_id}"
        now = self._clock()
        with self._guard:
            failure = self._failures.get(key)
        if failure is not None and not force:
            if failure.retry_at is None or failure.retry_at > now:
                return []
        if action.kind is ActionKind.CREATE:
            records = self._create(action)
        else:
            records = self._delete(action)
        errors = [r for r in records if not r.ok]
        with self._guard:
            if not errors:
                self._failures.pop(key, None)
            else:
                attempts = (failure.attempts if failure else 0) + 1
                retryable = all(r.retryable for r in errors)
                delay = min(timedelta(seconds=2 ** min(attempts, 10)), MAX_BACKOFF)
                self._failures[key] = _Failure(attempts, now + delay if retryable else None, errors[0].error)
        for r in records:
            self.records.append(r)
            if self._on_record:
                self._on_record(r)
        return records

    def _create(self, a: Action) -> list[ActionRecord]:
        by_node: dict[str, list[Member]] = {}
        for m in a.members:
            by_node.setdefault(m.ref.node, []).append(m)
        labels = {
            LABEL_SCOPE: a.scope,
            LABEL_KIND: SetKind.SCHEDULED.value if a.slot is not None and a.period else SetKind.MANUAL.value,
            LABEL_EXPECTED: str(a.expected_members or len(a.members)),
            LABEL_PRIVATE: "true" if a.private else "false",
        }
        if a.profile:
            labels[LABEL_PROFILE] = a.profile
        if a.period:
            labels[LABEL_PERIOD] = a.period
        if a.slot is not None:
            labels[LABEL_SLOT] = a.slot.strftime(SLOT_FORMAT)
        description = a.reason if labels[LABEL_KIND] == SetKind.MANUAL.value else ""
        if description:
            labels[LABEL_DESCRIPTION] = description[:1000]
        created = a.slot if a.slot is not None else self._clock()
        clients = self._clients()
        site = self._site()

        def request(members: Sequence[Member]) -> CreateSetRequest:
            groups: list[QuiesceGroup] = []
            if a.quiesce:
                seen: set[str] = set()
                for m in members:
                    if m.quiesce and m.hooks is not None and m.resource not in seen:
                        seen.add(m.resource)
                        groups.append(QuiesceGroup(m.resource, m.hooks))
            return CreateSetRequest(
                set_id=a.set_id,
                name=a.name or a.set_id,
                targets=tuple(
                    Target(m.ref.pool, m.ref.volume, m.resource, _member_labels(m)) for m in members
                ),
                created=self._clock() if labels[LABEL_KIND] == SetKind.SCHEDULED.value else created,
                labels=labels,
                expires=a.expires,
                immutable=a.immutable,
                quiesce=tuple(groups),
                quiesce_fail=a.quiesce_policy == "fail",
                site=site,
            )

        def one(node: str, members: list[Member]) -> ActionRecord:
            extra = _log_extra(a, node, "create")
            try:
                client = clients.get(node)
                if client is None:
                    raise Unavailable(f"node {node} is not configured or not connected")
                try:
                    res = client.create_set(request(members))
                except NotFound as exc:
                    if len({m.resource for m in members}) < 2:
                        raise
                    return self._create_per_resource(a, node, client, members, request, exc)
                log.info(
                    "created set %s on node %s (%d volumes): %s",
                    a.set_id,
                    node,
                    len(members),
                    a.reason,
                    extra=extra,
                )
                for w in res.warnings:
                    log.warning("set %s on node %s: %s", a.set_id, node, w, extra=extra)
                return ActionRecord(
                    self._clock(),
                    "create",
                    a.set_id,
                    a.scope,
                    node,
                    True,
                    a.reason,
                    warnings=res.warnings,
                    snapshots=res.snapshots,
                )
            except ReconcilerError as exc:
                log.error("create of set %s on node %s failed: %s", a.set_id, node, exc, extra=extra)
                return ActionRecord(
                    self._clock(),
                    "create",
                    a.set_id,
                    a.scope,
                    node,
                    False,
                    a.reason,
                    str(exc),
                    retryable=_retryable(exc),
                )

        return _fan_out(by_node, one)

    def _create_per_resource(
        self,
        a: Action,
        node: str,
        client: AgentClient,
        members: Sequence[Member],
        request: Callable[[Sequence[Member]], CreateSetRequest],
        first: NotFound,
    ) -> ActionRecord:
        """A volume of one resource is gone. The agent resolves every volume before it freezes or
        snapshots anything, so nothing was taken; ask again resource by resource (a resource's
        volumes stay together) so that the other resources of the node still get their snapshot.
        The set stays partial, is retried, and is never taken for a good one."""
        extra = _log_extra(a, node, "create")
        log.warning(
            "create of set %s on node %s: %s; taking the node's other resources one by one",
            a.set_id,
            node,
            first,
            extra=extra,
        )
        by_resource: dict[str, list[Member]] = {}
        for m in members:
            by_resource.setdefault(m.resource, []).append(m)
        snapshots: list[SnapshotInfo] = []
        warnings: list[str] = []
        errors: list[ReconcilerError] = []
        for resource, ms in sorted(by_resource.items()):
            try:
                res = client.create_set(request(ms))
            except ReconcilerError as exc:
                log.error(
                    "create of set %s on node %s failed for resource %s: %s",
                    a.set_id,
                    node,
                    resource,
                    exc,
                    extra=extra,
                )
                errors.append(exc)
                continue
            snapshots.extend(res.snapshots)
            warnings.extend(res.warnings)
            for w in res.warnings:
                log.warning("set %s on node %s: %s", a.set_id, node, w, extra=extra)
        return ActionRecord(
            self._clock(),
            "create",
            a.set_id,
            a.scope,
            node,
            not errors,
            a.reason,
            "; ".join(str(e) for e in errors),
            warnings=tuple(warnings),
            retryable=bool(errors) and all(_retryable(e) for e in errors),
            snapshots=tuple(snapshots),
        )

    def _record(
        self, a: Action, kind: str, node: str, *, error: str = "", retryable: bool = False
    ) -> ActionRecord:
        return ActionRecord(
            self._clock(), kind, a.set_id, a.scope, node, not error, a.reason, error, retryable=retryable
        )

    def _delete(self, a: Action) -> list[ActionRecord]:
        by_node: dict[str, list[SnapshotKey]] = {}
        for ref in a.delete_refs:
            by_node.setdefault(ref.node, []).append(SnapshotKey(a.set_id, ref.pool, ref.volume))
        clients = self._clients()

        def one(node: str, keys: list[SnapshotKey]) -> ActionRecord:
            extra = _log_extra(a, node, "delete")
            try:
                client = clients.get(node)
                if client is None:
                    raise Unavailable(f"node {node} is not configured or not connected")
                refused = [r.error for r in client.delete(keys) if not r.deleted]
            except ReconcilerError as exc:
                log.error("delete of set %s on node %s failed: %s", a.set_id, node, exc, extra=extra)
                return self._record(a, "delete", node, error=str(exc), retryable=exc.retryable)
            if refused:
                # the agent's own rules refused it: permanent until something changes
                log.warning(
                    "delete of set %s on node %s refused: %s", a.set_id, node, refused[0], extra=extra
                )
                return self._record(a, "delete", node, error="refused: " + "; ".join(refused))
            log.info("deleted set %s on node %s: %s", a.set_id, node, a.reason, extra=extra)
            return self._record(a, "delete", node)

        return _fan_out(by_node, one)


def _fan_out(
    by_node: Mapping[str, Sequence[_T]], fn: Callable[[str, list[_T]], ActionRecord]
) -> list[ActionRecord]:
    return per_node(sorted(by_node), lambda node: fn(node, list(by_node[node])))


def _log_extra(a: Action, node: str, action: str) -> dict[str, str]:
    """The fields every action log line carries (JSON logs show them as keys)."""
    return {"scope": a.scope, "set_id": a.set_id, "node": node, "action": action, "reason": a.reason}


def _member_labels(m: Member) -> dict[str, str]:
    """Recorded on each member: restores of a tenant or of "data and settings" read them back,
    even after the resource left the config."""
    out = {}
    if m.tenant:
        out[LABEL_TENANT] = m.tenant
    if m.settings and len(m.settings) <= 2048:
        out[LABEL_SETTINGS] = m.settings
    return out


def _retryable(exc: ReconcilerError) -> bool:
    """Temporary errors are retried with backoff. A failed quiesce is too: a guest that did not
    freeze this time (policy fail) may well next time, and meanwhile the set stays partial."""
    return exc.retryable or isinstance(exc, QuiesceFailed)
