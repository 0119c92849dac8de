"""The CLI's client for the daemon's control API. Answers come back as plain dicts (no protobuf
classes reach the CLI's formatting)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from ..errors import Unavailable
from ..serde import set_ts
from ..transport.status import from_rpc_error
from ..v1 import control_pb2 as cpb
from ..v1 import control_pb2_grpc as cpb_grpc


def to_dict(msg: Message) -> dict[str, Any]:
    return MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


class ControlClient:
    def __init__(self, socket: Path, *, timeout: float = 60.0) -> None:
        self.socket = socket
        self.timeout = timeout
        self.channel = grpc.insecure_channel(f"unix:{socket}")
        self.stub = cpb_grpc.ControlStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def _call(self, name: str, request: Message, timeout: float | None = None) -> dict[str, Any]:
        if not self.socket.exists():
            raise Unavailable(
                f"the daemon is not running: no control socket at {self.socket} "
                "(start it with `reconciler daemon -c FILE`, or pass --socket / RECONCILER_STATE_DIR)"
            )
        try:
            reply = getattr(self.stub, name)(request, timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err, where=f"daemon {name}") from None
        return to_dict(reply)

    def status(self) -> dict[str, Any]:
        return self._call("GetStatus", cpb.GetStatusRequest())

    def plan(self) -> dict[str, Any]:
        return self._call("Plan", cpb.PlanRequest())

    def reload(self) -> dict[str, Any]:
        return self._call("Reload", cpb.ReloadRequest())

    def list_sets(self, scope: str = "") -> list[dict[str, Any]]:
        return list(self._call("ListSnapshotSets", cpb.ListSnapshotSetsRequest(scope=scope)).get("sets", []))

    def create_set(
        self,
        *,
        scope: str,
        request_id: str,
        name: str = "",
        description: str = "",
        expires: datetime | None = None,
        never_expire: bool = False,
        immutable: bool = False,
        quiesce: bool = False,
    ) -> dict[str, Any]:
        req = cpb.CreateManualSetRequest(
            scope=scope,
            request_id=request_id,
            name=name,
            description=description,
            never_expire=never_expire,
            immutable=immutable,
            quiesce=quiesce,
        )
        set_ts(req, "expires", expires)
        return dict(self._call("CreateSnapshotSet", req, timeout=3600.0).get("set", {}))

    def delete_set(self, set_id: str) -> dict[str, Any]:
        return self._call("DeleteSnapshotSet", cpb.DeleteSnapshotSetRequest(set_id=set_id), timeout=3600.0)
