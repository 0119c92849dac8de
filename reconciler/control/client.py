"""The CLI's client for the daemon's control API. Answers come back as plain dicts (no protobuf
classes reach the CLI's formatting)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from ..errors import Unavailable
from ..pbtime import set_ts
from ..transport.status import from_rpc_error
from ..v1 import control_pb2 as cpb
from ..v1 import control_pb2_grpc as cpb_grpc


def to_dict(msg: Message) -> dict[str, Any]:
    return MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


class ControlClient:
    def __init__(self, socket: Path, *, timeout: float = 60.0, token: str | None = None) -> None:
        self.socket = socket
        self.timeout = timeout
        # a tenant's API token: the daemon then shows and restores only that tenant's resources
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.channel = grpc.insecure_channel(f"unix:{socket}")
        self.stub = cpb_grpc.ControlStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def _call(self, name: str, request: Message, timeout: float | None = None) -> dict[str, Any]:
        self._check_socket()
        try:
            reply = getattr(self.stub, name)(request, timeout=timeout or self.timeout, metadata=self.metadata)
        except grpc.RpcError as err:
            raise from_rpc_error(err, where=f"daemon {name}") from None
        return to_dict(reply)

    def _check_socket(self) -> None:
        if not self.socket.exists():
            raise Unavailable(
                f"the daemon is not running: no control socket at {self.socket} "
                "(start it with `reconciler daemon -c FILE`, or pass --socket / RECONCILER_STATE_DIR)"
            )

    def status(self) -> dict[str, Any]:
        return self._call("GetStatus", cpb.GetStatusRequest())

    def plan(self) -> dict[str, Any]:
        return self._call("Plan", cpb.PlanRequest())

    def reload(self) -> dict[str, Any]:
        return self._call("Reload", cpb.ReloadRequest())

    def list_sets(self, scope: str = "", *, with_usage: bool = False) -> list[dict[str, Any]]:
        req = cpb.ListSnapshotSetsRequest(scope=scope, with_usage=with_usage)
        return list(self._call("ListSnapshotSets", req, timeout=3600.0).get("sets", []))

    def update_set(
        self,
        set_id: str,
        action: str,
        *,
        unlock_wait_s: int = 0,
        expires: datetime | None = None,
        never_expire: bool = False,
        tenant: str = "",
    ) -> dict[str, Any]:
        req = cpb.UpdateSnapshotSetRequest(
            set_id=set_id,
            action=action,
            unlock_wait_s=unlock_wait_s,
            never_expire=never_expire,
            tenant=tenant,
        )
        set_ts(req, "expires", expires)
        return self._call("UpdateSnapshotSet", req)

    def list_files(
        self, set_id: str, resource: str, *, volume: str = "", prefix: str = "", limit: int = 0
    ) -> dict[str, Any]:
        req = cpb.ListSetFilesRequest(
            set_id=set_id, resource=resource, volume=volume, prefix=prefix, limit=limit
        )
        return self._call("ListFiles", req, timeout=600.0)

    def maintain(self, kind: str, *, node: str = "", pool: str = "", set_id: str = "") -> dict[str, Any]:
        req = cpb.MaintenanceRequest(node=node, pool=pool, set_id=set_id)
        return self._call("Verify" if kind == "verify" else "CollectGarbage", req, timeout=24 * 3600.0)

    def restore(self, **fields: Any) -> Iterator[dict[str, Any]]:
        """Events of a restore as dicts: {"plan": ...}, then {"progress": ...}*, then {"result": ...}."""
        self._check_socket()
        call = self.stub.Restore(cpb.SetRestoreRequest(**fields), timeout=24 * 3600.0, metadata=self.metadata)
        try:
            for ev in call:
                yield to_dict(ev)
        except grpc.RpcError as err:
            raise from_rpc_error(err, where="daemon Restore") from None
        finally:
            call.cancel()  # the caller stopped early (Ctrl-C): within a cancel window, nothing is done

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
        private: bool | None = None,
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
        if private is not None:
            req.private = private
        set_ts(req, "expires", expires)
        return dict(self._call("CreateSnapshotSet", req, timeout=3600.0).get("set", {}))

    def delete_set(self, set_id: str) -> dict[str, Any]:
        return self._call("DeleteSnapshotSet", cpb.DeleteSnapshotSetRequest(set_id=set_id), timeout=3600.0)
