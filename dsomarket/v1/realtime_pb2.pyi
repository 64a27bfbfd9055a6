import datetime

from dsomarket.v1 import common_pb2 as _common_pb2
from dsomarket.v1 import iso_pb2 as _iso_pb2
from dsomarket.v1 import market_pb2 as _market_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScheduleSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCHEDULE_SOURCE_UNSPECIFIED: _ClassVar[ScheduleSource]
    SCHEDULE_SOURCE_OVERRIDE: _ClassVar[ScheduleSource]
    SCHEDULE_SOURCE_EMERGENCY: _ClassVar[ScheduleSource]
    SCHEDULE_SOURCE_NETWORK_CHANGE: _ClassVar[ScheduleSource]
SCHEDULE_SOURCE_UNSPECIFIED: ScheduleSource
SCHEDULE_SOURCE_OVERRIDE: ScheduleSource
SCHEDULE_SOURCE_EMERGENCY: ScheduleSource
SCHEDULE_SOURCE_NETWORK_CHANGE: ScheduleSource

class SubmitResourceHistoryRequest(_message.Message):
    __slots__ = ("request_id", "readings")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    READINGS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    readings: _containers.RepeatedCompositeFieldContainer[MeterReading]
    def __init__(self, request_id: _Optional[str] = ..., readings: _Optional[_Iterable[_Union[MeterReading, _Mapping]]] = ...) -> None: ...

class SubmitResourceHistoryResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class DemandResponseRow(_message.Message):
    __slots__ = ("aggregator_id", "resource_id", "interval_start", "baseline_kw", "metered_kw", "delivered_kw", "instructed_kw", "deviation_kw", "price", "amount")
    AGGREGATOR_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    BASELINE_KW_FIELD_NUMBER: _ClassVar[int]
    METERED_KW_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_KW_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTED_KW_FIELD_NUMBER: _ClassVar[int]
    DEVIATION_KW_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    aggregator_id: str
    resource_id: str
    interval_start: _timestamp_pb2.Timestamp
    baseline_kw: float
    metered_kw: float
    delivered_kw: float
    instructed_kw: float
    deviation_kw: float
    price: str
    amount: str
    def __init__(self, aggregator_id: _Optional[str] = ..., resource_id: _Optional[str] = ..., interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., baseline_kw: _Optional[float] = ..., metered_kw: _Optional[float] = ..., delivered_kw: _Optional[float] = ..., instructed_kw: _Optional[float] = ..., deviation_kw: _Optional[float] = ..., price: _Optional[str] = ..., amount: _Optional[str] = ...) -> None: ...

class SubmitLoadHistoryRequest(_message.Message):
    __slots__ = ("feeder_id", "request_id", "history")
    FEEDER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    feeder_id: str
    request_id: str
    history: ForecastColumns
    def __init__(self, feeder_id: _Optional[str] = ..., request_id: _Optional[str] = ..., history: _Optional[_Union[ForecastColumns, _Mapping]] = ...) -> None: ...

class SubmitLoadHistoryResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class ForecastColumns(_message.Message):
    __slots__ = ("bus", "interval_start", "p_kw", "q_kvar")
    BUS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    P_KW_FIELD_NUMBER: _ClassVar[int]
    Q_KVAR_FIELD_NUMBER: _ClassVar[int]
    bus: _containers.RepeatedScalarFieldContainer[str]
    interval_start: _containers.RepeatedCompositeFieldContainer[_timestamp_pb2.Timestamp]
    p_kw: _containers.RepeatedScalarFieldContainer[float]
    q_kvar: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, bus: _Optional[_Iterable[str]] = ..., interval_start: _Optional[_Iterable[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]]] = ..., p_kw: _Optional[_Iterable[float]] = ..., q_kvar: _Optional[_Iterable[float]] = ...) -> None: ...

class SubmitForecastRequest(_message.Message):
    __slots__ = ("market_id", "request_id", "forecast")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FORECAST_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    request_id: str
    forecast: ForecastColumns
    def __init__(self, market_id: _Optional[str] = ..., request_id: _Optional[str] = ..., forecast: _Optional[_Union[ForecastColumns, _Mapping]] = ...) -> None: ...

class SubmitForecastResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class GetForecastScheduleRequest(_message.Message):
    __slots__ = ("market_id",)
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    def __init__(self, market_id: _Optional[str] = ...) -> None: ...

