"""Execute a restore plan against the agents: safety snapshot first, then every node in parallel.

Each volume is swapped atomically by its agent; a failure on one volume is reported with the
others' results, and the safety set stays so the operator can go back.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from .agent.api import CreateSetRequest, SnapshotKey, Target
from .agent.client import AgentClient
from .backends.base import ProgressEvent
from .domain import (
    LABEL_EXPECTED,
    LABEL_KIND,
    LABEL_PRIVATE,
    LABEL_SCOPE,
    SetKind,
    SnapshotSet,
    VolumeRef,
)
from .errors import ReconcilerError, Unavailable
from .fanout import per_node
from .restore import RestorePlan, RestoreStep

log = logging.getLogger(__name__)

SAFETY_RETENTION = timedelta(days=7)
ProgressCb = Callable[[str, ProgressEvent], None]  # (volume key, event)


@dataclass
class RestoreOutcome:
    ok: bool
    message: str
    safety_set_id: str = ""
    volumes: list[str] = field(default_factory=list)
    settings_file: str = ""
    errors: list[str] = field(default_factory=list)


def existing_targets(plan: RestorePlan, clients: Mapping[str, AgentClient]) -> list[VolumeRef]:
    """Which of the volumes a to-new restore would write exist already (asked of the agents)."""
    wanted: dict[tuple[str, str], list[str]] = {}
    for st in plan.steps:
        if not st.over_source:
            wanted.setdefault((st.ref.node, st.dest_pool), []).append(st.target)
    out: list[VolumeRef] = []
    for (node, pool), names in wanted.items():
        client = clients.get(node)
        if client is None:
            raise Unavailable(f"node {node} is not connected")
        out.extend(VolumeRef(node, p, v) for p, v, _ in client.list_volumes(pool, names))
    return out


def safety_set_id(now: datetime) -> str:
    return f"safety-{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def take_safety_set(
    s: SnapshotSet,
    steps: tuple[RestoreStep, ...],
    clients: Mapping[str, AgentClient],
    now: datetime,
    set_id: str,
) -> None:
    """One safety set of every volume about to be overwritten, on all nodes, before anything changes."""
    labels = {
        LABEL_SCOPE: s.scope,
        LABEL_KIND: SetKind.SAFETY.value,
        LABEL_EXPECTED: str(len(steps)),
        LABEL_PRIVATE: "true" if s.private else "false",
        "restored_from": s.set_id,
    }
    by_node: dict[str, list[RestoreStep]] = {}
    for st in steps:
        by_node.setdefault(st.ref.node, []).append(st)

    def one(node: str) -> None:
        targets = tuple(
            Target(st.ref.pool, st.ref.volume, st.member.snapshot.labels.get("resource", ""))
            for st in by_node[node]
        )
        clients[node].create_set(
            CreateSetRequest(
                set_id=set_id,
                name=f"safety before restoring {s.set_id}",
                targets=targets,
                created=now,
                labels=labels,
                expires=now + SAFETY_RETENTION,
            )
        )

    per_node(sorted(by_node), one, thread_name="restore")  # any failure raises: no safety set, no restore


def run_plan(
    plan: RestorePlan,
    s: SnapshotSet,
    clients: Mapping[str, AgentClient],
    *,
    now: datetime,
    progress: ProgressCb,
    settings_dir: Path,
) -> RestoreOutcome:
    missing = sorted({st.ref.node for st in plan.steps} - set(clients))
    if missing:
        raise Unavailable(f"node(s) {', '.join(missing)} not connected; nothing was restored")
    safety = ""
    if plan.safety_snapshot:
        progress("", ProgressEvent(phase="safety snapshot", message=f"{len(plan.steps)} volume(s)"))
        safety = safety_set_id(now)
        try:
            take_safety_set(s, plan.steps, clients, now, safety)
        except ReconcilerError as exc:
            if type(exc).__init__ is not ReconcilerError.__init__:
                raise
            # named: a node may have taken its part before the failure (or before an answer that
            # never came), and that part stays, as any safety set, until it expires
            raise type(exc)(f"the safety snapshot {safety} failed, so nothing was restored: {exc}") from exc
    req = plan.request
    by_node: dict[str, list[RestoreStep]] = {}
    for st in plan.steps:
        by_node.setdefault(st.ref.node, []).append(st)
    done: list[str] = []
    errors: list[str] = []

    def one(node: str) -> None:
        client = clients[node]
        for st in by_node[node]:
            key = SnapshotKey(s.set_id, st.ref.pool, st.ref.volume)
            vol = f"{node}/{st.dest_pool}/{st.target}"

            def cb(ev: ProgressEvent, vol: str = vol) -> None:
                progress(vol, ev)

            try:
                if st.over_source:
                    client.restore(key, skip_safety_snapshot=True, paths=req.paths, progress=cb)
                elif req.mode == "clone" and req.level != "files":
                    client.clone(key, st.target, new_pool=st.pool, progress=cb)
                else:
                    client.restore(key, new_volume=st.target, new_pool=st.pool, paths=req.paths, progress=cb)
                done.append(vol)
                log.info(
                    "restore: %s (%s)",
                    st.what,
                    plan.summary,
                    extra={"set_id": s.set_id, "node": node, "action": "restore", "scope": s.scope},
                )
            except ReconcilerError as exc:
                hint = ""
                if isinstance(exc, Unavailable) and st.over_source and not req.paths:
                    # the agent swaps atomically: a restore cut off halfway left one state or the other
                    hint = (
                        " (the agent was lost during the restore: the volume holds either its content from "
                        "before or the restored content, never a mix; run the restore again)"
                    )
                errors.append(f"{vol}: {exc}{hint}")
                log.error("restore of %s failed: %s", vol, exc, extra={"set_id": s.set_id, "node": node})

    per_node(sorted(by_node), one, thread_name="restore")
    settings_file = ""
    if plan.settings:
        settings_dir.mkdir(parents=True, exist_ok=True)
        path = settings_dir / f"{s.set_id}-{req.name or 'system'}.json"
        path.write_text(json.dumps({r: json.loads(v) for r, v in plan.settings.items()}, indent=2) + "\n")
        settings_file = str(path)
    ok = not errors
    msg = (
        f"{plan.summary}: done"
        if ok
        else f"{plan.summary}: {len(errors)} of {len(plan.steps)} volume(s) failed"
        + (f"; the safety set {safety} holds the content from before" if safety else "")
    )
    return RestoreOutcome(ok, msg, safety, sorted(done), settings_file, errors)
