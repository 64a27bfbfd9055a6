import datetime

from dsomarket.v1 import common_pb2 as _common_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PriceSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRICE_SOURCE_UNSPECIFIED: _ClassVar[PriceSource]
    PRICE_SOURCE_CLEARING: _ClassVar[PriceSource]
    PRICE_SOURCE_AWARD: _ClassVar[PriceSource]
PRICE_SOURCE_UNSPECIFIED: PriceSource
PRICE_SOURCE_CLEARING: PriceSource
PRICE_SOURCE_AWARD: PriceSource

class Market(_message.Message):
    __slots__ = ("market_id", "feeder_id", "kind", "state", "delivery_start", "interval_count", "interval_length", "gate_closure_time", "gate_lead", "price_floor", "price_cap", "currency", "value_of_lost_load", "day_ahead_market_id", "clearing_status", "diagnosis", "created_at", "updated_at", "formulation")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    FEEDER_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_START_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_LENGTH_FIELD_NUMBER: _ClassVar[int]
    GATE_CLOSURE_TIME_FIELD_NUMBER: _ClassVar[int]
    GATE_LEAD_FIELD_NUMBER: _ClassVar[int]
    PRICE_FLOOR_FIELD_NUMBER: _ClassVar[int]
    PRICE_CAP_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    VALUE_OF_LOST_LOAD_FIELD_NUMBER: _ClassVar[int]
    DAY_AHEAD_MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    CLEARING_STATUS_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSIS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    FORMULATION_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    feeder_id: str
    kind: _common_pb2.MarketKind
    state: _common_pb2.MarketState
    delivery_start: _timestamp_pb2.Timestamp
    interval_count: int
    interval_length: _duration_pb2.Duration
    gate_closure_time: _timestamp_pb2.Timestamp
    gate_lead: _duration_pb2.Duration
    price_floor: str
    price_cap: str
    currency: str
    value_of_lost_load: str
    day_ahead_market_id: str
    clearing_status: _common_pb2.ClearingStatus
    diagnosis: _containers.RepeatedScalarFieldContainer[str]
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    formulation: str
    def __init__(self, market_id: _Optional[str] = ..., feeder_id: _Optional[str] = ..., kind: _Optional[_Union[_common_pb2.MarketKind, str]] = ..., state: _Optional[_Union[_common_pb2.MarketState, str]] = ..., delivery_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., interval_count: _Optional[int] = ..., interval_length: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., gate_closure_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., gate_lead: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., price_floor: _Optional[str] = ..., price_cap: _Optional[str] = ..., currency: _Optional[str] = ..., value_of_lost_load: _Optional[str] = ..., day_ahead_market_id: _Optional[str] = ..., clearing_status: _Optional[_Union[_common_pb2.ClearingStatus, str]] = ..., diagnosis: _Optional[_Iterable[str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., formulation: _Optional[str] = ...) -> None: ...

class MarketInterval(_message.Message):
    __slots__ = ("market_id", "index", "start", "end", "gate_closure", "gate_open")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    GATE_CLOSURE_FIELD_NUMBER: _ClassVar[int]
    GATE_OPEN_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    index: int
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    gate_closure: _timestamp_pb2.Timestamp
    gate_open: bool
    def __init__(self, market_id: _Optional[str] = ..., index: _Optional[int] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., gate_closure: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., gate_open: _Optional[bool] = ...) -> None: ...

class BusPrice(_message.Message):
    __slots__ = ("bus", "interval_start", "dlmp", "energy", "congestion", "voltage", "loss", "source", "revision", "superseded")
    BUS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    DLMP_FIELD_NUMBER: _ClassVar[int]
    ENERGY_FIELD_NUMBER: _ClassVar[int]
    CONGESTION_FIELD_NUMBER: _ClassVar[int]
    VOLTAGE_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SUPERSEDED_FIELD_NUMBER: _ClassVar[int]
    bus: str
    interval_start: _timestamp_pb2.Timestamp
    dlmp: str
    energy: str
    congestion: str
    voltage: str
    loss: str
    source: PriceSource
    revision: int
    superseded: bool
    def __init__(self, bus: _Optional[str] = ..., interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., dlmp: _Optional[str] = ..., energy: _Optional[str] = ..., congestion: _Optional[str] = ..., voltage: _Optional[str] = ..., loss: _Optional[str] = ..., source: _Optional[_Union[PriceSource, str]] = ..., revision: _Optional[int] = ..., superseded: _Optional[bool] = ...) -> None: ...

class MarketFilter(_message.Message):
    __slots__ = ("feeder_id", "states", "kind")
    FEEDER_ID_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    feeder_id: str
    states: _containers.RepeatedScalarFieldContainer[_common_pb2.MarketState]
    kind: _common_pb2.MarketKind
    def __init__(self, feeder_id: _Optional[str] = ..., states: _Optional[_Iterable[_Union[_common_pb2.MarketState, str]]] = ..., kind: _Optional[_Union[_common_pb2.MarketKind, str]] = ...) -> None: ...

class GetIdentityRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetIdentityResponse(_message.Message):
    __slots__ = ("name", "role")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: _common_pb2.Role
    def __init__(self, name: _Optional[str] = ..., role: _Optional[_Union[_common_pb2.Role, str]] = ...) -> None: ...

class ListMarketsRequest(_message.Message):
    __slots__ = ("filter", "pagination")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    filter: MarketFilter
    pagination: _common_pb2.PaginationParams
    def __init__(self, filter: _Optional[_Union[MarketFilter, _Mapping]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationParams, _Mapping]] = ...) -> None: ...

class ListMarketsResponse(_message.Message):
    __slots__ = ("markets", "pagination")
    MARKETS_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    markets: _containers.RepeatedCompositeFieldContainer[Market]
    pagination: _common_pb2.PaginationInfo
    def __init__(self, markets: _Optional[_Iterable[_Union[Market, _Mapping]]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationInfo, _Mapping]] = ...) -> None: ...

