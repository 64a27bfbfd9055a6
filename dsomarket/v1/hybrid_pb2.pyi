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

class DerStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DER_STATUS_UNSPECIFIED: _ClassVar[DerStatus]
    DER_STATUS_PENDING: _ClassVar[DerStatus]
    DER_STATUS_APPROVED: _ClassVar[DerStatus]
    DER_STATUS_APPROVED_WITH_LIMITS: _ClassVar[DerStatus]
    DER_STATUS_REFUSED: _ClassVar[DerStatus]
    DER_STATUS_RETIRED: _ClassVar[DerStatus]
DER_STATUS_UNSPECIFIED: DerStatus
DER_STATUS_PENDING: DerStatus
DER_STATUS_APPROVED: DerStatus
DER_STATUS_APPROVED_WITH_LIMITS: DerStatus
DER_STATUS_REFUSED: DerStatus
DER_STATUS_RETIRED: DerStatus

class Der(_message.Message):
    __slots__ = ("der_id", "kind", "feeder_id", "bus", "aggregation_id", "owner", "jurisdiction", "export_kw", "import_kw", "energy_kwh", "soc_min_kwh", "soc_init_kwh", "tan_phi", "metering", "control", "aggregator_id", "status", "export_limit_kw", "import_limit_kw", "reason", "updated_at", "services", "approved_services")
    DER_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FEEDER_ID_FIELD_NUMBER: _ClassVar[int]
    BUS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    JURISDICTION_FIELD_NUMBER: _ClassVar[int]
    EXPORT_KW_FIELD_NUMBER: _ClassVar[int]
    IMPORT_KW_FIELD_NUMBER: _ClassVar[int]
    ENERGY_KWH_FIELD_NUMBER: _ClassVar[int]
    SOC_MIN_KWH_FIELD_NUMBER: _ClassVar[int]
    SOC_INIT_KWH_FIELD_NUMBER: _ClassVar[int]
    TAN_PHI_FIELD_NUMBER: _ClassVar[int]
    METERING_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EXPORT_LIMIT_KW_FIELD_NUMBER: _ClassVar[int]
    IMPORT_LIMIT_KW_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    APPROVED_SERVICES_FIELD_NUMBER: _ClassVar[int]
    der_id: str
    kind: str
    feeder_id: str
    bus: str
    aggregation_id: str
    owner: str
    jurisdiction: str
    export_kw: float
    import_kw: float
    energy_kwh: float
    soc_min_kwh: float
    soc_init_kwh: float
    tan_phi: float
    metering: str
    control: str
    aggregator_id: str
    status: DerStatus
    export_limit_kw: float
    import_limit_kw: float
    reason: str
    updated_at: _timestamp_pb2.Timestamp
    services: _containers.RepeatedScalarFieldContainer[str]
    approved_services: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, der_id: _Optional[str] = ..., kind: _Optional[str] = ..., feeder_id: _Optional[str] = ..., bus: _Optional[str] = ..., aggregation_id: _Optional[str] = ..., owner: _Optional[str] = ..., jurisdiction: _Optional[str] = ..., export_kw: _Optional[float] = ..., import_kw: _Optional[float] = ..., energy_kwh: _Optional[float] = ..., soc_min_kwh: _Optional[float] = ..., soc_init_kwh: _Optional[float] = ..., tan_phi: _Optional[float] = ..., metering: _Optional[str] = ..., control: _Optional[str] = ..., aggregator_id: _Optional[str] = ..., status: _Optional[_Union[DerStatus, str]] = ..., export_limit_kw: _Optional[float] = ..., import_limit_kw: _Optional[float] = ..., reason: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., services: _Optional[_Iterable[str]] = ..., approved_services: _Optional[_Iterable[str]] = ...) -> None: ...

