"""Restore planning (pure): what a restore or clone out of a set will do, or why it is refused.

The daemon prints this plan before doing anything, then executes it step by step. Every refusal
happens here, before any volume is touched: a restore never stops halfway because of something
that could have been known up front.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace

from .config import Config
from .domain import (
    LABEL_EXPOSED,
    LABEL_RESOURCE,
    LABEL_SETTINGS,
    LABEL_TENANT,
    NAME_RE,
    ObservedMember,
    SnapshotSet,
    VolumeRef,
    valid_volume_name,
)
from .errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied

LEVELS = ("resource", "tenant", "system", "files")
MODES = ("over_source", "to_new", "clone")

# the progress phase of a restore waiting out its cancel window (done/total in milliseconds)
CANCEL_WINDOW_PHASE = "cancel window"
MAX_CANCEL_WINDOW = 3600  # seconds


@dataclass(frozen=True, slots=True)
class RestoreRequest:
    set_id: str
    level: str
    name: str = ""
    mode: str = "to_new"
    new_name: str = ""
    confirm: bool = False
    skip_safety_snapshot: bool = False
    with_settings: bool = False
    paths: tuple[str, ...] = ()
    volume: str = ""
    dry_run: bool = False
    pool: str = ""  # to a new copy: the pool it goes to, on the same node ("": the snapshot's pool)


@dataclass(frozen=True, slots=True)
class RestoreStep:
    member: ObservedMember
    target: str  # the volume written: the source itself when over_source
    over_source: bool = False  # replace the live volume (else `target` is a new volume)
    pool: str = ""  # a new volume's pool ("": the snapshot's)

    @property
    def ref(self) -> VolumeRef:
        return self.member.ref

    @property
    def dest_pool(self) -> str:
        return self.pool or self.ref.pool

    @property
    def what(self) -> str:
        src = f"{self.ref.node}/{self.ref.pool}/{self.ref.volume}"
        if self.over_source:
            return f"revert {src} to the set's content"
        return f"write {src} as new volume {self.ref.node}/{self.dest_pool}/{self.target}"


@dataclass(frozen=True, slots=True)
class RestorePlan:
    request: RestoreRequest
    summary: str
    steps: tuple[RestoreStep, ...]
    safety_snapshot: bool
    warnings: tuple[str, ...] = field(default_factory=tuple)
    settings: dict[str, str] = field(default_factory=dict)  # resource -> recorded settings (JSON)
    new_name: str = ""  # to a new copy: the name it gets (a resource, a tenant, or for files a volume)


MAX_COPY_NUMBER = 99


def numbered_copy(plan: RestorePlan, n: int) -> RestoreRequest:
    """The plan's request again, as copy number `n` (2, 3, ...) of its new name, for when an
    earlier restore took the default name: `web_restored` is followed by `web_restored_2`."""
    return replace(plan.request, new_name=f"{plan.new_name}_{n}")


def renamed_volume(volume: str, old: str, new: str) -> str:
    """The volume a restore-to-new writes: the resource/tenant name segment replaced by the new name,
    or, when the path has no such segment, the new name appended to the last segment."""
    parts = volume.split("/")
    if old in parts:
        return "/".join(new if p == old else p for p in parts)
    return "/".join([*parts[:-1], f"{parts[-1]}_{new}"])


def _new_volume(m: ObservedMember, req: RestoreRequest, new_name: str) -> str:
    """Where a resource or tenant restored to a new copy writes this member. A tenant whose
    volumes do not name it (vms/web/disk0, not tenants/acme/...) renames each resource instead:
    vms/web/disk0 and vms/web/disk1 become vms/web_NEW/disk0 and vms/web_NEW/disk1, the VM's
    disks staying together, rather than vms/web/disk0_NEW beside the live ones."""
    volume = m.snapshot.volume
    resource = m.snapshot.labels.get(LABEL_RESOURCE, "")
    parts = volume.split("/")
    if req.level == "tenant" and req.name not in parts and resource in parts:
        return renamed_volume(volume, resource, f"{resource}_{new_name}")
    return renamed_volume(volume, req.name, new_name)


def members_of_resource(s: SnapshotSet, resource: str) -> list[ObservedMember]:
    return [m for m in s.members if m.snapshot.labels.get(LABEL_RESOURCE) == resource]


def members_of_tenant(s: SnapshotSet, tenant: str) -> list[ObservedMember]:
    return [m for m in s.members if m.snapshot.labels.get(LABEL_TENANT) == tenant]


def exposed_to(s: SnapshotSet) -> set[str]:
    out: set[str] = set()
    for m in s.members:
        out |= {t for t in m.snapshot.labels.get(LABEL_EXPOSED, "").split(",") if t}
    return out


def tenant_can_see(s: SnapshotSet, tenant: str) -> bool:
    """A tenant sees its own scopes' sets, non-private sets holding its resources, and exposed sets."""
    if tenant in exposed_to(s):
        return True
    if s.scope == f"tenant:{tenant}":
        return True
    mine = members_of_tenant(s, tenant)
    if not mine:
        return False
    if s.scope.startswith("resource:"):
        return True
    return not s.private


