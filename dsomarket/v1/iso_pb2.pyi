import datetime

from dsomarket.v1 import common_pb2 as _common_pb2
from dsomarket.v1 import market_pb2 as _market_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CurveSegmentKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CURVE_SEGMENT_KIND_UNSPECIFIED: _ClassVar[CurveSegmentKind]
    CURVE_SEGMENT_KIND_FIXED_DEMAND: _ClassVar[CurveSegmentKind]
    CURVE_SEGMENT_KIND_DEMAND: _ClassVar[CurveSegmentKind]
    CURVE_SEGMENT_KIND_SUPPLY: _ClassVar[CurveSegmentKind]
    CURVE_SEGMENT_KIND_FIXED_SUPPLY: _ClassVar[CurveSegmentKind]
CURVE_SEGMENT_KIND_UNSPECIFIED: CurveSegmentKind
CURVE_SEGMENT_KIND_FIXED_DEMAND: CurveSegmentKind
CURVE_SEGMENT_KIND_DEMAND: CurveSegmentKind
CURVE_SEGMENT_KIND_SUPPLY: CurveSegmentKind
CURVE_SEGMENT_KIND_FIXED_SUPPLY: CurveSegmentKind

class CurveSegment(_message.Message):
    __slots__ = ("kind", "index", "price", "quantity_kw")
    KIND_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_KW_FIELD_NUMBER: _ClassVar[int]
    kind: CurveSegmentKind
    index: int
    price: str
    quantity_kw: float
    def __init__(self, kind: _Optional[_Union[CurveSegmentKind, str]] = ..., index: _Optional[int] = ..., price: _Optional[str] = ..., quantity_kw: _Optional[float] = ...) -> None: ...

class CurveBand(_message.Message):
    __slots__ = ("price_low", "price_high", "import_kw")
    PRICE_LOW_FIELD_NUMBER: _ClassVar[int]
    PRICE_HIGH_FIELD_NUMBER: _ClassVar[int]
    IMPORT_KW_FIELD_NUMBER: _ClassVar[int]
    price_low: str
    price_high: str
    import_kw: float
    def __init__(self, price_low: _Optional[str] = ..., price_high: _Optional[str] = ..., import_kw: _Optional[float] = ...) -> None: ...

class InterfaceCurve(_message.Message):
    __slots__ = ("sequence", "market_id", "feeder_id", "kind", "interval_start", "interval_end", "fixed_net_load_kw", "conditional", "segments", "bands", "reduction_area", "published_at", "revision", "network_version")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    FEEDER_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_END_FIELD_NUMBER: _ClassVar[int]
    FIXED_NET_LOAD_KW_FIELD_NUMBER: _ClassVar[int]
    CONDITIONAL_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    BANDS_FIELD_NUMBER: _ClassVar[int]
    REDUCTION_AREA_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    NETWORK_VERSION_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    market_id: str
    feeder_id: str
    kind: _common_pb2.MarketKind
    interval_start: _timestamp_pb2.Timestamp
    interval_end: _timestamp_pb2.Timestamp
    fixed_net_load_kw: float
    conditional: bool
    segments: _containers.RepeatedCompositeFieldContainer[CurveSegment]
    bands: _containers.RepeatedCompositeFieldContainer[CurveBand]
    reduction_area: str
    published_at: _timestamp_pb2.Timestamp
    revision: int
    network_version: int
    def __init__(self, sequence: _Optional[int] = ..., market_id: _Optional[str] = ..., feeder_id: _Optional[str] = ..., kind: _Optional[_Union[_common_pb2.MarketKind, str]] = ..., interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., interval_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., fixed_net_load_kw: _Optional[float] = ..., conditional: _Optional[bool] = ..., segments: _Optional[_Iterable[_Union[CurveSegment, _Mapping]]] = ..., bands: _Optional[_Iterable[_Union[CurveBand, _Mapping]]] = ..., reduction_area: _Optional[str] = ..., published_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revision: _Optional[int] = ..., network_version: _Optional[int] = ...) -> None: ...

class CurveFilter(_message.Message):
    __slots__ = ("market_id", "feeder_id")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    FEEDER_ID_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    feeder_id: str
    def __init__(self, market_id: _Optional[str] = ..., feeder_id: _Optional[str] = ...) -> None: ...

class IntervalAward(_message.Message):
    __slots__ = ("interval_start", "import_kw", "price")
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    IMPORT_KW_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    interval_start: _timestamp_pb2.Timestamp
    import_kw: float
    price: str
    def __init__(self, interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., import_kw: _Optional[float] = ..., price: _Optional[str] = ...) -> None: ...

class ListInterfaceCurvesRequest(_message.Message):
    __slots__ = ("filter", "pagination")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    filter: CurveFilter
    pagination: _common_pb2.PaginationParams
    def __init__(self, filter: _Optional[_Union[CurveFilter, _Mapping]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationParams, _Mapping]] = ...) -> None: ...

class ListInterfaceCurvesResponse(_message.Message):
    __slots__ = ("curves", "pagination")
    CURVES_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    curves: _containers.RepeatedCompositeFieldContainer[InterfaceCurve]
    pagination: _common_pb2.PaginationInfo
    def __init__(self, curves: _Optional[_Iterable[_Union[InterfaceCurve, _Mapping]]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationInfo, _Mapping]] = ...) -> None: ...

class ReceiveInterfaceCurveStreamRequest(_message.Message):
    __slots__ = ("filter", "after_sequence")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    filter: CurveFilter
    after_sequence: int
    def __init__(self, filter: _Optional[_Union[CurveFilter, _Mapping]] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class SubmitAwardRequest(_message.Message):
    __slots__ = ("market_id", "request_id", "awards")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AWARDS_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    request_id: str
    awards: _containers.RepeatedCompositeFieldContainer[IntervalAward]
    def __init__(self, market_id: _Optional[str] = ..., request_id: _Optional[str] = ..., awards: _Optional[_Iterable[_Union[IntervalAward, _Mapping]]] = ...) -> None: ...

class SubmitAwardResponse(_message.Message):
    __slots__ = ("market", "status", "diagnosis")
    MARKET_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSIS_FIELD_NUMBER: _ClassVar[int]
    market: _market_pb2.Market
    status: _common_pb2.ClearingStatus
    diagnosis: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, market: _Optional[_Union[_market_pb2.Market, _Mapping]] = ..., status: _Optional[_Union[_common_pb2.ClearingStatus, str]] = ..., diagnosis: _Optional[_Iterable[str]] = ...) -> None: ...
