import datetime

from dsomarket.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NetworkChangeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NETWORK_CHANGE_KIND_UNSPECIFIED: _ClassVar[NetworkChangeKind]
    NETWORK_CHANGE_KIND_OUTAGE: _ClassVar[NetworkChangeKind]
    NETWORK_CHANGE_KIND_RETURN: _ClassVar[NetworkChangeKind]
    NETWORK_CHANGE_KIND_OPEN: _ClassVar[NetworkChangeKind]
    NETWORK_CHANGE_KIND_CLOSE: _ClassVar[NetworkChangeKind]
    NETWORK_CHANGE_KIND_RATING: _ClassVar[NetworkChangeKind]
    NETWORK_CHANGE_KIND_VOLTAGE: _ClassVar[NetworkChangeKind]
    NETWORK_CHANGE_KIND_INTERFACE: _ClassVar[NetworkChangeKind]
NETWORK_CHANGE_KIND_UNSPECIFIED: NetworkChangeKind
NETWORK_CHANGE_KIND_OUTAGE: NetworkChangeKind
NETWORK_CHANGE_KIND_RETURN: NetworkChangeKind
NETWORK_CHANGE_KIND_OPEN: NetworkChangeKind
NETWORK_CHANGE_KIND_CLOSE: NetworkChangeKind
NETWORK_CHANGE_KIND_RATING: NetworkChangeKind
NETWORK_CHANGE_KIND_VOLTAGE: NetworkChangeKind
NETWORK_CHANGE_KIND_INTERFACE: NetworkChangeKind

class NetworkChange(_message.Message):
    __slots__ = ("change_id", "kind", "element", "start", "end", "s_max_kva", "vmin_pu", "vmax_pu", "import_max_kw", "export_max_kw", "shed", "reason", "submitted_by", "version", "submitted_at")
    CHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ELEMENT_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    S_MAX_KVA_FIELD_NUMBER: _ClassVar[int]
    VMIN_PU_FIELD_NUMBER: _ClassVar[int]
    VMAX_PU_FIELD_NUMBER: _ClassVar[int]
    IMPORT_MAX_KW_FIELD_NUMBER: _ClassVar[int]
    EXPORT_MAX_KW_FIELD_NUMBER: _ClassVar[int]
    SHED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_BY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    change_id: str
    kind: NetworkChangeKind
    element: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    s_max_kva: float
    vmin_pu: float
    vmax_pu: float
    import_max_kw: float
    export_max_kw: float
    shed: bool
    reason: str
    submitted_by: str
    version: int
    submitted_at: _timestamp_pb2.Timestamp
    def __init__(self, change_id: _Optional[str] = ..., kind: _Optional[_Union[NetworkChangeKind, str]] = ..., element: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., s_max_kva: _Optional[float] = ..., vmin_pu: _Optional[float] = ..., vmax_pu: _Optional[float] = ..., import_max_kw: _Optional[float] = ..., export_max_kw: _Optional[float] = ..., shed: _Optional[bool] = ..., reason: _Optional[str] = ..., submitted_by: _Optional[str] = ..., version: _Optional[int] = ..., submitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class MarketRevision(_message.Message):
    __slots__ = ("market_id", "status", "diagnosis", "revision", "republished")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSIS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    REPUBLISHED_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    status: _common_pb2.ClearingStatus
    diagnosis: _containers.RepeatedScalarFieldContainer[str]
    revision: int
    republished: bool
    def __init__(self, market_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.ClearingStatus, str]] = ..., diagnosis: _Optional[_Iterable[str]] = ..., revision: _Optional[int] = ..., republished: _Optional[bool] = ...) -> None: ...

class SubmitNetworkChangesRequest(_message.Message):
    __slots__ = ("feeder_id", "request_id", "changes")
    FEEDER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    feeder_id: str
    request_id: str
    changes: _containers.RepeatedCompositeFieldContainer[NetworkChange]
    def __init__(self, feeder_id: _Optional[str] = ..., request_id: _Optional[str] = ..., changes: _Optional[_Iterable[_Union[NetworkChange, _Mapping]]] = ...) -> None: ...

class SubmitNetworkChangesResponse(_message.Message):
    __slots__ = ("network_version", "revisions")
    NETWORK_VERSION_FIELD_NUMBER: _ClassVar[int]
    REVISIONS_FIELD_NUMBER: _ClassVar[int]
    network_version: int
    revisions: _containers.RepeatedCompositeFieldContainer[MarketRevision]
    def __init__(self, network_version: _Optional[int] = ..., revisions: _Optional[_Iterable[_Union[MarketRevision, _Mapping]]] = ...) -> None: ...

class ListNetworkChangesRequest(_message.Message):
    __slots__ = ("feeder_id", "pagination")
    FEEDER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    feeder_id: str
    pagination: _common_pb2.PaginationParams
    def __init__(self, feeder_id: _Optional[str] = ..., pagination: _Optional[_Union[_common_pb2.PaginationParams, _Mapping]] = ...) -> None: ...

class ListNetworkChangesResponse(_message.Message):
    __slots__ = ("changes", "pagination")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[NetworkChange]
    pagination: _common_pb2.PaginationInfo
    def __init__(self, changes: _Optional[_Iterable[_Union[NetworkChange, _Mapping]]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationInfo, _Mapping]] = ...) -> None: ...