class ForecastScheduleInterval(_message.Message):
    __slots__ = ("interval_start", "fixed_kw", "expected_kw", "import_kw")
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    FIXED_KW_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_KW_FIELD_NUMBER: _ClassVar[int]
    IMPORT_KW_FIELD_NUMBER: _ClassVar[int]
    interval_start: _timestamp_pb2.Timestamp
    fixed_kw: float
    expected_kw: float
    import_kw: float
    def __init__(self, interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., fixed_kw: _Optional[float] = ..., expected_kw: _Optional[float] = ..., import_kw: _Optional[float] = ...) -> None: ...

class GetForecastScheduleResponse(_message.Message):
    __slots__ = ("intervals", "source")
    INTERVALS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    intervals: _containers.RepeatedCompositeFieldContainer[ForecastScheduleInterval]
    source: str
    def __init__(self, intervals: _Optional[_Iterable[_Union[ForecastScheduleInterval, _Mapping]]] = ..., source: _Optional[str] = ...) -> None: ...

class MeterReading(_message.Message):
    __slots__ = ("aggregator_id", "resource_id", "interval_start", "kw")
    AGGREGATOR_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    KW_FIELD_NUMBER: _ClassVar[int]
    aggregator_id: str
    resource_id: str
    interval_start: _timestamp_pb2.Timestamp
    kw: float
    def __init__(self, aggregator_id: _Optional[str] = ..., resource_id: _Optional[str] = ..., interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kw: _Optional[float] = ...) -> None: ...

class SubmitMeterReadingsRequest(_message.Message):
    __slots__ = ("market_id", "request_id", "readings")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    READINGS_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    request_id: str
    readings: _containers.RepeatedCompositeFieldContainer[MeterReading]
    def __init__(self, market_id: _Optional[str] = ..., request_id: _Optional[str] = ..., readings: _Optional[_Iterable[_Union[MeterReading, _Mapping]]] = ...) -> None: ...

class SubmitMeterReadingsResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class SettleImbalanceRequest(_message.Message):
    __slots__ = ("market_id",)
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    def __init__(self, market_id: _Optional[str] = ...) -> None: ...

class InterfaceImbalance(_message.Message):
    __slots__ = ("interval_start", "scheduled_kw", "metered_kw", "imbalance_kw", "price", "amount")
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_KW_FIELD_NUMBER: _ClassVar[int]
    METERED_KW_FIELD_NUMBER: _ClassVar[int]
    IMBALANCE_KW_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    interval_start: _timestamp_pb2.Timestamp
    scheduled_kw: float
    metered_kw: float
    imbalance_kw: float
    price: str
    amount: str
    def __init__(self, interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., scheduled_kw: _Optional[float] = ..., metered_kw: _Optional[float] = ..., imbalance_kw: _Optional[float] = ..., price: _Optional[str] = ..., amount: _Optional[str] = ...) -> None: ...

class SettleImbalanceResponse(_message.Message):
    __slots__ = ("totals", "statement_count", "interface", "demand_response")
    class TotalsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    DEMAND_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    totals: _containers.ScalarMap[str, str]
    statement_count: int
    interface: _containers.RepeatedCompositeFieldContainer[InterfaceImbalance]
    demand_response: _containers.RepeatedCompositeFieldContainer[DemandResponseRow]
    def __init__(self, totals: _Optional[_Mapping[str, str]] = ..., statement_count: _Optional[int] = ..., interface: _Optional[_Iterable[_Union[InterfaceImbalance, _Mapping]]] = ..., demand_response: _Optional[_Iterable[_Union[DemandResponseRow, _Mapping]]] = ...) -> None: ...

class GetPerformanceReportRequest(_message.Message):
    __slots__ = ("market_id", "aggregator_id")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_ID_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    aggregator_id: str
    def __init__(self, market_id: _Optional[str] = ..., aggregator_id: _Optional[str] = ...) -> None: ...

class PerformanceRow(_message.Message):
    __slots__ = ("aggregator_id", "interval_start", "instructed_kw", "metered_kw", "error_kw", "delivery", "awarded_kw", "instructed_move_kw", "delivered_move_kw")
    AGGREGATOR_ID_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTED_KW_FIELD_NUMBER: _ClassVar[int]
    METERED_KW_FIELD_NUMBER: _ClassVar[int]
    ERROR_KW_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    AWARDED_KW_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTED_MOVE_KW_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_MOVE_KW_FIELD_NUMBER: _ClassVar[int]
    aggregator_id: str
    interval_start: _timestamp_pb2.Timestamp
    instructed_kw: float
    metered_kw: float
    error_kw: float
    delivery: float
    awarded_kw: float
    instructed_move_kw: float
    delivered_move_kw: float
    def __init__(self, aggregator_id: _Optional[str] = ..., interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., instructed_kw: _Optional[float] = ..., metered_kw: _Optional[float] = ..., error_kw: _Optional[float] = ..., delivery: _Optional[float] = ..., awarded_kw: _Optional[float] = ..., instructed_move_kw: _Optional[float] = ..., delivered_move_kw: _Optional[float] = ...) -> None: ...

