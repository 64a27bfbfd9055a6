import datetime

from dsomarket.v1 import aggregator_pb2 as _aggregator_pb2
from dsomarket.v1 import common_pb2 as _common_pb2
from dsomarket.v1 import market_pb2 as _market_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Feeder(_message.Message):
    __slots__ = ("feeder_id", "name", "root_bus", "base_kv", "bus_count", "line_count", "created_at")
    FEEDER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROOT_BUS_FIELD_NUMBER: _ClassVar[int]
    BASE_KV_FIELD_NUMBER: _ClassVar[int]
    BUS_COUNT_FIELD_NUMBER: _ClassVar[int]
    LINE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    feeder_id: str
    name: str
    root_bus: str
    base_kv: float
    bus_count: int
    line_count: int
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, feeder_id: _Optional[str] = ..., name: _Optional[str] = ..., root_bus: _Optional[str] = ..., base_kv: _Optional[float] = ..., bus_count: _Optional[int] = ..., line_count: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class BusColumns(_message.Message):
    __slots__ = ("bus", "vmin_pu", "vmax_pu", "load_kw", "load_kvar")
    BUS_FIELD_NUMBER: _ClassVar[int]
    VMIN_PU_FIELD_NUMBER: _ClassVar[int]
    VMAX_PU_FIELD_NUMBER: _ClassVar[int]
    LOAD_KW_FIELD_NUMBER: _ClassVar[int]
    LOAD_KVAR_FIELD_NUMBER: _ClassVar[int]
    bus: _containers.RepeatedScalarFieldContainer[str]
    vmin_pu: _containers.RepeatedScalarFieldContainer[float]
    vmax_pu: _containers.RepeatedScalarFieldContainer[float]
    load_kw: _containers.RepeatedScalarFieldContainer[float]
    load_kvar: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, bus: _Optional[_Iterable[str]] = ..., vmin_pu: _Optional[_Iterable[float]] = ..., vmax_pu: _Optional[_Iterable[float]] = ..., load_kw: _Optional[_Iterable[float]] = ..., load_kvar: _Optional[_Iterable[float]] = ...) -> None: ...

class LineColumns(_message.Message):
    __slots__ = ("line", "from_bus", "to_bus", "r_ohm", "x_ohm", "s_max_kva", "in_service")
    LINE_FIELD_NUMBER: _ClassVar[int]
    FROM_BUS_FIELD_NUMBER: _ClassVar[int]
    TO_BUS_FIELD_NUMBER: _ClassVar[int]
    R_OHM_FIELD_NUMBER: _ClassVar[int]
    X_OHM_FIELD_NUMBER: _ClassVar[int]
    S_MAX_KVA_FIELD_NUMBER: _ClassVar[int]
    IN_SERVICE_FIELD_NUMBER: _ClassVar[int]
    line: _containers.RepeatedScalarFieldContainer[str]
    from_bus: _containers.RepeatedScalarFieldContainer[str]
    to_bus: _containers.RepeatedScalarFieldContainer[str]
    r_ohm: _containers.RepeatedScalarFieldContainer[float]
    x_ohm: _containers.RepeatedScalarFieldContainer[float]
    s_max_kva: _containers.RepeatedScalarFieldContainer[float]
    in_service: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, line: _Optional[_Iterable[str]] = ..., from_bus: _Optional[_Iterable[str]] = ..., to_bus: _Optional[_Iterable[str]] = ..., r_ohm: _Optional[_Iterable[float]] = ..., x_ohm: _Optional[_Iterable[float]] = ..., s_max_kva: _Optional[_Iterable[float]] = ..., in_service: _Optional[_Iterable[bool]] = ...) -> None: ...

class FeederTables(_message.Message):
    __slots__ = ("name", "root_bus", "base_kv", "v0_pu", "import_max_kw", "export_max_kw", "buses", "lines")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROOT_BUS_FIELD_NUMBER: _ClassVar[int]
    BASE_KV_FIELD_NUMBER: _ClassVar[int]
    V0_PU_FIELD_NUMBER: _ClassVar[int]
    IMPORT_MAX_KW_FIELD_NUMBER: _ClassVar[int]
    EXPORT_MAX_KW_FIELD_NUMBER: _ClassVar[int]
    BUSES_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    name: str
    root_bus: str
    base_kv: float
    v0_pu: float
    import_max_kw: float
    export_max_kw: float
    buses: BusColumns
    lines: LineColumns
    def __init__(self, name: _Optional[str] = ..., root_bus: _Optional[str] = ..., base_kv: _Optional[float] = ..., v0_pu: _Optional[float] = ..., import_max_kw: _Optional[float] = ..., export_max_kw: _Optional[float] = ..., buses: _Optional[_Union[BusColumns, _Mapping]] = ..., lines: _Optional[_Union[LineColumns, _Mapping]] = ...) -> None: ...

