import datetime

from dsomarket.v1 import market_pb2 as _market_pb2
from dsomarket.v1 import operator_pb2 as _operator_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TerritoryInterface(_message.Message):
    __slots__ = ("interface_id", "feeder_ids", "import_max_kw", "export_max_kw")
    INTERFACE_ID_FIELD_NUMBER: _ClassVar[int]
    FEEDER_IDS_FIELD_NUMBER: _ClassVar[int]
    IMPORT_MAX_KW_FIELD_NUMBER: _ClassVar[int]
    EXPORT_MAX_KW_FIELD_NUMBER: _ClassVar[int]
    interface_id: str
    feeder_ids: _containers.RepeatedScalarFieldContainer[str]
    import_max_kw: float
    export_max_kw: float
    def __init__(self, interface_id: _Optional[str] = ..., feeder_ids: _Optional[_Iterable[str]] = ..., import_max_kw: _Optional[float] = ..., export_max_kw: _Optional[float] = ...) -> None: ...

class Territory(_message.Message):
    __slots__ = ("territory_id", "interfaces", "created_at")
    TERRITORY_ID_FIELD_NUMBER: _ClassVar[int]
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    territory_id: str
    interfaces: _containers.RepeatedCompositeFieldContainer[TerritoryInterface]
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, territory_id: _Optional[str] = ..., interfaces: _Optional[_Iterable[_Union[TerritoryInterface, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateTerritoryRequest(_message.Message):
    __slots__ = ("territory_id", "interfaces")
    TERRITORY_ID_FIELD_NUMBER: _ClassVar[int]
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    territory_id: str
    interfaces: _containers.RepeatedCompositeFieldContainer[TerritoryInterface]
    def __init__(self, territory_id: _Optional[str] = ..., interfaces: _Optional[_Iterable[_Union[TerritoryInterface, _Mapping]]] = ...) -> None: ...

class CreateTerritoryResponse(_message.Message):
    __slots__ = ("territory",)
    TERRITORY_FIELD_NUMBER: _ClassVar[int]
    territory: Territory
    def __init__(self, territory: _Optional[_Union[Territory, _Mapping]] = ...) -> None: ...

class GetTerritoryRequest(_message.Message):
    __slots__ = ("territory_id",)
    TERRITORY_ID_FIELD_NUMBER: _ClassVar[int]
    territory_id: str
    def __init__(self, territory_id: _Optional[str] = ...) -> None: ...

class GetTerritoryResponse(_message.Message):
    __slots__ = ("territory",)
    TERRITORY_FIELD_NUMBER: _ClassVar[int]
    territory: Territory
    def __init__(self, territory: _Optional[_Union[Territory, _Mapping]] = ...) -> None: ...

class SessionInterface(_message.Message):
    __slots__ = ("interface_id", "market")
    INTERFACE_ID_FIELD_NUMBER: _ClassVar[int]
    MARKET_FIELD_NUMBER: _ClassVar[int]
    interface_id: str
    market: _market_pb2.Market
    def __init__(self, interface_id: _Optional[str] = ..., market: _Optional[_Union[_market_pb2.Market, _Mapping]] = ...) -> None: ...

class TerritorySession(_message.Message):
    __slots__ = ("session_id", "territory_id", "interfaces", "created_at")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TERRITORY_ID_FIELD_NUMBER: _ClassVar[int]
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    territory_id: str
    interfaces: _containers.RepeatedCompositeFieldContainer[SessionInterface]
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, session_id: _Optional[str] = ..., territory_id: _Optional[str] = ..., interfaces: _Optional[_Iterable[_Union[SessionInterface, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class OpenTerritorySessionRequest(_message.Message):
    __slots__ = ("session_id", "territory_id", "market")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TERRITORY_ID_FIELD_NUMBER: _ClassVar[int]
    MARKET_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    territory_id: str
    market: _operator_pb2.CreateMarketRequest
    def __init__(self, session_id: _Optional[str] = ..., territory_id: _Optional[str] = ..., market: _Optional[_Union[_operator_pb2.CreateMarketRequest, _Mapping]] = ...) -> None: ...

class OpenTerritorySessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: TerritorySession
    def __init__(self, session: _Optional[_Union[TerritorySession, _Mapping]] = ...) -> None: ...

class GetTerritorySessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class GetTerritorySessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: TerritorySession
    def __init__(self, session: _Optional[_Union[TerritorySession, _Mapping]] = ...) -> None: ...

class CloseTerritoryGateRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class CloseTerritoryGateResponse(_message.Message):
    __slots__ = ("session", "closed")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    session: TerritorySession
    closed: int
    def __init__(self, session: _Optional[_Union[TerritorySession, _Mapping]] = ..., closed: _Optional[int] = ...) -> None: ...

class ClearTerritoryRequest(_message.Message):
    __slots__ = ("session_id", "iso_price_forecast")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ISO_PRICE_FORECAST_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    iso_price_forecast: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session_id: _Optional[str] = ..., iso_price_forecast: _Optional[_Iterable[str]] = ...) -> None: ...

class InterfaceClearing(_message.Message):
    __slots__ = ("interface_id", "clearing", "warm", "recovered")
    INTERFACE_ID_FIELD_NUMBER: _ClassVar[int]
    CLEARING_FIELD_NUMBER: _ClassVar[int]
    WARM_FIELD_NUMBER: _ClassVar[int]
    RECOVERED_FIELD_NUMBER: _ClassVar[int]
    interface_id: str
    clearing: _operator_pb2.ClearMarketResponse
    warm: bool
    recovered: str
    def __init__(self, interface_id: _Optional[str] = ..., clearing: _Optional[_Union[_operator_pb2.ClearMarketResponse, _Mapping]] = ..., warm: _Optional[bool] = ..., recovered: _Optional[str] = ...) -> None: ...

class ClearTerritoryResponse(_message.Message):
    __slots__ = ("session", "interfaces", "optimal", "solve_seconds")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    OPTIMAL_FIELD_NUMBER: _ClassVar[int]
    SOLVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    session: TerritorySession
    interfaces: _containers.RepeatedCompositeFieldContainer[InterfaceClearing]
    optimal: int
    solve_seconds: float
    def __init__(self, session: _Optional[_Union[TerritorySession, _Mapping]] = ..., interfaces: _Optional[_Iterable[_Union[InterfaceClearing, _Mapping]]] = ..., optimal: _Optional[int] = ..., solve_seconds: _Optional[float] = ...) -> None: ...

class PublishTerritoryRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class PublishTerritoryResponse(_message.Message):
    __slots__ = ("session", "published")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    session: TerritorySession
    published: int
    def __init__(self, session: _Optional[_Union[TerritorySession, _Mapping]] = ..., published: _Optional[int] = ...) -> None: ...

class SettleTerritoryRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class InterfaceSettlement(_message.Message):
    __slots__ = ("interface_id", "settlement", "error")
    INTERFACE_ID_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    interface_id: str
    settlement: _operator_pb2.SettleMarketResponse
    error: str
    def __init__(self, interface_id: _Optional[str] = ..., settlement: _Optional[_Union[_operator_pb2.SettleMarketResponse, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class SettleTerritoryResponse(_message.Message):
    __slots__ = ("session", "interfaces")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    session: TerritorySession
    interfaces: _containers.RepeatedCompositeFieldContainer[InterfaceSettlement]
    def __init__(self, session: _Optional[_Union[TerritorySession, _Mapping]] = ..., interfaces: _Optional[_Iterable[_Union[InterfaceSettlement, _Mapping]]] = ...) -> None: ...