def plan_restore(
    config: Config,
    s: SnapshotSet,
    req: RestoreRequest,
    *,
    existing: Collection[VolumeRef] = (),
    tenant: str | None = None,
) -> RestorePlan:
    """Decide every step of a restore, or raise an error naming why it is refused.

    `existing` are the volumes that already exist among the targets a to-new restore would write
    (the daemon asks the agents); `tenant` is set for a tenant-scoped caller."""
    if req.level not in LEVELS:
        raise InvalidArgument(f"restore level {req.level!r}: one of {', '.join(LEVELS)}")
    if req.mode not in MODES:
        raise InvalidArgument(f"restore mode {req.mode!r}: one of {', '.join(MODES)}")
    if tenant is not None and not tenant_can_see(s, tenant):
        raise PermissionDenied(f"set {s.set_id} is not visible to tenant {tenant}")
    if tenant is not None and req.pool:
        raise PermissionDenied(
            f"tenant {tenant} cannot choose the pool of a new copy (--pool is for the operator)"
        )
    if req.pool and not NAME_RE.match(req.pool):
        raise InvalidArgument(f"invalid pool name {req.pool[:80]!r}")
    if req.pool and (req.level == "system" or req.mode == "over_source"):
        raise InvalidArgument(
            f"--pool {req.pool} places a new copy; a restore over the source writes where the source is"
        )
    if s.received_as and (req.level == "system" or req.mode == "over_source"):
        raise FailedPrecondition(
            f"set {s.received_as} is a copy received from another site: a whole system, or anything "
            "over its source, is restored only on the site that took it; here, restore resources, "
            "tenants or files as new copies (--as), or clone them"
        )
    warnings: list[str] = []
    if not s.complete:
        if req.level == "system":
            raise FailedPrecondition(
                f"set {s.set_id} is partial ({len(s.members)} of {s.expected_members} volumes); "
                "a whole system can only be restored from a complete full-system set"
            )
        warnings.append(f"set {s.set_id} is partial; restoring what it holds")

    if req.level == "system":
        return _plan_system(config, s, req, tenant=tenant, warnings=warnings)
    if req.level == "tenant":
        if tenant is not None and req.name != tenant:
            raise PermissionDenied(f"tenant {tenant} cannot restore tenant {req.name}")
        members = members_of_tenant(s, req.name)
        if not members:
            raise NotFound(f"set {s.set_id} holds no resource of tenant {req.name!r}")
        what = f"tenant {req.name}"
    else:
        if not req.name:
            raise InvalidArgument("name the resource to restore")
        members = members_of_resource(s, req.name)
        if not members:
            held = sorted({m.snapshot.labels.get(LABEL_RESOURCE, "?") for m in s.members})
            raise NotFound(
                f"set {s.set_id} does not contain resource {req.name!r} (it holds: {', '.join(held)})"
            )
        if tenant is not None and any(m.snapshot.labels.get(LABEL_TENANT) != tenant for m in members):
            raise PermissionDenied(f"resource {req.name} does not belong to tenant {tenant}")
        what = f"resource {req.name}"

    if req.level == "files":
        return _plan_files(config, s, req, members, warnings, existing)

    settings = {}
    if req.with_settings:
        for m in members:
            r = m.snapshot.labels.get(LABEL_RESOURCE, "")
            if LABEL_SETTINGS in m.snapshot.labels:
                settings[r] = m.snapshot.labels[LABEL_SETTINGS]
        if not settings:
            warnings.append("the set recorded no settings for these resources; restoring data only")

    if req.mode == "over_source":
        if not req.confirm:
            raise FailedPrecondition(
                f"restoring over the live {what} replaces its data (stop it first); "
                "confirm with --yes, or restore to a new volume instead"
            )
        steps = tuple(RestoreStep(m, m.snapshot.volume, over_source=True) for m in members)
        safety = not req.skip_safety_snapshot
        summary = f"revert {what} ({len(steps)} volume(s)) to set {s.set_id}" + (
            ", after a safety snapshot" if safety else ", WITHOUT a safety snapshot"
        )
        return RestorePlan(req, summary, steps, safety, tuple(warnings), settings)

    default_suffix = "_clone" if req.mode == "clone" else "_restored"
    new_name = req.new_name or f"{req.name}{default_suffix}"
    if new_name == req.name:
        raise InvalidArgument(f"the new name must differ from {req.name!r}")
    steps = tuple(RestoreStep(m, _new_volume(m, req, new_name), pool=req.pool) for m in members)
    for st in steps:
        if not valid_volume_name(st.target):
            raise InvalidArgument(f"new name {new_name!r} gives an invalid volume name {st.target!r}")
    _check_new_copies(config, steps, existing)
    verb = "clone" if req.mode == "clone" else "restore"
    summary = (
        f"{verb} {what} from set {s.key} as {new_name!r}{f' in pool {req.pool}' if req.pool else ''} "
        f"({len(steps)} new volume(s); "
        "not added to the config, never deleted by the reconciler)"
    )
    return RestorePlan(req, summary, steps, False, tuple(warnings), settings, new_name)


