import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from reconciler.v1 import replication_pb2 as _replication_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QueueSyncRequest(_message.Message):
    __slots__ = ("set_id", "target", "wait", "ignore_windows")
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    IGNORE_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    set_id: str
    target: str
    wait: bool
    ignore_windows: bool
    def __init__(self, set_id: _Optional[str] = ..., target: _Optional[str] = ..., wait: _Optional[bool] = ..., ignore_windows: _Optional[bool] = ...) -> None: ...

class SyncBackRequest(_message.Message):
    __slots__ = ("set_id", "target", "to_node", "keep_seconds")
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    KEEP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    set_id: str
    target: str
    to_node: str
    keep_seconds: int
    def __init__(self, set_id: _Optional[str] = ..., target: _Optional[str] = ..., to_node: _Optional[str] = ..., keep_seconds: _Optional[int] = ...) -> None: ...

class SyncResult(_message.Message):
    __slots__ = ("ok", "message", "target", "set_id", "wire_bytes", "seconds", "volumes")
    OK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    WIRE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    message: str
    target: str
    set_id: str
    wire_bytes: int
    seconds: float
    volumes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ok: _Optional[bool] = ..., message: _Optional[str] = ..., target: _Optional[str] = ..., set_id: _Optional[str] = ..., wire_bytes: _Optional[int] = ..., seconds: _Optional[float] = ..., volumes: _Optional[_Iterable[str]] = ...) -> None: ...

class SyncEvent(_message.Message):
    __slots__ = ("progress", "result", "waiting")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    progress: _replication_pb2.TransferProgress
    result: SyncResult
    waiting: str
    def __init__(self, progress: _Optional[_Union[_replication_pb2.TransferProgress, _Mapping]] = ..., result: _Optional[_Union[SyncResult, _Mapping]] = ..., waiting: _Optional[str] = ...) -> None: ...

class GetSyncStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TargetSyncStatus(_message.Message):
    __slots__ = ("name", "address", "reachable", "error", "window_open", "throttle_bps", "pending", "lag_seconds", "lag_known", "newest_on_target", "next_window", "bases")
    class BasesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WINDOW_OPEN_FIELD_NUMBER: _ClassVar[int]
    THROTTLE_BPS_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LAG_KNOWN_FIELD_NUMBER: _ClassVar[int]
    NEWEST_ON_TARGET_FIELD_NUMBER: _ClassVar[int]
    NEXT_WINDOW_FIELD_NUMBER: _ClassVar[int]
    BASES_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    reachable: bool
    error: str
    window_open: bool
    throttle_bps: int
    pending: int
    lag_seconds: float
    lag_known: bool
    newest_on_target: _timestamp_pb2.Timestamp
    next_window: _timestamp_pb2.Timestamp
    bases: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., reachable: _Optional[bool] = ..., error: _Optional[str] = ..., window_open: _Optional[bool] = ..., throttle_bps: _Optional[int] = ..., pending: _Optional[int] = ..., lag_seconds: _Optional[float] = ..., lag_known: _Optional[bool] = ..., newest_on_target: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_window: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bases: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ActiveTransfer(_message.Message):
    __slots__ = ("target", "set_id", "scope", "manual", "progress", "started")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    MANUAL_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    target: str
    set_id: str
    scope: str
    manual: bool
    progress: _replication_pb2.TransferProgress
    started: _timestamp_pb2.Timestamp
    def __init__(self, target: _Optional[str] = ..., set_id: _Optional[str] = ..., scope: _Optional[str] = ..., manual: _Optional[bool] = ..., progress: _Optional[_Union[_replication_pb2.TransferProgress, _Mapping]] = ..., started: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WaitingTransfer(_message.Message):
    __slots__ = ("target", "set_id", "reason", "until")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    target: str
    set_id: str
    reason: str
    until: _timestamp_pb2.Timestamp
    def __init__(self, target: _Optional[str] = ..., set_id: _Optional[str] = ..., reason: _Optional[str] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ScopeSyncStatus(_message.Message):
    __slots__ = ("scope", "target", "set_id", "created", "synced_at")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    SYNCED_AT_FIELD_NUMBER: _ClassVar[int]
    scope: str
    target: str
    set_id: str
    created: _timestamp_pb2.Timestamp
    synced_at: _timestamp_pb2.Timestamp
    def __init__(self, scope: _Optional[str] = ..., target: _Optional[str] = ..., set_id: _Optional[str] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., synced_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SyncRecord(_message.Message):
    __slots__ = ("at", "target", "set_id", "ok", "error", "wire_bytes", "seconds", "kind")
    AT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WIRE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    at: _timestamp_pb2.Timestamp
    target: str
    set_id: str
    ok: bool
    error: str
    wire_bytes: int
    seconds: float
    kind: str
    def __init__(self, at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., target: _Optional[str] = ..., set_id: _Optional[str] = ..., ok: _Optional[bool] = ..., error: _Optional[str] = ..., wire_bytes: _Optional[int] = ..., seconds: _Optional[float] = ..., kind: _Optional[str] = ...) -> None: ...

class SyncStatusResponse(_message.Message):
    __slots__ = ("targets", "active", "waiting", "scopes", "recent", "warnings")
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    targets: _containers.RepeatedCompositeFieldContainer[TargetSyncStatus]
    active: _containers.RepeatedCompositeFieldContainer[ActiveTransfer]
    waiting: _containers.RepeatedCompositeFieldContainer[WaitingTransfer]
    scopes: _containers.RepeatedCompositeFieldContainer[ScopeSyncStatus]
    recent: _containers.RepeatedCompositeFieldContainer[SyncRecord]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, targets: _Optional[_Iterable[_Union[TargetSyncStatus, _Mapping]]] = ..., active: _Optional[_Iterable[_Union[ActiveTransfer, _Mapping]]] = ..., waiting: _Optional[_Iterable[_Union[WaitingTransfer, _Mapping]]] = ..., scopes: _Optional[_Iterable[_Union[ScopeSyncStatus, _Mapping]]] = ..., recent: _Optional[_Iterable[_Union[SyncRecord, _Mapping]]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...
