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

class FlexNeedKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FLEX_NEED_KIND_UNSPECIFIED: _ClassVar[FlexNeedKind]
    FLEX_NEED_KIND_LINE: _ClassVar[FlexNeedKind]
    FLEX_NEED_KIND_VOLTAGE: _ClassVar[FlexNeedKind]
    FLEX_NEED_KIND_IMPORT: _ClassVar[FlexNeedKind]

class FlexNeedDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FLEX_NEED_DIRECTION_UNSPECIFIED: _ClassVar[FlexNeedDirection]
    FLEX_NEED_DIRECTION_FORWARD: _ClassVar[FlexNeedDirection]
    FLEX_NEED_DIRECTION_REVERSE: _ClassVar[FlexNeedDirection]
    FLEX_NEED_DIRECTION_RAISE: _ClassVar[FlexNeedDirection]
    FLEX_NEED_DIRECTION_LOWER: _ClassVar[FlexNeedDirection]

class FlexDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FLEX_DIRECTION_UNSPECIFIED: _ClassVar[FlexDirection]
    FLEX_DIRECTION_UP: _ClassVar[FlexDirection]
    FLEX_DIRECTION_DOWN: _ClassVar[FlexDirection]

class FlexPricing(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FLEX_PRICING_UNSPECIFIED: _ClassVar[FlexPricing]
    FLEX_PRICING_PAY_AS_BID: _ClassVar[FlexPricing]
    FLEX_PRICING_UNIFORM: _ClassVar[FlexPricing]

class FlexOfferStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FLEX_OFFER_STATUS_UNSPECIFIED: _ClassVar[FlexOfferStatus]
    FLEX_OFFER_STATUS_ACTIVE: _ClassVar[FlexOfferStatus]
    FLEX_OFFER_STATUS_WITHDRAWN: _ClassVar[FlexOfferStatus]

class FlexAwardReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FLEX_AWARD_REASON_UNSPECIFIED: _ClassVar[FlexAwardReason]
    FLEX_AWARD_REASON_ACCEPTED: _ClassVar[FlexAwardReason]
    FLEX_AWARD_REASON_PRICE: _ClassVar[FlexAwardReason]
    FLEX_AWARD_REASON_LOCATION: _ClassVar[FlexAwardReason]
    FLEX_AWARD_REASON_CAPABILITY: _ClassVar[FlexAwardReason]
    FLEX_AWARD_REASON_NOT_NEEDED: _ClassVar[FlexAwardReason]
    FLEX_AWARD_REASON_MIN_KW: _ClassVar[FlexAwardReason]
FLEX_NEED_KIND_UNSPECIFIED: FlexNeedKind
FLEX_NEED_KIND_LINE: FlexNeedKind
FLEX_NEED_KIND_VOLTAGE: FlexNeedKind
FLEX_NEED_KIND_IMPORT: FlexNeedKind
FLEX_NEED_DIRECTION_UNSPECIFIED: FlexNeedDirection
FLEX_NEED_DIRECTION_FORWARD: FlexNeedDirection
FLEX_NEED_DIRECTION_REVERSE: FlexNeedDirection
FLEX_NEED_DIRECTION_RAISE: FlexNeedDirection
FLEX_NEED_DIRECTION_LOWER: FlexNeedDirection
FLEX_DIRECTION_UNSPECIFIED: FlexDirection
FLEX_DIRECTION_UP: FlexDirection
FLEX_DIRECTION_DOWN: FlexDirection
FLEX_PRICING_UNSPECIFIED: FlexPricing
FLEX_PRICING_PAY_AS_BID: FlexPricing
FLEX_PRICING_UNIFORM: FlexPricing
FLEX_OFFER_STATUS_UNSPECIFIED: FlexOfferStatus
FLEX_OFFER_STATUS_ACTIVE: FlexOfferStatus
FLEX_OFFER_STATUS_WITHDRAWN: FlexOfferStatus
FLEX_AWARD_REASON_UNSPECIFIED: FlexAwardReason
FLEX_AWARD_REASON_ACCEPTED: FlexAwardReason
FLEX_AWARD_REASON_PRICE: FlexAwardReason
FLEX_AWARD_REASON_LOCATION: FlexAwardReason
FLEX_AWARD_REASON_CAPABILITY: FlexAwardReason
FLEX_AWARD_REASON_NOT_NEEDED: FlexAwardReason
FLEX_AWARD_REASON_MIN_KW: FlexAwardReason

class FlexNeed(_message.Message):
    __slots__ = ("need_id", "kind", "element", "direction", "interval_start", "required_kw", "required_pu", "max_price", "partial_ok", "market_id", "posted_at")
    NEED_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ELEMENT_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_KW_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_PU_FIELD_NUMBER: _ClassVar[int]
    MAX_PRICE_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_OK_FIELD_NUMBER: _ClassVar[int]
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    POSTED_AT_FIELD_NUMBER: _ClassVar[int]
    need_id: str
    kind: FlexNeedKind
    element: str
    direction: FlexNeedDirection
    interval_start: _timestamp_pb2.Timestamp
    required_kw: float
    required_pu: float
    max_price: str
    partial_ok: bool
    market_id: str
    posted_at: _timestamp_pb2.Timestamp
    def __init__(self, need_id: _Optional[str] = ..., kind: _Optional[_Union[FlexNeedKind, str]] = ..., element: _Optional[str] = ..., direction: _Optional[_Union[FlexNeedDirection, str]] = ..., interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., required_kw: _Optional[float] = ..., required_pu: _Optional[float] = ..., max_price: _Optional[str] = ..., partial_ok: _Optional[bool] = ..., market_id: _Optional[str] = ..., posted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class FlexOfferColumns(_message.Message):
    __slots__ = ("offer_id", "resource_id", "direction", "quantity_kw", "price", "interval_starts", "interval_index", "availability_price", "divisible", "min_kw", "tan_phi")
    OFFER_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_KW_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_STARTS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_INDEX_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_PRICE_FIELD_NUMBER: _ClassVar[int]
    DIVISIBLE_FIELD_NUMBER: _ClassVar[int]
    MIN_KW_FIELD_NUMBER: _ClassVar[int]
    TAN_PHI_FIELD_NUMBER: _ClassVar[int]
    offer_id: _containers.RepeatedScalarFieldContainer[str]
    resource_id: _containers.RepeatedScalarFieldContainer[str]
    direction: _containers.RepeatedScalarFieldContainer[FlexDirection]
    quantity_kw: _containers.RepeatedScalarFieldContainer[float]
    price: _containers.RepeatedScalarFieldContainer[str]
    interval_starts: _containers.RepeatedCompositeFieldContainer[_timestamp_pb2.Timestamp]
    interval_index: _containers.RepeatedScalarFieldContainer[int]
    availability_price: _containers.RepeatedScalarFieldContainer[str]
    divisible: _containers.RepeatedScalarFieldContainer[bool]
    min_kw: _containers.RepeatedScalarFieldContainer[float]
    tan_phi: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, offer_id: _Optional[_Iterable[str]] = ..., resource_id: _Optional[_Iterable[str]] = ..., direction: _Optional[_Iterable[_Union[FlexDirection, str]]] = ..., quantity_kw: _Optional[_Iterable[float]] = ..., price: _Optional[_Iterable[str]] = ..., interval_starts: _Optional[_Iterable[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]]] = ..., interval_index: _Optional[_Iterable[int]] = ..., availability_price: _Optional[_Iterable[str]] = ..., divisible: _Optional[_Iterable[bool]] = ..., min_kw: _Optional[_Iterable[float]] = ..., tan_phi: _Optional[_Iterable[float]] = ...) -> None: ...

