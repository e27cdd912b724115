from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_STATUS_UNSPECIFIED: _ClassVar[ModelStatus]
    MODEL_STATUS_QUEUED: _ClassVar[ModelStatus]
    MODEL_STATUS_DOWNLOADING: _ClassVar[ModelStatus]
    MODEL_STATUS_DOWNLOADED: _ClassVar[ModelStatus]
    MODEL_STATUS_ERROR: _ClassVar[ModelStatus]
MODEL_STATUS_UNSPECIFIED: ModelStatus
MODEL_STATUS_QUEUED: ModelStatus
MODEL_STATUS_DOWNLOADING: ModelStatus
MODEL_STATUS_DOWNLOADED: ModelStatus
MODEL_STATUS_ERROR: ModelStatus

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("version", "status", "uptime_seconds")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    version: str
    status: str
    uptime_seconds: int
    def __init__(self, version: _Optional[str] = ..., status: _Optional[str] = ..., uptime_seconds: _Optional[int] = ...) -> None: ...

class ApiRequest(_message.Message):
    __slots__ = ("id", "action", "payload")
    ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    id: str
    action: str
    payload: bytes
    def __init__(self, id: _Optional[str] = ..., action: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class ApiResponse(_message.Message):
    __slots__ = ("success", "data", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    data: bytes
    error: str
    def __init__(self, success: _Optional[bool] = ..., data: _Optional[bytes] = ..., error: _Optional[str] = ...) -> None: ...

class ModelDownloadRequest(_message.Message):
    __slots__ = ("model_name", "revision", "allow_patterns", "ignore_patterns")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PATTERNS_FIELD_NUMBER: _ClassVar[int]
    IGNORE_PATTERNS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    revision: str
    allow_patterns: _containers.RepeatedScalarFieldContainer[str]
    ignore_patterns: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_name: _Optional[str] = ..., revision: _Optional[str] = ..., allow_patterns: _Optional[_Iterable[str]] = ..., ignore_patterns: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelStatusUpdate(_message.Message):
    __slots__ = ("model_name", "status", "bytes_done", "bytes_total", "resolved_revision", "message", "reason", "files_done", "files_total")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_REVISION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FILES_DONE_FIELD_NUMBER: _ClassVar[int]
    FILES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    status: ModelStatus
    bytes_done: int
    bytes_total: int
    resolved_revision: str
    message: str
    reason: str
    files_done: int
    files_total: int
    def __init__(self, model_name: _Optional[str] = ..., status: _Optional[_Union[ModelStatus, str]] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., resolved_revision: _Optional[str] = ..., message: _Optional[str] = ..., reason: _Optional[str] = ..., files_done: _Optional[int] = ..., files_total: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CachedModel(_message.Message):
    __slots__ = ("model_name", "revision", "resolved_revision", "size_bytes", "files", "last_used_unix", "pinned")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_REVISION_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_UNIX_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    revision: str
    resolved_revision: str
    size_bytes: int
    files: int
    last_used_unix: int
    pinned: bool
    def __init__(self, model_name: _Optional[str] = ..., revision: _Optional[str] = ..., resolved_revision: _Optional[str] = ..., size_bytes: _Optional[int] = ..., files: _Optional[int] = ..., last_used_unix: _Optional[int] = ..., pinned: _Optional[bool] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[CachedModel]
    def __init__(self, models: _Optional[_Iterable[_Union[CachedModel, _Mapping]]] = ...) -> None: ...

class ModelFilesRequest(_message.Message):
    __slots__ = ("model_name", "revision", "chunk_size", "paths")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    revision: str
    chunk_size: int
    paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_name: _Optional[str] = ..., revision: _Optional[str] = ..., chunk_size: _Optional[int] = ..., paths: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelFile(_message.Message):
    __slots__ = ("path", "size")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    path: str
    size: int
    def __init__(self, path: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class ModelFileList(_message.Message):
    __slots__ = ("files", "resolved_revision", "total_bytes", "cache_relative_path", "revision")
    FILES_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_REVISION_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    CACHE_RELATIVE_PATH_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedCompositeFieldContainer[ModelFile]
    resolved_revision: str
    total_bytes: int
    cache_relative_path: str
    revision: str
    def __init__(self, files: _Optional[_Iterable[_Union[ModelFile, _Mapping]]] = ..., resolved_revision: _Optional[str] = ..., total_bytes: _Optional[int] = ..., cache_relative_path: _Optional[str] = ..., revision: _Optional[str] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("path", "offset", "total_size", "data", "last_chunk", "last_file")
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_CHUNK_FIELD_NUMBER: _ClassVar[int]
    LAST_FILE_FIELD_NUMBER: _ClassVar[int]
    path: str
    offset: int
    total_size: int
    data: bytes
    last_chunk: bool
    last_file: bool
    def __init__(self, path: _Optional[str] = ..., offset: _Optional[int] = ..., total_size: _Optional[int] = ..., data: _Optional[bytes] = ..., last_chunk: _Optional[bool] = ..., last_file: _Optional[bool] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("model_name", "revision")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    revision: str
    def __init__(self, model_name: _Optional[str] = ..., revision: _Optional[str] = ...) -> None: ...

class DeleteModelResponse(_message.Message):
    __slots__ = ("deleted", "message")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    message: str
    def __init__(self, deleted: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...
