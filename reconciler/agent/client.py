"""The client the daemon (and the CLI's maintenance commands) use for every node, embedded or remote.

Every call has a deadline; gRPC failures come back as ReconcilerError subclasses (Unavailable is
retryable, the rest are not), and the agent's protocol version and node name are checked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import grpc

from .. import serde
from ..backends.base import FileEntry, ProgressEvent, no_progress
from ..domain import SnapshotInfo
from ..errors import ProtocolMismatch, Unavailable
from ..transport.status import from_rpc_error
from ..v1 import agent_pb2 as pb
from ..v1 import agent_pb2_grpc as pb_grpc
from .api import (
    PROTOCOL_VERSION,
    CreateSetRequest,
    CreateSetResult,
    DeleteResult,
    NodeInfo,
    OperationResult,
    SnapshotKey,
    SnapshotUpdate,
)
from .server import MAX_MESSAGE_BYTES


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Per-call deadlines of an AgentClient, in seconds.

    `info` bounds GetNodeInfo: every observe pass waits on it, so an agent that accepts connections
    but never answers costs a pass at most this long. `call` bounds the other short calls, `long`
    snapshots, deletes, lists and restores. A long call also fails when the agent stops answering
    HTTP/2 pings, sent every `keepalive` seconds and given as long to be answered: a hung or
    vanished agent is noticed within about twice that, not after hours."""

    info: float = 5.0
    call: float = 30.0
    long: float = 6 * 3600.0
    keepalive: float = 10.0


DEFAULT_DEADLINES = Deadlines()