class FlexOffer(_message.Message):
    __slots__ = ("market_id", "aggregator_id", "offer_id", "resource_id", "bus", "interval_start", "direction", "quantity_kw", "price", "availability_price", "divisible", "min_kw", "tan_phi", "status", "updated_at")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_ID_FIELD_NUMBER: _ClassVar[int]
    OFFER_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    BUS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_KW_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_PRICE_FIELD_NUMBER: _ClassVar[int]
    DIVISIBLE_FIELD_NUMBER: _ClassVar[int]
    MIN_KW_FIELD_NUMBER: _ClassVar[int]
    TAN_PHI_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    aggregator_id: str
    offer_id: str
    resource_id: str
    bus: str
    interval_start: _timestamp_pb2.Timestamp
    direction: FlexDirection
    quantity_kw: float
    price: str
    availability_price: str
    divisible: bool
    min_kw: float
    tan_phi: float
    status: FlexOfferStatus
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, market_id: _Optional[str] = ..., aggregator_id: _Optional[str] = ..., offer_id: _Optional[str] = ..., resource_id: _Optional[str] = ..., bus: _Optional[str] = ..., interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., direction: _Optional[_Union[FlexDirection, str]] = ..., quantity_kw: _Optional[float] = ..., price: _Optional[str] = ..., availability_price: _Optional[str] = ..., divisible: _Optional[bool] = ..., min_kw: _Optional[float] = ..., tan_phi: _Optional[float] = ..., status: _Optional[_Union[FlexOfferStatus, str]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class FlexAward(_message.Message):
    __slots__ = ("market_id", "aggregator_id", "offer_id", "resource_id", "bus", "interval_start", "direction", "quantity_kw", "accepted_kw", "price", "payment", "currency", "reason", "conflict", "need_ids")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_ID_FIELD_NUMBER: _ClassVar[int]
    OFFER_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    BUS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_KW_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_KW_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CONFLICT_FIELD_NUMBER: _ClassVar[int]
    NEED_IDS_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    aggregator_id: str
    offer_id: str
    resource_id: str
    bus: str
    interval_start: _timestamp_pb2.Timestamp
    direction: FlexDirection
    quantity_kw: float
    accepted_kw: float
    price: str
    payment: str
    currency: str
    reason: FlexAwardReason
    conflict: bool
    need_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, market_id: _Optional[str] = ..., aggregator_id: _Optional[str] = ..., offer_id: _Optional[str] = ..., resource_id: _Optional[str] = ..., bus: _Optional[str] = ..., interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., direction: _Optional[_Union[FlexDirection, str]] = ..., quantity_kw: _Optional[float] = ..., accepted_kw: _Optional[float] = ..., price: _Optional[str] = ..., payment: _Optional[str] = ..., currency: _Optional[str] = ..., reason: _Optional[_Union[FlexAwardReason, str]] = ..., conflict: _Optional[bool] = ..., need_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class FlexNeedResult(_message.Message):
    __slots__ = ("market_id", "need_id", "kind", "element", "interval_start", "met", "shortfall", "shortfall_kw", "cost", "marginal_price", "currency")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    NEED_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ELEMENT_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    MET_FIELD_NUMBER: _ClassVar[int]
    SHORTFALL_FIELD_NUMBER: _ClassVar[int]
    SHORTFALL_KW_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    MARGINAL_PRICE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    need_id: str
    kind: FlexNeedKind
    element: str
    interval_start: _timestamp_pb2.Timestamp
    met: bool
    shortfall: float
    shortfall_kw: float
    cost: str
    marginal_price: str
    currency: str
    def __init__(self, market_id: _Optional[str] = ..., need_id: _Optional[str] = ..., kind: _Optional[_Union[FlexNeedKind, str]] = ..., element: _Optional[str] = ..., interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., met: _Optional[bool] = ..., shortfall: _Optional[float] = ..., shortfall_kw: _Optional[float] = ..., cost: _Optional[str] = ..., marginal_price: _Optional[str] = ..., currency: _Optional[str] = ...) -> None: ...

class PostNeedsRequest(_message.Message):
    __slots__ = ("market_id", "request_id", "needs")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NEEDS_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    request_id: str
    needs: _containers.RepeatedCompositeFieldContainer[FlexNeed]
    def __init__(self, market_id: _Optional[str] = ..., request_id: _Optional[str] = ..., needs: _Optional[_Iterable[_Union[FlexNeed, _Mapping]]] = ...) -> None: ...

class PostNeedsResponse(_message.Message):
    __slots__ = ("posted", "acknowledged_at")
    POSTED_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_AT_FIELD_NUMBER: _ClassVar[int]
    posted: int
    acknowledged_at: _timestamp_pb2.Timestamp
    def __init__(self, posted: _Optional[int] = ..., acknowledged_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class FlexNeedFilter(_message.Message):
    __slots__ = ("market_id",)
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    def __init__(self, market_id: _Optional[str] = ...) -> None: ...

class ListNeedsRequest(_message.Message):
    __slots__ = ("filter", "pagination")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    filter: FlexNeedFilter
    pagination: _common_pb2.PaginationParams
    def __init__(self, filter: _Optional[_Union[FlexNeedFilter, _Mapping]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationParams, _Mapping]] = ...) -> None: ...

class ListNeedsResponse(_message.Message):
    __slots__ = ("needs", "pagination")
    NEEDS_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    needs: _containers.RepeatedCompositeFieldContainer[FlexNeed]
    pagination: _common_pb2.PaginationInfo
    def __init__(self, needs: _Optional[_Iterable[_Union[FlexNeed, _Mapping]]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationInfo, _Mapping]] = ...) -> None: ...

