from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_OPERATOR: _ClassVar[Role]
    ROLE_AGGREGATOR: _ClassVar[Role]
    ROLE_ISO: _ClassVar[Role]
    ROLE_AUDITOR: _ClassVar[Role]

class Side(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIDE_UNSPECIFIED: _ClassVar[Side]
    SIDE_BUY: _ClassVar[Side]
    SIDE_SELL: _ClassVar[Side]

class MarketKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MARKET_KIND_UNSPECIFIED: _ClassVar[MarketKind]
    MARKET_KIND_DAY_AHEAD: _ClassVar[MarketKind]
    MARKET_KIND_REAL_TIME: _ClassVar[MarketKind]
    MARKET_KIND_HOUR_AHEAD: _ClassVar[MarketKind]

class MarketState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MARKET_STATE_UNSPECIFIED: _ClassVar[MarketState]
    MARKET_STATE_OPEN: _ClassVar[MarketState]
    MARKET_STATE_CLOSED: _ClassVar[MarketState]
    MARKET_STATE_CLEARED: _ClassVar[MarketState]
    MARKET_STATE_PUBLISHED: _ClassVar[MarketState]
    MARKET_STATE_AWARDED: _ClassVar[MarketState]
    MARKET_STATE_SETTLED: _ClassVar[MarketState]

class ResourceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESOURCE_KIND_UNSPECIFIED: _ClassVar[ResourceKind]
    RESOURCE_KIND_PV: _ClassVar[ResourceKind]
    RESOURCE_KIND_BATTERY: _ClassVar[ResourceKind]
    RESOURCE_KIND_EV: _ClassVar[ResourceKind]
    RESOURCE_KIND_FLEXIBLE_LOAD: _ClassVar[ResourceKind]

class ClearingStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLEARING_STATUS_UNSPECIFIED: _ClassVar[ClearingStatus]
    CLEARING_STATUS_OPTIMAL: _ClassVar[ClearingStatus]
    CLEARING_STATUS_INFEASIBLE: _ClassVar[ClearingStatus]
    CLEARING_STATUS_UNBOUNDED: _ClassVar[ClearingStatus]
    CLEARING_STATUS_TIME_LIMIT: _ClassVar[ClearingStatus]
    CLEARING_STATUS_ERROR: _ClassVar[ClearingStatus]
ROLE_UNSPECIFIED: Role
ROLE_OPERATOR: Role
ROLE_AGGREGATOR: Role
ROLE_ISO: Role
ROLE_AUDITOR: Role
SIDE_UNSPECIFIED: Side
SIDE_BUY: Side
SIDE_SELL: Side
MARKET_KIND_UNSPECIFIED: MarketKind
MARKET_KIND_DAY_AHEAD: MarketKind
MARKET_KIND_REAL_TIME: MarketKind
MARKET_KIND_HOUR_AHEAD: MarketKind
MARKET_STATE_UNSPECIFIED: MarketState
MARKET_STATE_OPEN: MarketState
MARKET_STATE_CLOSED: MarketState
MARKET_STATE_CLEARED: MarketState
MARKET_STATE_PUBLISHED: MarketState
MARKET_STATE_AWARDED: MarketState
MARKET_STATE_SETTLED: MarketState
RESOURCE_KIND_UNSPECIFIED: ResourceKind
RESOURCE_KIND_PV: ResourceKind
RESOURCE_KIND_BATTERY: ResourceKind
RESOURCE_KIND_EV: ResourceKind
RESOURCE_KIND_FLEXIBLE_LOAD: ResourceKind
CLEARING_STATUS_UNSPECIFIED: ClearingStatus
CLEARING_STATUS_OPTIMAL: ClearingStatus
CLEARING_STATUS_INFEASIBLE: ClearingStatus
CLEARING_STATUS_UNBOUNDED: ClearingStatus
CLEARING_STATUS_TIME_LIMIT: ClearingStatus
CLEARING_STATUS_ERROR: ClearingStatus

class PaginationParams(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class PaginationInfo(_message.Message):
    __slots__ = ("next_page_token",)
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    next_page_token: str
    def __init__(self, next_page_token: _Optional[str] = ...) -> None: ...
