"""The agent's Replication gRPC service: Replicate (daemon -> source) and Receive (source -> target)."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from ..agent.core import NodeAgent
from ..transport.status import abort
from ..v1 import replication_pb2 as rpb
from ..v1 import replication_pb2_grpc as rpb_grpc
from .api import outcome_to_pb, spec_from_pb, stats_to_pb
from .progress import TransferStats
from .receiver import ReceiveSession, wake_groups
from .sender import Dialer, Sender

log = logging.getLogger(__name__)

_DONE = object()
SERVICE = "reconciler.v1.Replication"


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_allocator() -> None:
    """Keep MiB-sized buffers in the heap. glibc serves them with mmap and gives the pages back on
    free by default, so every 1 MiB message of a transfer cost 256 page faults and zeroed pages:
    about a third of an agent's CPU time while streaming (measured with perf)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return  # not glibc
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt(_M_MMAP_THRESHOLD, 16 << 20)
    mallopt(_M_TRIM_THRESHOLD, 256 << 20)


class ReplicationService(rpb_grpc.ReplicationServicer):  # type: ignore[misc]
    def __init__(self, agent: NodeAgent, dialer: Dialer | None = None) -> None:
        self.agent = agent
        self.dialer = dialer or Dialer(None)
        tune_allocator()

    def Replicate(
        self, request: rpb.ReplicateRequest, context: grpc.ServicerContext
    ) -> Iterator[rpb.ReplicateEvent]:
        events: queue.Queue[Any] = queue.Queue()
        outcome: dict[str, Any] = {}
        try:
            spec = spec_from_pb(request)
        except Exception as exc:  # noqa: BLE001
            abort(context, exc)
            raise

        def report(st: TransferStats) -> None:
            events.put(st)

        sender = Sender(self.agent, self.dialer, spec, report)
        # the daemon went away (restart, cancel at the end of a sync window): stop sending; the
        # target keeps what arrived and the next transfer resumes from there
        context.add_callback(sender.cancel)

        def run() -> None:
            try:
                outcome["result"] = sender.run()
            except BaseException as exc:  # noqa: BLE001 - reported to the caller below
                outcome["error"] = exc
            finally:
                events.put(_DONE)

        threading.Thread(target=run, name=f"replicate-{spec.set_id[:40]}", daemon=True).start()

        def gen() -> Iterator[rpb.ReplicateEvent]:
            while True:
                ev = events.get()
                if ev is _DONE:
                    break
                yield rpb.ReplicateEvent(progress=stats_to_pb(ev))
            if "error" in outcome:
                exc = outcome["error"]
                log.warning("replication of set %s to %s failed: %s", spec.set_id, spec.target.label, exc)
                abort(context, exc)
            yield rpb.ReplicateEvent(result=outcome_to_pb(outcome["result"]))

        return gen()

    def Receive(
        self, request_iterator: Iterator[bytes], context: grpc.ServicerContext
    ) -> Iterator[rpb.ReceiveResponse]:
        session = ReceiveSession(self.agent, peer=context.peer(), alive=context.is_active)
        context.add_callback(wake_groups)  # a cancelled stream stops waiting for its group at once
        try:
            yield from session.run(request_iterator)
        except Exception as exc:  # noqa: BLE001 - every error becomes a status
            if context.is_active():
                log.warning("receive from %s failed: %s", context.peer(), exc)
                abort(context, exc)
            else:
                log.info("receive from %s ended: %s", context.peer(), exc)


def add_to_server(server: grpc.Server, agent: NodeAgent, dialer: Dialer | None = None) -> None:
    """Register the service. Receive takes its requests as raw bytes (decoded by wire.py, which
    reads the bulk messages without building protobuf objects); the rest is generated code's."""
    svc = ReplicationService(agent, dialer)
    handlers = {
        "Replicate": grpc.unary_stream_rpc_method_handler(
            svc.Replicate,
            request_deserializer=rpb.ReplicateRequest.FromString,
            response_serializer=rpb.ReplicateEvent.SerializeToString,
        ),
        "Receive": grpc.stream_stream_rpc_method_handler(
            svc.Receive,
            request_deserializer=None,
            response_serializer=rpb.ReceiveResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