class CreateFeederRequest(_message.Message):
    __slots__ = ("feeder_id", "builtin_name", "tables")
    FEEDER_ID_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_NAME_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    feeder_id: str
    builtin_name: str
    tables: FeederTables
    def __init__(self, feeder_id: _Optional[str] = ..., builtin_name: _Optional[str] = ..., tables: _Optional[_Union[FeederTables, _Mapping]] = ...) -> None: ...

class CreateFeederResponse(_message.Message):
    __slots__ = ("feeder",)
    FEEDER_FIELD_NUMBER: _ClassVar[int]
    feeder: Feeder
    def __init__(self, feeder: _Optional[_Union[Feeder, _Mapping]] = ...) -> None: ...

class ListFeedersRequest(_message.Message):
    __slots__ = ("pagination",)
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    pagination: _common_pb2.PaginationParams
    def __init__(self, pagination: _Optional[_Union[_common_pb2.PaginationParams, _Mapping]] = ...) -> None: ...

class ListFeedersResponse(_message.Message):
    __slots__ = ("feeders", "pagination")
    FEEDERS_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    feeders: _containers.RepeatedCompositeFieldContainer[Feeder]
    pagination: _common_pb2.PaginationInfo
    def __init__(self, feeders: _Optional[_Iterable[_Union[Feeder, _Mapping]]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationInfo, _Mapping]] = ...) -> None: ...

class CreateMarketRequest(_message.Message):
    __slots__ = ("market_id", "feeder_id", "kind", "delivery_start", "interval_count", "gate_closure_time", "gate_lead", "price_floor", "price_cap", "currency", "value_of_lost_load", "day_ahead_market_id", "formulation")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    FEEDER_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_START_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    GATE_CLOSURE_TIME_FIELD_NUMBER: _ClassVar[int]
    GATE_LEAD_FIELD_NUMBER: _ClassVar[int]
    PRICE_FLOOR_FIELD_NUMBER: _ClassVar[int]
    PRICE_CAP_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    VALUE_OF_LOST_LOAD_FIELD_NUMBER: _ClassVar[int]
    DAY_AHEAD_MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    FORMULATION_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    feeder_id: str
    kind: _common_pb2.MarketKind
    delivery_start: _timestamp_pb2.Timestamp
    interval_count: int
    gate_closure_time: _timestamp_pb2.Timestamp
    gate_lead: _duration_pb2.Duration
    price_floor: str
    price_cap: str
    currency: str
    value_of_lost_load: str
    day_ahead_market_id: str
    formulation: str
    def __init__(self, market_id: _Optional[str] = ..., feeder_id: _Optional[str] = ..., kind: _Optional[_Union[_common_pb2.MarketKind, str]] = ..., delivery_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., interval_count: _Optional[int] = ..., gate_closure_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., gate_lead: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., price_floor: _Optional[str] = ..., price_cap: _Optional[str] = ..., currency: _Optional[str] = ..., value_of_lost_load: _Optional[str] = ..., day_ahead_market_id: _Optional[str] = ..., formulation: _Optional[str] = ...) -> None: ...

class CreateMarketResponse(_message.Message):
    __slots__ = ("market",)
    MARKET_FIELD_NUMBER: _ClassVar[int]
    market: _market_pb2.Market
    def __init__(self, market: _Optional[_Union[_market_pb2.Market, _Mapping]] = ...) -> None: ...

class CloseGateRequest(_message.Message):
    __slots__ = ("market_id",)
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    def __init__(self, market_id: _Optional[str] = ...) -> None: ...

class CloseGateResponse(_message.Message):
    __slots__ = ("market",)
    MARKET_FIELD_NUMBER: _ClassVar[int]
    market: _market_pb2.Market
    def __init__(self, market: _Optional[_Union[_market_pb2.Market, _Mapping]] = ...) -> None: ...

