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

class BidStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BID_STATUS_UNSPECIFIED: _ClassVar[BidStatus]
    BID_STATUS_ACTIVE: _ClassVar[BidStatus]
    BID_STATUS_WITHDRAWN: _ClassVar[BidStatus]

class InstructionSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INSTRUCTION_SOURCE_UNSPECIFIED: _ClassVar[InstructionSource]
    INSTRUCTION_SOURCE_AWARD: _ClassVar[InstructionSource]
    INSTRUCTION_SOURCE_OVERRIDE: _ClassVar[InstructionSource]
    INSTRUCTION_SOURCE_NETWORK_CHANGE: _ClassVar[InstructionSource]

class StatementKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATEMENT_KIND_UNSPECIFIED: _ClassVar[StatementKind]
    STATEMENT_KIND_ENERGY: _ClassVar[StatementKind]
    STATEMENT_KIND_LOSS: _ClassVar[StatementKind]
    STATEMENT_KIND_OVERRIDE: _ClassVar[StatementKind]
    STATEMENT_KIND_CURTAILMENT: _ClassVar[StatementKind]
    STATEMENT_KIND_IMBALANCE: _ClassVar[StatementKind]
    STATEMENT_KIND_DEMAND_RESPONSE: _ClassVar[StatementKind]
BID_STATUS_UNSPECIFIED: BidStatus
BID_STATUS_ACTIVE: BidStatus
BID_STATUS_WITHDRAWN: BidStatus
INSTRUCTION_SOURCE_UNSPECIFIED: InstructionSource
INSTRUCTION_SOURCE_AWARD: InstructionSource
INSTRUCTION_SOURCE_OVERRIDE: InstructionSource
INSTRUCTION_SOURCE_NETWORK_CHANGE: InstructionSource
STATEMENT_KIND_UNSPECIFIED: StatementKind
STATEMENT_KIND_ENERGY: StatementKind
STATEMENT_KIND_LOSS: StatementKind
STATEMENT_KIND_OVERRIDE: StatementKind
STATEMENT_KIND_CURTAILMENT: StatementKind
STATEMENT_KIND_IMBALANCE: StatementKind
STATEMENT_KIND_DEMAND_RESPONSE: StatementKind

class Resource(_message.Message):
    __slots__ = ("resource_id", "aggregator_id", "feeder_id", "bus", "kind", "capacity_kw", "energy_kwh", "charge_kw", "discharge_kw", "eta_charge", "eta_discharge", "soc_init_kwh", "soc_end_kwh", "soc_min_kwh", "ramp_kw", "departure")
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_ID_FIELD_NUMBER: _ClassVar[int]
    FEEDER_ID_FIELD_NUMBER: _ClassVar[int]
    BUS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_KW_FIELD_NUMBER: _ClassVar[int]
    ENERGY_KWH_FIELD_NUMBER: _ClassVar[int]
    CHARGE_KW_FIELD_NUMBER: _ClassVar[int]
    DISCHARGE_KW_FIELD_NUMBER: _ClassVar[int]
    ETA_CHARGE_FIELD_NUMBER: _ClassVar[int]
    ETA_DISCHARGE_FIELD_NUMBER: _ClassVar[int]
    SOC_INIT_KWH_FIELD_NUMBER: _ClassVar[int]
    SOC_END_KWH_FIELD_NUMBER: _ClassVar[int]
    SOC_MIN_KWH_FIELD_NUMBER: _ClassVar[int]
    RAMP_KW_FIELD_NUMBER: _ClassVar[int]
    DEPARTURE_FIELD_NUMBER: _ClassVar[int]
    resource_id: str
    aggregator_id: str
    feeder_id: str
    bus: str
    kind: _common_pb2.ResourceKind
    capacity_kw: float
    energy_kwh: float
    charge_kw: float
    discharge_kw: float
    eta_charge: float
    eta_discharge: float
    soc_init_kwh: float
    soc_end_kwh: float
    soc_min_kwh: float
    ramp_kw: float
    departure: _timestamp_pb2.Timestamp
    def __init__(self, resource_id: _Optional[str] = ..., aggregator_id: _Optional[str] = ..., feeder_id: _Optional[str] = ..., bus: _Optional[str] = ..., kind: _Optional[_Union[_common_pb2.ResourceKind, str]] = ..., capacity_kw: _Optional[float] = ..., energy_kwh: _Optional[float] = ..., charge_kw: _Optional[float] = ..., discharge_kw: _Optional[float] = ..., eta_charge: _Optional[float] = ..., eta_discharge: _Optional[float] = ..., soc_init_kwh: _Optional[float] = ..., soc_end_kwh: _Optional[float] = ..., soc_min_kwh: _Optional[float] = ..., ramp_kw: _Optional[float] = ..., departure: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class BidColumns(_message.Message):
    __slots__ = ("bid_id", "resource_id", "side", "quantity_kw", "price", "interval_starts", "interval_index", "tan_phi")
    BID_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_KW_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_STARTS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_INDEX_FIELD_NUMBER: _ClassVar[int]
    TAN_PHI_FIELD_NUMBER: _ClassVar[int]
    bid_id: _containers.RepeatedScalarFieldContainer[str]
    resource_id: _containers.RepeatedScalarFieldContainer[str]
    side: _containers.RepeatedScalarFieldContainer[_common_pb2.Side]
    quantity_kw: _containers.RepeatedScalarFieldContainer[float]
    price: _containers.RepeatedScalarFieldContainer[str]
    interval_starts: _containers.RepeatedCompositeFieldContainer[_timestamp_pb2.Timestamp]
    interval_index: _containers.RepeatedScalarFieldContainer[int]
    tan_phi: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, bid_id: _Optional[_Iterable[str]] = ..., resource_id: _Optional[_Iterable[str]] = ..., side: _Optional[_Iterable[_Union[_common_pb2.Side, str]]] = ..., quantity_kw: _Optional[_Iterable[float]] = ..., price: _Optional[_Iterable[str]] = ..., interval_starts: _Optional[_Iterable[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]]] = ..., interval_index: _Optional[_Iterable[int]] = ..., tan_phi: _Optional[_Iterable[float]] = ...) -> None: ...

