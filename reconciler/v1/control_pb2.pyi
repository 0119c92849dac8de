import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Condition(_message.Message):
    __slots__ = ("kind", "subject", "ok", "reason", "message", "since")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    subject: str
    ok: bool
    reason: str
    message: str
    since: _timestamp_pb2.Timestamp
    def __init__(self, kind: _Optional[str] = ..., subject: _Optional[str] = ..., ok: _Optional[bool] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("name", "reachable", "error", "address", "pools")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    POOLS_FIELD_NUMBER: _ClassVar[int]
    name: str
    reachable: bool
    error: str
    address: str
    pools: _containers.RepeatedCompositeFieldContainer[PoolStatus]
    def __init__(self, name: _Optional[str] = ..., reachable: _Optional[bool] = ..., error: _Optional[str] = ..., address: _Optional[str] = ..., pools: _Optional[_Iterable[_Union[PoolStatus, _Mapping]]] = ...) -> None: ...

class PoolStatus(_message.Message):
    __slots__ = ("name", "backend", "generation", "snapshot_count", "logical_bytes", "stored_bytes", "free_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_COUNT_FIELD_NUMBER: _ClassVar[int]
    LOGICAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    backend: str
    generation: int
    snapshot_count: int
    logical_bytes: int
    stored_bytes: int
    free_bytes: int
    def __init__(self, name: _Optional[str] = ..., backend: _Optional[str] = ..., generation: _Optional[int] = ..., snapshot_count: _Optional[int] = ..., logical_bytes: _Optional[int] = ..., stored_bytes: _Optional[int] = ..., free_bytes: _Optional[int] = ...) -> None: ...

class ScopeStatus(_message.Message):
    __slots__ = ("scope", "profile", "period", "last_success", "next_slot", "sets")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    LAST_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    NEXT_SLOT_FIELD_NUMBER: _ClassVar[int]
    SETS_FIELD_NUMBER: _ClassVar[int]
    scope: str
    profile: str
    period: str
    last_success: _timestamp_pb2.Timestamp
    next_slot: _timestamp_pb2.Timestamp
    sets: int
    def __init__(self, scope: _Optional[str] = ..., profile: _Optional[str] = ..., period: _Optional[str] = ..., last_success: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_slot: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sets: _Optional[int] = ...) -> None: ...

class ActionRecord(_message.Message):
    __slots__ = ("at", "kind", "set_id", "scope", "node", "ok", "reason", "error")
    AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    at: _timestamp_pb2.Timestamp
    kind: str
    set_id: str
    scope: str
    node: str
    ok: bool
    reason: str
    error: str
    def __init__(self, at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[str] = ..., set_id: _Optional[str] = ..., scope: _Optional[str] = ..., node: _Optional[str] = ..., ok: _Optional[bool] = ..., reason: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("config_path", "config_valid", "config_errors", "config_loaded_at", "last_pass", "next_wakeup", "nodes", "scopes", "conditions", "recent_actions", "version", "last_pass_seconds", "site", "warnings", "notes")
    CONFIG_PATH_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VALID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_ERRORS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_PASS_FIELD_NUMBER: _ClassVar[int]
    NEXT_WAKEUP_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    RECENT_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_PASS_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    config_path: str
    config_valid: bool
    config_errors: _containers.RepeatedScalarFieldContainer[str]
    config_loaded_at: _timestamp_pb2.Timestamp
    last_pass: _timestamp_pb2.Timestamp
    next_wakeup: _timestamp_pb2.Timestamp
    nodes: _containers.RepeatedCompositeFieldContainer[NodeStatus]
    scopes: _containers.RepeatedCompositeFieldContainer[ScopeStatus]
    conditions: _containers.RepeatedCompositeFieldContainer[Condition]
    recent_actions: _containers.RepeatedCompositeFieldContainer[ActionRecord]
    version: str
    last_pass_seconds: float
    site: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    notes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, config_path: _Optional[str] = ..., config_valid: _Optional[bool] = ..., config_errors: _Optional[_Iterable[str]] = ..., config_loaded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_pass: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_wakeup: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., nodes: _Optional[_Iterable[_Union[NodeStatus, _Mapping]]] = ..., scopes: _Optional[_Iterable[_Union[ScopeStatus, _Mapping]]] = ..., conditions: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., recent_actions: _Optional[_Iterable[_Union[ActionRecord, _Mapping]]] = ..., version: _Optional[str] = ..., last_pass_seconds: _Optional[float] = ..., site: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ..., notes: _Optional[_Iterable[str]] = ...) -> None: ...

class PlanRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PlannedAction(_message.Message):
    __slots__ = ("kind", "set_id", "scope", "profile", "period", "slot", "reason", "members")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    set_id: str
    scope: str
    profile: str
    period: str
    slot: _timestamp_pb2.Timestamp
    reason: str
    members: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kind: _Optional[str] = ..., set_id: _Optional[str] = ..., scope: _Optional[str] = ..., profile: _Optional[str] = ..., period: _Optional[str] = ..., slot: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., members: _Optional[_Iterable[str]] = ...) -> None: ...

class KeepDecision(_message.Message):
    __slots__ = ("set_id", "scope", "rule", "reason")
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    set_id: str
    scope: str
    rule: str
    reason: str
    def __init__(self, set_id: _Optional[str] = ..., scope: _Optional[str] = ..., rule: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PlannedSync(_message.Message):
    __slots__ = ("kind", "target", "set_id", "scope", "reason", "until", "priority", "add_holds", "remove_holds")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ADD_HOLDS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_HOLDS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    target: str
    set_id: str
    scope: str
    reason: str
    until: _timestamp_pb2.Timestamp
    priority: int
    add_holds: _containers.RepeatedScalarFieldContainer[str]
    remove_holds: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kind: _Optional[str] = ..., target: _Optional[str] = ..., set_id: _Optional[str] = ..., scope: _Optional[str] = ..., reason: _Optional[str] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., priority: _Optional[int] = ..., add_holds: _Optional[_Iterable[str]] = ..., remove_holds: _Optional[_Iterable[str]] = ...) -> None: ...

class PlanResponse(_message.Message):
    __slots__ = ("now", "actions", "kept", "next_wakeup", "warnings", "sync", "remote_kept", "notes")
    NOW_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    NEXT_WAKEUP_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    REMOTE_KEPT_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    now: _timestamp_pb2.Timestamp
    actions: _containers.RepeatedCompositeFieldContainer[PlannedAction]
    kept: _containers.RepeatedCompositeFieldContainer[KeepDecision]
    next_wakeup: _timestamp_pb2.Timestamp
    warnings: _containers.RepeatedScalarFieldContainer[str]
    sync: _containers.RepeatedCompositeFieldContainer[PlannedSync]
    remote_kept: _containers.RepeatedCompositeFieldContainer[KeepDecision]
    notes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, now: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actions: _Optional[_Iterable[_Union[PlannedAction, _Mapping]]] = ..., kept: _Optional[_Iterable[_Union[KeepDecision, _Mapping]]] = ..., next_wakeup: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., warnings: _Optional[_Iterable[str]] = ..., sync: _Optional[_Iterable[_Union[PlannedSync, _Mapping]]] = ..., remote_kept: _Optional[_Iterable[_Union[KeepDecision, _Mapping]]] = ..., notes: _Optional[_Iterable[str]] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("ok", "errors", "config_path")
    OK_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_PATH_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    errors: _containers.RepeatedScalarFieldContainer[str]
    config_path: str
    def __init__(self, ok: _Optional[bool] = ..., errors: _Optional[_Iterable[str]] = ..., config_path: _Optional[str] = ...) -> None: ...

class SetMember(_message.Message):
    __slots__ = ("node", "pool", "volume", "resource", "logical_bytes", "unique_bytes")
    NODE_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    LOGICAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_BYTES_FIELD_NUMBER: _ClassVar[int]
    node: str
    pool: str
    volume: str
    resource: str
    logical_bytes: int
    unique_bytes: int
    def __init__(self, node: _Optional[str] = ..., pool: _Optional[str] = ..., volume: _Optional[str] = ..., resource: _Optional[str] = ..., logical_bytes: _Optional[int] = ..., unique_bytes: _Optional[int] = ...) -> None: ...

class SnapshotSet(_message.Message):
    __slots__ = ("set_id", "name", "scope", "kind", "profile", "period", "slot", "created", "expires", "description", "complete", "quiesced", "private", "immutable", "holds", "members", "expected_members", "unlock_at", "exposed_to", "logical_bytes", "unique_bytes", "received_as", "origin_nodes", "origin_site")
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    QUIESCED_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_FIELD_NUMBER: _ClassVar[int]
    IMMUTABLE_FIELD_NUMBER: _ClassVar[int]
    HOLDS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    UNLOCK_AT_FIELD_NUMBER: _ClassVar[int]
    EXPOSED_TO_FIELD_NUMBER: _ClassVar[int]
    LOGICAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_BYTES_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AS_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_NODES_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_SITE_FIELD_NUMBER: _ClassVar[int]
    set_id: str
    name: str
    scope: str
    kind: str
    profile: str
    period: str
    slot: _timestamp_pb2.Timestamp
    created: _timestamp_pb2.Timestamp
    expires: _timestamp_pb2.Timestamp
    description: str
    complete: bool
    quiesced: bool
    private: bool
    immutable: str
    holds: _containers.RepeatedScalarFieldContainer[str]
    members: _containers.RepeatedCompositeFieldContainer[SetMember]
    expected_members: int
    unlock_at: _timestamp_pb2.Timestamp
    exposed_to: _containers.RepeatedScalarFieldContainer[str]
    logical_bytes: int
    unique_bytes: int
    received_as: str
    origin_nodes: _containers.RepeatedScalarFieldContainer[str]
    origin_site: str
    def __init__(self, set_id: _Optional[str] = ..., name: _Optional[str] = ..., scope: _Optional[str] = ..., kind: _Optional[str] = ..., profile: _Optional[str] = ..., period: _Optional[str] = ..., slot: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., description: _Optional[str] = ..., complete: _Optional[bool] = ..., quiesced: _Optional[bool] = ..., private: _Optional[bool] = ..., immutable: _Optional[str] = ..., holds: _Optional[_Iterable[str]] = ..., members: _Optional[_Iterable[_Union[SetMember, _Mapping]]] = ..., expected_members: _Optional[int] = ..., unlock_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., exposed_to: _Optional[_Iterable[str]] = ..., logical_bytes: _Optional[int] = ..., unique_bytes: _Optional[int] = ..., received_as: _Optional[str] = ..., origin_nodes: _Optional[_Iterable[str]] = ..., origin_site: _Optional[str] = ...) -> None: ...

class ListSnapshotSetsRequest(_message.Message):
    __slots__ = ("scope", "with_usage")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    WITH_USAGE_FIELD_NUMBER: _ClassVar[int]
    scope: str
    with_usage: bool
    def __init__(self, scope: _Optional[str] = ..., with_usage: _Optional[bool] = ...) -> None: ...

class ListSnapshotSetsResponse(_message.Message):
    __slots__ = ("sets",)
    SETS_FIELD_NUMBER: _ClassVar[int]
    sets: _containers.RepeatedCompositeFieldContainer[SnapshotSet]
    def __init__(self, sets: _Optional[_Iterable[_Union[SnapshotSet, _Mapping]]] = ...) -> None: ...

class CreateManualSetRequest(_message.Message):
    __slots__ = ("scope", "name", "description", "expires", "never_expire", "immutable", "quiesce", "request_id", "private")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    NEVER_EXPIRE_FIELD_NUMBER: _ClassVar[int]
    IMMUTABLE_FIELD_NUMBER: _ClassVar[int]
    QUIESCE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_FIELD_NUMBER: _ClassVar[int]
    scope: str
    name: str
    description: str
    expires: _timestamp_pb2.Timestamp
    never_expire: bool
    immutable: bool
    quiesce: bool
    request_id: str
    private: bool
    def __init__(self, scope: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., expires: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., never_expire: _Optional[bool] = ..., immutable: _Optional[bool] = ..., quiesce: _Optional[bool] = ..., request_id: _Optional[str] = ..., private: _Optional[bool] = ...) -> None: ...

class CreateManualSetResponse(_message.Message):
    __slots__ = ("set",)
    SET_FIELD_NUMBER: _ClassVar[int]
    set: SnapshotSet
    def __init__(self, set: _Optional[_Union[SnapshotSet, _Mapping]] = ...) -> None: ...

class DeleteSnapshotSetRequest(_message.Message):
    __slots__ = ("set_id",)
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    set_id: str
    def __init__(self, set_id: _Optional[str] = ...) -> None: ...

class DeleteSnapshotSetResponse(_message.Message):
    __slots__ = ("deleted", "errors")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    errors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, deleted: _Optional[bool] = ..., errors: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateSnapshotSetRequest(_message.Message):
    __slots__ = ("set_id", "action", "unlock_wait_s", "expires", "never_expire", "tenant")
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    UNLOCK_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    NEVER_EXPIRE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    set_id: str
    action: str
    unlock_wait_s: int
    expires: _timestamp_pb2.Timestamp
    never_expire: bool
    tenant: str
    def __init__(self, set_id: _Optional[str] = ..., action: _Optional[str] = ..., unlock_wait_s: _Optional[int] = ..., expires: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., never_expire: _Optional[bool] = ..., tenant: _Optional[str] = ...) -> None: ...

class SetRestoreRequest(_message.Message):
    __slots__ = ("set_id", "level", "name", "mode", "new_name", "confirm", "skip_safety_snapshot", "with_settings", "paths", "volume", "dry_run", "cancel_window", "pool")
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    NEW_NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIRM_FIELD_NUMBER: _ClassVar[int]
    SKIP_SAFETY_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    WITH_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    CANCEL_WINDOW_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    set_id: str
    level: str
    name: str
    mode: str
    new_name: str
    confirm: bool
    skip_safety_snapshot: bool
    with_settings: bool
    paths: _containers.RepeatedScalarFieldContainer[str]
    volume: str
    dry_run: bool
    cancel_window: int
    pool: str
    def __init__(self, set_id: _Optional[str] = ..., level: _Optional[str] = ..., name: _Optional[str] = ..., mode: _Optional[str] = ..., new_name: _Optional[str] = ..., confirm: _Optional[bool] = ..., skip_safety_snapshot: _Optional[bool] = ..., with_settings: _Optional[bool] = ..., paths: _Optional[_Iterable[str]] = ..., volume: _Optional[str] = ..., dry_run: _Optional[bool] = ..., cancel_window: _Optional[int] = ..., pool: _Optional[str] = ...) -> None: ...

class RestoreStep(_message.Message):
    __slots__ = ("node", "pool", "volume", "target", "what", "target_pool")
    NODE_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    WHAT_FIELD_NUMBER: _ClassVar[int]
    TARGET_POOL_FIELD_NUMBER: _ClassVar[int]
    node: str
    pool: str
    volume: str
    target: str
    what: str
    target_pool: str
    def __init__(self, node: _Optional[str] = ..., pool: _Optional[str] = ..., volume: _Optional[str] = ..., target: _Optional[str] = ..., what: _Optional[str] = ..., target_pool: _Optional[str] = ...) -> None: ...

class RestorePlan(_message.Message):
    __slots__ = ("summary", "steps", "safety_snapshot", "warnings")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SAFETY_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    summary: str
    steps: _containers.RepeatedCompositeFieldContainer[RestoreStep]
    safety_snapshot: bool
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, summary: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[RestoreStep, _Mapping]]] = ..., safety_snapshot: _Optional[bool] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class RestoreResult(_message.Message):
    __slots__ = ("ok", "message", "safety_set_id", "volumes", "settings_file", "errors")
    OK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SAFETY_SET_ID_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FILE_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    message: str
    safety_set_id: str
    volumes: _containers.RepeatedScalarFieldContainer[str]
    settings_file: str
    errors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ok: _Optional[bool] = ..., message: _Optional[str] = ..., safety_set_id: _Optional[str] = ..., volumes: _Optional[_Iterable[str]] = ..., settings_file: _Optional[str] = ..., errors: _Optional[_Iterable[str]] = ...) -> None: ...