def _plan_system(
    config: Config, s: SnapshotSet, req: RestoreRequest, *, tenant: str | None, warnings: list[str]
) -> RestorePlan:
    if tenant is not None:
        raise PermissionDenied("a tenant cannot restore the whole system")
    scope_kind, _, scope_name = s.scope.partition(":")
    sys_scope = config.system_snapshots.get(scope_name) if scope_kind == "system" else None
    if sys_scope is None or sys_scope.type != "full":
        raise FailedPrecondition(
            f"set {s.set_id} (scope {s.scope}) is not a full system set; restore its resources one by one"
        )
    if req.mode != "over_source":
        raise InvalidArgument(
            "a whole system is restored over itself; use resource or tenant restores to new"
        )
    # only on the system that took it: every member's node and pool belongs to this config
    foreign = sorted(
        {
            m.node
            for m in s.members
            if m.node not in config.nodes or m.snapshot.pool not in config.nodes[m.node].pools
        }
    )
    if foreign:
        raise FailedPrecondition(
            f"set {s.set_id} was not taken on this system (unknown nodes/pools: {', '.join(foreign)}); "
            "a whole-system restore is only offered where the set was taken"
        )
    if not req.confirm:
        raise FailedPrecondition(
            f"restoring the whole system reverts all {len(s.members)} volumes on "
            f"{len({m.node for m in s.members})} node(s) to set {s.set_id}; confirm with --yes"
        )
    steps = tuple(RestoreStep(m, m.snapshot.volume, over_source=True) for m in s.members)
    safety = not req.skip_safety_snapshot
    summary = (
        f"revert the WHOLE SYSTEM ({len(steps)} volumes on {len({st.ref.node for st in steps})} node(s)) to "
        f"set {s.set_id}"
        + (", after a safety snapshot of everything" if safety else ", WITHOUT a safety snapshot")
    )
    return RestorePlan(req, summary, steps, safety, tuple(warnings))


def _check_new_copies(config: Config, steps: Sequence[RestoreStep], existing: Collection[VolumeRef]) -> None:
    """A new copy goes to a pool of its node, never onto the volume it is restored from, and never
    into a volume that is there already (`existing`; a name asked for with --as is never changed
    either: the daemon numbers only its default names)."""
    for st in steps:
        node = config.nodes.get(st.ref.node)
        if st.pool and (node is None or st.pool not in node.pools):
            has = ", ".join(sorted(node.pools)) if node is not None else "none in this config"
            raise NotFound(f"node {st.ref.node} has no pool {st.pool!r} (its pools: {has})")
        if st.dest_pool == st.ref.pool and st.target == st.ref.volume:
            raise InvalidArgument(
                f"the new volume must differ from {st.ref.volume!r}, which the set is restored from "
                "(to replace its content, restore with --over-source --yes)"
            )
    clash = sorted(f"{r.node}/{r.pool}/{r.volume}" for r in existing)
    if clash:
        raise FailedPrecondition(f"{', '.join(clash)} already exist(s); choose another name with --as")


def _plan_files(
    config: Config,
    s: SnapshotSet,
    req: RestoreRequest,
    members: list[ObservedMember],
    warnings: list[str],
    existing: Collection[VolumeRef],
) -> RestorePlan:
    if not req.paths:
        raise InvalidArgument("name the paths to restore")
    for p in req.paths:
        parts = p.split("/")
        if p.startswith("/") or ".." in parts or not p.strip("/"):
            raise InvalidArgument(f"path {p!r} must be relative to the volume and stay inside it")
    if req.volume:
        chosen = [m for m in members if m.snapshot.volume == req.volume]
        if not chosen:
            raise NotFound(f"resource {req.name} has no volume {req.volume!r} in set {s.set_id}")
    elif len(members) == 1:
        chosen = members
    else:
        vols = ", ".join(m.snapshot.volume for m in members)
        raise InvalidArgument(f"resource {req.name} has several volumes ({vols}); pick one with --volume")
    m = chosen[0]
    if req.mode == "over_source":
        if not req.confirm:
            raise FailedPrecondition("restoring files over the live volume replaces them; confirm with --yes")
        step = RestoreStep(m, m.snapshot.volume, over_source=True)
        return RestorePlan(
            req,
            f"restore {len(req.paths)} path(s) of {m.snapshot.volume} in place from set {s.set_id}",
            (step,),
            not req.skip_safety_snapshot,
            tuple(warnings),
        )
    target = req.new_name or f"{m.snapshot.volume}_restored"
    if not valid_volume_name(target):
        raise InvalidArgument(f"{target!r} is not a valid volume name")
    step = RestoreStep(m, target, pool=req.pool)
    _check_new_copies(config, [step], existing)
    return RestorePlan(
        req,
        f"restore {len(req.paths)} path(s) of {m.snapshot.volume} from set {s.set_id} into "
        f"new volume {target}{f' in pool {req.pool}' if req.pool else ''}",
        (step,),
        False,
        tuple(warnings),
        new_name=target,
    )
