"""The source side of a replication: dial the target agent, offer the set, stream each volume.

One Receive stream per source pool (a set's members on one node may live in several pools), each
committed on its own: that is the unit that becomes visible on the target at once. With
`streams` > 1 the pools travel at the same time, up to `streams` of them, each stream on a
connection of its own (so a high-latency link carries several TCP windows); streams beyond the
number of pools split a pool's volumes over a group of streams, which the target commits together
(plan_parts, receiver.py). The daemon runs the source nodes of a set in parallel the same way
(replication/manager.py). For each volume the newest set both sides hold is
the parent: btrfs sends incrementally against it,
the chunkstore uses it for its manifest dictionary and block deltas (chunks the target already
holds never travel, parent or not).
"""

from __future__ import annotations

import functools
import logging
import queue
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import grpc

from .. import serde
from ..agent.core import NodeAgent, Pool
from ..backends.btrfs import BtrfsBackend
from ..backends.chunkstore import ChunkstoreBackend
from ..domain import SnapshotInfo
from ..errors import FailedPrecondition, NotFound, ProtocolMismatch, ReconcilerError, Unavailable
from ..fanout import all_or_first_failure
from ..transport.status import from_rpc_error
from ..v1 import replication_pb2 as rpb
from . import btrfs as btrfs_repl
from . import chunkstore as cs_repl
from . import wire
from .api import REPLICATION_PROTOCOL, Peer, ReplicateOutcome, ReplicateSpec, VolumeReport
from .progress import CostFn, Meter, StatsFn, Throttle, VolumeEstimate, estimate_each, no_stats

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 32 * 1024 * 1024
QUEUE_DEPTH = 16
RECEIVE_METHOD = "/reconciler.v1.Replication/Receive"
_FRAME_OVERHEAD = 5  # gRPC length-prefixed message header


# Identities for peers, by address, for agents without one of their own: the daemon's embedded node
# (in the daemon's process) dials offsite targets with the certificate the config gives for them.
_identities: dict[str, grpc.ChannelCredentials] = {}
_identities_lock = threading.Lock()


def register_identity(address: str, credentials: grpc.ChannelCredentials | None) -> None:
    with _identities_lock:
        if credentials is None:
            _identities.pop(address, None)
        else:
            _identities[address] = credentials


@dataclass
class _Kept:
    channel: grpc.Channel
    users: int = 0
    stale: bool = False


class Dialer:
    """Opens channels to other agents with this agent's own identity (mTLS client certificate)."""

    def __init__(self, credentials: grpc.ChannelCredentials | None = None) -> None:
        self.credentials = credentials
        # one connection per peer, kept: a transfer then starts without a TCP and TLS handshake
        self._channels: dict[tuple[str, str, bool, int], _Kept] = {}
        self._lock = threading.Lock()

    @contextmanager
    def lease(self, peer: Peer) -> Iterator[grpc.Channel]:
        """The kept connection to `peer`. After a failure it is dropped (closed once no transfer
        uses it): the next transfer dials afresh instead of waiting out a reconnect backoff."""
        credentials = None if peer.insecure else self._credentials(peer)
        key = (peer.address, peer.server_name, peer.insecure, id(credentials))
        with self._lock:
            kept = self._channels.get(key)
            if kept is None:
                kept = self._channels[key] = _Kept(self._open(peer, credentials))
            kept.users += 1
        ok = False
        try:
            yield kept.channel
            ok = True
        finally:
            with self._lock:
                kept.users -= 1
                if not ok:
                    kept.stale = True
                    if self._channels.get(key) is kept:
                        del self._channels[key]
                if kept.stale and kept.users == 0:
                    kept.channel.close()

    def channel(self, peer: Peer) -> grpc.Channel:
        """A new connection of the caller's own (to close)."""
        return self._open(peer, None if peer.insecure else self._credentials(peer))

    def close(self) -> None:
        with self._lock:
            for kept in self._channels.values():
                kept.stale = True
                if kept.users == 0:
                    kept.channel.close()
            self._channels.clear()

    def _credentials(self, peer: Peer) -> grpc.ChannelCredentials:
        credentials = self.credentials
        if credentials is None:
            with _identities_lock:
                credentials = _identities.get(peer.address)
        if credentials is None:
            raise FailedPrecondition(
                f"this agent has no TLS identity to dial {peer.label} with; set tls (ca, cert, key) in its "
                "agent config, or mark the target insecure (loopback only)"
            )
        return credentials

    def _open(self, peer: Peer, credentials: grpc.ChannelCredentials | None) -> grpc.Channel:
        options: list[tuple[str, object]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # a peer that vanishes (killed, cable pulled) is noticed within about 30 s
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.http2.max_pings_without_data", 0),
        ]
        if credentials is None:
            return grpc.insecure_channel(peer.address, options=options)
        if peer.server_name:
            options.append(("grpc.ssl_target_name_override", peer.server_name))
        return grpc.secure_channel(peer.address, credentials, options=options)


