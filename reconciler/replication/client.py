"""The daemon's (and tests') client for the Replicate call on a source agent."""

from __future__ import annotations

import threading
from typing import Protocol

import grpc

from ..errors import Unavailable
from ..transport.status import from_rpc_error
from ..v1 import replication_pb2_grpc as rpb_grpc
from .api import ReplicateOutcome, ReplicateSpec, outcome_from_pb, spec_to_pb, stats_from_pb
from .progress import StatsFn, no_stats


class CancelFlag(Protocol):
    def is_set(self) -> bool: ...


class ReplicateCancelled(Unavailable):
    """The caller cancelled the transfer (its `cancel` flag was set)."""


class ReplicationClient:
    """Wraps a channel to a source agent (the daemon reuses its AgentClient's channel)."""

    def __init__(self, channel: grpc.Channel, *, where: str) -> None:
        self.stub = rpb_grpc.ReplicationStub(channel)
        self.where = where

    def replicate(
        self,
        spec: ReplicateSpec,
        progress: StatsFn = no_stats,
        *,
        timeout: float | None = None,
        cancel: CancelFlag | None = None,
    ) -> ReplicateOutcome:
        """Run one transfer to its end; `cancel` set from another thread stops it (Unavailable)."""
        where = f"{self.where} Replicate {spec.set_id} -> {spec.target.label}"
        call = self.stub.Replicate(spec_to_pb(spec), timeout=timeout)
        stop = threading.Event()
        if cancel is not None:

            def watch() -> None:
                while not stop.wait(0.2):
                    if cancel.is_set():
                        call.cancel()
                        return

            threading.Thread(target=watch, name="replicate-cancel", daemon=True).start()
        try:
            for ev in call:
                kind = ev.WhichOneof("event")
                if kind == "progress":
                    progress(stats_from_pb(ev.progress))
                elif kind == "result":
                    return outcome_from_pb(ev.result)
        except grpc.RpcError as err:
            if cancel is not None and cancel.is_set():
                raise ReplicateCancelled(f"{where}: cancelled") from None
            raise from_rpc_error(err, where=where) from None
        finally:
            stop.set()
        raise Unavailable(f"{where}: the stream ended without a result")
