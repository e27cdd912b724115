from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]
    DTYPE_FLOAT16: _ClassVar[DType]
    DTYPE_BFLOAT16: _ClassVar[DType]
    DTYPE_FLOAT64: _ClassVar[DType]
    DTYPE_INT8: _ClassVar[DType]
    DTYPE_UINT8: _ClassVar[DType]
    DTYPE_INT16: _ClassVar[DType]
    DTYPE_INT32: _ClassVar[DType]
    DTYPE_INT64: _ClassVar[DType]
    DTYPE_BOOL: _ClassVar[DType]
    DTYPE_FLOAT8_E4M3FN: _ClassVar[DType]
    DTYPE_FLOAT8_E5M2: _ClassVar[DType]
    DTYPE_FLOAT8_E8M0FNU: _ClassVar[DType]
    DTYPE_FLOAT4_E2M1FN_X2: _ClassVar[DType]
    DTYPE_UINT16: _ClassVar[DType]
    DTYPE_UINT32: _ClassVar[DType]
    DTYPE_UINT64: _ClassVar[DType]
    DTYPE_COMPLEX64: _ClassVar[DType]

class MemoryKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEMORY_KIND_UNSPECIFIED: _ClassVar[MemoryKind]
    MEMORY_KIND_DRAM: _ClassVar[MemoryKind]
    MEMORY_KIND_VRAM: _ClassVar[MemoryKind]

class WorkerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_STATE_UNSPECIFIED: _ClassVar[WorkerState]
    WORKER_STATE_INITIALIZING: _ClassVar[WorkerState]
    WORKER_STATE_READY: _ClassVar[WorkerState]
    WORKER_STATE_DRAINING: _ClassVar[WorkerState]

class ChecksumAlgorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECKSUM_ALGORITHM_UNSPECIFIED: _ClassVar[ChecksumAlgorithm]
    CHECKSUM_ALGORITHM_XXH3_64: _ClassVar[ChecksumAlgorithm]
    CHECKSUM_ALGORITHM_CRC32C: _ClassVar[ChecksumAlgorithm]
    CHECKSUM_ALGORITHM_SHA256_64: _ClassVar[ChecksumAlgorithm]
    CHECKSUM_ALGORITHM_ROW_SUM_64: _ClassVar[ChecksumAlgorithm]
DTYPE_UNSPECIFIED: DType
DTYPE_FLOAT32: DType
DTYPE_FLOAT16: DType
DTYPE_BFLOAT16: DType
DTYPE_FLOAT64: DType
DTYPE_INT8: DType
DTYPE_UINT8: DType
DTYPE_INT16: DType
DTYPE_INT32: DType
DTYPE_INT64: DType
DTYPE_BOOL: DType
DTYPE_FLOAT8_E4M3FN: DType
DTYPE_FLOAT8_E5M2: DType
DTYPE_FLOAT8_E8M0FNU: DType
DTYPE_FLOAT4_E2M1FN_X2: DType
DTYPE_UINT16: DType
DTYPE_UINT32: DType
DTYPE_UINT64: DType
DTYPE_COMPLEX64: DType
MEMORY_KIND_UNSPECIFIED: MemoryKind
MEMORY_KIND_DRAM: MemoryKind
MEMORY_KIND_VRAM: MemoryKind
WORKER_STATE_UNSPECIFIED: WorkerState
WORKER_STATE_INITIALIZING: WorkerState
WORKER_STATE_READY: WorkerState
WORKER_STATE_DRAINING: WorkerState
CHECKSUM_ALGORITHM_UNSPECIFIED: ChecksumAlgorithm
CHECKSUM_ALGORITHM_XXH3_64: ChecksumAlgorithm
CHECKSUM_ALGORITHM_CRC32C: ChecksumAlgorithm
CHECKSUM_ALGORITHM_SHA256_64: ChecksumAlgorithm
CHECKSUM_ALGORITHM_ROW_SUM_64: ChecksumAlgorithm