class AgentClient:
    def __init__(
        self,
        node: str,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str | None = None,
        deadlines: Deadlines = DEFAULT_DEADLINES,
    ) -> None:
        self.node = node
        self.target = target
        self.deadlines = deadlines
        self.timeout = deadlines.call
        self.long_timeout = deadlines.long
        self.info_timeout = deadlines.info
        keepalive_ms = max(
            1000, int(deadlines.keepalive * 1000)
        )  # the agent refuses pings more often than 1/s
        options: list[tuple[str, object]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Reconnect quickly after an agent restarts: the daemon decides the retry pace itself.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 5000),
            ("grpc.keepalive_time_ms", keepalive_ms),
            ("grpc.keepalive_timeout_ms", keepalive_ms),
            # without this, grpc waits a fixed minute for a ping's answer whatever the keepalive says
            ("grpc.http2.ping_timeout_ms", keepalive_ms),
            ("grpc.http2.max_pings_without_data", 0),  # keep pinging through a long silent call
        ]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        if credentials is None:
            self.channel = grpc.insecure_channel(target, options=options)
        else:
            self.channel = grpc.secure_channel(target, credentials, options=options)
        self.stub = pb_grpc.AgentStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def _where(self, rpc: str) -> str:
        return f"node {self.node} ({self.target}) {rpc}"

    def _call(
        self, rpc: str, fn: Callable[..., object], request: object, timeout: float | None = None
    ) -> object:
        try:
            return fn(request, timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err, where=self._where(rpc)) from None

    # --- API ---------------------------------------------------------------------------------
    def node_info(self) -> NodeInfo:
        msg = self._call(
            "GetNodeInfo",
            self.stub.GetNodeInfo,
            pb.GetNodeInfoRequest(expect_node=self.node),
            self.info_timeout,
        )
        if not isinstance(msg, pb.NodeInfo):
            raise ProtocolMismatch(f"{self._where('GetNodeInfo')}: unexpected answer {type(msg).__name__}")
        info = serde.node_info_from_pb(msg)
        if info.protocol_version != PROTOCOL_VERSION:
            raise ProtocolMismatch(
                f"{self._where('GetNodeInfo')}: agent speaks protocol {info.protocol_version}, "
                f"this daemon speaks {PROTOCOL_VERSION}; upgrade the older side"
            )
        if info.node != self.node:
            raise ProtocolMismatch(f"{self._where('GetNodeInfo')}: the agent says it is node {info.node!r}")
        return info

    def list_volumes(self, pool: str = "", names: Sequence[str] = ()) -> list[tuple[str, str, int]]:
        msg = self._call(
            "ListVolumes", self.stub.ListVolumes, pb.ListVolumesRequest(pool=pool, names=list(names))
        )
        assert isinstance(msg, pb.ListVolumesResponse)
        return [(v.pool, v.volume, v.logical_bytes) for v in msg.volumes]

    def create_set(self, req: CreateSetRequest) -> CreateSetResult:
        msg = self._call(
            "CreateSnapshotSet", self.stub.CreateSnapshotSet, serde.create_to_pb(req), self.long_timeout
        )
        assert isinstance(msg, pb.CreateSnapshotSetResponse)
        return serde.create_result_from_pb(msg)

    def list_snapshots(
        self, pool: str, *, page_size: int = 5000, with_usage: bool = False
    ) -> tuple[int, list[SnapshotInfo]]:
        """All snapshots of a pool and the generation of the first page (lowest seen: safe to cache)."""
        snaps: list[SnapshotInfo] = []
        gen: int | None = None
        try:
            for page in self.stub.ListSnapshots(
                pb.ListSnapshotsRequest(pool=pool, page_size=page_size, with_usage=with_usage),
                timeout=self.long_timeout,
            ):
                if page.pool != pool:
                    raise ProtocolMismatch(f"{self._where('ListSnapshots')}: answered for pool {page.pool!r}")
                gen = page.generation if gen is None else min(gen, page.generation)
                snaps.extend(serde.snapshot_from_pb(s) for s in page.snapshots)
        except grpc.RpcError as err:
            raise from_rpc_error(err, where=self._where("ListSnapshots")) from None
        return gen or 0, snaps

    def delete(self, refs: Sequence[SnapshotKey]) -> list[DeleteResult]:
        msg = self._call(
            "DeleteSnapshots",
            self.stub.DeleteSnapshots,
            pb.DeleteSnapshotsRequest(refs=[serde.key_to_pb(r) for r in refs]),
            self.long_timeout,
        )
        assert isinstance(msg, pb.DeleteSnapshotsResponse)
        return [serde.delete_result_from_pb(r) for r in msg.results]

    def update(self, updates: Sequence[SnapshotUpdate]) -> list[SnapshotInfo]:
        msg = self._call(
            "UpdateSnapshots",
            self.stub.UpdateSnapshots,
            pb.UpdateSnapshotsRequest(updates=[serde.update_to_pb(u) for u in updates]),
        )
        assert isinstance(msg, pb.UpdateSnapshotsResponse)
        return [serde.snapshot_from_pb(s) for s in msg.snapshots]

    def _operation(
        self,
        rpc: str,
        stream: Callable[..., Iterator[pb.OperationEvent]],
        request: object,
        progress: Callable[[ProgressEvent], None],
    ) -> OperationResult:
        try:
            for ev in stream(request, timeout=self.long_timeout):
                kind = ev.WhichOneof("event")
                if kind == "progress":
                    progress(serde.progress_from_pb(ev.progress))
                elif kind == "result":
                    return serde.result_from_pb(ev.result)
        except grpc.RpcError as err:
            raise from_rpc_error(err, where=self._where(rpc)) from None
        raise Unavailable(f"{self._where(rpc)}: the stream ended without a result")

    def restore(
        self,
        ref: SnapshotKey,
        *,
        new_volume: str = "",
        new_pool: str = "",
        skip_safety_snapshot: bool = False,
        safety_set_id: str = "",
        paths: Sequence[str] = (),
        progress: Callable[[ProgressEvent], None] = no_progress,
    ) -> OperationResult:
        req = pb.RestoreRequest(
            ref=serde.key_to_pb(ref),
            new_volume=new_volume,
            new_pool=new_pool,
            skip_safety_snapshot=skip_safety_snapshot,
            safety_set_id=safety_set_id,
            paths=list(paths),
        )
        return self._operation("Restore", self.stub.Restore, req, progress)

    def clone(
        self,
        ref: SnapshotKey,
        new_volume: str,
        progress: Callable[[ProgressEvent], None] = no_progress,
        *,
        new_pool: str = "",
    ) -> OperationResult:
        return self._operation(
            "Clone",
            self.stub.Clone,
            pb.CloneRequest(ref=serde.key_to_pb(ref), new_volume=new_volume, new_pool=new_pool),
            progress,
        )

    def verify(
        self, pool: str, set_id: str = "", progress: Callable[[ProgressEvent], None] = no_progress
    ) -> OperationResult:
        return self._operation(
            "Verify", self.stub.Verify, pb.VerifyRequest(pool=pool, set_id=set_id), progress
        )

    def list_files(self, ref: SnapshotKey, prefix: str = "", limit: int = 0) -> tuple[list[FileEntry], bool]:
        """Entries of a snapshot under `prefix`, and whether the list was cut at `limit`."""
        out: list[FileEntry] = []
        truncated = False
        try:
            for page in self.stub.ListFiles(
                pb.ListFilesRequest(ref=serde.key_to_pb(ref), prefix=prefix, limit=limit),
                timeout=self.long_timeout,
            ):
                out.extend(_file(e) for e in page.entries)
                truncated = truncated or page.truncated
        except grpc.RpcError as err:
            raise from_rpc_error(err, where=self._where("ListFiles")) from None
        return out, truncated

    def collect_garbage(
        self, pool: str, progress: Callable[[ProgressEvent], None] = no_progress
    ) -> OperationResult:
        return self._operation(
            "CollectGarbage", self.stub.CollectGarbage, pb.CollectGarbageRequest(pool=pool), progress
        )


def _file(e: pb.FileEntry) -> FileEntry:
    return FileEntry(path=e.path, kind=e.kind, size=e.size, mode=e.mode, mtime=e.mtime)