class RegisterDersRequest(_message.Message):
    __slots__ = ("ders", "request_id")
    DERS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ders: _containers.RepeatedCompositeFieldContainer[Der]
    request_id: str
    def __init__(self, ders: _Optional[_Iterable[_Union[Der, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class RegisterDersResponse(_message.Message):
    __slots__ = ("ders",)
    DERS_FIELD_NUMBER: _ClassVar[int]
    ders: _containers.RepeatedCompositeFieldContainer[Der]
    def __init__(self, ders: _Optional[_Iterable[_Union[Der, _Mapping]]] = ...) -> None: ...

class RetireDerRequest(_message.Message):
    __slots__ = ("der_id", "reason")
    DER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    der_id: str
    reason: str
    def __init__(self, der_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RetireDerResponse(_message.Message):
    __slots__ = ("der",)
    DER_FIELD_NUMBER: _ClassVar[int]
    der: Der
    def __init__(self, der: _Optional[_Union[Der, _Mapping]] = ...) -> None: ...

class ListDersRequest(_message.Message):
    __slots__ = ("feeder_id", "pagination")
    FEEDER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    feeder_id: str
    pagination: _common_pb2.PaginationParams
    def __init__(self, feeder_id: _Optional[str] = ..., pagination: _Optional[_Union[_common_pb2.PaginationParams, _Mapping]] = ...) -> None: ...

class ListDersResponse(_message.Message):
    __slots__ = ("ders", "pagination")
    DERS_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    ders: _containers.RepeatedCompositeFieldContainer[Der]
    pagination: _common_pb2.PaginationInfo
    def __init__(self, ders: _Optional[_Iterable[_Union[Der, _Mapping]]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationInfo, _Mapping]] = ...) -> None: ...

class PrequalifyDersRequest(_message.Message):
    __slots__ = ("feeder_id", "min_useful_kw")
    FEEDER_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_USEFUL_KW_FIELD_NUMBER: _ClassVar[int]
    feeder_id: str
    min_useful_kw: float
    def __init__(self, feeder_id: _Optional[str] = ..., min_useful_kw: _Optional[float] = ...) -> None: ...

class PrequalifyDersResponse(_message.Message):
    __slots__ = ("ders", "ac_check_passed")
    DERS_FIELD_NUMBER: _ClassVar[int]
    AC_CHECK_PASSED_FIELD_NUMBER: _ClassVar[int]
    ders: _containers.RepeatedCompositeFieldContainer[Der]
    ac_check_passed: bool
    def __init__(self, ders: _Optional[_Iterable[_Union[Der, _Mapping]]] = ..., ac_check_passed: _Optional[bool] = ...) -> None: ...

class DirectSchedule(_message.Message):
    __slots__ = ("participant_id", "bus", "interval_start", "p_kw")
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    BUS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    P_KW_FIELD_NUMBER: _ClassVar[int]
    participant_id: str
    bus: str
    interval_start: _timestamp_pb2.Timestamp
    p_kw: float
    def __init__(self, participant_id: _Optional[str] = ..., bus: _Optional[str] = ..., interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., p_kw: _Optional[float] = ...) -> None: ...

class SubmitDirectSchedulesRequest(_message.Message):
    __slots__ = ("feeder_id", "schedules", "request_id", "interval_minutes")
    FEEDER_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MINUTES_FIELD_NUMBER: _ClassVar[int]
    feeder_id: str
    schedules: _containers.RepeatedCompositeFieldContainer[DirectSchedule]
    request_id: str
    interval_minutes: int
    def __init__(self, feeder_id: _Optional[str] = ..., schedules: _Optional[_Iterable[_Union[DirectSchedule, _Mapping]]] = ..., request_id: _Optional[str] = ..., interval_minutes: _Optional[int] = ...) -> None: ...

class SubmitDirectSchedulesResponse(_message.Message):
    __slots__ = ("stored",)
    STORED_FIELD_NUMBER: _ClassVar[int]
    stored: int
    def __init__(self, stored: _Optional[int] = ...) -> None: ...

class CheckDeliverabilityRequest(_message.Message):
    __slots__ = ("feeder_id", "rule", "exclude_dso_awards")
    FEEDER_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_DSO_AWARDS_FIELD_NUMBER: _ClassVar[int]
    feeder_id: str
    rule: str
    exclude_dso_awards: bool
    def __init__(self, feeder_id: _Optional[str] = ..., rule: _Optional[str] = ..., exclude_dso_awards: _Optional[bool] = ...) -> None: ...

class DirectBid(_message.Message):
    __slots__ = ("participant_id", "bus", "interval_start", "side", "quantity_kw", "price")
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    BUS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_KW_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    participant_id: str
    bus: str
    interval_start: _timestamp_pb2.Timestamp
    side: _common_pb2.Side
    quantity_kw: float
    price: str
    def __init__(self, participant_id: _Optional[str] = ..., bus: _Optional[str] = ..., interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., side: _Optional[_Union[_common_pb2.Side, str]] = ..., quantity_kw: _Optional[float] = ..., price: _Optional[str] = ...) -> None: ...

class SubmitDirectBidsRequest(_message.Message):
    __slots__ = ("feeder_id", "bids", "request_id")
    FEEDER_ID_FIELD_NUMBER: _ClassVar[int]
    BIDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    feeder_id: str
    bids: _containers.RepeatedCompositeFieldContainer[DirectBid]
    request_id: str
    def __init__(self, feeder_id: _Optional[str] = ..., bids: _Optional[_Iterable[_Union[DirectBid, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class SubmitDirectBidsResponse(_message.Message):
    __slots__ = ("stored",)
    STORED_FIELD_NUMBER: _ClassVar[int]
    stored: int
    def __init__(self, stored: _Optional[int] = ...) -> None: ...

class BidLimit(_message.Message):
    __slots__ = ("participant_id", "bus", "interval_start", "offered_export_kw", "offered_import_kw", "export_limit_kw", "import_limit_kw", "export_binding", "import_binding")
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    BUS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    OFFERED_EXPORT_KW_FIELD_NUMBER: _ClassVar[int]
    OFFERED_IMPORT_KW_FIELD_NUMBER: _ClassVar[int]
    EXPORT_LIMIT_KW_FIELD_NUMBER: _ClassVar[int]
    IMPORT_LIMIT_KW_FIELD_NUMBER: _ClassVar[int]
    EXPORT_BINDING_FIELD_NUMBER: _ClassVar[int]
    IMPORT_BINDING_FIELD_NUMBER: _ClassVar[int]
    participant_id: str
    bus: str
    interval_start: _timestamp_pb2.Timestamp
    offered_export_kw: float
    offered_import_kw: float
    export_limit_kw: float
    import_limit_kw: float
    export_binding: str
    import_binding: str
    def __init__(self, participant_id: _Optional[str] = ..., bus: _Optional[str] = ..., interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., offered_export_kw: _Optional[float] = ..., offered_import_kw: _Optional[float] = ..., export_limit_kw: _Optional[float] = ..., import_limit_kw: _Optional[float] = ..., export_binding: _Optional[str] = ..., import_binding: _Optional[str] = ...) -> None: ...

class DeliverabilityViolation(_message.Message):
    __slots__ = ("interval_start", "constraint", "excess", "participant_ids")
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINT_FIELD_NUMBER: _ClassVar[int]
    EXCESS_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_IDS_FIELD_NUMBER: _ClassVar[int]
    interval_start: _timestamp_pb2.Timestamp
    constraint: str
    excess: float
    participant_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., constraint: _Optional[str] = ..., excess: _Optional[float] = ..., participant_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ScheduleLimit(_message.Message):
    __slots__ = ("schedule", "limit_kw", "curtailed_kw", "binding", "service")
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_KW_FIELD_NUMBER: _ClassVar[int]
    CURTAILED_KW_FIELD_NUMBER: _ClassVar[int]
    BINDING_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    schedule: DirectSchedule
    limit_kw: float
    curtailed_kw: float
    binding: str
    service: str
    def __init__(self, schedule: _Optional[_Union[DirectSchedule, _Mapping]] = ..., limit_kw: _Optional[float] = ..., curtailed_kw: _Optional[float] = ..., binding: _Optional[str] = ..., service: _Optional[str] = ...) -> None: ...

class CheckDeliverabilityResponse(_message.Message):
    __slots__ = ("deliverable", "violations", "limits", "ac_check_passed", "bid_limits", "dso_award_count")
    DELIVERABLE_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    AC_CHECK_PASSED_FIELD_NUMBER: _ClassVar[int]
    BID_LIMITS_FIELD_NUMBER: _ClassVar[int]
    DSO_AWARD_COUNT_FIELD_NUMBER: _ClassVar[int]
    deliverable: bool
    violations: _containers.RepeatedCompositeFieldContainer[DeliverabilityViolation]
    limits: _containers.RepeatedCompositeFieldContainer[ScheduleLimit]
    ac_check_passed: bool
    bid_limits: _containers.RepeatedCompositeFieldContainer[BidLimit]
    dso_award_count: int
    def __init__(self, deliverable: _Optional[bool] = ..., violations: _Optional[_Iterable[_Union[DeliverabilityViolation, _Mapping]]] = ..., limits: _Optional[_Iterable[_Union[ScheduleLimit, _Mapping]]] = ..., ac_check_passed: _Optional[bool] = ..., bid_limits: _Optional[_Iterable[_Union[BidLimit, _Mapping]]] = ..., dso_award_count: _Optional[int] = ...) -> None: ...

class ConflictAlert(_message.Message):
    __slots__ = ("sequence", "feeder_id", "resource_id", "aggregator_id", "kind", "interval_start", "services", "committed", "limit", "excess", "refused", "market_id", "raised_at")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    FEEDER_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    EXCESS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    RAISED_AT_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    feeder_id: str
    resource_id: str
    aggregator_id: str
    kind: str
    interval_start: _timestamp_pb2.Timestamp
    services: _containers.RepeatedScalarFieldContainer[str]
    committed: float
    limit: float
    excess: float
    refused: str
    market_id: str
    raised_at: _timestamp_pb2.Timestamp
    def __init__(self, sequence: _Optional[int] = ..., feeder_id: _Optional[str] = ..., resource_id: _Optional[str] = ..., aggregator_id: _Optional[str] = ..., kind: _Optional[str] = ..., interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., services: _Optional[_Iterable[str]] = ..., committed: _Optional[float] = ..., limit: _Optional[float] = ..., excess: _Optional[float] = ..., refused: _Optional[str] = ..., market_id: _Optional[str] = ..., raised_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListConflictAlertsRequest(_message.Message):
    __slots__ = ("feeder_id", "pagination")
    FEEDER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    feeder_id: str
    pagination: _common_pb2.PaginationParams
    def __init__(self, feeder_id: _Optional[str] = ..., pagination: _Optional[_Union[_common_pb2.PaginationParams, _Mapping]] = ...) -> None: ...

class ListConflictAlertsResponse(_message.Message):
    __slots__ = ("alerts", "pagination")
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[ConflictAlert]
    pagination: _common_pb2.PaginationInfo
    def __init__(self, alerts: _Optional[_Iterable[_Union[ConflictAlert, _Mapping]]] = ..., pagination: _Optional[_Union[_common_pb2.PaginationInfo, _Mapping]] = ...) -> None: ...

class ReceiveConflictAlertStreamRequest(_message.Message):
    __slots__ = ("feeder_id", "after_sequence")
    FEEDER_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    feeder_id: str
    after_sequence: int
    def __init__(self, feeder_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class GetOperatingEnvelopesRequest(_message.Message):
    __slots__ = ("feeder_id", "market_id", "rule")
    FEEDER_ID_FIELD_NUMBER: _ClassVar[int]
    MARKET_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    feeder_id: str
    market_id: str
    rule: str
    def __init__(self, feeder_id: _Optional[str] = ..., market_id: _Optional[str] = ..., rule: _Optional[str] = ...) -> None: ...

class OperatingEnvelope(_message.Message):
    __slots__ = ("der_id", "aggregation_id", "aggregator_id", "bus", "interval_start", "export_max_kw", "import_max_kw", "export_binding", "import_binding")
    DER_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_ID_FIELD_NUMBER: _ClassVar[int]
    BUS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    EXPORT_MAX_KW_FIELD_NUMBER: _ClassVar[int]
    IMPORT_MAX_KW_FIELD_NUMBER: _ClassVar[int]
    EXPORT_BINDING_FIELD_NUMBER: _ClassVar[int]
    IMPORT_BINDING_FIELD_NUMBER: _ClassVar[int]
    der_id: str
    aggregation_id: str
    aggregator_id: str
    bus: str
    interval_start: _timestamp_pb2.Timestamp
    export_max_kw: float
    import_max_kw: float
    export_binding: str
    import_binding: str
    def __init__(self, der_id: _Optional[str] = ..., aggregation_id: _Optional[str] = ..., aggregator_id: _Optional[str] = ..., bus: _Optional[str] = ..., interval_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., export_max_kw: _Optional[float] = ..., import_max_kw: _Optional[float] = ..., export_binding: _Optional[str] = ..., import_binding: _Optional[str] = ...) -> None: ...

class GetOperatingEnvelopesResponse(_message.Message):
    __slots__ = ("envelopes", "ac_check_passed", "rule")
    ENVELOPES_FIELD_NUMBER: _ClassVar[int]
    AC_CHECK_PASSED_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    envelopes: _containers.RepeatedCompositeFieldContainer[OperatingEnvelope]
    ac_check_passed: bool
    rule: str
    def __init__(self, envelopes: _Optional[_Iterable[_Union[OperatingEnvelope, _Mapping]]] = ..., ac_check_passed: _Optional[bool] = ..., rule: _Optional[str] = ...) -> None: ...
