"""The node agent's logic, independent of gRPC: a thin, safe executor over local pools.

It enforces the rules that protect data even when the controller is wrong: immutable and held
snapshots cannot be deleted, no partial snapshot is ever visible, paths stay inside their pool,
and a restore over a live volume swaps atomically after a safety snapshot.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .. import __version__
from ..backends.base import Backend, FileEntry, ProgressEvent, ProgressFn, no_progress, tree_size
from ..catalog import Catalog
from ..domain import (
    LABEL_KIND,
    LABEL_ORIGIN_NODE,
    LABEL_ORIGIN_SITE,
    LABEL_RESOURCE,
    NAME_RE,
    SET_ID_RE,
    ImmutableState,
    SetKind,
    SnapshotInfo,
    valid_volume_name,
)
from ..errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PathEscapes,
    ReconcilerError,
)
from ..fsutil import copy_tree, exchange, rename_noreplace
from ..quiesce import quiesced
from .api import (
    PROTOCOL_VERSION,
    UPDATE_FIELDS,
    CreateSetRequest,
    CreateSetResult,
    DeleteResult,
    NodeInfo,
    OperationResult,
    PoolInfo,
    SnapshotKey,
    SnapshotUpdate,
    SpaceInfo,
    Target,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# Limits on what one request may ask for (hostile or buggy clients).
MAX_TARGETS = 10_000
MAX_LABELS = 64
MAX_LABEL_BYTES = 4096
MAX_HOLDS = 64
MAX_HOLD_CHARS = 200
SAFETY_RETENTION = timedelta(days=7)
DEFAULT_UNLOCK_DELAY = timedelta(days=7)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Pool:
    name: str
    backend: Backend
    catalog: Catalog


class NodeAgent:
    def __init__(
        self,
        node: str,
        backends: Mapping[str, Backend],
        *,
        clock: Clock = utcnow,
        unlock_floor: timedelta = timedelta(days=1),
        allow_hooks: bool = True,
        durable_inserts: bool = True,
    ) -> None:
        """`durable_inserts=False`: a new snapshot's catalog row is not fsynced (see Catalog)."""
        self.node = node
        self.clock = clock
        self.unlock_floor = unlock_floor
        self.allow_hooks = allow_hooks
        self.pools: dict[str, Pool] = {}
        for name, backend in backends.items():
            catalog = Catalog(backend.meta_dir / "catalog.db", pool=name, durable_inserts=durable_inserts)
            if catalog.created and _has_stored_data(backend):
                catalog.close()
                (backend.meta_dir / "catalog.db").unlink(missing_ok=True)
                raise FailedPrecondition(
                    f"pool {name}: the snapshot catalog {backend.meta_dir / 'catalog.db'} is missing but the store "
                    f"under {backend.meta_dir} holds data; refusing to open the pool, because treating that data as "
                    "orphans would delete every snapshot. Restore the catalog from a backup."
                )
            backend.open(known=catalog.keys())
            self.pools[name] = Pool(name, backend, catalog)
        # One lock per set id: concurrent creates of the same set serialise, so a retried create
        # that races the first one sees its result instead of snapshotting twice.
        self._set_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # One lock per volume for restores (no two restores of a volume at once).
        self._volume_locks: dict[tuple[str, str], threading.Lock] = {}

    def close(self) -> None:
        for pool in self.pools.values():
            pool.backend.close()
            pool.catalog.close()

    # --- helpers ----------------------------------------------------------------------------
    def pool(self, name: str) -> Pool:
        try:
            return self.pools[name]
        except KeyError:
            known = ", ".join(sorted(self.pools)) or "none"
            raise NotFound(f"node {self.node}: no pool {name!r} (pools: {known})") from None

    def _set_lock(self, set_id: str) -> threading.Lock:
        with self._locks_guard:
            lock = self._set_locks.get(set_id)
            if lock is None:
                if len(self._set_locks) > 10_000:
                    self._set_locks = {k: v for k, v in self._set_locks.items() if v.locked()}
                lock = self._set_locks[set_id] = threading.Lock()
            return lock

    def _volume_lock(self, pool: str, volume: str) -> threading.Lock:
        with self._locks_guard:
            return self._volume_locks.setdefault((pool, volume), threading.Lock())

    def effective(self, snap: SnapshotInfo) -> SnapshotInfo:
        """The immutability state as of the agent's own clock: an unlock wait that ran out is unlocked."""
        if (
            snap.immutable is ImmutableState.UNLOCKING
            and snap.unlock_at is not None
            and self.clock() >= snap.unlock_at
        ):
            return replace(snap, immutable=ImmutableState.UNLOCKED)
        return snap

    @staticmethod
    def check_set_id(set_id: str) -> None:
        if not SET_ID_RE.match(set_id):
            raise InvalidArgument(
                f"set id {set_id!r} is not valid (letters, digits and ._:@+- ; at most 200)"
            )

    @staticmethod
    def check_volume(volume: str) -> None:
        if not valid_volume_name(volume):
            raise InvalidArgument(
                f"volume {volume!r} is not a pool-relative path of safe segments (no '..', no absolute path)"
            )

    # --- info -------------------------------------------------------------------------------
    def node_info(self, expect_node: str = "") -> NodeInfo:
        if expect_node and expect_node != self.node:
            raise FailedPrecondition(
                f"this agent serves node {self.node!r}, but the caller expects {expect_node!r}; check the config"
            )
        return NodeInfo(
            node=self.node,
            protocol_version=PROTOCOL_VERSION,
            agent_version=__version__,
            pools=tuple(self.pool_info(name) for name in sorted(self.pools)),
            now=self.clock(),
        )

    def pool_info(self, name: str) -> PoolInfo:
        p = self.pool(name)
        return PoolInfo(
            name=name,
            backend=p.backend.kind,
            generation=p.catalog.generation(),
            snapshot_count=p.catalog.count(),
            space=SpaceInfo(
                logical_bytes=p.catalog.logical_bytes(),
                stored_bytes=p.backend.stored_bytes(),
                free_bytes=p.backend.free_bytes(),
            ),
            path=str(p.backend.root),
        )

    def list_volumes(self, pool: str = "", names: Sequence[str] | None = None) -> list[tuple[str, str, int]]:
        out: list[tuple[str, str, int]] = []
        if names is not None:
            # existence only: a restore checks its target names before writing anything
            for name in [pool] if pool else sorted(self.pools):
                backend = self.pool(name).backend
                for vol in names:
                    self.check_volume(vol)
                    if os.path.lexists(backend.volume_path(vol, must_exist=False)):
                        out.append((name, vol, 0))
            return out
        for name in [pool] if pool else sorted(self.pools):
            for entry in self.pool(name).backend.list_volumes(None):
                out.append((name, entry.volume, entry.logical_bytes))
        return out

    # --- create -----------------------------------------------------------------------------
    def create_set(self, req: CreateSetRequest, progress: ProgressFn = no_progress) -> CreateSetResult:
        self._validate_create(req)
        with self._set_lock(req.set_id):
            existing: dict[tuple[str, str], SnapshotInfo] = {}
            for t in req.targets:
                snap = self.pool(t.pool).catalog.get(req.set_id, t.volume)
                if snap is None:
                    continue
                origin = snap.labels.get(LABEL_ORIGIN_NODE, self.node)
                site = snap.labels.get(LABEL_ORIGIN_SITE, "")
                if origin != self.node or (site and site != req.site):
                    # a copy another site sent here under the same set id: it is not a snapshot of
                    # this volume, and must never be taken for one (a copy of this very set coming
                    # back, by sync back, names this node and the asking site)
                    raise AlreadyExists(
                        f"node {self.node} pool {t.pool}: set {req.set_id} already holds {t.volume!r} as a "
                        f"copy received from node {origin}{f' of site {site}' if site else ''}; give the "
                        "offsite copies a pool of their own (offsite.targets.<name>.pool on the sending site)"
                    )
                existing[(t.pool, t.volume)] = snap
            todo = [t for t in req.targets if (t.pool, t.volume) not in existing]
            if not todo:
                snaps = tuple(self.effective(existing[(t.pool, t.volume)]) for t in req.targets)
                return CreateSetResult(snaps, quiesced=all(s.quiesced for s in snaps))
            # Resolve every volume before freezing anything: a missing volume fails fast.
            for t in todo:
                self.pool(t.pool).backend.volume_path(t.volume)
            todo_resources = {t.resource for t in todo}
            groups = [(g.resource, g.hooks) for g in req.quiesce if g.resource in todo_resources]
            if groups and not self.allow_hooks:
                raise FailedPrecondition(
                    f"node {self.node}: this agent does not run quiesce hooks (allow_hooks: false)"
                )
            stored: list[tuple[str, str, int]] = []
            try:
                with quiesced(
                    groups, fail_on_error=req.quiesce_fail, freeze_budget=req.freeze_budget.total_seconds()
                ) as outcome:
                    # Back to back while frozen; data only, nothing visible yet.
                    for t in todo:
                        res = self.pool(t.pool).backend.snapshot(
                            set_id=req.set_id, volume=t.volume, progress=progress
                        )
                        stored.append((t.pool, t.volume, res.logical_bytes))
                if outcome.thaw_errors and req.quiesce_fail:
                    raise FailedPrecondition("; ".join(outcome.thaw_errors))
                now = self.clock()
                quiesced_ok = bool(groups) and outcome.quiesced and not outcome.thaw_errors
                by_pool: dict[str, list[SnapshotInfo]] = {}
                resources = {(t.pool, t.volume): t.resource for t in todo}
                member_labels = {(t.pool, t.volume): t.labels for t in todo}
                for pool_name, volume, logical in stored:
                    labels = {**req.labels, **member_labels[(pool_name, volume)]}
                    if resources[(pool_name, volume)]:
                        labels[LABEL_RESOURCE] = resources[(pool_name, volume)]
                    by_pool.setdefault(pool_name, []).append(
                        SnapshotInfo(
                            set_id=req.set_id,
                            name=req.name or req.set_id,
                            pool=pool_name,
                            volume=volume,
                            created=req.created or now,
                            expires=req.expires,
                            labels=labels,
                            immutable=ImmutableState.LOCKED if req.immutable else ImmutableState.NONE,
                            holds=frozenset(),
                            logical_bytes=logical,
                            quiesced=quiesced_ok,
                        )
                    )
                # The set's members on this node become visible together, per pool in one transaction.
                for pool_name, members in by_pool.items():
                    self.pool(pool_name).catalog.insert_many(members)
            except BaseException:
                for pool_name, volume, _ in stored:
                    if self.pool(pool_name).catalog.get(req.set_id, volume) is None:
                        try:
                            self.pool(pool_name).backend.drop(set_id=req.set_id, volume=volume)
                        except Exception:  # noqa: BLE001 - open() cleans up orphans anyway
                            log.exception("cleanup of %s/%s failed", pool_name, volume)
                raise
            snaps_all = tuple(
                self.effective(
                    existing.get((t.pool, t.volume))
                    or self.get_snapshot(SnapshotKey(req.set_id, t.pool, t.volume))
                )
                for t in req.targets
            )
            return CreateSetResult(snaps_all, quiesced=quiesced_ok, warnings=tuple(outcome.warnings))

    def _validate_create(self, req: CreateSetRequest) -> None:
        self.check_set_id(req.set_id)
        if not req.targets:
            raise InvalidArgument(f"set {req.set_id}: no volumes to snapshot")
        if len(req.targets) > MAX_TARGETS:
            raise InvalidArgument(
                f"set {req.set_id}: {len(req.targets)} volumes in one request (at most {MAX_TARGETS})"
            )
        if (
            len(req.labels) > MAX_LABELS
            or sum(len(k) + len(v) for k, v in req.labels.items()) > MAX_LABEL_BYTES
        ):
            raise InvalidArgument(f"set {req.set_id}: too many or too large labels")
        if req.site and not NAME_RE.match(req.site):
            raise InvalidArgument(f"set {req.set_id}: invalid site name {req.site[:80]!r}")
        seen: set[tuple[str, str]] = set()
        for t in req.targets:
            self.pool(t.pool)
            self.check_volume(t.volume)
            if (t.pool, t.volume) in seen:
                raise InvalidArgument(f"set {req.set_id}: volume {t.pool}/{t.volume} listed twice")
            seen.add((t.pool, t.volume))

    # --- list -------------------------------------------------------------------------------
    def list_snapshots(
        self, pool: str, *, page_size: int = 1000, with_usage: bool = False
    ) -> Iterator[tuple[int, list[SnapshotInfo]]]:
        p = self.pool(pool)
        page_size = max(1, min(page_size or 1000, 10_000))
        for gen, snaps in p.catalog.pages(page_size):
            if with_usage:
                unique = p.backend.unique_bytes([(s.set_id, s.volume) for s in snaps])
                snaps = [replace(s, unique_bytes=unique.get((s.set_id, s.volume), 0)) for s in snaps]
            yield gen, [self.effective(s) for s in snaps]

    def get_snapshot(self, ref: SnapshotKey) -> SnapshotInfo:
        snap = self.pool(ref.pool).catalog.get(ref.set_id, ref.volume)
        if snap is None:
            raise NotFound(f"node {self.node}: no snapshot of {ref.pool}/{ref.volume} in set {ref.set_id}")
        return self.effective(snap)

    def list_files(self, ref: SnapshotKey, prefix: str = "") -> Iterator[FileEntry]:
        snap = self.get_snapshot(ref)
        if prefix and (prefix.startswith("/") or ".." in prefix.split("/")):
            raise InvalidArgument(f"path {prefix!r} must be relative to the volume and stay inside it")
        return self.pool(ref.pool).backend.list_files(set_id=snap.set_id, volume=snap.volume, prefix=prefix)

    # --- delete -----------------------------------------------------------------------------
    def delete(self, refs: Sequence[SnapshotKey]) -> list[DeleteResult]:
        out = []
        for ref in refs:
            try:
                self.check_set_id(ref.set_id)
                self.check_volume(ref.volume)
                p = self.pool(ref.pool)
                with self._set_lock(ref.set_id):
                    snap = p.catalog.get(ref.set_id, ref.volume)
                    if snap is None:  # CSI-style: deleting what is gone succeeds
                        p.backend.drop(set_id=ref.set_id, volume=ref.volume)
                        out.append(DeleteResult(ref, True))
                        continue
                    self._check_deletable(self.effective(snap))
                    p.catalog.remove(ref.set_id, ref.volume)  # invisible first, data after
                p.backend.drop(set_id=ref.set_id, volume=ref.volume)
                out.append(DeleteResult(ref, True))
            except ReconcilerError as exc:
                out.append(DeleteResult(ref, False, str(exc)))
        return out

    def _check_deletable(self, snap: SnapshotInfo) -> None:
        where = f"snapshot {snap.pool}/{snap.volume} of set {snap.set_id}"
        if snap.immutable is ImmutableState.LOCKED:
            raise FailedPrecondition(
                f"{where} is immutable (locked); run `reconciler snapshot unlock` and wait"
            )
        if snap.immutable is ImmutableState.UNLOCKING:
            assert snap.unlock_at is not None
            raise FailedPrecondition(
                f"{where} is immutable (unlocking): deletable from {snap.unlock_at.isoformat(timespec='seconds')}"
            )
        if snap.holds:
            raise FailedPrecondition(f"{where} is held ({', '.join(sorted(snap.holds))})")

    # --- update -----------------------------------------------------------------------------
    def update(self, updates: Sequence[SnapshotUpdate]) -> list[SnapshotInfo]:
        changed: dict[str, list[SnapshotInfo]] = {}
        for u in updates:
            unknown = set(u.fields) - UPDATE_FIELDS
            if unknown or not u.fields:
                raise InvalidArgument(
                    f"update fields {sorted(unknown) or '[]'} not understood ({sorted(UPDATE_FIELDS)})"
                )
            if "lock" in u.fields and "unlock" in u.fields:
                raise InvalidArgument("lock and unlock in one update")
            snap = self.get_snapshot(u.ref)
            if "expires" in u.fields:
                snap = replace(snap, expires=u.expires)
            if "holds" in u.fields:
                holds = (snap.holds | u.add_holds) - u.remove_holds
                if len(holds) > MAX_HOLDS or any(not h or len(h) > MAX_HOLD_CHARS for h in u.add_holds):
                    raise InvalidArgument(
                        f"snapshot {u.ref.pool}/{u.ref.volume}: holds must be 1-{MAX_HOLD_CHARS} characters, "
                        f"at most {MAX_HOLDS} per snapshot ({len(holds)} asked for)"
                    )
                snap = replace(snap, holds=holds)
            if "labels" in u.fields:
                labels = {k: v for k, v in snap.labels.items() if k not in u.remove_labels}
                labels.update(u.set_labels)
                if (
                    len(labels) > MAX_LABELS
                    or sum(len(k) + len(v) for k, v in labels.items()) > MAX_LABEL_BYTES
                ):
                    raise InvalidArgument(
                        f"snapshot {u.ref.pool}/{u.ref.volume}: too many or too large labels"
                    )
                snap = replace(snap, labels=labels)
            if "lock" in u.fields:
                snap = replace(snap, immutable=ImmutableState.LOCKED, unlock_at=None)
            if "unlock" in u.fields:
                if snap.immutable is ImmutableState.LOCKED:
                    # The agent's own clock and floor decide: no client can shorten the wait below it.
                    delay = max(u.unlock_delay, self.unlock_floor)
                    snap = replace(snap, immutable=ImmutableState.UNLOCKING, unlock_at=self.clock() + delay)
                elif snap.immutable is ImmutableState.NONE:
                    raise FailedPrecondition(
                        f"snapshot {u.ref.pool}/{u.ref.volume} of set {u.ref.set_id} is not immutable"
                    )
            changed.setdefault(u.ref.pool, []).append(snap)
        out: list[SnapshotInfo] = []
        for pool, snaps in changed.items():
            self.pool(pool).catalog.update(snaps)
            out.extend(self.effective(s) for s in snaps)
        return out

    # --- restore / clone --------------------------------------------------------------------
    def restore(
        self,
        ref: SnapshotKey,
        *,
        new_volume: str = "",
        new_pool: str = "",
        skip_safety_snapshot: bool = False,
        safety_set_id: str = "",
        paths: Sequence[str] = (),
        progress: ProgressFn = no_progress,
    ) -> OperationResult:
        snap = self.get_snapshot(ref)
        p = self.pool(ref.pool)
        if new_volume:
            return self._to_new(p, snap, new_volume, paths, progress, what="restore", new_pool=new_pool)
        if new_pool:
            raise InvalidArgument(
                "new_pool names where a new volume goes; a restore over the source has none"
            )
        clean_paths = [_check_rel_path(x) for x in paths]
        with self._volume_lock(ref.pool, ref.volume):
            live = p.backend.volume_path(ref.volume)
            safety = ""
            if not skip_safety_snapshot:
                safety = (
                    safety_set_id or f"safety-{self.clock().strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
                )
                self.check_set_id(safety)
                progress_msg(progress, "safety snapshot", safety)
                now = self.clock()
                self.create_set(
                    CreateSetRequest(
                        set_id=safety,
                        name=f"safety before restore of {ref.volume}",
                        targets=(Target(ref.pool, ref.volume, snap.labels.get(LABEL_RESOURCE, "")),),
                        created=now,
                        labels={**_safety_labels(snap), LABEL_KIND: SetKind.SAFETY.value},
                        expires=now + SAFETY_RETENTION,
                    )
                )
            staging = self._staging(p)
            try:
                written = p.backend.materialize(
                    set_id=ref.set_id,
                    volume=ref.volume,
                    dest=staging,
                    paths=clean_paths or None,
                    progress=progress,
                )
                progress_msg(progress, "swap", f"{ref.pool}/{ref.volume}")
                if clean_paths:
                    # each chosen path is swapped in on its own: atomic per path, the rest untouched
                    for rel in clean_paths:
                        _swap_in(staging, live, rel)
                else:
                    exchange(staging, live)  # atomic: the live path is old or new, never a mix
            except BaseException:
                self._discard(p, staging)
                raise
            self._discard(p, staging)  # now the old content
        return OperationResult(
            ok=True,
            message=f"restored {ref.pool}/{ref.volume} from set {ref.set_id}",
            safety_set_id=safety,
            volume=ref.volume,
            bytes=written,
        )

    def clone(
        self, ref: SnapshotKey, new_volume: str, progress: ProgressFn = no_progress, *, new_pool: str = ""
    ) -> OperationResult:
        snap = self.get_snapshot(ref)
        return self._to_new(
            self.pool(ref.pool), snap, new_volume, (), progress, what="clone", new_pool=new_pool
        )

    def _to_new(
        self,
        p: Pool,
        snap: SnapshotInfo,
        new_volume: str,
        paths: Sequence[str],
        progress: ProgressFn,
        *,
        what: str,
        new_pool: str = "",
    ) -> OperationResult:
        """Materialize the snapshot where it is stored (instant on btrfs), then move it into place:
        in its own pool by a rename; into another pool (`new_pool`) by a rename too where that is
        one filesystem and the result is a volume there, else by a copy (reflinked where the
        filesystem can) into a new volume of that pool's kind, the materialized one removed."""
        self.check_volume(new_volume)
        paths = [_check_rel_path(x) for x in paths]  # the same rule as a restore over the source
        dp = self.pool(new_pool) if new_pool else p
        dest = dp.backend.volume_path(new_volume, must_exist=False)
        if os.path.lexists(dest):
            raise FailedPrecondition(
                f"pool {dp.name}: volume {new_volume!r} already exists; choose another name"
            )
        staging = self._staging(p)
        try:
            written = p.backend.materialize(
                set_id=snap.set_id,
                volume=snap.volume,
                dest=staging,
                paths=list(paths) or None,
                progress=progress,
            )
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dp is p:
                rename_noreplace(staging, dest)
            else:
                written = max(written, self._move_to_pool(staging, dp, dest, progress))
        except BaseException:
            self._discard(p, staging)
            raise
        self._discard(p, staging)  # left only where it was copied
        where = f"{dp.name}/{new_volume}" if dp is not p else new_volume
        return OperationResult(
            ok=True,
            message=f"{what} of {snap.pool}/{snap.volume} (set {snap.set_id}) to {where}",
            volume=new_volume,
            bytes=written,
        )

    def _move_to_pool(self, src: Path, dp: Pool, dest: Path, progress: ProgressFn) -> int:
        """Put the materialized tree `src` at `dest` in pool `dp`; returns the bytes copied (0 when
        it was moved)."""
        if dp.backend.takes_as_volume(src):
            try:
                rename_noreplace(src, dest)
                return 0
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
        staging = self._staging(dp)
        progress(ProgressEvent("copy", 0, 1, unit="volumes", message=f"into pool {dp.name}"))
        try:
            dp.backend.make_empty_volume(staging)
            copy_tree(src, staging, reflink="auto", what=f"pool {dp.name}: copying into {staging}")
            synced = subprocess.run(["sync", "-f", str(staging)], capture_output=True, text=True, check=False)
            if synced.returncode != 0:  # durable before it is in place, or not at all
                raise ReconcilerError(f"pool {dp.name}: syncing {staging} failed: {synced.stderr.strip()}")
            copied = tree_size(staging)
            rename_noreplace(staging, dest)
        except BaseException:
            self._discard(dp, staging)
            raise
        progress(ProgressEvent("copy", 1, 1, unit="volumes", message=f"into pool {dp.name}"))
        return copied

    def _staging(self, p: Pool) -> Path:
        p.backend.staging_dir.mkdir(parents=True, exist_ok=True)
        return p.backend.staging_dir / uuid.uuid4().hex

    @staticmethod
    def _discard(p: Pool, path: Path) -> None:
        if os.path.lexists(path):
            try:
                p.backend.remove_volume_tree(path)
            except OSError:
                log.exception("could not remove %s; it is removed when the pool is opened again", path)
                shutil.rmtree(path, ignore_errors=True)

    # --- maintenance -------------------------------------------------------------------------
    def verify(self, pool: str, set_id: str = "", progress: ProgressFn = no_progress) -> OperationResult:
        p = self.pool(pool)
        keys = None
        if set_id:
            self.check_set_id(set_id)
            keys = [(s.set_id, s.volume) for s in p.catalog.for_set(set_id)]
            if not keys:
                raise NotFound(f"pool {pool}: no snapshots of set {set_id}")
        problems = p.backend.verify(keys, progress)
        missing = [
            f"{sid}/{vol}: listed in the catalog but its data is missing"
            for sid, vol in sorted(set(keys or p.catalog.keys()) - p.backend.stored_keys())
        ]
        problems = missing + problems
        return OperationResult(
            ok=not problems, message=f"{len(problems)} problem(s) in pool {pool}", problems=tuple(problems)
        )

    def collect_garbage(self, pool: str, progress: ProgressFn = no_progress) -> OperationResult:
        res = self.pool(pool).backend.collect_garbage(progress)
        return OperationResult(
            ok=True,
            message=f"freed {res.bytes_freed} bytes in {res.objects_freed} objects",
            bytes=res.bytes_freed,
        )


