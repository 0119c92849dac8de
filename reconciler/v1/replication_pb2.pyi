import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from reconciler.v1 import agent_pb2 as _agent_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReplicationPeer(_message.Message):
    __slots__ = ("address", "server_name", "node", "insecure", "pool")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SERVER_NAME_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    INSECURE_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    address: str
    server_name: str
    node: str
    insecure: bool
    pool: str
    def __init__(self, address: _Optional[str] = ..., server_name: _Optional[str] = ..., node: _Optional[str] = ..., insecure: _Optional[bool] = ..., pool: _Optional[str] = ...) -> None: ...

class ReplicateRequest(_message.Message):
    __slots__ = ("set_id", "target", "refs", "expires", "never_expire", "name_prefix", "holds", "throttle_bps", "compression", "streams", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REFS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    NEVER_EXPIRE_FIELD_NUMBER: _ClassVar[int]
    NAME_PREFIX_FIELD_NUMBER: _ClassVar[int]
    HOLDS_FIELD_NUMBER: _ClassVar[int]
    THROTTLE_BPS_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    set_id: str
    target: ReplicationPeer
    refs: _containers.RepeatedCompositeFieldContainer[_agent_pb2.SnapshotRef]
    expires: _timestamp_pb2.Timestamp
    never_expire: bool
    name_prefix: str
    holds: _containers.RepeatedScalarFieldContainer[str]
    throttle_bps: int
    compression: bool
    streams: int
    labels: _containers.ScalarMap[str, str]
    def __init__(self, set_id: _Optional[str] = ..., target: _Optional[_Union[ReplicationPeer, _Mapping]] = ..., refs: _Optional[_Iterable[_Union[_agent_pb2.SnapshotRef, _Mapping]]] = ..., expires: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., never_expire: _Optional[bool] = ..., name_prefix: _Optional[str] = ..., holds: _Optional[_Iterable[str]] = ..., throttle_bps: _Optional[int] = ..., compression: _Optional[bool] = ..., streams: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class TransferProgress(_message.Message):
    __slots__ = ("phase", "volume", "checked_bytes", "scanned_bytes", "sent_bytes", "wire_bytes", "total_bytes", "rate_bps", "eta_seconds", "volumes_done", "volumes_total", "parent_set_id", "chunks_resent")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    CHECKED_BYTES_FIELD_NUMBER: _ClassVar[int]
    SCANNED_BYTES_FIELD_NUMBER: _ClassVar[int]
    SENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    WIRE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    RATE_BPS_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_DONE_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    PARENT_SET_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_RESENT_FIELD_NUMBER: _ClassVar[int]
    phase: str
    volume: str
    checked_bytes: int
    scanned_bytes: int
    sent_bytes: int
    wire_bytes: int
    total_bytes: int
    rate_bps: float
    eta_seconds: float
    volumes_done: int
    volumes_total: int
    parent_set_id: str
    chunks_resent: int
    def __init__(self, phase: _Optional[str] = ..., volume: _Optional[str] = ..., checked_bytes: _Optional[int] = ..., scanned_bytes: _Optional[int] = ..., sent_bytes: _Optional[int] = ..., wire_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ..., rate_bps: _Optional[float] = ..., eta_seconds: _Optional[float] = ..., volumes_done: _Optional[int] = ..., volumes_total: _Optional[int] = ..., parent_set_id: _Optional[str] = ..., chunks_resent: _Optional[int] = ...) -> None: ...

class VolumeReport(_message.Message):
    __slots__ = ("volume", "parent_set_id", "wire_bytes", "sent_bytes", "already_present")
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    PARENT_SET_ID_FIELD_NUMBER: _ClassVar[int]
    WIRE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    volume: str
    parent_set_id: str
    wire_bytes: int
    sent_bytes: int
    already_present: bool
    def __init__(self, volume: _Optional[str] = ..., parent_set_id: _Optional[str] = ..., wire_bytes: _Optional[int] = ..., sent_bytes: _Optional[int] = ..., already_present: _Optional[bool] = ...) -> None: ...

class ReplicateResult(_message.Message):
    __slots__ = ("snapshots", "target_node", "target_pool", "totals", "volumes", "seconds", "streams")
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    TARGET_NODE_FIELD_NUMBER: _ClassVar[int]
    TARGET_POOL_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    snapshots: _containers.RepeatedCompositeFieldContainer[_agent_pb2.Snapshot]
    target_node: str
    target_pool: str
    totals: TransferProgress
    volumes: _containers.RepeatedCompositeFieldContainer[VolumeReport]
    seconds: float
    streams: int
    def __init__(self, snapshots: _Optional[_Iterable[_Union[_agent_pb2.Snapshot, _Mapping]]] = ..., target_node: _Optional[str] = ..., target_pool: _Optional[str] = ..., totals: _Optional[_Union[TransferProgress, _Mapping]] = ..., volumes: _Optional[_Iterable[_Union[VolumeReport, _Mapping]]] = ..., seconds: _Optional[float] = ..., streams: _Optional[int] = ...) -> None: ...

class ReplicateEvent(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: TransferProgress
    result: ReplicateResult
    def __init__(self, progress: _Optional[_Union[TransferProgress, _Mapping]] = ..., result: _Optional[_Union[ReplicateResult, _Mapping]] = ...) -> None: ...

class ReceiveBegin(_message.Message):
    __slots__ = ("protocol", "set_id", "source_node", "source_pool", "backend", "members", "expires", "never_expire", "name_prefix", "holds", "labels", "pool", "expect_node", "group", "group_size")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NODE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_POOL_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    NEVER_EXPIRE_FIELD_NUMBER: _ClassVar[int]
    NAME_PREFIX_FIELD_NUMBER: _ClassVar[int]
    HOLDS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    EXPECT_NODE_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    protocol: int
    set_id: str
    source_node: str
    source_pool: str
    backend: str
    members: _containers.RepeatedCompositeFieldContainer[_agent_pb2.Snapshot]
    expires: _timestamp_pb2.Timestamp
    never_expire: bool
    name_prefix: str
    holds: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.ScalarMap[str, str]
    pool: str
    expect_node: str
    group: str
    group_size: int
    def __init__(self, protocol: _Optional[int] = ..., set_id: _Optional[str] = ..., source_node: _Optional[str] = ..., source_pool: _Optional[str] = ..., backend: _Optional[str] = ..., members: _Optional[_Iterable[_Union[_agent_pb2.Snapshot, _Mapping]]] = ..., expires: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., never_expire: _Optional[bool] = ..., name_prefix: _Optional[str] = ..., holds: _Optional[_Iterable[str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., pool: _Optional[str] = ..., expect_node: _Optional[str] = ..., group: _Optional[str] = ..., group_size: _Optional[int] = ...) -> None: ...

class VolumeBegin(_message.Message):
    __slots__ = ("volume", "parent_set_id", "manifest_size", "manifest_dict", "source_uuid", "compressed", "logical_bytes")
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    PARENT_SET_ID_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_SIZE_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_DICT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_UUID_FIELD_NUMBER: _ClassVar[int]
    COMPRESSED_FIELD_NUMBER: _ClassVar[int]
    LOGICAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    volume: str
    parent_set_id: str
    manifest_size: int
    manifest_dict: bool
    source_uuid: bytes
    compressed: bool
    logical_bytes: int
    def __init__(self, volume: _Optional[str] = ..., parent_set_id: _Optional[str] = ..., manifest_size: _Optional[int] = ..., manifest_dict: _Optional[bool] = ..., source_uuid: _Optional[bytes] = ..., compressed: _Optional[bool] = ..., logical_bytes: _Optional[int] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("digest", "payload", "raw_len", "flags", "base", "page_map")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    RAW_LEN_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    PAGE_MAP_FIELD_NUMBER: _ClassVar[int]
    digest: bytes
    payload: bytes
    raw_len: int
    flags: int
    base: bytes
    page_map: bytes
    def __init__(self, digest: _Optional[bytes] = ..., payload: _Optional[bytes] = ..., raw_len: _Optional[int] = ..., flags: _Optional[int] = ..., base: _Optional[bytes] = ..., page_map: _Optional[bytes] = ...) -> None: ...

class ChunkBatch(_message.Message):
    __slots__ = ("chunks",)
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    chunks: _containers.RepeatedCompositeFieldContainer[Chunk]
    def __init__(self, chunks: _Optional[_Iterable[_Union[Chunk, _Mapping]]] = ...) -> None: ...

class SparseData(_message.Message):
    __slots__ = ("data", "runs")
    DATA_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    runs: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, data: _Optional[bytes] = ..., runs: _Optional[_Iterable[int]] = ...) -> None: ...

class VolumeEnd(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReceiveCommit(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReceiveRequest(_message.Message):
    __slots__ = ("begin", "volume", "manifest", "chunks", "data", "volume_end", "commit", "sparse")
    BEGIN_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    VOLUME_END_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    begin: ReceiveBegin
    volume: VolumeBegin
    manifest: bytes
    chunks: ChunkBatch
    data: bytes
    volume_end: VolumeEnd
    commit: ReceiveCommit
    sparse: SparseData
    def __init__(self, begin: _Optional[_Union[ReceiveBegin, _Mapping]] = ..., volume: _Optional[_Union[VolumeBegin, _Mapping]] = ..., manifest: _Optional[bytes] = ..., chunks: _Optional[_Union[ChunkBatch, _Mapping]] = ..., data: _Optional[bytes] = ..., volume_end: _Optional[_Union[VolumeEnd, _Mapping]] = ..., commit: _Optional[_Union[ReceiveCommit, _Mapping]] = ..., sparse: _Optional[_Union[SparseData, _Mapping]] = ...) -> None: ...

class Holding(_message.Message):
    __slots__ = ("set_id", "volume", "created", "identity")
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    set_id: str
    volume: str
    created: _timestamp_pb2.Timestamp
    identity: bytes
    def __init__(self, set_id: _Optional[str] = ..., volume: _Optional[str] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., identity: _Optional[bytes] = ...) -> None: ...

class ReceiveReady(_message.Message):
    __slots__ = ("node", "pool", "backend", "holdings", "present", "btrfs_stream")
    NODE_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    HOLDINGS_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    BTRFS_STREAM_FIELD_NUMBER: _ClassVar[int]
    node: str
    pool: str
    backend: str
    holdings: _containers.RepeatedCompositeFieldContainer[Holding]
    present: _containers.RepeatedScalarFieldContainer[str]
    btrfs_stream: int
    def __init__(self, node: _Optional[str] = ..., pool: _Optional[str] = ..., backend: _Optional[str] = ..., holdings: _Optional[_Iterable[_Union[Holding, _Mapping]]] = ..., present: _Optional[_Iterable[str]] = ..., btrfs_stream: _Optional[int] = ...) -> None: ...

class NeedChunks(_message.Message):
    __slots__ = ("digests", "last")
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    digests: bytes
    last: bool
    def __init__(self, digests: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...

class ChunkRejected(_message.Message):
    __slots__ = ("digest", "reason")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    digest: bytes
    reason: str
    def __init__(self, digest: _Optional[bytes] = ..., reason: _Optional[str] = ...) -> None: ...

class VolumeReceived(_message.Message):
    __slots__ = ("volume", "bytes")
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    volume: str
    bytes: int
    def __init__(self, volume: _Optional[str] = ..., bytes: _Optional[int] = ...) -> None: ...

class ReceiveCommitted(_message.Message):
    __slots__ = ("snapshots",)
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    snapshots: _containers.RepeatedCompositeFieldContainer[_agent_pb2.Snapshot]
    def __init__(self, snapshots: _Optional[_Iterable[_Union[_agent_pb2.Snapshot, _Mapping]]] = ...) -> None: ...

class ReceiveResponse(_message.Message):
    __slots__ = ("ready", "need", "rejected", "volume_done", "committed")
    READY_FIELD_NUMBER: _ClassVar[int]
    NEED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    VOLUME_DONE_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    ready: ReceiveReady
    need: NeedChunks
    rejected: ChunkRejected
    volume_done: VolumeReceived
    committed: ReceiveCommitted
    def __init__(self, ready: _Optional[_Union[ReceiveReady, _Mapping]] = ..., need: _Optional[_Union[NeedChunks, _Mapping]] = ..., rejected: _Optional[_Union[ChunkRejected, _Mapping]] = ..., volume_done: _Optional[_Union[VolumeReceived, _Mapping]] = ..., committed: _Optional[_Union[ReceiveCommitted, _Mapping]] = ...) -> None: ...