class Bid(_message.Message):
    __slots__ = ("market_id", "aggregator_id", "bid_id", "resource_id", "bus", "side", "quantity_kw", "price", "interval_start", "tan_phi", "status", "updated_at")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_ID_FIELD_NUMBER: _ClassVar[int]
    BID_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    BUS_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_KW_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    TAN_PHI_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    aggregator_id: str
    bid_id: str
    resource_id: str
    bus: str
    side: _common_pb2.Side
    quantity_kw: float
    price: str
    interval_start: _timestamp_pb2.Timestamp
    tan_phi: float
    status: BidStatus
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, market_id: _Optional[str] = ..., aggregator_id: _Optional[str] = ..., bid_id: _Optional[str] = ..., resource_id: _Optional[str] = ..., bus: _Optional[str] = ..., side: _Optional[_Union[_common_pb2.Side, str]] = ..., quantity_kw: _Optional[float] = ..., price: _Optional[str] = ..., interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tan_phi: _Optional[float] = ..., status: _Optional[_Union[BidStatus, str]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Award(_message.Message):
    __slots__ = ("sequence", "market_id", "aggregator_id", "bid_id", "resource_id", "interval_start", "side", "cleared_kw", "price")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_ID_FIELD_NUMBER: _ClassVar[int]
    BID_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    CLEARED_KW_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    market_id: str
    aggregator_id: str
    bid_id: str
    resource_id: str
    interval_start: _timestamp_pb2.Timestamp
    side: _common_pb2.Side
    cleared_kw: float
    price: str
    def __init__(self, sequence: _Optional[int] = ..., market_id: _Optional[str] = ..., aggregator_id: _Optional[str] = ..., bid_id: _Optional[str] = ..., resource_id: _Optional[str] = ..., interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., side: _Optional[_Union[_common_pb2.Side, str]] = ..., cleared_kw: _Optional[float] = ..., price: _Optional[str] = ...) -> None: ...

class Instruction(_message.Message):
    __slots__ = ("sequence", "market_id", "aggregator_id", "resource_id", "interval_start", "kw", "source", "reason", "issued_at")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    KW_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    market_id: str
    aggregator_id: str
    resource_id: str
    interval_start: _timestamp_pb2.Timestamp
    kw: float
    source: InstructionSource
    reason: str
    issued_at: _timestamp_pb2.Timestamp
    def __init__(self, sequence: _Optional[int] = ..., market_id: _Optional[str] = ..., aggregator_id: _Optional[str] = ..., resource_id: _Optional[str] = ..., interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kw: _Optional[float] = ..., source: _Optional[_Union[InstructionSource, str]] = ..., reason: _Optional[str] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Statement(_message.Message):
    __slots__ = ("market_id", "aggregator_id", "bid_id", "interval_start", "settlement", "kw", "price", "amount", "currency", "resource_id", "kvar", "reactive_price", "kind")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_ID_FIELD_NUMBER: _ClassVar[int]
    BID_ID_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENT_FIELD_NUMBER: _ClassVar[int]
    KW_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    KVAR_FIELD_NUMBER: _ClassVar[int]
    REACTIVE_PRICE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    aggregator_id: str
    bid_id: str
    interval_start: _timestamp_pb2.Timestamp
    settlement: _common_pb2.MarketKind
    kw: float
    price: str
    amount: str
    currency: str
    resource_id: str
    kvar: float
    reactive_price: str
    kind: StatementKind
    def __init__(self, market_id: _Optional[str] = ..., aggregator_id: _Optional[str] = ..., bid_id: _Optional[str] = ..., interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., settlement: _Optional[_Union[_common_pb2.MarketKind, str]] = ..., kw: _Optional[float] = ..., price: _Optional[str] = ..., amount: _Optional[str] = ..., currency: _Optional[str] = ..., resource_id: _Optional[str] = ..., kvar: _Optional[float] = ..., reactive_price: _Optional[str] = ..., kind: _Optional[_Union[StatementKind, str]] = ...) -> None: ...

class DispatchFilter(_message.Message):
    __slots__ = ("market_id", "aggregator_id")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_ID_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    aggregator_id: str
    def __init__(self, market_id: _Optional[str] = ..., aggregator_id: _Optional[str] = ...) -> None: ...

class DispatchEvent(_message.Message):
    __slots__ = ("sequence", "award", "instruction")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    AWARD_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    award: Award
    instruction: Instruction
    def __init__(self, sequence: _Optional[int] = ..., award: _Optional[_Union[Award, _Mapping]] = ..., instruction: _Optional[_Union[Instruction, _Mapping]] = ...) -> None: ...

class RegisterResourcesRequest(_message.Message):
    __slots__ = ("request_id", "resources")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    resources: _containers.RepeatedCompositeFieldContainer[Resource]
    def __init__(self, request_id: _Optional[str] = ..., resources: _Optional[_Iterable[_Union[Resource, _Mapping]]] = ...) -> None: ...

class RegisterResourcesResponse(_message.Message):
    __slots__ = ("registered",)
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    registered: int
    def __init__(self, registered: _Optional[int] = ...) -> None: ...

class ResourceFilter(_message.Message):
    __slots__ = ("aggregator_id", "feeder_id")
    AGGREGATOR_ID_FIELD_NUMBER: _ClassVar[int]
    FEEDER_ID_FIELD_NUMBER: _ClassVar[int]
    aggregator_id: str
    feeder_id: str
    def __init__(self, aggregator_id: _Optional[str] = ..., feeder_id: _Optional[str] = ...) -> None: ...

class ListResourcesRequest(_message.Message):
    __slots__ = ("filter", "pagination")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    filter: ResourceFilter
    pagination: _common_pb2.PaginationParams
    def __init__(self, filter: _Optional[_Union[ResourceFilter, _Mapping]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationParams, _Mapping]] = ...) -> None: ...

class ListResourcesResponse(_message.Message):
    __slots__ = ("resources", "pagination")
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    resources: _containers.RepeatedCompositeFieldContainer[Resource]
    pagination: _common_pb2.PaginationInfo
    def __init__(self, resources: _Optional[_Iterable[_Union[Resource, _Mapping]]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationInfo, _Mapping]] = ...) -> None: ...