class TLSFiles(Protocol):
    @property
    def ca(self) -> Path: ...
    @property
    def cert(self) -> Path: ...
    @property
    def key(self) -> Path: ...


def dialer_from_tls(tls: TLSFiles | None) -> Dialer:
    """The agent dials its peers with the certificate it serves with (lab certificates are issued
    for server and client use; see tlslab)."""
    if tls is None:
        return Dialer(None)
    return Dialer(
        grpc.ssl_channel_credentials(
            root_certificates=Path(tls.ca).read_bytes(),
            private_key=Path(tls.key).read_bytes(),
            certificate_chain=Path(tls.cert).read_bytes(),
        )
    )


_END = object()


@dataclass(frozen=True, slots=True)
class Part:
    """What one Receive stream carries: members of one pool; `group` joins the streams that
    split one pool's members (they commit together on the target)."""

    pool: str
    members: list[SnapshotInfo]
    group: str = ""
    group_size: int = 1


class _Ahead:
    """A `btrfs send` being started on a thread (see Sender._send_ahead); `take()` waits for it
    (None if there is none or it could not start: the volume's send starts again, and reports why,
    when it is its turn)."""

    def __init__(self, start: Callable[[], btrfs_repl.SendProcess | None] | None) -> None:
        self._result: btrfs_repl.SendProcess | None = None
        self._thread: threading.Thread | None = None
        if start is not None:
            self._thread = threading.Thread(target=self._run, args=(start,), name="send-ahead", daemon=True)
            self._thread.start()

    def _run(self, start: Callable[[], btrfs_repl.SendProcess | None]) -> None:
        try:
            self._result = start()
        except Exception:  # noqa: BLE001 - the send is started again in its turn, and fails there
            log.debug("could not start the first send ahead", exc_info=True)

    def take(self) -> btrfs_repl.SendProcess | None:
        """The started send, once: later calls return None."""
        if self._thread is not None:
            self._thread.join()
        result, self._result = self._result, None
        return result

    def discard(self) -> None:
        """Stop the send if nobody took it."""
        sending = self.take()
        if sending is not None:
            sending.stop()


def plan_parts(groups: Mapping[str, list[SnapshotInfo]], streams: int) -> list[Part]:
    """One part per pool; streams beyond the number of pools split the pools with the most
    volumes per stream, each split balanced by size (largest first into the lightest part)."""
    order = sorted(groups)
    k = dict.fromkeys(order, 1)
    for _ in range(max(0, streams - len(order))):
        can = [p for p in order if k[p] < len(groups[p])]
        if not can:
            break
        k[max(can, key=lambda p: (len(groups[p]) / k[p], p))] += 1
    parts: list[Part] = []
    for p in order:
        members, n = groups[p], k[p]
        if n == 1:
            parts.append(Part(p, list(members)))
            continue
        bins: list[list[int]] = [[] for _ in range(n)]
        sizes = [0] * n
        for i in sorted(range(len(members)), key=lambda i: members[i].logical_bytes, reverse=True):
            b = min(range(n), key=lambda b: (sizes[b], len(bins[b])))
            bins[b].append(i)
            sizes[b] += members[i].logical_bytes
        token = secrets.token_hex(8)
        parts.extend(Part(p, [members[i] for i in sorted(b)], token, n) for b in bins)
    return parts


class TransferCancelled(Unavailable):
    """The transfer was cancelled (by the daemon, or by a failure in another of its streams)."""