def _check_rel_path(path: str) -> str:
    parts = [x for x in path.split("/") if x not in ("", ".")]
    if not parts or path.startswith("/") or ".." in parts:
        raise InvalidArgument(f"path {path!r} must be relative to the volume and stay inside it")
    return "/".join(parts)


def _swap_in(staging: Path, live: Path, rel: str) -> None:
    """Put staging/rel at live/rel atomically; what was at live/rel ends up in staging (discarded).

    Every directory on the way inside the live volume must be a real directory: a symlink there
    could point out of the pool."""
    new = staging / rel
    if not os.path.lexists(new):
        raise NotFound(f"{rel!r} is not in the snapshot")
    parent = live
    for seg in rel.split("/")[:-1]:
        parent = parent / seg
        if os.path.islink(parent):
            raise PathEscapes(f"{parent} is a symlink in the live volume; refusing to restore through it")
        if not os.path.exists(parent):
            parent.mkdir()
        elif not parent.is_dir():
            raise FailedPrecondition(f"{parent} is not a directory in the live volume")
    target = live / rel
    if os.path.lexists(target):
        exchange(new, target)
    else:
        rename_noreplace(new, target)


def _has_stored_data(backend: Backend) -> bool:
    """Whether the backend's store already holds snapshot data (asked before `open`)."""
    if not backend.meta_dir.is_dir():
        return False
    try:
        return bool(backend.stored_keys())
    except Exception:  # noqa: BLE001 - a store that cannot even be listed: look for any file
        ignore = {"catalog.db", "catalog.db-wal", "catalog.db-shm"}
        for dirpath, _dirs, files in os.walk(backend.meta_dir):
            if Path(dirpath) != backend.staging_dir and any(f not in ignore for f in files):
                return True
        return False


def _safety_labels(snap: SnapshotInfo) -> dict[str, str]:
    keep = ("scope", LABEL_RESOURCE)
    return {k: v for k, v in snap.labels.items() if k in keep} | {"restored_from": snap.set_id}


def progress_msg(progress: ProgressFn, phase: str, message: str) -> None:
    progress(ProgressEvent(phase=phase, message=message))