class SubmitBidsRequest(_message.Message):
    __slots__ = ("market_id", "request_id", "bids")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BIDS_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    request_id: str
    bids: BidColumns
    def __init__(self, market_id: _Optional[str] = ..., request_id: _Optional[str] = ..., bids: _Optional[_Union[BidColumns, _Mapping]] = ...) -> None: ...

class SubmitBidsResponse(_message.Message):
    __slots__ = ("accepted", "acknowledged_at")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_AT_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    acknowledged_at: _timestamp_pb2.Timestamp
    def __init__(self, accepted: _Optional[int] = ..., acknowledged_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReplaceBidsRequest(_message.Message):
    __slots__ = ("market_id", "request_id", "bids")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BIDS_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    request_id: str
    bids: BidColumns
    def __init__(self, market_id: _Optional[str] = ..., request_id: _Optional[str] = ..., bids: _Optional[_Union[BidColumns, _Mapping]] = ...) -> None: ...

class ReplaceBidsResponse(_message.Message):
    __slots__ = ("replaced", "acknowledged_at")
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_AT_FIELD_NUMBER: _ClassVar[int]
    replaced: int
    acknowledged_at: _timestamp_pb2.Timestamp
    def __init__(self, replaced: _Optional[int] = ..., acknowledged_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WithdrawBidsRequest(_message.Message):
    __slots__ = ("market_id", "request_id", "bid_ids")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BID_IDS_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    request_id: str
    bid_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, market_id: _Optional[str] = ..., request_id: _Optional[str] = ..., bid_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class WithdrawBidsResponse(_message.Message):
    __slots__ = ("withdrawn", "acknowledged_at")
    WITHDRAWN_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_AT_FIELD_NUMBER: _ClassVar[int]
    withdrawn: int
    acknowledged_at: _timestamp_pb2.Timestamp
    def __init__(self, withdrawn: _Optional[int] = ..., acknowledged_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class BidFilter(_message.Message):
    __slots__ = ("market_id", "aggregator_id", "include_withdrawn")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_WITHDRAWN_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    aggregator_id: str
    include_withdrawn: bool
    def __init__(self, market_id: _Optional[str] = ..., aggregator_id: _Optional[str] = ..., include_withdrawn: _Optional[bool] = ...) -> None: ...

class ListBidsRequest(_message.Message):
    __slots__ = ("filter", "pagination")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    filter: BidFilter
    pagination: _common_pb2.PaginationParams
    def __init__(self, filter: _Optional[_Union[BidFilter, _Mapping]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationParams, _Mapping]] = ...) -> None: ...

class ListBidsResponse(_message.Message):
    __slots__ = ("bids", "pagination")
    BIDS_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    bids: _containers.RepeatedCompositeFieldContainer[Bid]
    pagination: _common_pb2.PaginationInfo
    def __init__(self, bids: _Optional[_Iterable[_Union[Bid, _Mapping]]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationInfo, _Mapping]] = ...) -> None: ...

class ListAwardsRequest(_message.Message):
    __slots__ = ("filter", "pagination")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    filter: DispatchFilter
    pagination: _common_pb2.PaginationParams
    def __init__(self, filter: _Optional[_Union[DispatchFilter, _Mapping]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationParams, _Mapping]] = ...) -> None: ...