class SubmitFlexOffersRequest(_message.Message):
    __slots__ = ("market_id", "request_id", "offers")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OFFERS_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    request_id: str
    offers: FlexOfferColumns
    def __init__(self, market_id: _Optional[str] = ..., request_id: _Optional[str] = ..., offers: _Optional[_Union[FlexOfferColumns, _Mapping]] = ...) -> None: ...

class SubmitFlexOffersResponse(_message.Message):
    __slots__ = ("accepted", "acknowledged_at")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_AT_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    acknowledged_at: _timestamp_pb2.Timestamp
    def __init__(self, accepted: _Optional[int] = ..., acknowledged_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WithdrawFlexOffersRequest(_message.Message):
    __slots__ = ("market_id", "request_id", "offer_ids")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OFFER_IDS_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    request_id: str
    offer_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, market_id: _Optional[str] = ..., request_id: _Optional[str] = ..., offer_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class WithdrawFlexOffersResponse(_message.Message):
    __slots__ = ("withdrawn", "acknowledged_at")
    WITHDRAWN_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_AT_FIELD_NUMBER: _ClassVar[int]
    withdrawn: int
    acknowledged_at: _timestamp_pb2.Timestamp
    def __init__(self, withdrawn: _Optional[int] = ..., acknowledged_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class FlexOfferFilter(_message.Message):
    __slots__ = ("market_id", "aggregator_id", "include_withdrawn")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_WITHDRAWN_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    aggregator_id: str
    include_withdrawn: bool
    def __init__(self, market_id: _Optional[str] = ..., aggregator_id: _Optional[str] = ..., include_withdrawn: _Optional[bool] = ...) -> None: ...

class ListFlexOffersRequest(_message.Message):
    __slots__ = ("filter", "pagination")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    filter: FlexOfferFilter
    pagination: _common_pb2.PaginationParams
    def __init__(self, filter: _Optional[_Union[FlexOfferFilter, _Mapping]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationParams, _Mapping]] = ...) -> None: ...

class ListFlexOffersResponse(_message.Message):
    __slots__ = ("offers", "pagination")
    OFFERS_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    offers: _containers.RepeatedCompositeFieldContainer[FlexOffer]
    pagination: _common_pb2.PaginationInfo
    def __init__(self, offers: _Optional[_Iterable[_Union[FlexOffer, _Mapping]]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationInfo, _Mapping]] = ...) -> None: ...