class _Stream:
    """One Receive call: a bounded queue of requests feeding gRPC, responses read on demand."""

    def __init__(self, channel: grpc.Channel, meter: Meter, throttle: Throttle, where: str) -> None:
        self._q: queue.Queue[object] = queue.Queue(maxsize=QUEUE_DEPTH)
        self._meter = meter
        self._throttle = throttle
        self._where = where
        self._cancelled = threading.Event()
        # requests travel as bytes we encode ourselves (wire.py); answers are plain protobuf
        receive = channel.stream_stream(
            RECEIVE_METHOD, request_serializer=None, response_deserializer=rpb.ReceiveResponse.FromString
        )
        # a _MultiThreadedRendezvous: an iterator, a Future and an RpcError at once
        self._call: Any = cast(Any, receive(self._requests()))
        self._done = threading.Event()
        self._call.add_done_callback(lambda _f: self._done.set())
        self._responses: Iterator[rpb.ReceiveResponse] = iter(self._call)

    def _requests(self) -> Iterator[bytes]:
        while True:
            item = self._q.get()
            if item is _END:
                return
            assert isinstance(item, bytes)
            yield item

    def _failed(self) -> ReconcilerError:
        if self._cancelled.is_set():
            return TransferCancelled(f"{self._where}: transfer cancelled")
        try:
            code = self._call.code()
        except Exception:  # noqa: BLE001 - not finished after all
            code = None
        if code is None or code == grpc.StatusCode.OK:
            return Unavailable(f"{self._where}: the target ended the stream early")
        return from_rpc_error(self._call, where=self._where)

    def send(self, msg: rpb.ReceiveRequest) -> None:
        self.send_raw(wire.encode(msg))

    def send_raw(self, frame: bytes) -> None:
        n = len(frame) + _FRAME_OVERHEAD
        self._throttle.take(n)

        while True:
            if self._done.is_set() or self._cancelled.is_set():
                raise self._failed()
            try:
                self._q.put(frame, timeout=0.2)
                break
            except queue.Full:
                continue
        self._meter.add(wire=n)

    def recv(self) -> rpb.ReceiveResponse:
        try:
            return next(self._responses)
        except StopIteration:
            raise self._failed() from None
        except grpc.RpcError:
            raise self._failed() from None

    def finish(self) -> None:
        try:
            self._q.put(_END, timeout=5)
        except queue.Full:
            self._call.cancel()

    def cancel(self) -> None:
        self._cancelled.set()
        self._call.cancel()