class GetPerformanceReportResponse(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[PerformanceRow]
    def __init__(self, rows: _Optional[_Iterable[_Union[PerformanceRow, _Mapping]]] = ...) -> None: ...

class InterfaceSchedule(_message.Message):
    __slots__ = ("sequence", "market_id", "feeder_id", "interval_start", "import_kw", "awarded_import_kw", "source", "mode", "reason", "issued_at")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    FEEDER_ID_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    IMPORT_KW_FIELD_NUMBER: _ClassVar[int]
    AWARDED_IMPORT_KW_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    market_id: str
    feeder_id: str
    interval_start: _timestamp_pb2.Timestamp
    import_kw: float
    awarded_import_kw: float
    source: ScheduleSource
    mode: str
    reason: str
    issued_at: _timestamp_pb2.Timestamp
    def __init__(self, sequence: _Optional[int] = ..., market_id: _Optional[str] = ..., feeder_id: _Optional[str] = ..., interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., import_kw: _Optional[float] = ..., awarded_import_kw: _Optional[float] = ..., source: _Optional[_Union[ScheduleSource, str]] = ..., mode: _Optional[str] = ..., reason: _Optional[str] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SubmitEmergencyInstructionRequest(_message.Message):
    __slots__ = ("market_id", "interval_start", "import_max_kw", "export_max_kw", "shed_kw", "reason")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    IMPORT_MAX_KW_FIELD_NUMBER: _ClassVar[int]
    EXPORT_MAX_KW_FIELD_NUMBER: _ClassVar[int]
    SHED_KW_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    interval_start: _timestamp_pb2.Timestamp
    import_max_kw: float
    export_max_kw: float
    shed_kw: float
    reason: str
    def __init__(self, market_id: _Optional[str] = ..., interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., import_max_kw: _Optional[float] = ..., export_max_kw: _Optional[float] = ..., shed_kw: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class SubmitEmergencyInstructionResponse(_message.Message):
    __slots__ = ("schedule", "instructions_changed")
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTIONS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    schedule: InterfaceSchedule
    instructions_changed: int
    def __init__(self, schedule: _Optional[_Union[InterfaceSchedule, _Mapping]] = ..., instructions_changed: _Optional[int] = ...) -> None: ...

class ListInterfaceSchedulesRequest(_message.Message):
    __slots__ = ("market_id", "pagination")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    pagination: _common_pb2.PaginationParams
    def __init__(self, market_id: _Optional[str] = ..., pagination: _Optional[_Union[_common_pb2.PaginationParams, _Mapping]] = ...) -> None: ...

class ListInterfaceSchedulesResponse(_message.Message):
    __slots__ = ("schedules", "pagination")
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    schedules: _containers.RepeatedCompositeFieldContainer[InterfaceSchedule]
    pagination: _common_pb2.PaginationInfo
    def __init__(self, schedules: _Optional[_Iterable[_Union[InterfaceSchedule, _Mapping]]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationInfo, _Mapping]] = ...) -> None: ...

class ReceiveInterfaceScheduleStreamRequest(_message.Message):
    __slots__ = ("market_id", "after_sequence")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    after_sequence: int
    def __init__(self, market_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class SubmitIntervalAwardRequest(_message.Message):
    __slots__ = ("market_id", "request_id", "awards")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AWARDS_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    request_id: str
    awards: _containers.RepeatedCompositeFieldContainer[_iso_pb2.IntervalAward]
    def __init__(self, market_id: _Optional[str] = ..., request_id: _Optional[str] = ..., awards: _Optional[_Iterable[_Union[_iso_pb2.IntervalAward, _Mapping]]] = ...) -> None: ...

class SubmitIntervalAwardResponse(_message.Message):
    __slots__ = ("market", "status", "diagnosis", "intervals_remaining")
    MARKET_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSIS_FIELD_NUMBER: _ClassVar[int]
    INTERVALS_REMAINING_FIELD_NUMBER: _ClassVar[int]
    market: _market_pb2.Market
    status: _common_pb2.ClearingStatus
    diagnosis: _containers.RepeatedScalarFieldContainer[str]
    intervals_remaining: int
    def __init__(self, market: _Optional[_Union[_market_pb2.Market, _Mapping]] = ..., status: _Optional[_Union[_common_pb2.ClearingStatus, str]] = ..., diagnosis: _Optional[_Iterable[str]] = ..., intervals_remaining: _Optional[int] = ...) -> None: ...