class ListAwardsResponse(_message.Message):
    __slots__ = ("awards", "pagination")
    AWARDS_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    awards: _containers.RepeatedCompositeFieldContainer[Award]
    pagination: _common_pb2.PaginationInfo
    def __init__(self, awards: _Optional[_Iterable[_Union[Award, _Mapping]]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationInfo, _Mapping]] = ...) -> None: ...

class ListInstructionsRequest(_message.Message):
    __slots__ = ("filter", "pagination")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    filter: DispatchFilter
    pagination: _common_pb2.PaginationParams
    def __init__(self, filter: _Optional[_Union[DispatchFilter, _Mapping]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationParams, _Mapping]] = ...) -> None: ...

class ListInstructionsResponse(_message.Message):
    __slots__ = ("instructions", "pagination")
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    instructions: _containers.RepeatedCompositeFieldContainer[Instruction]
    pagination: _common_pb2.PaginationInfo
    def __init__(self, instructions: _Optional[_Iterable[_Union[Instruction, _Mapping]]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationInfo, _Mapping]] = ...) -> None: ...

class ListStatementsRequest(_message.Message):
    __slots__ = ("filter", "pagination")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    filter: DispatchFilter
    pagination: _common_pb2.PaginationParams
    def __init__(self, filter: _Optional[_Union[DispatchFilter, _Mapping]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationParams, _Mapping]] = ...) -> None: ...

class ListStatementsResponse(_message.Message):
    __slots__ = ("statements", "pagination")
    STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    statements: _containers.RepeatedCompositeFieldContainer[Statement]
    pagination: _common_pb2.PaginationInfo
    def __init__(self, statements: _Optional[_Iterable[_Union[Statement, _Mapping]]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationInfo, _Mapping]] = ...) -> None: ...

class ReceiveDispatchStreamRequest(_message.Message):
    __slots__ = ("filter", "after_sequence")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    filter: DispatchFilter
    after_sequence: int
    def __init__(self, filter: _Optional[_Union[DispatchFilter, _Mapping]] = ..., after_sequence: _Optional[int] = ...) -> None: ...