class WorkerIdentity(_message.Message):
    __slots__ = ("model_name", "revision", "engine", "engine_version", "dtype", "quantization", "tensor_parallel_size", "pipeline_parallel_size", "expert_parallel_size", "gpu_architecture", "rank", "weights_version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    TENSOR_PARALLEL_SIZE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_PARALLEL_SIZE_FIELD_NUMBER: _ClassVar[int]
    EXPERT_PARALLEL_SIZE_FIELD_NUMBER: _ClassVar[int]
    GPU_ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    revision: str
    engine: str
    engine_version: str
    dtype: str
    quantization: str
    tensor_parallel_size: int
    pipeline_parallel_size: int
    expert_parallel_size: int
    gpu_architecture: str
    rank: int
    weights_version: str
    def __init__(self, model_name: _Optional[str] = ..., revision: _Optional[str] = ..., engine: _Optional[str] = ..., engine_version: _Optional[str] = ..., dtype: _Optional[str] = ..., quantization: _Optional[str] = ..., tensor_parallel_size: _Optional[int] = ..., pipeline_parallel_size: _Optional[int] = ..., expert_parallel_size: _Optional[int] = ..., gpu_architecture: _Optional[str] = ..., rank: _Optional[int] = ..., weights_version: _Optional[str] = ...) -> None: ...

class MemoryRegion(_message.Message):
    __slots__ = ("id", "kind", "device_id", "address", "length")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    id: int
    kind: MemoryKind
    device_id: int
    address: int
    length: int
    def __init__(self, id: _Optional[int] = ..., kind: _Optional[_Union[MemoryKind, str]] = ..., device_id: _Optional[int] = ..., address: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class ManifestHeader(_message.Message):
    __slots__ = ("identity", "tensor_count", "total_bytes", "checksum_algorithm", "regions", "manifest_version")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    TENSOR_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    identity: WorkerIdentity
    tensor_count: int
    total_bytes: int
    checksum_algorithm: ChecksumAlgorithm
    regions: _containers.RepeatedCompositeFieldContainer[MemoryRegion]
    manifest_version: str
    def __init__(self, identity: _Optional[_Union[WorkerIdentity, _Mapping]] = ..., tensor_count: _Optional[int] = ..., total_bytes: _Optional[int] = ..., checksum_algorithm: _Optional[_Union[ChecksumAlgorithm, str]] = ..., regions: _Optional[_Iterable[_Union[MemoryRegion, _Mapping]]] = ..., manifest_version: _Optional[str] = ...) -> None: ...

class TensorPage(_message.Message):
    __slots__ = ("first_index", "name_suffixes", "shared_prefix_lengths", "dtypes", "ranks", "dims", "nbytes", "region_ids", "offsets", "checksums", "non_parameters")
    FIRST_INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_SUFFIXES_FIELD_NUMBER: _ClassVar[int]
    SHARED_PREFIX_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    DTYPES_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    DIMS_FIELD_NUMBER: _ClassVar[int]
    NBYTES_FIELD_NUMBER: _ClassVar[int]
    REGION_IDS_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    CHECKSUMS_FIELD_NUMBER: _ClassVar[int]
    NON_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    first_index: int
    name_suffixes: _containers.RepeatedScalarFieldContainer[str]
    shared_prefix_lengths: _containers.RepeatedScalarFieldContainer[int]
    dtypes: _containers.RepeatedScalarFieldContainer[DType]
    ranks: _containers.RepeatedScalarFieldContainer[int]
    dims: _containers.RepeatedScalarFieldContainer[int]
    nbytes: _containers.RepeatedScalarFieldContainer[int]
    region_ids: _containers.RepeatedScalarFieldContainer[int]
    offsets: _containers.RepeatedScalarFieldContainer[int]
    checksums: _containers.RepeatedScalarFieldContainer[int]
    non_parameters: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, first_index: _Optional[int] = ..., name_suffixes: _Optional[_Iterable[str]] = ..., shared_prefix_lengths: _Optional[_Iterable[int]] = ..., dtypes: _Optional[_Iterable[_Union[DType, str]]] = ..., ranks: _Optional[_Iterable[int]] = ..., dims: _Optional[_Iterable[int]] = ..., nbytes: _Optional[_Iterable[int]] = ..., region_ids: _Optional[_Iterable[int]] = ..., offsets: _Optional[_Iterable[int]] = ..., checksums: _Optional[_Iterable[int]] = ..., non_parameters: _Optional[_Iterable[int]] = ...) -> None: ...

class GetManifestRequest(_message.Message):
    __slots__ = ("page_size",)
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    def __init__(self, page_size: _Optional[int] = ...) -> None: ...

class ManifestChunk(_message.Message):
    __slots__ = ("header", "page")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    header: ManifestHeader
    page: TensorPage
    def __init__(self, header: _Optional[_Union[ManifestHeader, _Mapping]] = ..., page: _Optional[_Union[TensorPage, _Mapping]] = ...) -> None: ...

class GetAgentMetadataRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentMetadata(_message.Message):
    __slots__ = ("agent_name", "metadata", "backend", "regions")
    AGENT_NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    agent_name: str
    metadata: bytes
    backend: str
    regions: _containers.RepeatedCompositeFieldContainer[MemoryRegion]
    def __init__(self, agent_name: _Optional[str] = ..., metadata: _Optional[bytes] = ..., backend: _Optional[str] = ..., regions: _Optional[_Iterable[_Union[MemoryRegion, _Mapping]]] = ...) -> None: ...

class WatchStatusRequest(_message.Message):
    __slots__ = ("heartbeat_ms", "puller")
    HEARTBEAT_MS_FIELD_NUMBER: _ClassVar[int]
    PULLER_FIELD_NUMBER: _ClassVar[int]
    heartbeat_ms: int
    puller: bool
    def __init__(self, heartbeat_ms: _Optional[int] = ..., puller: _Optional[bool] = ...) -> None: ...

class WorkerStatus(_message.Message):
    __slots__ = ("state", "identity", "agent_name", "tensor_count", "total_bytes", "message", "updated_unix_ms", "pod_name", "pod_uid", "node_name", "instance", "endpoint", "active_transfers", "pod_namespace")
    STATE_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    AGENT_NAME_FIELD_NUMBER: _ClassVar[int]
    TENSOR_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    POD_NAME_FIELD_NUMBER: _ClassVar[int]
    POD_UID_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_TRANSFERS_FIELD_NUMBER: _ClassVar[int]
    POD_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    state: WorkerState
    identity: WorkerIdentity
    agent_name: str
    tensor_count: int
    total_bytes: int
    message: str
    updated_unix_ms: int
    pod_name: str
    pod_uid: str
    node_name: str
    instance: str
    endpoint: str
    active_transfers: int
    pod_namespace: str
    def __init__(self, state: _Optional[_Union[WorkerState, str]] = ..., identity: _Optional[_Union[WorkerIdentity, _Mapping]] = ..., agent_name: _Optional[str] = ..., tensor_count: _Optional[int] = ..., total_bytes: _Optional[int] = ..., message: _Optional[str] = ..., updated_unix_ms: _Optional[int] = ..., pod_name: _Optional[str] = ..., pod_uid: _Optional[str] = ..., node_name: _Optional[str] = ..., instance: _Optional[str] = ..., endpoint: _Optional[str] = ..., active_transfers: _Optional[int] = ..., pod_namespace: _Optional[str] = ...) -> None: ...

class GetArtifactsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ArtifactFile(_message.Message):
    __slots__ = ("root", "path", "size", "sha256")
    ROOT_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    root: str
    path: str
    size: int
    sha256: str
    def __init__(self, root: _Optional[str] = ..., path: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class ArtifactManifest(_message.Message):
    __slots__ = ("key", "files")
    class KeyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    key: _containers.ScalarMap[str, str]
    files: _containers.RepeatedCompositeFieldContainer[ArtifactFile]
    def __init__(self, key: _Optional[_Mapping[str, str]] = ..., files: _Optional[_Iterable[_Union[ArtifactFile, _Mapping]]] = ...) -> None: ...

class ReadArtifactRequest(_message.Message):
    __slots__ = ("root", "path", "offset", "length")
    ROOT_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    root: str
    path: str
    offset: int
    length: int
    def __init__(self, root: _Optional[str] = ..., path: _Optional[str] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class ArtifactChunk(_message.Message):
    __slots__ = ("offset", "data")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...