class ClearFlexibilityRequest(_message.Message):
    __slots__ = ("market_id", "pricing")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    PRICING_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    pricing: FlexPricing
    def __init__(self, market_id: _Optional[str] = ..., pricing: _Optional[_Union[FlexPricing, str]] = ...) -> None: ...

class ClearFlexibilityResponse(_message.Message):
    __slots__ = ("market_id", "status", "pricing", "total_cost", "shortfall_cost", "currency", "need_count", "needs_met", "offer_count", "offers_accepted", "accepted_kw", "solve_seconds")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PRICING_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_FIELD_NUMBER: _ClassVar[int]
    SHORTFALL_COST_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    NEED_COUNT_FIELD_NUMBER: _ClassVar[int]
    NEEDS_MET_FIELD_NUMBER: _ClassVar[int]
    OFFER_COUNT_FIELD_NUMBER: _ClassVar[int]
    OFFERS_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_KW_FIELD_NUMBER: _ClassVar[int]
    SOLVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    status: _common_pb2.ClearingStatus
    pricing: FlexPricing
    total_cost: str
    shortfall_cost: str
    currency: str
    need_count: int
    needs_met: int
    offer_count: int
    offers_accepted: int
    accepted_kw: float
    solve_seconds: float
    def __init__(self, market_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.ClearingStatus, str]] = ..., pricing: _Optional[_Union[FlexPricing, str]] = ..., total_cost: _Optional[str] = ..., shortfall_cost: _Optional[str] = ..., currency: _Optional[str] = ..., need_count: _Optional[int] = ..., needs_met: _Optional[int] = ..., offer_count: _Optional[int] = ..., offers_accepted: _Optional[int] = ..., accepted_kw: _Optional[float] = ..., solve_seconds: _Optional[float] = ...) -> None: ...