class GetMarketRequest(_message.Message):
    __slots__ = ("market_id",)
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    def __init__(self, market_id: _Optional[str] = ...) -> None: ...

class GetMarketResponse(_message.Message):
    __slots__ = ("market",)
    MARKET_FIELD_NUMBER: _ClassVar[int]
    market: Market
    def __init__(self, market: _Optional[_Union[Market, _Mapping]] = ...) -> None: ...

class ListMarketIntervalsRequest(_message.Message):
    __slots__ = ("market_id", "pagination")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    pagination: _common_pb2.PaginationParams
    def __init__(self, market_id: _Optional[str] = ..., pagination: _Optional[_Union[_common_pb2.PaginationParams, _Mapping]] = ...) -> None: ...

class ListMarketIntervalsResponse(_message.Message):
    __slots__ = ("intervals", "pagination")
    INTERVALS_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    intervals: _containers.RepeatedCompositeFieldContainer[MarketInterval]
    pagination: _common_pb2.PaginationInfo
    def __init__(self, intervals: _Optional[_Iterable[_Union[MarketInterval, _Mapping]]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationInfo, _Mapping]] = ...) -> None: ...

class ListMarketPricesRequest(_message.Message):
    __slots__ = ("market_id", "bus", "pagination", "include_superseded")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    BUS_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SUPERSEDED_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    bus: str
    pagination: _common_pb2.PaginationParams
    include_superseded: bool
    def __init__(self, market_id: _Optional[str] = ..., bus: _Optional[str] = ..., pagination: _Optional[_Union[_common_pb2.PaginationParams, _Mapping]] = ..., include_superseded: _Optional[bool] = ...) -> None: ...

class ListMarketPricesResponse(_message.Message):
    __slots__ = ("prices", "pagination")
    PRICES_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    prices: _containers.RepeatedCompositeFieldContainer[BusPrice]
    pagination: _common_pb2.PaginationInfo
    def __init__(self, prices: _Optional[_Iterable[_Union[BusPrice, _Mapping]]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationInfo, _Mapping]] = ...) -> None: ...