class RestoreEvent(_message.Message):
    __slots__ = ("plan", "progress", "result")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    plan: RestorePlan
    progress: RestoreProgress
    result: RestoreResult
    def __init__(self, plan: _Optional[_Union[RestorePlan, _Mapping]] = ..., progress: _Optional[_Union[RestoreProgress, _Mapping]] = ..., result: _Optional[_Union[RestoreResult, _Mapping]] = ...) -> None: ...

class RestoreProgress(_message.Message):
    __slots__ = ("phase", "done", "total", "unit", "message", "volume")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    phase: str
    done: int
    total: int
    unit: str
    message: str
    volume: str
    def __init__(self, phase: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., unit: _Optional[str] = ..., message: _Optional[str] = ..., volume: _Optional[str] = ...) -> None: ...

class ListSetFilesRequest(_message.Message):
    __slots__ = ("set_id", "resource", "volume", "prefix", "limit")
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    set_id: str
    resource: str
    volume: str
    prefix: str
    limit: int
    def __init__(self, set_id: _Optional[str] = ..., resource: _Optional[str] = ..., volume: _Optional[str] = ..., prefix: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class SetFile(_message.Message):
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

class ListSetFilesResponse(_message.Message):
    __slots__ = ("node", "pool", "volume", "files", "truncated")
    NODE_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    node: str
    pool: str
    volume: str
    files: _containers.RepeatedCompositeFieldContainer[SetFile]
    truncated: bool
    def __init__(self, node: _Optional[str] = ..., pool: _Optional[str] = ..., volume: _Optional[str] = ..., files: _Optional[_Iterable[_Union[SetFile, _Mapping]]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class MaintenanceRequest(_message.Message):
    __slots__ = ("node", "pool", "set_id")
    NODE_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    node: str
    pool: str
    set_id: str
    def __init__(self, node: _Optional[str] = ..., pool: _Optional[str] = ..., set_id: _Optional[str] = ...) -> None: ...

class PoolMaintenance(_message.Message):
    __slots__ = ("node", "pool", "ok", "message", "problems", "bytes")
    NODE_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    node: str
    pool: str
    ok: bool
    message: str
    problems: _containers.RepeatedScalarFieldContainer[str]
    bytes: int
    def __init__(self, node: _Optional[str] = ..., pool: _Optional[str] = ..., ok: _Optional[bool] = ..., message: _Optional[str] = ..., problems: _Optional[_Iterable[str]] = ..., bytes: _Optional[int] = ...) -> None: ...

class MaintenanceResponse(_message.Message):
    __slots__ = ("pools",)
    POOLS_FIELD_NUMBER: _ClassVar[int]
    pools: _containers.RepeatedCompositeFieldContainer[PoolMaintenance]
    def __init__(self, pools: _Optional[_Iterable[_Union[PoolMaintenance, _Mapping]]] = ...) -> None: ...