class FlexAwardFilter(_message.Message):
    __slots__ = ("market_id", "aggregator_id")
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_ID_FIELD_NUMBER: _ClassVar[int]
    market_id: str
    aggregator_id: str
    def __init__(self, market_id: _Optional[str] = ..., aggregator_id: _Optional[str] = ...) -> None: ...

class ListFlexAwardsRequest(_message.Message):
    __slots__ = ("filter", "pagination")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    filter: FlexAwardFilter
    pagination: _common_pb2.PaginationParams
    def __init__(self, filter: _Optional[_Union[FlexAwardFilter, _Mapping]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationParams, _Mapping]] = ...) -> None: ...

class ListFlexAwardsResponse(_message.Message):
    __slots__ = ("awards", "pagination")
    AWARDS_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    awards: _containers.RepeatedCompositeFieldContainer[FlexAward]
    pagination: _common_pb2.PaginationInfo
    def __init__(self, awards: _Optional[_Iterable[_Union[FlexAward, _Mapping]]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationInfo, _Mapping]] = ...) -> None: ...

class ListFlexNeedResultsRequest(_message.Message):
    __slots__ = ("filter", "pagination")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    filter: FlexNeedFilter
    pagination: _common_pb2.PaginationParams
    def __init__(self, filter: _Optional[_Union[FlexNeedFilter, _Mapping]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationParams, _Mapping]] = ...) -> None: ...

class ListFlexNeedResultsResponse(_message.Message):
    __slots__ = ("results", "pagination")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[FlexNeedResult]
    pagination: _common_pb2.PaginationInfo
    def __init__(self, results: _Optional[_Iterable[_Union[FlexNeedResult, _Mapping]]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationInfo, _Mapping]] = ...) -> None: ...
