"""The agent's gRPC service: protobuf in, NodeAgent calls, protobuf out."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .. import serde
from ..backends.base import ProgressEvent
from ..replication.sender import Dialer
from ..replication.service import add_to_server as add_replication_service
from ..transport.status import abort
from ..v1 import agent_pb2 as pb
from ..v1 import agent_pb2_grpc as pb_grpc
from .api import OperationResult
from .core import NodeAgent

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Clients may ping this often while a call is in flight (see AgentClient's keepalive).
MIN_PING_INTERVAL_MS = 500
SERVICE_NAME = "reconciler.v1.Agent"


class AgentService(pb_grpc.AgentServicer):  # type: ignore[misc]
    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent

    def GetNodeInfo(self, request: pb.GetNodeInfoRequest, context: grpc.ServicerContext) -> pb.NodeInfo:
        try:
            return serde.node_info_to_pb(self.agent.node_info(request.expect_node))
        except Exception as exc:  # noqa: BLE001 - every error becomes a status
            abort(context, exc)
            raise

    def ListVolumes(
        self, request: pb.ListVolumesRequest, context: grpc.ServicerContext
    ) -> pb.ListVolumesResponse:
        try:
            vols = self.agent.list_volumes(request.pool, list(request.names) or None)
            return pb.ListVolumesResponse(
                volumes=[pb.VolumeInfo(pool=p, volume=v, logical_bytes=n) for p, v, n in vols]
            )
        except Exception as exc:  # noqa: BLE001
            abort(context, exc)
            raise

    def CreateSnapshotSet(
        self, request: pb.CreateSnapshotSetRequest, context: grpc.ServicerContext
    ) -> pb.CreateSnapshotSetResponse:
        try:
            res = self.agent.create_set(serde.create_from_pb(request))
            return serde.create_result_to_pb(res)
        except Exception as exc:  # noqa: BLE001
            log.warning("create of set %s failed: %s", request.set_id, exc)
            abort(context, exc)
            raise

    def ListSnapshots(
        self, request: pb.ListSnapshotsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ListSnapshotsPage]:
        try:
            sent = False
            for gen, snaps in self.agent.list_snapshots(
                request.pool, page_size=request.page_size, with_usage=request.with_usage
            ):
                sent = True
                yield pb.ListSnapshotsPage(
                    pool=request.pool, generation=gen, snapshots=[serde.snapshot_to_pb(s) for s in snaps]
                )
            if not sent:  # an empty pool still reports its generation
                yield pb.ListSnapshotsPage(
                    pool=request.pool, generation=self.agent.pool(request.pool).catalog.generation()
                )
        except Exception as exc:  # noqa: BLE001
            abort(context, exc)

    def DeleteSnapshots(
        self, request: pb.DeleteSnapshotsRequest, context: grpc.ServicerContext
    ) -> pb.DeleteSnapshotsResponse:
        try:
            res = self.agent.delete([serde.key_from_pb(r) for r in request.refs])
            return pb.DeleteSnapshotsResponse(results=[serde.delete_result_to_pb(r) for r in res])
        except Exception as exc:  # noqa: BLE001
            abort(context, exc)
            raise

    def UpdateSnapshots(
        self, request: pb.UpdateSnapshotsRequest, context: grpc.ServicerContext
    ) -> pb.UpdateSnapshotsResponse:
        try:
            res = self.agent.update([serde.update_from_pb(u) for u in request.updates])
            return pb.UpdateSnapshotsResponse(snapshots=[serde.snapshot_to_pb(s) for s in res])
        except Exception as exc:  # noqa: BLE001
            abort(context, exc)
            raise

    def Restore(
        self, request: pb.RestoreRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.OperationEvent]:
        ref = serde.key_from_pb(request.ref)
        return _streamed(
            context,
            lambda progress: self.agent.restore(
                ref,
                new_volume=request.new_volume,
                new_pool=request.new_pool,
                skip_safety_snapshot=request.skip_safety_snapshot,
                safety_set_id=request.safety_set_id,
                paths=list(request.paths),
                progress=progress,
            ),
        )

    def Clone(self, request: pb.CloneRequest, context: grpc.ServicerContext) -> Iterator[pb.OperationEvent]:
        ref = serde.key_from_pb(request.ref)
        return _streamed(
            context,
            lambda progress: self.agent.clone(ref, request.new_volume, progress, new_pool=request.new_pool),
        )

    def Verify(self, request: pb.VerifyRequest, context: grpc.ServicerContext) -> Iterator[pb.OperationEvent]:
        return _streamed(context, lambda progress: self.agent.verify(request.pool, request.set_id, progress))

    def CollectGarbage(
        self, request: pb.CollectGarbageRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.OperationEvent]:
        return _streamed(context, lambda progress: self.agent.collect_garbage(request.pool, progress))

    def ListFiles(
        self, request: pb.ListFilesRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ListFilesPage]:
        try:
            ref = serde.key_from_pb(request.ref)
            limit = request.limit or 100_000
            page: list[pb.FileEntry] = []
            count = 0
            for e in self.agent.list_files(ref, request.prefix):
                if count >= limit:
                    yield pb.ListFilesPage(entries=page, truncated=True)
                    return
                page.append(pb.FileEntry(path=e.path, kind=e.kind, size=e.size, mode=e.mode, mtime=e.mtime))
                count += 1
                if len(page) >= 1000:
                    yield pb.ListFilesPage(entries=page)
                    page = []
            yield pb.ListFilesPage(entries=page)
        except Exception as exc:  # noqa: BLE001
            abort(context, exc)


@dataclass(frozen=True, slots=True)
class _Malformed:
    """What the lenient deserializer hands on instead of raising: the guard answers it."""

    error: str


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 - garbage on the wire is the client's problem
            return _Malformed(" ".join(f"{type(exc).__name__}: {exc}".split()))

    return parse


class RequestGuard(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """One gate in front of every RPC of every service on the agent's server.

    - Access (with `allowed`): the peer's certificate, already verified against the CA by the
      TLS handshake, must name one of `allowed` in its subject CN or a DNS subjectAltName
      (compared case-insensitively). Anyone else gets PERMISSION_DENIED naming the identity it
      presented.
    - Malformed requests: bytes that do not parse as the method's request message get
      INVALID_ARGUMENT naming the method, instead of gRPC's INTERNAL "Exception deserializing
      request!" and a traceback in the log."""

    def __init__(self, node: str, allowed: Collection[str] | None = None) -> None:
        self.node = node
        self.allowed = None if allowed is None else frozenset(a.lower() for a in allowed)

    @staticmethod
    def identities(context: grpc.ServicerContext) -> tuple[list[str], list[str]]:
        """(common names, DNS subjectAltNames) of the peer certificate; empty without TLS."""
        auth: Mapping[str, list[bytes]] = context.auth_context()  # type: ignore[assignment]

        def values(key: str) -> list[str]:
            return [v.decode("utf-8", "replace") for v in auth.get(key, [])]

        return values("x509_common_name"), values("peer_dns")

    def check(self, context: grpc.ServicerContext) -> None:
        if self.allowed is None:
            return
        cns, dns = self.identities(context)
        if self.allowed & {n.lower() for n in cns + dns}:
            return
        if not cns and not dns:
            who = "a peer without a client certificate"
        else:
            who = "client certificate " + ", ".join(
                [f"CN={n!r}" for n in cns] + [f"DNS={n!r}" for n in dns if n not in cns]
            )
        log.warning(
            "refused %s from %s: not in tls.allowed_clients (%s)",
            who,
            context.peer(),
            ", ".join(sorted(self.allowed)),
        )
        context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"node {self.node}: {who} is not allowed to use this agent "
            "(add its name to tls.allowed_clients in the agent config)",
        )

    def malformed(self, context: grpc.ServicerContext, method: str, bad: _Malformed) -> None:
        log.warning("malformed %s request from %s: %s", method, context.peer(), bad.error)
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"node {self.node}: malformed {method} request: the bytes do not parse as its message "
            f"({bad.error})",
        )

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        for behavior, make, streaming in (
            (handler.unary_unary, grpc.unary_unary_rpc_method_handler, False),
            (handler.unary_stream, grpc.unary_stream_rpc_method_handler, False),
            (handler.stream_unary, grpc.stream_unary_rpc_method_handler, True),
            (handler.stream_stream, grpc.stream_stream_rpc_method_handler, True),
        ):
            if behavior is not None:
                return make(
                    self._guard(behavior, method, streaming),
                    request_deserializer=_lenient(handler.request_deserializer),
                    response_serializer=handler.response_serializer,
                )
        return handler

    def _guard(self, behavior: Callable[..., Any], method: str, streaming: bool) -> Callable[..., Any]:
        def checked(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            for r in requests:
                if isinstance(r, _Malformed):
                    self.malformed(context, method, r)
                yield r

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            self.check(context)  # raises (aborts the RPC) for a peer that is not allowed
            if streaming:
                return behavior(checked(request, context), context)
            if isinstance(request, _Malformed):
                self.malformed(context, method, request)
            return behavior(request, context)

        return guarded


_DONE = object()


def _streamed(
    context: grpc.ServicerContext, op: Callable[[Callable[[ProgressEvent], None]], OperationResult]
) -> Iterator[pb.OperationEvent]:
    """Run a long operation in a worker thread and stream its progress, then its result.

    The operation runs to its end even if the client goes away: stopping a restore halfway is what
    the atomic swap protects against, but there is no reason to provoke it.
    """
    events: queue.Queue[Any] = queue.Queue(maxsize=1000)
    outcome: dict[str, Any] = {}

    def progress(ev: ProgressEvent) -> None:
        try:
            events.put_nowait(ev)
        except queue.Full:  # a slow reader must not stall the operation
            pass

    def run() -> None:
        try:
            outcome["result"] = op(progress)
        except BaseException as exc:  # noqa: BLE001 - reported to the client below
            outcome["error"] = exc
        finally:
            events.put(_DONE)

    threading.Thread(target=run, name="agent-op", daemon=True).start()

    def gen() -> Iterator[pb.OperationEvent]:
        while True:
            ev = events.get()
            if ev is _DONE:
                break
            yield serde.progress_to_pb(ev)
        if "error" in outcome:
            abort(context, outcome["error"])
        yield serde.result_to_pb(outcome["result"])

    return gen()


def build_server(
    agent: NodeAgent,
    address: str,
    *,
    credentials: grpc.ServerCredentials | None = None,
    allowed_clients: Collection[str] | None = None,
    max_workers: int = 16,
    replication_dialer: Dialer | None = None,
) -> tuple[grpc.Server, int]:
    """A started-ready (not started) server with the agent and health services. Returns (server, port).

    With `allowed_clients` (needs `credentials` that require a client certificate), every RPC is
    refused with PERMISSION_DENIED unless the peer certificate names one of them."""
    if allowed_clients is not None and credentials is None:
        raise ValueError("allowed_clients needs TLS credentials (client certificates)")
    interceptors: list[grpc.ServerInterceptor[Any, Any]] = [RequestGuard(agent.node, allowed_clients)]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="agent-rpc"),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
            # The daemon pings during long calls (a snapshot behind a slow freeze hook sends no
            # data for minutes) to notice a hung or vanished agent; the default policy would
            # answer pings more often than every 5 minutes with GOAWAY "too_many_pings".
            ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
        ],
        maximum_concurrent_rpcs=256,
    )
    pb_grpc.add_AgentServicer_to_server(AgentService(agent), server)
    # agent-to-agent replication; `replication_dialer` carries the identity this agent dials with
    add_replication_service(server, agent, replication_dialer)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0 and not address.startswith("unix:"):
        raise OSError(f"cannot listen on {address}")
    return server, port
