from dsomarket.v1 import common_pb2 as _common_pb2
from dsomarket.v1 import iso_pb2 as _iso_pb2
from dsomarket.v1 import market_pb2 as _market_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

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
