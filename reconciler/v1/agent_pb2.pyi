import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProtocolVersion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROTOCOL_VERSION_UNSPECIFIED: _ClassVar[ProtocolVersion]
    PROTOCOL_VERSION_1: _ClassVar[ProtocolVersion]

class QuiescePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUIESCE_POLICY_UNSPECIFIED: _ClassVar[QuiescePolicy]
    QUIESCE_POLICY_CRASH_CONSISTENT_ON_FAILURE: _ClassVar[QuiescePolicy]
    QUIESCE_POLICY_FAIL: _ClassVar[QuiescePolicy]

class ImmutableState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMMUTABLE_STATE_UNSPECIFIED: _ClassVar[ImmutableState]
    IMMUTABLE_STATE_LOCKED: _ClassVar[ImmutableState]
    IMMUTABLE_STATE_UNLOCKING: _ClassVar[ImmutableState]
    IMMUTABLE_STATE_UNLOCKED: _ClassVar[ImmutableState]
PROTOCOL_VERSION_UNSPECIFIED: ProtocolVersion
PROTOCOL_VERSION_1: ProtocolVersion
QUIESCE_POLICY_UNSPECIFIED: QuiescePolicy
QUIESCE_POLICY_CRASH_CONSISTENT_ON_FAILURE: QuiescePolicy
QUIESCE_POLICY_FAIL: QuiescePolicy
IMMUTABLE_STATE_UNSPECIFIED: ImmutableState
IMMUTABLE_STATE_LOCKED: ImmutableState
IMMUTABLE_STATE_UNLOCKING: ImmutableState
IMMUTABLE_STATE_UNLOCKED: ImmutableState

