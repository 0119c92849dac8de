"""The target side of one Receive stream: check the request, stage every volume, commit together.

Visibility follows the agent's rule: backend data first (manifests renamed into place, or read-only
snapshots created in the store), then the catalog rows of all the set's members on this pool in one
transaction. A stream that ends or fails before its commit leaves no catalog row; what the backend
staged is removed now or by `open()` after a crash (chunks that arrived stay, to be reused).

Parallel streams (the target's `streams`): the sender may split one pool's members over several
streams of a group (`group`, `group_size` in begin). Each stream commits its volumes' data as above,
then waits; the last one of the group to arrive inserts every stream's rows in one transaction, so
the members still become visible together. A stream whose siblings do not all arrive (cancelled,
cut, or after GROUP_WAIT) takes its data back out and fails: nothing of the group is visible.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from .. import serde
from ..agent.core import MAX_LABEL_BYTES, MAX_LABELS, MAX_TARGETS, NodeAgent, Pool
from ..backends.btrfs import BtrfsBackend
from ..backends.chunkstore import ChunkstoreBackend
from ..domain import ImmutableState, SnapshotInfo, valid_volume_name
from ..errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ProtocolMismatch,
    Unavailable,
)
from ..v1 import replication_pb2 as rpb
from . import btrfs as btrfs_repl
from . import chunkstore as cs_repl
from . import wire
from .api import LABEL_ORIGIN_NODE, LABEL_ORIGIN_POOL, LABEL_ORIGIN_SITE, REPLICATION_PROTOCOL
from .chunkstore import ChunkstoreSink

log = logging.getLogger(__name__)

MAX_HOLDINGS = 32  # per volume: the newest sets are the only useful parents
MAX_HOLDS = 16
PREFETCH = 16  # messages (1-4 MiB each) read ahead of the writer
MAX_GROUP = 16  # streams in one group (the config allows 16 streams)
# seconds a committed stream waits for the rest of its group at most: long enough for the largest
# sibling volume to travel (a sibling that fails or vanishes ends its RPC, noticed at once)
GROUP_WAIT = 24 * 3600.0
_GROUP_RE = re.compile(r"^[0-9a-f]{8,64}\Z")
_T = TypeVar("_T")


# one stream's share of a group: its rows, its received volumes, and the sink holding their data
_GroupPart = tuple[list[SnapshotInfo], list[str], ChunkstoreSink | btrfs_repl.BtrfsSink]


@dataclass
class _Group:
    """The streams of one group that reached their commit (under _groups_cond)."""

    size: int
    parts: list[_GroupPart] = field(default_factory=list)
    done: bool = False
    error: BaseException | None = None

    @property
    def sealed(self) -> bool:
        """Every stream arrived: the last one inserts, nobody backs out any more."""
        return len(self.parts) == self.size


_groups: dict[tuple[int, str, str, str], _Group] = {}
_groups_cond = threading.Condition()


def wake_groups() -> None:
    """A stream ended: streams waiting for their group look again at whether theirs is alive."""
    with _groups_cond:
        _groups_cond.notify_all()


_END = object()


def prefetch(items: Iterator[_T], depth: int) -> Iterator[_T]:
    """Read `items` on a thread, up to `depth` ahead: gRPC keeps receiving (and granting flow-control
    window to the sender) while this side writes to disk, instead of the two taking turns."""
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    failure: list[BaseException] = []
    stop = threading.Event()

    def pump() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            failure.append(exc)
        finally:
            while not stop.is_set():
                try:
                    q.put(_END, timeout=0.5)
                    break
                except queue.Full:
                    continue

    threading.Thread(target=pump, name="recv-prefetch", daemon=True).start()
    try:
        while True:
            item = q.get()
            if item is _END:
                if failure:
                    raise failure[0]
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()


def _who(labels: Mapping[str, str], node: str) -> tuple[str, str]:
    """(site, node) that took a snapshot: its origin labels, else (no site, `node`)."""
    return labels.get(LABEL_ORIGIN_SITE, ""), labels.get(LABEL_ORIGIN_NODE, node)


def _describe(who: tuple[str, str]) -> str:
    return f"node {who[1]} of site {who[0]}" if who[0] else f"node {who[1]}"


def _same_origin(have: Mapping[str, str], offered: Mapping[str, str], source_node: str, here: str) -> bool:
    """Whether the snapshot already here under an offered (set, volume) is the one offered (a
    resumed transfer, or a set coming back to the node that took it) rather than another site's,
    which the copy would collide with. `have`/`offered`: their labels (the offered member's with
    the transfer's). A snapshot taken here has no origin labels: the offered copy is it only when
    it names this node as its origin, or when it comes from this very node of a site without a name
    (node names then tell sites apart); a copy from a named site is never a snapshot taken here
    under another name."""
    if LABEL_ORIGIN_NODE not in have:
        if LABEL_ORIGIN_NODE in offered:
            return offered[LABEL_ORIGIN_NODE] == here
        return not offered.get(LABEL_ORIGIN_SITE) and source_node == here
    return _who(have, here) == _who(offered, source_node)


def choose_pool(agent: NodeAgent, *, wanted: str, source_pool: str, backend: str) -> Pool:
    """The pool that receives: the one named, else the source pool's namesake, else the only pool of
    the backend."""
    if wanted:
        p = agent.pool(wanted)
        if p.backend.kind != backend:
            raise FailedPrecondition(
                f"node {agent.node}: pool {wanted} is {p.backend.kind}, the source sends {backend}"
            )
        return p
    same = agent.pools.get(source_pool)
    if same is not None and same.backend.kind == backend:
        return same
    matching = [p for p in agent.pools.values() if p.backend.kind == backend]
    if len(matching) == 1:
        return matching[0]
    names = ", ".join(sorted(p.name for p in matching)) or "none"
    raise FailedPrecondition(
        f"node {agent.node}: no single {backend} pool to receive into (candidates: {names}); "
        "name one with `pool:` of the offsite target in the daemon's config"
    )


@dataclass
class _Begin:
    set_id: str
    source_node: str
    members: list[SnapshotInfo]
    expires: datetime | None
    keep_expiry: bool
    name_prefix: str
    holds: frozenset[str]
    labels: dict[str, str]


class ReceiveSession:
    def __init__(self, agent: NodeAgent, *, peer: str = "", alive: Callable[[], bool] = lambda: True) -> None:
        self.agent = agent
        self.peer = peer
        self.alive = alive  # False once the stream is cancelled or cut
        self.group = ""
        self.group_size = 1
        self.begin: _Begin | None = None
        self.pool: Pool | None = None
        self.sink: ChunkstoreSink | btrfs_repl.BtrfsSink | None = None
        self.present: dict[str, SnapshotInfo] = {}
        self.committed = False

    def run(self, requests: Iterator[bytes]) -> Iterator[rpb.ReceiveResponse]:
        """`requests` are the raw messages (see wire.py)."""
        try:
            for raw in prefetch(requests, PREFETCH):
                d = wire.decode(raw)
                kind = d.kind
                if kind == "data":  # the hot paths first
                    assert d.data is not None
                    self._btrfs().data(d.data)
                    continue
                if kind == "chunks":
                    yield from self._chunkstore().chunks(d.chunks)
                    continue
                if kind == "sparse":
                    assert d.data is not None
                    self._btrfs().sparse(d.data, d.runs)
                    continue
                req = d.msg
                assert req is not None
                if kind == "begin":
                    yield self._begin(req.begin)
                    if isinstance(self.sink, btrfs_repl.BtrfsSink):
                        self.sink.receive_ahead()  # while ready travels and the sender answers
                    continue
                sink = self._sink()
                if kind == "volume":
                    self._volume(req.volume)
                    sink.begin_volume(req.volume)
                elif kind == "manifest":
                    yield from self._chunkstore().manifest_part(req.manifest)
                elif kind == "volume_end":
                    if isinstance(sink, ChunkstoreSink):
                        yield from sink.end_volume()
                    else:
                        yield sink.end_volume()
                elif kind == "commit":
                    yield self._commit()
                    return
                else:
                    raise InvalidArgument(f"unknown message {kind!r}")
            if self.begin is not None and not self.committed:
                log.warning(
                    "node %s: transfer of set %s from %s ended before its commit; nothing of it is visible",
                    self.agent.node,
                    self.begin.set_id,
                    self.begin.source_node or self.peer,
                )
        finally:
            if self.sink is not None:
                self.sink.close()

    # -- steps --
    def _begin(self, m: rpb.ReceiveBegin) -> rpb.ReceiveResponse:
        if self.begin is not None:
            raise InvalidArgument("begin sent twice")
        if m.protocol != REPLICATION_PROTOCOL:
            raise ProtocolMismatch(
                f"node {self.agent.node}: replication protocol {m.protocol} offered, this agent speaks "
                f"{REPLICATION_PROTOCOL}; upgrade the older side"
            )
        if m.expect_node and m.expect_node != self.agent.node:
            raise FailedPrecondition(
                f"this agent is node {self.agent.node!r}, the sender expects {m.expect_node!r}; check the config"
            )
        self.agent.check_set_id(m.set_id)
        if not m.members or len(m.members) > MAX_TARGETS:
            raise InvalidArgument(f"set {m.set_id}: {len(m.members)} members offered")
        members = [serde.snapshot_from_pb(s) for s in m.members]
        volumes = [s.volume for s in members]
        for s in members:
            if s.set_id != m.set_id:
                raise InvalidArgument(f"member of set {s.set_id} offered in the transfer of {m.set_id}")
            self.agent.check_volume(s.volume)
            self._check_labels(m.set_id, {**s.labels, **m.labels})
        if len(set(volumes)) != len(volumes):
            raise InvalidArgument(f"set {m.set_id}: a volume is offered twice")
        if len(m.holds) > MAX_HOLDS or any(not h or len(h) > 200 for h in m.holds):
            raise InvalidArgument(f"set {m.set_id}: bad holds {list(m.holds)!r}")
        if m.group or m.group_size > 1:
            if not _GROUP_RE.match(m.group) or not 2 <= m.group_size <= MAX_GROUP:
                raise InvalidArgument(
                    f"set {m.set_id}: bad stream group {m.group[:80]!r} of {m.group_size} (a hex token, 2-{MAX_GROUP})"
                )
            self.group, self.group_size = m.group, m.group_size
        pool = choose_pool(self.agent, wanted=m.pool, source_pool=m.source_pool, backend=m.backend)
        self.pool = pool
        pool.catalog.warm()  # read in while the data travels: the commit writes to it
        self.begin = _Begin(
            set_id=m.set_id,
            source_node=m.source_node,
            members=members,
            expires=serde.from_ts(m, "expires"),
            keep_expiry=not m.HasField("expires") and not m.never_expire,
            name_prefix=m.name_prefix,
            holds=frozenset(m.holds),
            labels=dict(m.labels),
        )
        for s in members:
            have = pool.catalog.get(m.set_id, s.volume)
            if have is None:
                continue
            offered = {**s.labels, **m.labels}
            if not _same_origin(have.labels, offered, m.source_node, self.agent.node):
                raise AlreadyExists(
                    f"node {self.agent.node} pool {pool.name}: set {m.set_id} already has volume {s.volume!r} "
                    f"from {_describe(_who(have.labels, self.agent.node))}; the copy from "
                    f"{_describe(_who(offered, m.source_node))} would collide (rename one of the volumes, or "
                    "give the offsite copies a pool of their own: offsite.targets.<name>.pool)"
                )
            self.present[s.volume] = self.agent.effective(have)
        if isinstance(pool.backend, ChunkstoreBackend):
            self.sink = ChunkstoreSink(pool.backend, set_id=m.set_id)
        elif isinstance(pool.backend, BtrfsBackend):
            wanted = sum(1 for s in members if s.volume not in self.present)
            self.sink = btrfs_repl.BtrfsSink(pool.backend, m.set_id, expected=wanted)
        else:
            raise FailedPrecondition(f"pool {pool.name}: {pool.backend.kind} pools cannot receive sets")
        stream_version = (
            btrfs_repl.receive_stream_version() if isinstance(self.sink, btrfs_repl.BtrfsSink) else 0
        )
        return rpb.ReceiveResponse(
            ready=rpb.ReceiveReady(
                node=self.agent.node,
                pool=pool.name,
                backend=pool.backend.kind,
                holdings=self._holdings(pool, {v for v in volumes if v not in self.present}),
                present=sorted(self.present),
                btrfs_stream=stream_version,
            )
        )

    def _check_labels(self, set_id: str, labels: dict[str, str]) -> None:
        if (
            len(labels) > MAX_LABELS + 4
            or sum(len(k) + len(v) for k, v in labels.items()) > MAX_LABEL_BYTES + 1024
        ):
            raise InvalidArgument(f"set {set_id}: too many or too large labels")

    def _holdings(self, pool: Pool, volumes: set[str]) -> list[rpb.Holding]:
        if not volumes:
            return []
        out = []
        for volume in sorted(volumes):
            for s in pool.catalog.for_volume(volume, limit=MAX_HOLDINGS):
                h = rpb.Holding(set_id=s.set_id, volume=volume)
                serde.set_ts(h, "created", s.created)
                if isinstance(pool.backend, BtrfsBackend):
                    h.identity = btrfs_repl.identity_of(pool.backend, s.set_id, volume)
                elif isinstance(pool.backend, ChunkstoreBackend):
                    h.identity = cs_repl.identity_of(pool.backend, s.set_id, volume)
                out.append(h)
        return out

    def _volume(self, m: rpb.VolumeBegin) -> None:
        b = self._began()
        if m.volume not in {s.volume for s in b.members} or not valid_volume_name(m.volume):
            raise InvalidArgument(f"volume {m.volume!r} was not offered in the transfer of set {b.set_id}")
        if m.volume in self.present:
            raise InvalidArgument(f"volume {m.volume!r} of set {b.set_id} is already here")

    def _commit(self) -> rpb.ReceiveResponse:
        b = self._began()
        sink = self._sink()
        pool = self.pool
        assert pool is not None
        received = sink.commit()
        offered = {s.volume for s in b.members}
        missing = offered - set(received) - set(self.present)
        if missing:
            for volume in received:
                sink.drop(volume)
            raise InvalidArgument(f"set {b.set_id}: commit without volume(s) {sorted(missing)}")
        rows = [self._row(s, pool) for s in b.members if s.volume in received]
        if self.group:
            self._join_group(pool, rows, received, sink)
        else:
            self._insert(pool, rows, [(received, sink)])
        self.committed = True
        log.info(
            "node %s pool %s: received set %s from %s (%d volume(s), %d already here)",
            self.agent.node,
            pool.name,
            b.set_id,
            b.source_node or self.peer,
            len(rows),
            len(self.present),
        )
        snaps = [*rows, *self.present.values()]
        snaps.sort(key=lambda s: s.volume)
        return rpb.ReceiveResponse(
            committed=rpb.ReceiveCommitted(snapshots=[serde.snapshot_to_pb(s) for s in snaps])
        )

    def _insert(
        self,
        pool: Pool,
        rows: list[SnapshotInfo],
        data: list[tuple[list[str], ChunkstoreSink | btrfs_repl.BtrfsSink]],
    ) -> None:
        """Make `rows` visible in one transaction; on failure take back every volume in `data`."""
        b = self._began()
        try:
            with self.agent._set_lock(b.set_id):
                if rows:
                    pool.catalog.insert_many(rows)
        except BaseException as exc:
            for volumes, sink in data:
                for volume in volumes:
                    sink.drop(volume)
            if "UNIQUE" in str(exc):
                raise AlreadyExists(
                    f"pool {pool.name}: set {b.set_id} arrived twice at the same time"
                ) from None
            raise

    def _join_group(
        self,
        pool: Pool,
        rows: list[SnapshotInfo],
        received: list[str],
        sink: ChunkstoreSink | btrfs_repl.BtrfsSink,
    ) -> None:
        """Wait for the other streams of the group; the last to arrive inserts everyone's rows."""
        b = self._began()
        key = (id(self.agent), pool.name, b.set_id, self.group)
        part: _GroupPart = (rows, received, sink)
        parts: list[_GroupPart] = []  # all of the group's, when this stream is the last to arrive
        deadline = time.monotonic() + GROUP_WAIT
        with _groups_cond:
            g = _groups.get(key)
            if g is None:
                g = _groups[key] = _Group(self.group_size)
            if g.size != self.group_size or g.sealed:
                raise InvalidArgument(
                    f"set {b.set_id}: stream group {self.group} does not fit ({self.group_size})"
                )
            g.parts.append(part)
            if g.sealed:
                del _groups[key]
                parts = list(g.parts)
            else:
                log.info(
                    "node %s: set %s: stream %d of %d of group %s is at its commit; waiting for the others",
                    self.agent.node,
                    b.set_id,
                    len(g.parts),
                    g.size,
                    self.group,
                )
                while not g.done:
                    if not g.sealed and (not self.alive() or time.monotonic() > deadline):
                        g.parts.remove(part)
                        if not g.parts:
                            _groups.pop(key, None)
                        break
                    _groups_cond.wait(0.5)
                if g.done:
                    if g.error is not None:
                        raise FailedPrecondition(f"set {b.set_id}: the group's commit failed: {g.error}")
                    return
        if not parts:  # gave up: nothing of the group may stay
            for volume in received:
                sink.drop(volume)
            log.warning(
                "node %s: set %s: the other streams of group %s did not reach their commit; dropped %s",
                self.agent.node,
                b.set_id,
                self.group,
                ", ".join(received) or "nothing",
            )
            raise Unavailable(
                f"set {b.set_id}: the other streams of the transfer did not reach their commit; nothing is kept"
            )
        try:
            self._insert(pool, [r for p in parts for r in p[0]], [(p[1], p[2]) for p in parts])
        except BaseException as exc:
            with _groups_cond:
                g.error, g.done = exc, True
                _groups_cond.notify_all()
            raise
        with _groups_cond:
            g.done = True
            _groups_cond.notify_all()

    def _row(self, src: SnapshotInfo, pool: Pool) -> SnapshotInfo:
        b = self._began()
        labels = {**src.labels, **b.labels}
        labels.setdefault(LABEL_ORIGIN_NODE, b.source_node)
        labels.setdefault(LABEL_ORIGIN_POOL, src.pool)
        name = src.name if src.name.startswith(b.name_prefix) else b.name_prefix + src.name
        return SnapshotInfo(
            set_id=b.set_id,
            name=name,
            pool=pool.name,
            volume=src.volume,
            created=src.created,
            expires=src.expires if b.keep_expiry else b.expires,
            labels=labels,
            immutable=ImmutableState.NONE,
            holds=b.holds,
            logical_bytes=src.logical_bytes,
            quiesced=src.quiesced,
        )

    # -- state --
    def _began(self) -> _Begin:
        if self.begin is None:
            raise InvalidArgument("the stream must start with begin")
        return self.begin

    def _sink(self) -> ChunkstoreSink | btrfs_repl.BtrfsSink:
        self._began()
        if self.sink is None:
            raise NotFound("no receiving pool")
        return self.sink

    def _chunkstore(self) -> ChunkstoreSink:
        sink = self._sink()
        if not isinstance(sink, ChunkstoreSink):
            raise InvalidArgument("chunkstore data sent to a btrfs pool")
        return sink

    def _btrfs(self) -> btrfs_repl.BtrfsSink:
        sink = self._sink()
        if not isinstance(sink, btrfs_repl.BtrfsSink):
            raise InvalidArgument("btrfs data sent to a chunkstore pool")
        return sink