@dataclass
class Sender:
    agent: NodeAgent
    dialer: Dialer
    spec: ReplicateSpec
    report: StatsFn = no_stats
    _streams: list[_Stream] = field(default_factory=list)
    _cancelled: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _peak: int = 0  # the most streams open at once

    def cancel(self) -> None:
        self._cancelled.set()
        with self._lock:
            for s in self._streams:
                s.cancel()

    def run(self) -> ReplicateOutcome:
        spec = self.spec
        self.agent.check_set_id(spec.set_id)
        groups = self._members()
        meter = Meter(self.report)
        meter.update(phase="connect", volumes_total=sum(len(v) for v in groups.values()), force=True)
        throttle = Throttle(spec.throttle_bps)
        snapshots: list[SnapshotInfo] = []
        reports: list[VolumeReport] = []
        target_node = ""
        pools: list[str] = []
        parts = plan_parts(groups, spec.streams)
        # (grouped parts are only planned when every part fits in `streams`: they all run at once)
        workers = max(1, min(spec.streams, len(parts)))
        # btrfs: the first volume's `btrfs send` of each part that starts at once starts now, on a
        # thread, while this one connects and crosses begin and ready with the target
        early = {id(part): self._start_ahead(part) for part in parts[:workers]}
        try:
            with self.dialer.lease(spec.target) as kept:
                if workers == 1:
                    results = [self._send_part(kept, part, meter, throttle, early) for part in parts]
                else:
                    results = self._send_parallel(kept, workers, parts, meter, throttle, early)
        finally:
            for ahead in early.values():
                ahead.discard()
        for node, tpool, snaps, reps in results:
            target_node = node
            pools.append(tpool)
            snapshots.extend(snaps)
            reports.extend(reps)
        meter.update(phase="done", volume="", force=True)
        log.info(
            "set %s replicated to %s (%d volume(s), %d bytes on the wire in %.1fs)",
            spec.set_id,
            spec.target.label,
            len(reports),
            meter.stats.wire_bytes,
            meter.seconds,
        )
        return ReplicateOutcome(
            snapshots=tuple(snapshots),
            target_node=target_node,
            target_pool=",".join(dict.fromkeys(pools)),
            totals=meter.stats,
            volumes=tuple(reports),
            seconds=meter.seconds,
            streams=self._peak,
        )

    def _send_part(
        self,
        channel: grpc.Channel,
        part: Part,
        meter: Meter,
        throttle: Throttle,
        early: Mapping[int, _Ahead],
    ) -> tuple[str, str, list[SnapshotInfo], list[VolumeReport]]:
        """`early`: sends started ahead, by id(part); a part without one starts its own now."""
        ahead = early.get(id(part)) or self._start_ahead(part)
        try:
            return self._send_pool(
                channel,
                self.agent.pool(part.pool),
                part.members,
                meter,
                throttle,
                ahead,
                part.group,
                part.group_size,
            )
        finally:
            ahead.discard()

    def _start_ahead(self, part: Part) -> _Ahead:
        pool = self.agent.pool(part.pool)
        backend = pool.backend
        if not isinstance(backend, BtrfsBackend) or not part.members:
            return _Ahead(None)
        return _Ahead(lambda: self._send_ahead(pool, backend, part.members[0]))

    def _send_parallel(
        self,
        kept: grpc.Channel,
        workers: int,
        parts: list[Part],
        meter: Meter,
        throttle: Throttle,
        early: Mapping[int, _Ahead],
    ) -> list[tuple[str, str, list[SnapshotInfo], list[VolumeReport]]]:
        """The parts' streams, up to `workers` at a time: the kept connection and workers - 1 of
        their own. The first failure cancels the others (what other pools committed stays: each
        pool's commit is its own; the streams of one pool's group commit together or not at all)."""
        channels: queue.Queue[grpc.Channel] = queue.Queue()
        channels.put(kept)
        extra = [self.dialer.channel(self.spec.target) for _ in range(workers - 1)]
        for ch in extra:
            channels.put(ch)

        def one(part: Part) -> tuple[str, str, list[SnapshotInfo], list[VolumeReport]]:
            channel = channels.get()
            try:
                return self._send_part(channel, part, meter, throttle, early)
            except BaseException:
                self.cancel()
                raise
            finally:
                channels.put(channel)

        try:
            # the failure itself is raised, not the cancellations it caused in the other streams
            return all_or_first_failure(
                parts, one, workers=workers, thread_name="repl-stream", consequences=(TransferCancelled,)
            )
        finally:
            for ch in extra:
                ch.close()

    def _members(self) -> dict[str, list[SnapshotInfo]]:
        spec = self.spec
        out: dict[str, list[SnapshotInfo]] = {}
        if spec.refs:
            for ref in spec.refs:
                if ref.set_id != spec.set_id:
                    raise FailedPrecondition(f"member {ref.set_id}/{ref.volume} is not of set {spec.set_id}")
                out.setdefault(ref.pool, []).append(self.agent.get_snapshot(ref))
        else:
            for name, pool in sorted(self.agent.pools.items()):
                snaps = pool.catalog.for_set(spec.set_id)
                if snaps:
                    out[name] = snaps
        if not out:
            raise NotFound(f"node {self.agent.node}: no snapshot of set {spec.set_id} to replicate")
        return out

    def _send_pool(
        self,
        channel: grpc.Channel,
        pool: Pool,
        members: list[SnapshotInfo],
        meter: Meter,
        throttle: Throttle,
        ahead: _Ahead,
        group: str = "",
        group_size: int = 1,
    ) -> tuple[str, str, list[SnapshotInfo], list[VolumeReport]]:
        spec = self.spec
        stream = _Stream(
            channel, meter, throttle, where=f"replication of set {spec.set_id} to {spec.target.label}"
        )
        with self._lock:
            if self._cancelled.is_set():
                stream.cancel()
                raise TransferCancelled("transfer cancelled")
            self._streams.append(stream)
            self._peak = max(self._peak, len(self._streams))
        early: btrfs_repl.SendProcess | None = None
        estimating = threading.Event()  # set: the size estimates stop
        try:
            begin = rpb.ReceiveBegin(
                protocol=REPLICATION_PROTOCOL,
                set_id=spec.set_id,
                source_node=self.agent.node,
                source_pool=pool.name,
                backend=pool.backend.kind,
                members=[serde.snapshot_to_pb(s) for s in members],
                never_expire=spec.never_expire,
                name_prefix=spec.name_prefix,
                holds=list(spec.holds),
                labels=dict(spec.labels),
                pool=spec.target.pool,
                expect_node=spec.target.node,
                group=group,
                group_size=group_size if group else 0,
            )
            serde.set_ts(begin, "expires", spec.expires)
            stream.send(rpb.ReceiveRequest(begin=begin))
            resp = stream.recv()
            early = ahead.take()
            if resp.WhichOneof("msg") != "ready":
                raise ProtocolMismatch(f"target {spec.target.label} did not answer begin with ready")
            ready = resp.ready
            if ready.backend != pool.backend.kind:
                raise FailedPrecondition(
                    f"target pool {ready.pool} is {ready.backend}, source pool {pool.name} is {pool.backend.kind}"
                )
            holdings: dict[str, list[tuple[str, float, bytes]]] = {}
            for h in ready.holdings:
                created = serde.from_ts(h, "created")
                holdings.setdefault(h.volume, []).append(
                    (h.set_id, created.timestamp() if created else 0.0, h.identity)
                )
            present = set(ready.present)
            # btrfs: the newest stream version both this kernel and btrfs-progs send and the
            # target's receive reads (an older target does not say: 1)
            version = 1
            if isinstance(pool.backend, BtrfsBackend):
                version = min(btrfs_repl.send_stream_version(), ready.btrfs_stream or 1)
            reports: list[VolumeReport] = [VolumeReport(v, already_present=True) for v in sorted(present)]
            todo = [s for s in members if s.volume not in present]
            done = len(present)
            meter.update(volumes_done=done)
            acks = 0  # btrfs volume_done answers still to read (see btrfs_repl.send_volume)
            parents = [self._parent(pool, snap, holdings.get(snap.volume, []), early) for snap in todo]
            estimates = self._estimate(pool, todo, parents, meter, estimating, version)
            for snap, parent, estimate in zip(todo, parents, estimates, strict=True):
                started, early = early, None  # send_volume uses it or stops it
                reports.append(
                    self._send_volume(stream, pool, snap, parent, meter, version, started, estimate)
                )
                if isinstance(pool.backend, BtrfsBackend):
                    acks += 1
                done += 1
                meter.update(volumes_done=done, force=True)
            meter.update(phase="commit", force=True)
            stream.send(rpb.ReceiveRequest(commit=rpb.ReceiveCommit()))
            while True:
                resp = stream.recv()
                kind = resp.WhichOneof("msg")
                if kind == "volume_done" and acks:
                    acks -= 1
                    continue
                if kind != "committed" or acks:
                    raise ProtocolMismatch(f"target {spec.target.label} did not confirm the commit ({kind})")
                break
            snaps = [serde.snapshot_from_pb(s) for s in resp.committed.snapshots]
            stream.finish()
            return ready.node, ready.pool, snaps, reports
        except BaseException:
            stream.cancel()
            raise
        finally:
            estimating.set()
            if early is not None:
                early.stop()
            with self._lock:
                self._streams.remove(stream)

    def _estimate(
        self,
        pool: Pool,
        todo: list[SnapshotInfo],
        parents: list[str],
        meter: Meter,
        stop: threading.Event,
        stream_version: int,
    ) -> Sequence[VolumeEstimate | None]:
        """What each volume will cost, guessed on a thread while they are sent, so that the
        transfer's total and ETA cover them all from the start (see progress.estimate_each).
        `stream_version`: the btrfs streams' (see btrfs_repl.compressed_data)."""
        backend = pool.backend
        estimates: list[VolumeEstimate]
        if isinstance(backend, BtrfsBackend):
            estimates = [btrfs_repl.StreamEstimate() for _ in todo]
            cost: CostFn = functools.partial(
                btrfs_repl.stream_content, backend, stream_version=stream_version
            )
        elif isinstance(backend, ChunkstoreBackend):
            estimates = [VolumeEstimate() for _ in todo]
            cost = functools.partial(cs_repl.chunks_cost, backend)
        else:
            return [None] * len(todo)
        if todo:
            volumes = [(s.set_id, s.volume, p, e) for s, p, e in zip(todo, parents, estimates, strict=True)]
            threading.Thread(
                target=estimate_each,
                args=(volumes, cost, meter, stop, pool.name),
                name="send-estimate",
                daemon=True,
            ).start()
        return estimates

    def _send_ahead(self, pool: Pool, backend: BtrfsBackend, snap: SnapshotInfo) -> btrfs_repl.SendProcess:
        """Start the `btrfs send` of `snap` now, against the parent the target most likely holds,
        while begin and ready cross (see btrfs_repl.start_send). The target's answer decides; a
        wrong guess is stopped and costs a process start. The guess: the newest older set of the
        volume that holds a sync base (`base:TARGET`), else the newest older one. (Runs on an
        _Ahead thread, which also deals with its failures.)"""
        older = [
            s
            for s in pool.catalog.for_volume(snap.volume)
            if s.set_id != snap.set_id and s.created <= snap.created
        ]
        older.sort(
            key=lambda s: (any(h.startswith("base:") for h in s.holds), s.created, s.set_id), reverse=True
        )
        return btrfs_repl.start_send(
            backend,
            set_id=snap.set_id,
            volume=snap.volume,
            parent_set_id=older[0].set_id if older else "",
            stream_version=btrfs_repl.send_stream_version(),  # the target most likely reads it too
        )

    def _parent(
        self,
        pool: Pool,
        snap: SnapshotInfo,
        held: list[tuple[str, float, bytes]],
        started: btrfs_repl.SendProcess | None = None,
    ) -> str:
        """The newest set of this volume both sides hold, the same on both (a set id reused after a
        delete names other data: its identity, the btrfs UUID or the manifest checksum, differs).
        `started`: a send begun ahead, which already looked up its parent's identity."""
        for set_id, _created, identity in sorted(held, key=lambda h: (h[1], h[0]), reverse=True):
            if set_id == snap.set_id or pool.catalog.get(set_id, snap.volume) is None:
                continue
            if (
                started is not None
                and started.parent_identity
                and (started.volume, started.parent_set_id) == (snap.volume, set_id)
            ):
                mine = started.parent_identity
            elif isinstance(pool.backend, BtrfsBackend):
                mine = btrfs_repl.identity_of(pool.backend, set_id, snap.volume)
            elif isinstance(pool.backend, ChunkstoreBackend):
                mine = cs_repl.identity_of(pool.backend, set_id, snap.volume)
            else:
                continue
            if identity and mine == identity:
                return set_id
        return ""

    def _send_volume(
        self,
        stream: _Stream,
        pool: Pool,
        snap: SnapshotInfo,
        parent: str,
        meter: Meter,
        stream_version: int = 1,
        started: btrfs_repl.SendProcess | None = None,
        estimate: VolumeEstimate | None = None,
    ) -> VolumeReport:
        backend = pool.backend
        if isinstance(backend, ChunkstoreBackend):
            out = cs_repl.send_volume(
                backend,
                stream,
                meter,
                set_id=snap.set_id,
                volume=snap.volume,
                parent_set_id=parent,
                logical_bytes=snap.logical_bytes,
                estimate=estimate,
            )
            return VolumeReport(snap.volume, parent, out.wire_bytes, out.sent_bytes)
        if isinstance(backend, BtrfsBackend):
            wire, sent = btrfs_repl.send_volume(
                backend,
                stream,
                meter,
                set_id=snap.set_id,
                volume=snap.volume,
                parent_set_id=parent,
                compression=self.spec.compression,
                logical_bytes=snap.logical_bytes,
                stream_version=stream_version,
                started=started,
                estimate=estimate if isinstance(estimate, btrfs_repl.StreamEstimate) else None,
            )
            return VolumeReport(snap.volume, parent, wire, sent)
        raise FailedPrecondition(f"pool {pool.name}: {backend.kind} pools cannot send sets")