class ReopenMarketRequest(_message.Message):
    __slots__ = ("market_id", "reason")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    reason: str
    def __init__(self, market_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ReopenMarketResponse(_message.Message):
    __slots__ = ("market",)
    MARKET_FIELD_NUMBER: _ClassVar[int]
    market: _market_pb2.Market
    def __init__(self, market: _Optional[_Union[_market_pb2.Market, _Mapping]] = ...) -> None: ...

class ClearMarketRequest(_message.Message):
    __slots__ = ("market_id", "iso_price_forecast")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    ISO_PRICE_FORECAST_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    iso_price_forecast: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, market_id: _Optional[str] = ..., iso_price_forecast: _Optional[_Iterable[str]] = ...) -> None: ...

class InterfaceFlow(_message.Message):
    __slots__ = ("interval_start", "import_kw", "iso_price")
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    IMPORT_KW_FIELD_NUMBER: _ClassVar[int]
    ISO_PRICE_FIELD_NUMBER: _ClassVar[int]
    interval_start: _timestamp_pb2.Timestamp
    import_kw: float
    iso_price: str
    def __init__(self, interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., import_kw: _Optional[float] = ..., iso_price: _Optional[str] = ...) -> None: ...

class ClearMarketResponse(_message.Message):
    __slots__ = ("market", "status", "diagnosis", "welfare", "interface", "curve_segments", "solve_seconds", "network_version")
    MARKET_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSIS_FIELD_NUMBER: _ClassVar[int]
    WELFARE_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    CURVE_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    SOLVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_VERSION_FIELD_NUMBER: _ClassVar[int]
    market: _market_pb2.Market
    status: _common_pb2.ClearingStatus
    diagnosis: _containers.RepeatedScalarFieldContainer[str]
    welfare: str
    interface: _containers.RepeatedCompositeFieldContainer[InterfaceFlow]
    curve_segments: int
    solve_seconds: float
    network_version: int
    def __init__(self, market: _Optional[_Union[_market_pb2.Market, _Mapping]] = ..., status: _Optional[_Union[_common_pb2.ClearingStatus, str]] = ..., diagnosis: _Optional[_Iterable[str]] = ..., welfare: _Optional[str] = ..., interface: _Optional[_Iterable[_Union[InterfaceFlow, _Mapping]]] = ..., curve_segments: _Optional[int] = ..., solve_seconds: _Optional[float] = ..., network_version: _Optional[int] = ...) -> None: ...

class PublishMarketRequest(_message.Message):
    __slots__ = ("market_id",)
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    def __init__(self, market_id: _Optional[str] = ...) -> None: ...

class PublishMarketResponse(_message.Message):
    __slots__ = ("market",)
    MARKET_FIELD_NUMBER: _ClassVar[int]
    market: _market_pb2.Market
    def __init__(self, market: _Optional[_Union[_market_pb2.Market, _Mapping]] = ...) -> None: ...

class SettleMarketRequest(_message.Message):
    __slots__ = ("market_id",)
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    def __init__(self, market_id: _Optional[str] = ...) -> None: ...

class SettleMarketResponse(_message.Message):
    __slots__ = ("market", "totals", "statement_count")
    class TotalsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MARKET_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    market: _market_pb2.Market
    totals: _containers.ScalarMap[str, str]
    statement_count: int
    def __init__(self, market: _Optional[_Union[_market_pb2.Market, _Mapping]] = ..., totals: _Optional[_Mapping[str, str]] = ..., statement_count: _Optional[int] = ...) -> None: ...

class OverrideDispatchRequest(_message.Message):
    __slots__ = ("market_id", "aggregator_id", "resource_id", "interval_start", "kw", "reason")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    KW_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    aggregator_id: str
    resource_id: str
    interval_start: _timestamp_pb2.Timestamp
    kw: float
    reason: str
    def __init__(self, market_id: _Optional[str] = ..., aggregator_id: _Optional[str] = ..., resource_id: _Optional[str] = ..., interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kw: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class OverrideDispatchResponse(_message.Message):
    __slots__ = ("instruction", "mode", "import_kw", "redispatched")
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    IMPORT_KW_FIELD_NUMBER: _ClassVar[int]
    REDISPATCHED_FIELD_NUMBER: _ClassVar[int]
    instruction: _aggregator_pb2.Instruction
    mode: str
    import_kw: float
    redispatched: int
    def __init__(self, instruction: _Optional[_Union[_aggregator_pb2.Instruction, _Mapping]] = ..., mode: _Optional[str] = ..., import_kw: _Optional[float] = ..., redispatched: _Optional[int] = ...) -> None: ...