class GetNodeInfoRequest(_message.Message):
    __slots__ = ("expect_node",)
    EXPECT_NODE_FIELD_NUMBER: _ClassVar[int]
    expect_node: str
    def __init__(self, expect_node: _Optional[str] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("node", "protocol_version", "agent_version", "pools", "now")
    NODE_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    POOLS_FIELD_NUMBER: _ClassVar[int]
    NOW_FIELD_NUMBER: _ClassVar[int]
    node: str
    protocol_version: ProtocolVersion
    agent_version: str
    pools: _containers.RepeatedCompositeFieldContainer[PoolInfo]
    now: _timestamp_pb2.Timestamp
    def __init__(self, node: _Optional[str] = ..., protocol_version: _Optional[_Union[ProtocolVersion, str]] = ..., agent_version: _Optional[str] = ..., pools: _Optional[_Iterable[_Union[PoolInfo, _Mapping]]] = ..., now: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PoolInfo(_message.Message):
    __slots__ = ("name", "backend", "generation", "snapshot_count", "space", "path")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_COUNT_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    name: str
    backend: str
    generation: int
    snapshot_count: int
    space: SpaceUsage
    path: str
    def __init__(self, name: _Optional[str] = ..., backend: _Optional[str] = ..., generation: _Optional[int] = ..., snapshot_count: _Optional[int] = ..., space: _Optional[_Union[SpaceUsage, _Mapping]] = ..., path: _Optional[str] = ...) -> None: ...

class SpaceUsage(_message.Message):
    __slots__ = ("logical_bytes", "stored_bytes", "unique_bytes", "free_bytes")
    LOGICAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    logical_bytes: int
    stored_bytes: int
    unique_bytes: int
    free_bytes: int
    def __init__(self, logical_bytes: _Optional[int] = ..., stored_bytes: _Optional[int] = ..., unique_bytes: _Optional[int] = ..., free_bytes: _Optional[int] = ...) -> None: ...

class ListVolumesRequest(_message.Message):
    __slots__ = ("pool", "names")
    POOL_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    pool: str
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, pool: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ...) -> None: ...

class VolumeInfo(_message.Message):
    __slots__ = ("pool", "volume", "logical_bytes")
    POOL_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    LOGICAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    pool: str
    volume: str
    logical_bytes: int
    def __init__(self, pool: _Optional[str] = ..., volume: _Optional[str] = ..., logical_bytes: _Optional[int] = ...) -> None: ...

class ListVolumesResponse(_message.Message):
    __slots__ = ("volumes",)
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    volumes: _containers.RepeatedCompositeFieldContainer[VolumeInfo]
    def __init__(self, volumes: _Optional[_Iterable[_Union[VolumeInfo, _Mapping]]] = ...) -> None: ...

class QuiesceHooks(_message.Message):
    __slots__ = ("freeze", "thaw", "timeout_ms")
    FREEZE_FIELD_NUMBER: _ClassVar[int]
    THAW_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    freeze: _containers.RepeatedScalarFieldContainer[str]
    thaw: _containers.RepeatedScalarFieldContainer[str]
    timeout_ms: int
    def __init__(self, freeze: _Optional[_Iterable[str]] = ..., thaw: _Optional[_Iterable[str]] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class SnapshotTarget(_message.Message):
    __slots__ = ("pool", "volume", "resource", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    POOL_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    pool: str
    volume: str
    resource: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, pool: _Optional[str] = ..., volume: _Optional[str] = ..., resource: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class QuiesceGroup(_message.Message):
    __slots__ = ("resource", "hooks")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    HOOKS_FIELD_NUMBER: _ClassVar[int]
    resource: str
    hooks: QuiesceHooks
    def __init__(self, resource: _Optional[str] = ..., hooks: _Optional[_Union[QuiesceHooks, _Mapping]] = ...) -> None: ...

class CreateSnapshotSetRequest(_message.Message):
    __slots__ = ("set_id", "name", "targets", "labels", "expires", "immutable", "quiesce", "quiesce_policy", "freeze_budget_ms", "created", "site")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    IMMUTABLE_FIELD_NUMBER: _ClassVar[int]
    QUIESCE_FIELD_NUMBER: _ClassVar[int]
    QUIESCE_POLICY_FIELD_NUMBER: _ClassVar[int]
    FREEZE_BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    set_id: str
    name: str
    targets: _containers.RepeatedCompositeFieldContainer[SnapshotTarget]
    labels: _containers.ScalarMap[str, str]
    expires: _timestamp_pb2.Timestamp
    immutable: bool
    quiesce: _containers.RepeatedCompositeFieldContainer[QuiesceGroup]
    quiesce_policy: QuiescePolicy
    freeze_budget_ms: int
    created: _timestamp_pb2.Timestamp
    site: str
    def __init__(self, set_id: _Optional[str] = ..., name: _Optional[str] = ..., targets: _Optional[_Iterable[_Union[SnapshotTarget, _Mapping]]] = ..., labels: _Optional[_Mapping[str, str]] = ..., expires: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., immutable: _Optional[bool] = ..., quiesce: _Optional[_Iterable[_Union[QuiesceGroup, _Mapping]]] = ..., quiesce_policy: _Optional[_Union[QuiescePolicy, str]] = ..., freeze_budget_ms: _Optional[int] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., site: _Optional[str] = ...) -> None: ...

class CreateSnapshotSetResponse(_message.Message):
    __slots__ = ("snapshots", "quiesced", "warnings")
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    QUIESCED_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    snapshots: _containers.RepeatedCompositeFieldContainer[Snapshot]
    quiesced: bool
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, snapshots: _Optional[_Iterable[_Union[Snapshot, _Mapping]]] = ..., quiesced: _Optional[bool] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("set_id", "name", "pool", "volume", "created", "expires", "labels", "immutable", "unlock_at", "holds", "logical_bytes", "unique_bytes", "quiesced")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    IMMUTABLE_FIELD_NUMBER: _ClassVar[int]
    UNLOCK_AT_FIELD_NUMBER: _ClassVar[int]
    HOLDS_FIELD_NUMBER: _ClassVar[int]
    LOGICAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_BYTES_FIELD_NUMBER: _ClassVar[int]
    QUIESCED_FIELD_NUMBER: _ClassVar[int]
    set_id: str
    name: str
    pool: str
    volume: str
    created: _timestamp_pb2.Timestamp
    expires: _timestamp_pb2.Timestamp
    labels: _containers.ScalarMap[str, str]
    immutable: ImmutableState
    unlock_at: _timestamp_pb2.Timestamp
    holds: _containers.RepeatedScalarFieldContainer[str]
    logical_bytes: int
    unique_bytes: int
    quiesced: bool
    def __init__(self, set_id: _Optional[str] = ..., name: _Optional[str] = ..., pool: _Optional[str] = ..., volume: _Optional[str] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., immutable: _Optional[_Union[ImmutableState, str]] = ..., unlock_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., holds: _Optional[_Iterable[str]] = ..., logical_bytes: _Optional[int] = ..., unique_bytes: _Optional[int] = ..., quiesced: _Optional[bool] = ...) -> None: ...

class ListSnapshotsRequest(_message.Message):
    __slots__ = ("pool", "page_size", "with_usage")
    POOL_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    WITH_USAGE_FIELD_NUMBER: _ClassVar[int]
    pool: str
    page_size: int
    with_usage: bool
    def __init__(self, pool: _Optional[str] = ..., page_size: _Optional[int] = ..., with_usage: _Optional[bool] = ...) -> None: ...

class ListSnapshotsPage(_message.Message):
    __slots__ = ("pool", "generation", "snapshots")
    POOL_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    pool: str
    generation: int
    snapshots: _containers.RepeatedCompositeFieldContainer[Snapshot]
    def __init__(self, pool: _Optional[str] = ..., generation: _Optional[int] = ..., snapshots: _Optional[_Iterable[_Union[Snapshot, _Mapping]]] = ...) -> None: ...

class SnapshotRef(_message.Message):
    __slots__ = ("set_id", "pool", "volume")
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    set_id: str
    pool: str
    volume: str
    def __init__(self, set_id: _Optional[str] = ..., pool: _Optional[str] = ..., volume: _Optional[str] = ...) -> None: ...

class DeleteSnapshotsRequest(_message.Message):
    __slots__ = ("refs",)
    REFS_FIELD_NUMBER: _ClassVar[int]
    refs: _containers.RepeatedCompositeFieldContainer[SnapshotRef]
    def __init__(self, refs: _Optional[_Iterable[_Union[SnapshotRef, _Mapping]]] = ...) -> None: ...

class DeleteResult(_message.Message):
    __slots__ = ("ref", "deleted", "error")
    REF_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ref: SnapshotRef
    deleted: bool
    error: str
    def __init__(self, ref: _Optional[_Union[SnapshotRef, _Mapping]] = ..., deleted: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class DeleteSnapshotsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[DeleteResult]
    def __init__(self, results: _Optional[_Iterable[_Union[DeleteResult, _Mapping]]] = ...) -> None: ...

class SnapshotUpdate(_message.Message):
    __slots__ = ("ref", "fields", "expires", "add_holds", "remove_holds", "unlock_delay_s", "set_labels", "remove_labels")
    class SetLabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REF_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    ADD_HOLDS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_HOLDS_FIELD_NUMBER: _ClassVar[int]
    UNLOCK_DELAY_S_FIELD_NUMBER: _ClassVar[int]
    SET_LABELS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_LABELS_FIELD_NUMBER: _ClassVar[int]
    ref: SnapshotRef
    fields: _containers.RepeatedScalarFieldContainer[str]
    expires: _timestamp_pb2.Timestamp
    add_holds: _containers.RepeatedScalarFieldContainer[str]
    remove_holds: _containers.RepeatedScalarFieldContainer[str]
    unlock_delay_s: int
    set_labels: _containers.ScalarMap[str, str]
    remove_labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ref: _Optional[_Union[SnapshotRef, _Mapping]] = ..., fields: _Optional[_Iterable[str]] = ..., expires: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., add_holds: _Optional[_Iterable[str]] = ..., remove_holds: _Optional[_Iterable[str]] = ..., unlock_delay_s: _Optional[int] = ..., set_labels: _Optional[_Mapping[str, str]] = ..., remove_labels: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateSnapshotsRequest(_message.Message):
    __slots__ = ("updates",)
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    updates: _containers.RepeatedCompositeFieldContainer[SnapshotUpdate]
    def __init__(self, updates: _Optional[_Iterable[_Union[SnapshotUpdate, _Mapping]]] = ...) -> None: ...

class UpdateSnapshotsResponse(_message.Message):
    __slots__ = ("snapshots",)
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    snapshots: _containers.RepeatedCompositeFieldContainer[Snapshot]
    def __init__(self, snapshots: _Optional[_Iterable[_Union[Snapshot, _Mapping]]] = ...) -> None: ...

class RestoreRequest(_message.Message):
    __slots__ = ("ref", "new_volume", "skip_safety_snapshot", "safety_set_id", "paths", "new_pool")
    REF_FIELD_NUMBER: _ClassVar[int]
    NEW_VOLUME_FIELD_NUMBER: _ClassVar[int]
    SKIP_SAFETY_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    SAFETY_SET_ID_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    NEW_POOL_FIELD_NUMBER: _ClassVar[int]
    ref: SnapshotRef
    new_volume: str
    skip_safety_snapshot: bool
    safety_set_id: str
    paths: _containers.RepeatedScalarFieldContainer[str]
    new_pool: str
    def __init__(self, ref: _Optional[_Union[SnapshotRef, _Mapping]] = ..., new_volume: _Optional[str] = ..., skip_safety_snapshot: _Optional[bool] = ..., safety_set_id: _Optional[str] = ..., paths: _Optional[_Iterable[str]] = ..., new_pool: _Optional[str] = ...) -> None: ...

class CloneRequest(_message.Message):
    __slots__ = ("ref", "new_volume", "new_pool")
    REF_FIELD_NUMBER: _ClassVar[int]
    NEW_VOLUME_FIELD_NUMBER: _ClassVar[int]
    NEW_POOL_FIELD_NUMBER: _ClassVar[int]
    ref: SnapshotRef
    new_volume: str
    new_pool: str
    def __init__(self, ref: _Optional[_Union[SnapshotRef, _Mapping]] = ..., new_volume: _Optional[str] = ..., new_pool: _Optional[str] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("pool", "set_id")
    POOL_FIELD_NUMBER: _ClassVar[int]
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    pool: str
    set_id: str
    def __init__(self, pool: _Optional[str] = ..., set_id: _Optional[str] = ...) -> None: ...

class CollectGarbageRequest(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: str
    def __init__(self, pool: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("phase", "done", "total", "unit", "message")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    phase: str
    done: int
    total: int
    unit: str
    message: str
    def __init__(self, phase: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., unit: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class OperationResult(_message.Message):
    __slots__ = ("ok", "message", "problems", "safety_set_id", "volume", "bytes")
    OK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    SAFETY_SET_ID_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    message: str
    problems: _containers.RepeatedScalarFieldContainer[str]
    safety_set_id: str
    volume: str
    bytes: int
    def __init__(self, ok: _Optional[bool] = ..., message: _Optional[str] = ..., problems: _Optional[_Iterable[str]] = ..., safety_set_id: _Optional[str] = ..., volume: _Optional[str] = ..., bytes: _Optional[int] = ...) -> None: ...

class OperationEvent(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    result: OperationResult
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., result: _Optional[_Union[OperationResult, _Mapping]] = ...) -> None: ...

class ListFilesRequest(_message.Message):
    __slots__ = ("ref", "prefix", "limit")
    REF_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    ref: SnapshotRef
    prefix: str
    limit: int
    def __init__(self, ref: _Optional[_Union[SnapshotRef, _Mapping]] = ..., prefix: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class FileEntry(_message.Message):
    __slots__ = ("path", "kind", "size", "mode", "mtime")
    PATH_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MTIME_FIELD_NUMBER: _ClassVar[int]
    path: str
    kind: str
    size: int
    mode: int
    mtime: float
    def __init__(self, path: _Optional[str] = ..., kind: _Optional[str] = ..., size: _Optional[int] = ..., mode: _Optional[int] = ..., mtime: _Optional[float] = ...) -> None: ...

class ListFilesPage(_message.Message):
    __slots__ = ("entries", "truncated")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[FileEntry]
    truncated: bool
    def __init__(self, entries: _Optional[_Iterable[_Union[FileEntry, _Mapping]]] = ..., truncated: _Optional[bool] = ...) -> None: ...
