"""Python client of the dsomarket gRPC API, for aggregators, the ISO, operators and auditors.

One :class:`Client` per participant token::

    async with Client("127.0.0.1:50051", token) as c:
        market = await c.get_market("da-2025-06-02")
        await c.submit_bids(market.market_id, [BidSegment("b1", "pv1", "sell", 40.0, Decimal("12.5"),
                                                          market.delivery_start)])
        async for event in c.dispatch_stream(market_id=market.market_id):
            ...

Methods take keyword arguments, validate what they can locally, and return
frozen dataclasses; prices and money are :class:`decimal.Decimal` (never
floats), power is kW, times are timezone-aware UTC datetimes. Failures raise
:class:`ApiError` subclasses named after the gRPC status. Every call has a
deadline; reads and writes that carry an idempotency key (bids, resources,
awards: the client adds one) are retried with backoff when the server is
unavailable, so a retry after a lost reply returns the first reply instead
of applying twice. Streams reconnect and resume after the last sequence seen.
List methods follow every page.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from dsomarket.v1 import aggregator_pb2 as agg_pb
from dsomarket.v1 import aggregator_pb2_grpc, audit_pb2, audit_pb2_grpc, common_pb2, iso_pb2
from dsomarket.v1 import flexibility_pb2 as flex_pb
from dsomarket.v1 import flexibility_pb2_grpc
from dsomarket.v1 import iso_pb2_grpc, market_pb2, market_pb2_grpc, network_pb2, network_pb2_grpc, operator_pb2
from dsomarket.v1 import operator_pb2_grpc, realtime_pb2, realtime_pb2_grpc, territory_pb2, territory_pb2_grpc

MAX_MESSAGE_BYTES = 32 * 1024 * 1024
PAGE_SIZE = 10_000
_STREAM_RETRIES = 15  # reconnects in a row; with the capped backoff, about half a minute for a server restart
_STREAM_BACKOFF_MAX = 2.0

# -- errors ---------------------------------------------------------------------------------


class ApiError(Exception):
    """A call failed; ``code`` is the gRPC status and ``details`` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str):
        self.code = code
        self.details = details
        super().__init__(f"{code.name}: {details}")


class InvalidArgument(ApiError):
    """A request field is malformed; the details name it."""


class NotFound(ApiError):
    """An id does not exist (for this caller)."""


class AlreadyExists(ApiError):
    """A chosen id is already used."""


class FailedPrecondition(ApiError):
    """Wrong market state, or an interval's gate has closed."""


class PermissionDenied(ApiError):
    """The token's role may not do this, or the data is not the caller's."""


class Unauthenticated(ApiError):
    """Missing or unknown token."""


class ResourceExhausted(ApiError):
    """A request is over a size limit."""


class DeadlineExceeded(ApiError):
    """The call's deadline, or the server's solver time limit, passed."""


class Unavailable(ApiError):
    """The server could not be reached (after the retries)."""


_ERRORS = {grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument, grpc.StatusCode.NOT_FOUND: NotFound,
           grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
           grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
           grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
           grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
           grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
           grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded, grpc.StatusCode.UNAVAILABLE: Unavailable}


def _error(exc: grpc.aio.AioRpcError) -> ApiError:
    return _ERRORS.get(exc.code(), ApiError)(exc.code(), exc.details() or "")


# -- domain objects ---------------------------------------------------------------------------

_SIDES = {common_pb2.SIDE_BUY: "buy", common_pb2.SIDE_SELL: "sell"}
_KINDS = {common_pb2.MARKET_KIND_DAY_AHEAD: "day_ahead", common_pb2.MARKET_KIND_REAL_TIME: "real_time",
          common_pb2.MARKET_KIND_HOUR_AHEAD: "hour_ahead"}
_STATES = {v: k.removeprefix("MARKET_STATE_").lower() for k, v in common_pb2.MarketState.items()}
_ROLES = {v: k.removeprefix("ROLE_").lower() for k, v in common_pb2.Role.items()}
_STATUS = {v: k.removeprefix("CLEARING_STATUS_").lower() for k, v in common_pb2.ClearingStatus.items()}
MARKET_KINDS = tuple(_KINDS.values())
_STATEMENT_KINDS = {v: k.removeprefix("STATEMENT_KIND_").lower() for k, v in agg_pb.StatementKind.items()}
"""Market kinds this client knows, as the methods take and return them."""
MARKET_STATES = tuple(v for v in _STATES.values() if v != "unspecified")
"""Market states, in the order a market goes through them."""
_RESOURCE_KINDS = {v: k.removeprefix("RESOURCE_KIND_").lower() for k, v in common_pb2.ResourceKind.items()}
_CURVE_KINDS = {v: k.removeprefix("CURVE_SEGMENT_KIND_").lower() for k, v in iso_pb2.CurveSegmentKind.items()}
_SOURCES = {v: k.removeprefix("INSTRUCTION_SOURCE_").lower() for k, v in agg_pb.InstructionSource.items()}
_PRICE_SOURCES = {v: k.removeprefix("PRICE_SOURCE_").lower() for k, v in market_pb2.PriceSource.items()}
_NEED_KINDS = {v: k.removeprefix("FLEX_NEED_KIND_").lower() for k, v in flex_pb.FlexNeedKind.items()}
_NEED_DIRECTIONS = {v: k.removeprefix("FLEX_NEED_DIRECTION_").lower() for k, v in flex_pb.FlexNeedDirection.items()}
_FLEX_DIRECTIONS = {v: k.removeprefix("FLEX_DIRECTION_").lower() for k, v in flex_pb.FlexDirection.items()}
_FLEX_PRICING = {v: k.removeprefix("FLEX_PRICING_").lower() for k, v in flex_pb.FlexPricing.items()}
_FLEX_REASONS = {v: k.removeprefix("FLEX_AWARD_REASON_").lower() for k, v in flex_pb.FlexAwardReason.items()}


def _name(table: dict, value: int) -> str:
    """Enum value to name; values this client does not know map to 'unspecified'."""
    return table.get(value, "unspecified")


def _value(table: dict, name: str, what: str) -> int:
    for k, v in table.items():
        if v == name:
            return k
    known = ", ".join(v for v in table.values() if v != "unspecified")
    raise ValueError(f"unknown {what} {name!r} (known: {known})")


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _dt(ts: Timestamp) -> datetime:
    return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def _ts(value: datetime) -> Timestamp:
    if value.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone: give UTC times")
    delta = value - _EPOCH
    seconds, micros = divmod(delta // timedelta(microseconds=1), 1_000_000)
    return Timestamp(seconds=seconds, nanos=micros * 1000)


def _dec(text: str) -> Decimal | None:
    return Decimal(text) if text else None


@dataclass(frozen=True)
class Identity:
    name: str
    role: str


@dataclass(frozen=True)
class Market:
    market_id: str
    feeder_id: str
    kind: str
    state: str
    delivery_start: datetime
    interval_count: int
    interval_length: timedelta
    gate_closure_time: datetime | None
    gate_lead: timedelta | None
    price_floor: Decimal
    price_cap: Decimal
    currency: str
    value_of_lost_load: Decimal | None
    day_ahead_market_id: str
    clearing_status: str
    diagnosis: tuple[str, ...]
    formulation: str

    @property
    def intervals(self) -> list[datetime]:
        """Start of every interval."""
        return [self.delivery_start + k * self.interval_length for k in range(self.interval_count)]

    @staticmethod
    def of(m: market_pb2.Market) -> "Market":
        return Market(m.market_id, m.feeder_id, _name(_KINDS, m.kind), _name(_STATES, m.state),
                      _dt(m.delivery_start), m.interval_count, m.interval_length.ToTimedelta(),
                      _dt(m.gate_closure_time) if m.HasField("gate_closure_time") else None,
                      m.gate_lead.ToTimedelta() if m.HasField("gate_lead") else None,
                      Decimal(m.price_floor), Decimal(m.price_cap), m.currency, _dec(m.value_of_lost_load),
                      m.day_ahead_market_id, _name(_STATUS, m.clearing_status), tuple(m.diagnosis), m.formulation)


@dataclass(frozen=True)
class MarketInterval:
    index: int
    start: datetime
    end: datetime
    gate_closure: datetime
    gate_open: bool


@dataclass(frozen=True)
class BusPrice:
    """A DLMP and its parts, per MWh. ``source``: ``clearing`` (at the ISO price forecast) or ``award`` (the
    award's dispatch); ``revision``: 0 for the first, one more for each replacement after a network change;
    ``superseded``: no longer in force (listed only on request)."""

    bus: str
    interval_start: datetime
    dlmp: Decimal
    energy: Decimal
    congestion: Decimal
    voltage: Decimal
    loss: Decimal
    source: str = "clearing"
    revision: int = 0
    superseded: bool = False


@dataclass(frozen=True)
class FeederUpload:
    """A radial feeder to upload as columns (the columns of a feeder directory, see ``clients.files``).

    ``buses``: ``bus`` and optionally ``vmin_pu, vmax_pu`` (per unit), ``load_kw, load_kvar`` (fixed
    withdrawal, positive = consumption). ``lines``: ``line, from_bus, to_bus, r_ohm, x_ohm`` and optionally
    ``s_max_kva`` (inf or 0 = no limit) and ``in_service``. ``import_max_kw`` / ``export_max_kw``: interface
    limits, 0 or inf = none.
    """

    name: str
    root_bus: str
    base_kv: float
    buses: Mapping[str, Sequence]
    lines: Mapping[str, Sequence]
    v0_pu: float = 1.0
    import_max_kw: float = 0.0
    export_max_kw: float = 0.0

    def to_pb(self) -> operator_pb2.FeederTables:
        def limit(kw: float) -> float:
            return 0.0 if math.isinf(kw) else float(kw)

        known = {"buses": ("bus", "vmin_pu", "vmax_pu", "load_kw", "load_kvar"),
                 "lines": ("line", "from_bus", "to_bus", "r_ohm", "x_ohm", "s_max_kva", "in_service")}
        for table, columns in known.items():
            unknown = set(getattr(self, table)) - set(columns)
            if unknown:
                raise ValueError(f"{table}: unknown columns {sorted(unknown)} (known: {', '.join(columns)})")
        return operator_pb2.FeederTables(
            name=self.name, root_bus=self.root_bus, base_kv=self.base_kv, v0_pu=self.v0_pu,
            import_max_kw=limit(self.import_max_kw), export_max_kw=limit(self.export_max_kw),
            buses=operator_pb2.BusColumns(**{k: list(v) for k, v in self.buses.items()}),
            lines=operator_pb2.LineColumns(**{k: list(v) for k, v in self.lines.items()}))


@dataclass(frozen=True)
class Feeder:
    feeder_id: str
    name: str
    root_bus: str
    base_kv: float
    bus_count: int
    line_count: int


_RESOURCE_NUMBERS = ("capacity_kw", "energy_kwh", "charge_kw", "discharge_kw", "eta_charge", "eta_discharge",
                     "soc_init_kwh", "soc_end_kwh", "soc_min_kwh", "ramp_kw")


@dataclass(frozen=True)
class Resource:
    """A DER. ``kind``: pv, battery, ev or flexible_load; kW and kWh as in the API."""

    resource_id: str
    feeder_id: str
    bus: str
    kind: str
    capacity_kw: float
    energy_kwh: float = 0.0
    charge_kw: float = 0.0
    discharge_kw: float = 0.0
    eta_charge: float = 0.0
    eta_discharge: float = 0.0
    soc_init_kwh: float = 0.0
    soc_end_kwh: float = 0.0
    soc_min_kwh: float = 0.0
    ramp_kw: float = 0.0
    departure: datetime | None = None
    aggregator_id: str = ""

    def to_pb(self) -> agg_pb.Resource:
        r = agg_pb.Resource(resource_id=self.resource_id, feeder_id=self.feeder_id, bus=self.bus,
                            kind=_value(_RESOURCE_KINDS, self.kind, "resource kind"),
                            **{name: getattr(self, name) for name in _RESOURCE_NUMBERS})
        if self.departure is not None:
            r.departure.CopyFrom(_ts(self.departure))
        return r

    @staticmethod
    def of(r: agg_pb.Resource) -> "Resource":
        return Resource(r.resource_id, r.feeder_id, r.bus, _name(_RESOURCE_KINDS, r.kind),
                        **{name: getattr(r, name) for name in _RESOURCE_NUMBERS},
                        departure=_dt(r.departure) if r.HasField("departure") else None,
                        aggregator_id=r.aggregator_id)


@dataclass(frozen=True)
class BidSegment:
    """One bid segment to submit: ``side`` buy or sell, ``quantity_kw`` > 0, ``price`` per MWh."""

    bid_id: str
    resource_id: str
    side: str
    quantity_kw: float
    price: Decimal | str | int | float
    interval_start: datetime
    tan_phi: float = 0.0


@dataclass(frozen=True)
class Bid:
    market_id: str
    aggregator_id: str
    bid_id: str
    resource_id: str
    bus: str
    side: str
    quantity_kw: float
    price: Decimal
    interval_start: datetime
    tan_phi: float
    status: str
    updated_at: datetime


@dataclass(frozen=True)
class Ack:
    """A durably stored write: ``count`` items at ``acknowledged_at``."""

    count: int
    acknowledged_at: datetime


@dataclass(frozen=True)
class Award:
    sequence: int
    market_id: str
    aggregator_id: str
    bid_id: str
    resource_id: str
    interval_start: datetime
    side: str
    cleared_kw: float
    price: Decimal


@dataclass(frozen=True)
class Instruction:
    """Net injection to deliver, kW (positive = into the feeder); ``source`` award or override."""

    sequence: int
    market_id: str
    aggregator_id: str
    resource_id: str
    interval_start: datetime
    kw: float
    source: str
    reason: str
    issued_at: datetime


@dataclass(frozen=True)
class Statement:
    """A settlement line: ``amount`` is paid to the aggregator (positive) or charged; ``kw`` a withdrawal.

    ``kind`` says what it settles: ``energy`` (an awarded bid or position at its DLMP less the loss
    component), ``loss`` (the loss component of that DLMP), ``override`` (an instructed deviation from the
    award), ``curtailment`` (the margin that deviation cost), ``imbalance`` (metered minus instructed),
    ``demand_response`` (the reduction below the baseline against the instructed one); ``unspecified`` from a
    server that predates kinds.
    """

    market_id: str
    aggregator_id: str
    bid_id: str
    resource_id: str
    interval_start: datetime
    settlement: str
    kw: float
    kvar: float
    price: Decimal
    reactive_price: Decimal
    amount: Decimal
    currency: str
    kind: str = "energy"


@dataclass(frozen=True)
class CurveSegment:
    kind: str
    index: int
    price: Decimal | None
    quantity_kw: float


@dataclass(frozen=True)
class CurveBand:
    price_low: Decimal
    price_high: Decimal
    import_kw: float


@dataclass(frozen=True)
class InterfaceCurve:
    sequence: int
    market_id: str
    feeder_id: str
    kind: str
    interval_start: datetime
    interval_end: datetime
    fixed_net_load_kw: float
    conditional: bool
    segments: tuple[CurveSegment, ...]
    bands: tuple[CurveBand, ...]
    reduction_area: Decimal | None
    revision: int = 0
    network_version: int = 0

    @staticmethod
    def of(c: iso_pb2.InterfaceCurve) -> "InterfaceCurve":
        return InterfaceCurve(
            c.sequence, c.market_id, c.feeder_id, _name(_KINDS, c.kind), _dt(c.interval_start),
            _dt(c.interval_end), c.fixed_net_load_kw, c.conditional,
            tuple(CurveSegment(_name(_CURVE_KINDS, s.kind), s.index, _dec(s.price), s.quantity_kw)
                  for s in c.segments),
            tuple(CurveBand(Decimal(b.price_low), Decimal(b.price_high), b.import_kw) for b in c.bands),
            _dec(c.reduction_area), c.revision, c.network_version)


_NETWORK_KINDS = {v: k.removeprefix("NETWORK_CHANGE_KIND_").lower() for k, v in network_pb2.NetworkChangeKind.items()}
_NETWORK_VALUES = ("s_max_kva", "vmin_pu", "vmax_pu", "import_max_kw", "export_max_kw")


@dataclass(frozen=True)
class NetworkChange:
    """One network change, in effect on ``[start, end)`` (``end`` None: from ``start`` on).

    ``kind``: outage, return, open, close (a line), rating (``s_max_kva``), voltage (``vmin_pu``,
    ``vmax_pu`` of a bus), interface (``import_max_kw``, ``export_max_kw``). ``shed`` declares that load
    the change leaves without supply is shed. ``submitted_by`` and ``version`` are set by the server.
    """

    change_id: str
    kind: str
    element: str
    start: datetime
    reason: str
    end: datetime | None = None
    s_max_kva: float | None = None
    vmin_pu: float | None = None
    vmax_pu: float | None = None
    import_max_kw: float | None = None
    export_max_kw: float | None = None
    shed: bool = False
    submitted_by: str = ""
    version: int = 0

    def pb(self) -> network_pb2.NetworkChange:
        out = network_pb2.NetworkChange(change_id=self.change_id, kind=_value(_NETWORK_KINDS, self.kind, "change kind"),
                                        element=self.element, start=_ts(self.start), shed=self.shed,
                                        reason=self.reason,
                                        **{k: getattr(self, k) for k in _NETWORK_VALUES if getattr(self, k) is not None})
        if self.end is not None:
            out.end.CopyFrom(_ts(self.end))
        return out

    @staticmethod
    def of(c: network_pb2.NetworkChange) -> "NetworkChange":
        return NetworkChange(c.change_id, _name(_NETWORK_KINDS, c.kind), c.element, _dt(c.start), c.reason,
                             _dt(c.end) if c.HasField("end") else None,
                             **{k: getattr(c, k) if c.HasField(k) else None for k in _NETWORK_VALUES},
                             shed=c.shed, submitted_by=c.submitted_by, version=c.version)


_SCHEDULE_SOURCES = {v: k.removeprefix("SCHEDULE_SOURCE_").lower() for k, v in realtime_pb2.ScheduleSource.items()}


@dataclass(frozen=True)
class InterfaceSchedule:
    """A revised interface import for one interval (after an override or an ISO emergency instruction), kW."""

    sequence: int
    market_id: str
    feeder_id: str
    interval_start: datetime
    import_kw: float
    awarded_import_kw: float
    source: str
    mode: str
    reason: str
    issued_at: datetime

    @staticmethod
    def of(s: realtime_pb2.InterfaceSchedule) -> "InterfaceSchedule":
        return InterfaceSchedule(s.sequence, s.market_id, s.feeder_id, _dt(s.interval_start), s.import_kw,
                                 s.awarded_import_kw, _name(_SCHEDULE_SOURCES, s.source), s.mode, s.reason,
                                 _dt(s.issued_at))


@dataclass(frozen=True)
class MeterReading:
    """A meter reading: average net injection over the interval, kW (positive into the feeder).

    ``resource_id`` empty: the interface meter (operator), whose ``kw`` is the import from the ISO.
    """

    resource_id: str
    interval_start: datetime
    kw: float
    aggregator_id: str = ""


@dataclass(frozen=True)
class PerformanceRow:
    """Delivered against instructed for one aggregator and interval (net injection, kW)."""

    aggregator_id: str
    interval_start: datetime
    instructed_kw: float
    metered_kw: float
    error_kw: float
    delivery: float | None
    awarded_kw: float
    instructed_move_kw: float
    delivered_move_kw: float


@dataclass(frozen=True)
class MarketRevision:
    """A market cleared again after a network change; ``republished``: revised curves went to the ISO."""

    market_id: str
    status: str
    diagnosis: tuple[str, ...]
    revision: int
    republished: bool


@dataclass(frozen=True)
class IntervalAward:
    """The ISO's award for one interval: import kW (negative = export) and price.

    A price of None lets the interface's own marginal price stand.
    """

    interval_start: datetime
    import_kw: float
    price: Decimal | str | None = None


@dataclass(frozen=True)
class InterfaceFlow:
    interval_start: datetime
    import_kw: float
    iso_price: Decimal


@dataclass(frozen=True)
class ClearingReport:
    market: Market
    status: str
    diagnosis: tuple[str, ...]
    welfare: Decimal | None
    interface: tuple[InterfaceFlow, ...]
    curve_segments: int
    solve_seconds: float
    network_version: int = 0


@dataclass(frozen=True)
class AwardResult:
    market: Market
    status: str
    diagnosis: tuple[str, ...]


@dataclass(frozen=True)
class SettlementReport:
    market: Market
    totals: dict
    statement_count: int


@dataclass(frozen=True)
class TerritoryInterface:
    """A T-D interface: loaded feeders behind one substation transformer, its limits in kW (None = none).

    An empty ``interface_id`` (one feeder without limits) is the feeder's id.
    """

    interface_id: str
    feeder_ids: tuple[str, ...]
    import_max_kw: float | None = None
    export_max_kw: float | None = None

    def to_pb(self) -> territory_pb2.TerritoryInterface:
        return territory_pb2.TerritoryInterface(interface_id=self.interface_id, feeder_ids=list(self.feeder_ids),
                                                import_max_kw=self.import_max_kw or 0.0,
                                                export_max_kw=self.export_max_kw or 0.0)

    @staticmethod
    def of(i: territory_pb2.TerritoryInterface) -> "TerritoryInterface":
        return TerritoryInterface(i.interface_id, tuple(i.feeder_ids), i.import_max_kw or None,
                                  i.export_max_kw or None)


@dataclass(frozen=True)
class Territory:
    territory_id: str
    interfaces: tuple[TerritoryInterface, ...]
    created_at: datetime


@dataclass(frozen=True)
class SessionInterface:
    """One interface's market in a territory session."""

    interface_id: str
    market: Market


@dataclass(frozen=True)
class TerritorySession:
    session_id: str
    territory_id: str
    interfaces: tuple[SessionInterface, ...]
    created_at: datetime

    def market_of(self, interface_id: str) -> Market:
        """The market of an interface."""
        return next(i.market for i in self.interfaces if i.interface_id == interface_id)

    @staticmethod
    def of(s: territory_pb2.TerritorySession) -> "TerritorySession":
        return TerritorySession(s.session_id, s.territory_id,
                                tuple(SessionInterface(i.interface_id, Market.of(i.market)) for i in s.interfaces),
                                _dt(s.created_at))


@dataclass(frozen=True)
class TerritoryClearing:
    """A session's clearing: the session after it, each interface's clearing (by interface id), how many
    cleared optimal, the wall time of the fan-out, and the interfaces whose worker re-used the market it kept
    from an earlier clearing of the same inputs (warm; their clearings are what a cold one gives), and the
    interfaces whose worker was lost during the call and replaced, with what happened (``recovered``: they
    cleared again, cold, on the fresh worker)."""

    session: TerritorySession
    interfaces: dict
    optimal: int
    solve_seconds: float
    warm: frozenset = frozenset()
    recovered: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TerritorySettlement:
    """A session's settlement: each awarded interface's SettlementReport, or the error that kept it AWARDED."""

    session: TerritorySession
    settled: dict
    errors: dict


@dataclass(frozen=True)
class AuditRecord:
    sequence: int
    recorded_at: datetime
    actor: str
    role: str
    action: str
    payload_json: str
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    records: int
    first_bad_sequence: int
    reason: str


@dataclass(frozen=True)
class FlexNeed:
    """A need to post for one interval of a market.

    ``kind`` line, voltage or import; ``element`` the line id (line) or bus id (voltage), empty for
    import; ``direction`` forward or reverse (line, import), raise or lower (voltage), empty for the
    kind's default (forward, raise); ``required_kw`` (line, import: kW of flow to remove) or
    ``required_pu`` (voltage: change of the squared voltage, pu); ``max_price`` per MWh of relief.
    """

    need_id: str
    kind: str
    interval_start: datetime
    max_price: Decimal | str | int | float
    element: str = ""
    direction: str = ""
    required_kw: float = 0.0
    required_pu: float = 0.0
    partial_ok: bool = False

    def to_pb(self) -> flex_pb.FlexNeed:
        return flex_pb.FlexNeed(
            need_id=self.need_id, kind=_value(_NEED_KINDS, self.kind, "need kind"), element=self.element,
            direction=_value(_NEED_DIRECTIONS, self.direction, "need direction") if self.direction else 0,
            interval_start=_ts(self.interval_start), required_kw=float(self.required_kw),
            required_pu=float(self.required_pu), max_price=price_text(self.max_price), partial_ok=self.partial_ok)


@dataclass(frozen=True)
class PostedFlexNeed:
    """A posted need; ``max_price`` is None in an aggregator's view."""

    market_id: str
    need_id: str
    kind: str
    element: str
    direction: str
    interval_start: datetime
    required_kw: float
    required_pu: float
    max_price: Decimal | None
    partial_ok: bool
    posted_at: datetime


@dataclass(frozen=True)
class FlexOffer:
    """An offer to submit: ``direction`` up (more injection, less load) or down; ``quantity_kw`` > 0;
    ``price`` per MWh activated; ``availability_price`` per MW per hour; ``divisible`` False = all or
    nothing; ``min_kw`` the smallest acceptable part of a divisible offer."""

    offer_id: str
    resource_id: str
    direction: str
    quantity_kw: float
    price: Decimal | str | int | float
    interval_start: datetime
    availability_price: Decimal | str | int | float = 0
    divisible: bool = True
    min_kw: float = 0.0
    tan_phi: float = 0.0


@dataclass(frozen=True)
class PostedFlexOffer:
    market_id: str
    aggregator_id: str
    offer_id: str
    resource_id: str
    bus: str
    interval_start: datetime
    direction: str
    quantity_kw: float
    price: Decimal
    availability_price: Decimal
    divisible: bool
    min_kw: float
    tan_phi: float
    status: str
    updated_at: datetime


@dataclass(frozen=True)
class FlexAward:
    """What an offer got: ``accepted_kw``, ``price`` per MWh (None when nothing is accepted), ``payment``
    for the interval, and ``reason``: accepted, price, location, capability, not_needed or min_kw."""

    market_id: str
    aggregator_id: str
    offer_id: str
    resource_id: str
    bus: str
    interval_start: datetime
    direction: str
    quantity_kw: float
    accepted_kw: float
    price: Decimal | None
    payment: Decimal
    currency: str
    reason: str
    conflict: bool
    need_ids: tuple[str, ...]


@dataclass(frozen=True)
class FlexNeedResult:
    """A need's outcome: ``shortfall`` in its unit (kW or pu), ``marginal_price`` per MWh of relief."""

    market_id: str
    need_id: str
    kind: str
    element: str
    interval_start: datetime
    met: bool
    shortfall: float
    shortfall_kw: float
    cost: Decimal
    marginal_price: Decimal | None
    currency: str


@dataclass(frozen=True)
class FlexClearingReport:
    market_id: str
    status: str
    pricing: str
    total_cost: Decimal | None
    shortfall_cost: Decimal | None
    currency: str
    need_count: int
    needs_met: int
    offer_count: int
    offers_accepted: int
    accepted_kw: float
    solve_seconds: float


def flex_offer_columns(offers: Sequence[FlexOffer]) -> flex_pb.FlexOfferColumns:
    """Columnar form of offers (the interval starts dictionary-encoded, default columns left out)."""
    starts: dict[datetime, int] = {}
    cols = flex_pb.FlexOfferColumns()
    cols.offer_id.extend(o.offer_id for o in offers)
    cols.resource_id.extend(o.resource_id for o in offers)
    cols.direction.extend(_value(_FLEX_DIRECTIONS, o.direction, "direction") for o in offers)
    cols.quantity_kw.extend(float(o.quantity_kw) for o in offers)
    cols.price.extend(price_text(o.price) for o in offers)
    cols.interval_index.extend(starts.setdefault(o.interval_start, len(starts)) for o in offers)
    cols.interval_starts.extend(_ts(s) for s in starts)
    if any(Decimal(price_text(o.availability_price)) for o in offers):
        cols.availability_price.extend(price_text(o.availability_price) for o in offers)
    if not all(o.divisible for o in offers):
        cols.divisible.extend(bool(o.divisible) for o in offers)
    if any(o.min_kw for o in offers):
        cols.min_kw.extend(float(o.min_kw) for o in offers)
    if any(o.tan_phi for o in offers):
        cols.tan_phi.extend(float(o.tan_phi) for o in offers)
    return cols


def _feeder(f: operator_pb2.Feeder) -> Feeder:
    return Feeder(f.feeder_id, f.name, f.root_bus, f.base_kv, f.bus_count, f.line_count)


def _award(a: agg_pb.Award) -> Award:
    return Award(a.sequence, a.market_id, a.aggregator_id, a.bid_id, a.resource_id, _dt(a.interval_start),
                 _name(_SIDES, a.side), a.cleared_kw, Decimal(a.price))


def _instruction(i: agg_pb.Instruction) -> Instruction:
    return Instruction(i.sequence, i.market_id, i.aggregator_id, i.resource_id, _dt(i.interval_start), i.kw,
                       _name(_SOURCES, i.source), i.reason, _dt(i.issued_at))


def _market_request(market_id: str, feeder_id: str, kind: str, delivery_start: datetime, interval_count: int,
                    gate_closure_time: datetime | None, gate_lead: timedelta | None, price_floor, price_cap,
                    currency: str, value_of_lost_load, day_ahead_market_id: str,
                    formulation: str = "") -> operator_pb2.CreateMarketRequest:
    req = operator_pb2.CreateMarketRequest(
        market_id=market_id, feeder_id=feeder_id, kind=_value(_KINDS, kind, "market kind"),
        delivery_start=_ts(delivery_start), interval_count=interval_count,
        price_floor="" if price_floor is None else price_text(price_floor),
        price_cap="" if price_cap is None else price_text(price_cap), currency=currency,
        value_of_lost_load="" if value_of_lost_load is None else price_text(value_of_lost_load),
        day_ahead_market_id=day_ahead_market_id, formulation=formulation)
    if gate_closure_time is not None:
        req.gate_closure_time.CopyFrom(_ts(gate_closure_time))
    if gate_lead is not None:
        req.gate_lead.CopyFrom(Duration(seconds=int(gate_lead.total_seconds())))
    return req


def _clearing_report(r: operator_pb2.ClearMarketResponse) -> ClearingReport:
    flows = tuple(InterfaceFlow(_dt(f.interval_start), f.import_kw, Decimal(f.iso_price)) for f in r.interface)
    return ClearingReport(Market.of(r.market), _name(_STATUS, r.status), tuple(r.diagnosis), _dec(r.welfare), flows,
                          r.curve_segments, r.solve_seconds, r.network_version)


def _settlement(r: operator_pb2.SettleMarketResponse) -> SettlementReport:
    return SettlementReport(Market.of(r.market), {k: Decimal(v) for k, v in r.totals.items()}, r.statement_count)


def _territory(t: territory_pb2.Territory) -> Territory:
    return Territory(t.territory_id, tuple(TerritoryInterface.of(i) for i in t.interfaces), _dt(t.created_at))


def bid_columns(bids: Sequence[BidSegment]) -> agg_pb.BidColumns:
    """Columnar form of bid segments (the interval starts dictionary-encoded)."""
    starts: dict[datetime, int] = {}
    cols = agg_pb.BidColumns()
    cols.bid_id.extend(b.bid_id for b in bids)
    cols.resource_id.extend(b.resource_id for b in bids)
    cols.side.extend(_value(_SIDES, b.side, "side") for b in bids)
    cols.quantity_kw.extend(float(b.quantity_kw) for b in bids)
    cols.price.extend(price_text(b.price) for b in bids)
    cols.interval_index.extend(starts.setdefault(b.interval_start, len(starts)) for b in bids)
    cols.interval_starts.extend(_ts(s) for s in starts)
    if any(b.tan_phi for b in bids):
        cols.tan_phi.extend(float(b.tan_phi) for b in bids)
    return cols


def price_text(value) -> str:
    """A price as a decimal string; a float goes through its shortest repr, never its binary expansion."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"price {value} is not finite")
        value = repr(value)
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"price {value!r} is not a decimal number") from None
    if not number.is_finite():
        raise ValueError(f"price {value!r} is not finite")
    return format(number, "f")


# -- the client --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClientTls:
    """PEM files: the CA that signed the server's certificate, and for mutual TLS the client's own."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=Path(self.ca).read_bytes(),
            private_key=Path(self.key).read_bytes() if self.key else None,
            certificate_chain=Path(self.cert).read_bytes() if self.cert else None)


class Client:
    """An async client for one participant token; create it inside the event loop that uses it.

    Parameters
    ----------
    target
        ``host:port`` of the server.
    token
        The participant's token (``dsomarket token create``).
    tls
        TLS settings; plaintext when None.
    timeout
        Deadline of each call attempt, seconds.
    retries
        Extra attempts after UNAVAILABLE for calls that are safe to repeat.
    backoff
        First pause between attempts, seconds; doubles each time.
    """

    def __init__(self, target: str, token: str, *, tls: ClientTls | None = None, timeout: float = 30.0,
                 retries: int = 4, backoff: float = 0.2):
        self.target, self.timeout, self.retries, self.backoff = target, timeout, retries, backoff
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        self._channel = (grpc.aio.secure_channel(target, tls.credentials(), options=options) if tls
                         else grpc.aio.insecure_channel(target, options=options))
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._market = market_pb2_grpc.MarketServiceStub(self._channel)
        self._operator = operator_pb2_grpc.OperatorServiceStub(self._channel)
        self._aggregator = aggregator_pb2_grpc.AggregatorServiceStub(self._channel)
        self._iso = iso_pb2_grpc.IsoServiceStub(self._channel)
        self._audit = audit_pb2_grpc.AuditServiceStub(self._channel)
        self._flex = flexibility_pb2_grpc.FlexibilityServiceStub(self._channel)
        self._network = network_pb2_grpc.NetworkServiceStub(self._channel)
        self._realtime = realtime_pb2_grpc.RealTimeServiceStub(self._channel)
        self._territory = territory_pb2_grpc.TerritoryServiceStub(self._channel)

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    @property
    def hybrid(self):
        """The DER registry and hybrid-participation calls (:class:`clients.hybrid_client.HybridClient`)."""
        from dsomarket.clients.hybrid_client import HybridClient  # imports this module

        return HybridClient(self)

    async def _call(self, method, request, retry: bool = True):
        attempt = 0
        while True:
            try:
                return await method(request, timeout=self.timeout, metadata=self._metadata)
            except grpc.aio.AioRpcError as exc:
                if not (retry and exc.code() == grpc.StatusCode.UNAVAILABLE and attempt < self.retries):
                    raise _error(exc) from None
            await asyncio.sleep(self.backoff * 2 ** attempt)
            attempt += 1

    async def _pages(self, method, request, items: str):
        request.pagination.page_size = PAGE_SIZE
        while True:
            response = await self._call(method, request)
            for item in getattr(response, items):
                yield item
            if not response.pagination.next_page_token:
                return
            request.pagination.page_token = response.pagination.next_page_token

    # -- every role ---------------------------------------------------------------

    async def identity(self) -> Identity:
        r = await self._call(self._market.GetIdentity, market_pb2.GetIdentityRequest())
        return Identity(r.name, _name(_ROLES, r.role))

    async def list_markets(self, *, feeder_id: str = "", states: Iterable[str] = (),
                           kind: str = "") -> list[Market]:
        f = market_pb2.MarketFilter(feeder_id=feeder_id,
                                    states=[_value(_STATES, s, "market state") for s in states],
                                    kind=_value(_KINDS, kind, "market kind") if kind else 0)
        return [Market.of(m) async for m in self._pages(self._market.ListMarkets,
                                                         market_pb2.ListMarketsRequest(filter=f), "markets")]

    async def get_market(self, market_id: str) -> Market:
        r = await self._call(self._market.GetMarket, market_pb2.GetMarketRequest(market_id=market_id))
        return Market.of(r.market)

    async def list_intervals(self, market_id: str) -> list[MarketInterval]:
        req = market_pb2.ListMarketIntervalsRequest(market_id=market_id)
        return [MarketInterval(i.index, _dt(i.start), _dt(i.end), _dt(i.gate_closure), i.gate_open)
                async for i in self._pages(self._market.ListMarketIntervals, req, "intervals")]

    async def list_prices(self, market_id: str, *, bus: str = "", include_superseded: bool = False) -> list[BusPrice]:
        """The DLMPs in force per bus and interval (``include_superseded``: with those no longer in force)."""
        req = market_pb2.ListMarketPricesRequest(market_id=market_id, bus=bus, include_superseded=include_superseded)
        return [BusPrice(p.bus, _dt(p.interval_start), Decimal(p.dlmp), Decimal(p.energy),
                         Decimal(p.congestion), Decimal(p.voltage), Decimal(p.loss),
                         _name(_PRICE_SOURCES, p.source), p.revision, p.superseded)
                async for p in self._pages(self._market.ListMarketPrices, req, "prices")]

    # -- operator -----------------------------------------------------------------

    async def create_feeder(self, feeder_id: str, *, builtin: str = "",
                            tables: FeederUpload | operator_pb2.FeederTables | None = None) -> Feeder:
        """Load a built-in feeder (``ieee33``, ``ieee69``, ``synth:N:SEED``) or upload ``tables``."""
        req = operator_pb2.CreateFeederRequest(feeder_id=feeder_id)
        if tables is not None:
            req.tables.CopyFrom(tables.to_pb() if isinstance(tables, FeederUpload) else tables)
        else:
            req.builtin_name = builtin
        return _feeder((await self._call(self._operator.CreateFeeder, req, retry=False)).feeder)

    async def list_feeders(self) -> list[Feeder]:
        req = operator_pb2.ListFeedersRequest()
        return [_feeder(f) async for f in self._pages(self._operator.ListFeeders, req, "feeders")]

    async def submit_network_changes(self, feeder_id: str, changes: Sequence[NetworkChange], *,
                                     request_id: str = "") -> tuple[int, list[MarketRevision]]:
        """Add changes as the feeder's next network version; returns it and the markets cleared again."""
        req = network_pb2.SubmitNetworkChangesRequest(feeder_id=feeder_id, request_id=request_id or uuid.uuid4().hex,
                                                      changes=[c.pb() for c in changes])
        r = await self._call(self._network.SubmitNetworkChanges, req)
        return r.network_version, [MarketRevision(m.market_id, _name(_STATUS, m.status), tuple(m.diagnosis),
                                                  m.revision, m.republished) for m in r.revisions]

    async def list_network_changes(self, feeder_id: str) -> list[NetworkChange]:
        req = network_pb2.ListNetworkChangesRequest(feeder_id=feeder_id)
        return [NetworkChange.of(c) async for c in self._pages(self._network.ListNetworkChanges, req, "changes")]

    async def create_market(self, market_id: str, *, feeder_id: str, kind: str, delivery_start: datetime,
                            interval_count: int = 0, gate_closure_time: datetime | None = None,
                            gate_lead: timedelta | None = None, price_floor: Decimal | str | None = None,
                            price_cap: Decimal | str | None = None, currency: str = "",
                            value_of_lost_load: Decimal | str | None = None,
                            day_ahead_market_id: str = "", formulation: str = "") -> Market:
        """Create a market; ``formulation`` (lossaware, lossless or lindistflow, socp; empty: the server's
        default, lossaware) is the clearing model of all its clearings, curves and awards."""
        req = _market_request(market_id, feeder_id, kind, delivery_start, interval_count, gate_closure_time,
                              gate_lead, price_floor, price_cap, currency, value_of_lost_load, day_ahead_market_id,
                              formulation)
        return Market.of((await self._call(self._operator.CreateMarket, req, retry=False)).market)

    # -- territories (operator) --------------------------------------------------------

    async def create_territory(self, territory_id: str, interfaces: Sequence[TerritoryInterface]) -> Territory:
        """Group loaded feeders into T-D interfaces (feeders behind one transformer are one interface)."""
        req = territory_pb2.CreateTerritoryRequest(territory_id=territory_id,
                                                   interfaces=[i.to_pb() for i in interfaces])
        return _territory((await self._call(self._territory.CreateTerritory, req, retry=False)).territory)

    async def get_territory(self, territory_id: str) -> Territory:
        req = territory_pb2.GetTerritoryRequest(territory_id=territory_id)
        return _territory((await self._call(self._territory.GetTerritory, req)).territory)

    async def open_territory_session(self, session_id: str, *, territory_id: str, kind: str,
                                     delivery_start: datetime, interval_count: int = 0,
                                     gate_closure_time: datetime | None = None, gate_lead: timedelta | None = None,
                                     price_floor: Decimal | str | None = None,
                                     price_cap: Decimal | str | None = None, currency: str = "",
                                     value_of_lost_load: Decimal | str | None = None,
                                     day_ahead_session_id: str = "", formulation: str = "") -> TerritorySession:
        """A market on every interface of a territory (``<session_id>:<interface_id>``), as :meth:`create_market`
        would open it; a real-time session may deviate from a day-ahead session of the same territory."""
        market = _market_request("", "", kind, delivery_start, interval_count, gate_closure_time, gate_lead,
                                 price_floor, price_cap, currency, value_of_lost_load, day_ahead_session_id,
                                 formulation)
        req = territory_pb2.OpenTerritorySessionRequest(session_id=session_id, territory_id=territory_id,
                                                        market=market)
        return TerritorySession.of((await self._call(self._territory.OpenTerritorySession, req,
                                                     retry=False)).session)

    async def get_territory_session(self, session_id: str) -> TerritorySession:
        req = territory_pb2.GetTerritorySessionRequest(session_id=session_id)
        return TerritorySession.of((await self._call(self._territory.GetTerritorySession, req)).session)

    async def close_territory_gate(self, session_id: str) -> TerritorySession:
        req = territory_pb2.CloseTerritoryGateRequest(session_id=session_id)
        return TerritorySession.of((await self._call(self._territory.CloseTerritoryGate, req, retry=False)).session)

    async def clear_territory(self, session_id: str, *, iso_price_forecast: Sequence = ()) -> TerritoryClearing:
        """Clear every closed market of the session; one infeasible interface is reported, the others clear."""
        req = territory_pb2.ClearTerritoryRequest(session_id=session_id,
                                                  iso_price_forecast=[price_text(p) for p in iso_price_forecast])
        r = await self._call(self._territory.ClearTerritory, req, retry=False)
        return TerritoryClearing(TerritorySession.of(r.session),
                                 {i.interface_id: _clearing_report(i.clearing) for i in r.interfaces}, r.optimal,
                                 r.solve_seconds, frozenset(i.interface_id for i in r.interfaces if i.warm),
                                 {i.interface_id: i.recovered for i in r.interfaces if i.recovered})

    async def publish_territory(self, session_id: str) -> TerritorySession:
        req = territory_pb2.PublishTerritoryRequest(session_id=session_id)
        return TerritorySession.of((await self._call(self._territory.PublishTerritory, req, retry=False)).session)

    async def settle_territory(self, session_id: str) -> TerritorySettlement:
        req = territory_pb2.SettleTerritoryRequest(session_id=session_id)
        r = await self._call(self._territory.SettleTerritory, req, retry=False)
        settled = {i.interface_id: _settlement(i.settlement) for i in r.interfaces if not i.error}
        return TerritorySettlement(TerritorySession.of(r.session), settled,
                                   {i.interface_id: i.error for i in r.interfaces if i.error})

    async def close_gate(self, market_id: str) -> Market:
        req = operator_pb2.CloseGateRequest(market_id=market_id)
        return Market.of((await self._call(self._operator.CloseGate, req, retry=False)).market)

    async def reopen_market(self, market_id: str, reason: str) -> Market:
        """Reopen a closed market whose clearing failed (CLOSED -> OPEN), so bids can be withdrawn or replaced."""
        req = operator_pb2.ReopenMarketRequest(market_id=market_id, reason=reason)
        return Market.of((await self._call(self._operator.ReopenMarket, req, retry=False)).market)

    async def clear_market(self, market_id: str, *, iso_price_forecast: Sequence = ()) -> ClearingReport:
        req = operator_pb2.ClearMarketRequest(market_id=market_id,
                                              iso_price_forecast=[price_text(p) for p in iso_price_forecast])
        return _clearing_report(await self._call(self._operator.ClearMarket, req, retry=False))

    async def publish_market(self, market_id: str) -> Market:
        req = operator_pb2.PublishMarketRequest(market_id=market_id)
        return Market.of((await self._call(self._operator.PublishMarket, req, retry=False)).market)

    async def settle_market(self, market_id: str) -> SettlementReport:
        req = operator_pb2.SettleMarketRequest(market_id=market_id)
        return _settlement(await self._call(self._operator.SettleMarket, req, retry=False))

    async def override_dispatch(self, market_id: str, *, aggregator_id: str, resource_id: str,
                                interval_start: datetime, kw: float, reason: str) -> Instruction:
        req = operator_pb2.OverrideDispatchRequest(market_id=market_id, aggregator_id=aggregator_id,
                                                   resource_id=resource_id,
                                                   interval_start=_ts(interval_start), kw=kw, reason=reason)
        return _instruction((await self._call(self._operator.OverrideDispatch, req, retry=False)).instruction)

    async def override_report(self, market_id: str, *, aggregator_id: str, resource_id: str,
                              interval_start: datetime, kw: float, reason: str) -> tuple[Instruction, str, float, int]:
        """:meth:`override_dispatch` with the network check's outcome: the instruction, the mode (held or
        redispatched), the revised interface import (kW) and how many other resources were re-dispatched."""
        req = operator_pb2.OverrideDispatchRequest(market_id=market_id, aggregator_id=aggregator_id,
                                                   resource_id=resource_id,
                                                   interval_start=_ts(interval_start), kw=kw, reason=reason)
        r = await self._call(self._operator.OverrideDispatch, req, retry=False)
        return _instruction(r.instruction), r.mode, r.import_kw, r.redispatched

    # -- aggregator -----------------------------------------------------------------

    async def register_resources(self, resources: Sequence[Resource], *, request_id: str = "") -> int:
        req = agg_pb.RegisterResourcesRequest(request_id=request_id or uuid.uuid4().hex,
                                              resources=[r.to_pb() for r in resources])
        return (await self._call(self._aggregator.RegisterResources, req)).registered

    async def list_resources(self, *, aggregator_id: str = "", feeder_id: str = "") -> list[Resource]:
        req = agg_pb.ListResourcesRequest(filter=agg_pb.ResourceFilter(aggregator_id=aggregator_id,
                                                                       feeder_id=feeder_id))
        return [Resource.of(r) async for r in self._pages(self._aggregator.ListResources, req, "resources")]

    async def submit_bids(self, market_id: str, bids: Sequence[BidSegment] | agg_pb.BidColumns, *,
                          request_id: str = "") -> Ack:
        """Submit new segments, all or nothing; ``bids`` may be prebuilt :func:`bid_columns`."""
        cols = bids if isinstance(bids, agg_pb.BidColumns) else bid_columns(bids)
        req = agg_pb.SubmitBidsRequest(market_id=market_id, request_id=request_id or uuid.uuid4().hex,
                                       bids=cols)
        r = await self._call(self._aggregator.SubmitBids, req)
        return Ack(r.accepted, _dt(r.acknowledged_at))

    async def replace_bids(self, market_id: str, bids: Sequence[BidSegment], *, request_id: str = "") -> Ack:
        req = agg_pb.ReplaceBidsRequest(market_id=market_id, request_id=request_id or uuid.uuid4().hex,
                                        bids=bid_columns(bids))
        r = await self._call(self._aggregator.ReplaceBids, req)
        return Ack(r.replaced, _dt(r.acknowledged_at))

    async def withdraw_bids(self, market_id: str, bid_ids: Sequence[str], *, request_id: str = "") -> Ack:
        req = agg_pb.WithdrawBidsRequest(market_id=market_id, request_id=request_id or uuid.uuid4().hex,
                                         bid_ids=list(bid_ids))
        r = await self._call(self._aggregator.WithdrawBids, req)
        return Ack(r.withdrawn, _dt(r.acknowledged_at))

    async def list_bids(self, *, market_id: str = "", aggregator_id: str = "",
                        include_withdrawn: bool = False) -> list[Bid]:
        req = agg_pb.ListBidsRequest(filter=agg_pb.BidFilter(market_id=market_id, aggregator_id=aggregator_id,
                                                             include_withdrawn=include_withdrawn))
        return [Bid(b.market_id, b.aggregator_id, b.bid_id, b.resource_id, b.bus, _name(_SIDES, b.side),
                    b.quantity_kw, Decimal(b.price), _dt(b.interval_start), b.tan_phi,
                    "active" if b.status == agg_pb.BID_STATUS_ACTIVE else "withdrawn", _dt(b.updated_at))
                async for b in self._pages(self._aggregator.ListBids, req, "bids")]

    async def list_awards(self, *, market_id: str = "", aggregator_id: str = "") -> list[Award]:
        f = agg_pb.DispatchFilter(market_id=market_id, aggregator_id=aggregator_id)
        req = agg_pb.ListAwardsRequest(filter=f)
        return [_award(a) async for a in self._pages(self._aggregator.ListAwards, req, "awards")]

    async def list_instructions(self, *, market_id: str = "", aggregator_id: str = "") -> list[Instruction]:
        f = agg_pb.DispatchFilter(market_id=market_id, aggregator_id=aggregator_id)
        pages = self._pages(self._aggregator.ListInstructions, agg_pb.ListInstructionsRequest(filter=f),
                            "instructions")
        return [_instruction(i) async for i in pages]

    async def list_statements(self, *, market_id: str = "", aggregator_id: str = "") -> list[Statement]:
        f = agg_pb.DispatchFilter(market_id=market_id, aggregator_id=aggregator_id)
        req = agg_pb.ListStatementsRequest(filter=f)
        return [Statement(s.market_id, s.aggregator_id, s.bid_id, s.resource_id, _dt(s.interval_start),
                          _name(_KINDS, s.settlement), s.kw, s.kvar, Decimal(s.price),
                          Decimal(s.reactive_price or "0"), Decimal(s.amount), s.currency,
                          _name(_STATEMENT_KINDS, s.kind))
                async for s in self._pages(self._aggregator.ListStatements, req, "statements")]

    async def dispatch_stream(self, *, market_id: str = "", aggregator_id: str = "",
                              after_sequence: int = 0) -> AsyncIterator[Award | Instruction]:
        """Awards and instructions after ``after_sequence``, then live; resumes across reconnects."""
        f = agg_pb.DispatchFilter(market_id=market_id, aggregator_id=aggregator_id)

        def request(after):
            return agg_pb.ReceiveDispatchStreamRequest(filter=f, after_sequence=after)

        async for event in self._follow(self._aggregator.ReceiveDispatchStream, request, after_sequence):
            if event.WhichOneof("event") == "award":
                yield _award(event.award)
            else:
                yield _instruction(event.instruction)

    # -- ISO -----------------------------------------------------------------------

    async def list_curves(self, *, market_id: str = "", feeder_id: str = "") -> list[InterfaceCurve]:
        f = iso_pb2.CurveFilter(market_id=market_id, feeder_id=feeder_id)
        req = iso_pb2.ListInterfaceCurvesRequest(filter=f)
        return [InterfaceCurve.of(c) async for c in self._pages(self._iso.ListInterfaceCurves, req, "curves")]

    async def curve_stream(self, *, market_id: str = "", feeder_id: str = "",
                           after_sequence: int = 0) -> AsyncIterator[InterfaceCurve]:
        """Published curves after ``after_sequence``, then each as it is published."""
        f = iso_pb2.CurveFilter(market_id=market_id, feeder_id=feeder_id)

        def request(after):
            return iso_pb2.ReceiveInterfaceCurveStreamRequest(filter=f, after_sequence=after)

        async for curve in self._follow(self._iso.ReceiveInterfaceCurveStream, request, after_sequence):
            yield InterfaceCurve.of(curve)

    async def submit_meter_readings(self, market_id: str, readings: Sequence[MeterReading], *,
                                    request_id: str = "") -> int:
        """Meter readings of an awarded or settled market (all or nothing); returns how many were stored."""
        req = realtime_pb2.SubmitMeterReadingsRequest(
            market_id=market_id, request_id=request_id or uuid.uuid4().hex,
            readings=[realtime_pb2.MeterReading(aggregator_id=r.aggregator_id, resource_id=r.resource_id,
                                                interval_start=_ts(r.interval_start), kw=r.kw) for r in readings])
        return (await self._call(self._realtime.SubmitMeterReadings, req)).count

    async def submit_resource_history(self, readings: Sequence[MeterReading], *, request_id: str = "") -> int:
        """Metered history of flexible loads (net injection, kW: a load's is negative), the reference of their
        demand-response baseline; returns how many readings were stored."""
        req = realtime_pb2.SubmitResourceHistoryRequest(
            request_id=request_id or uuid.uuid4().hex,
            readings=[realtime_pb2.MeterReading(aggregator_id=r.aggregator_id, resource_id=r.resource_id,
                                                interval_start=_ts(r.interval_start), kw=r.kw) for r in readings])
        return (await self._call(self._realtime.SubmitResourceHistory, req)).count

    async def settle_imbalance(self, market_id: str) -> tuple[dict[str, Decimal], int, list[dict], list[dict]]:
        """Operator: settle metered deviations and the interface imbalance; returns the totals (resources,
        interface, residual: they add up to zero; demand_response: the part of resources settled on baselines),
        the statement lines written, the interface rows and the demand-response rows (with their baselines)."""
        r = await self._call(self._realtime.SettleImbalance, realtime_pb2.SettleImbalanceRequest(market_id=market_id),
                             retry=False)
        iface = [{"interval_start": _dt(i.interval_start), "scheduled_kw": i.scheduled_kw, "metered_kw": i.metered_kw,
                  "imbalance_kw": i.imbalance_kw, "price": Decimal(i.price), "amount": Decimal(i.amount)}
                 for i in r.interface]
        dr = [{"aggregator_id": d.aggregator_id, "resource_id": d.resource_id, "interval_start": _dt(d.interval_start),
               "baseline_kw": d.baseline_kw, "metered_kw": d.metered_kw, "delivered_kw": d.delivered_kw,
               "instructed_kw": d.instructed_kw, "deviation_kw": d.deviation_kw, "price": Decimal(d.price),
               "amount": Decimal(d.amount)} for d in r.demand_response]
        return {k: Decimal(v) for k, v in r.totals.items()}, r.statement_count, iface, dr

    async def performance_report(self, market_id: str, *, aggregator_id: str = "") -> list[PerformanceRow]:
        req = realtime_pb2.GetPerformanceReportRequest(market_id=market_id, aggregator_id=aggregator_id)
        r = await self._call(self._realtime.GetPerformanceReport, req)
        return [PerformanceRow(x.aggregator_id, _dt(x.interval_start), x.instructed_kw, x.metered_kw, x.error_kw,
                               x.delivery if x.HasField("delivery") else None, x.awarded_kw, x.instructed_move_kw,
                               x.delivered_move_kw) for x in r.rows]

    async def submit_forecast(self, market_id: str, rows: Sequence[tuple[str, datetime, float, float]], *,
                              request_id: str = "") -> int:
        """Operator: the forecast net injection ``(bus, interval_start, p_kw, q_kvar)`` of what does not bid, for
        the intervals named (replacing their earlier forecast while their gates are open)."""
        cols = realtime_pb2.ForecastColumns(bus=[r[0] for r in rows], interval_start=[_ts(r[1]) for r in rows],
                                            p_kw=[r[2] for r in rows], q_kvar=[r[3] for r in rows])
        req = realtime_pb2.SubmitForecastRequest(market_id=market_id, request_id=request_id or uuid.uuid4().hex,
                                                 forecast=cols)
        return (await self._call(self._realtime.SubmitForecast, req)).count

    async def submit_load_history(self, feeder_id: str, rows: Sequence[tuple[str, datetime, float, float]], *,
                                  request_id: str = "") -> int:
        """Operator: metered net injection ``(bus, interval_start, p_kw, q_kvar)`` of what does not bid, the
        history the built-in forecaster averages."""
        cols = realtime_pb2.ForecastColumns(bus=[r[0] for r in rows], interval_start=[_ts(r[1]) for r in rows],
                                            p_kw=[r[2] for r in rows], q_kvar=[r[3] for r in rows])
        req = realtime_pb2.SubmitLoadHistoryRequest(feeder_id=feeder_id, request_id=request_id or uuid.uuid4().hex,
                                                    history=cols)
        return (await self._call(self._realtime.SubmitLoadHistory, req)).count

    async def forecast_schedule(self, market_id: str) -> tuple[str, list[dict]]:
        """The forecast interface schedule: its source (operator or feeder) and, per interval, fixed_kw,
        expected_kw and import_kw."""
        r = await self._call(self._realtime.GetForecastSchedule,
                             realtime_pb2.GetForecastScheduleRequest(market_id=market_id))
        return r.source, [{"interval_start": _dt(i.interval_start), "fixed_kw": i.fixed_kw,
                           "expected_kw": i.expected_kw, "import_kw": i.import_kw} for i in r.intervals]

    async def submit_emergency_instruction(self, market_id: str, *, interval_start: datetime, reason: str,
                                           import_max_kw: float | None = None, export_max_kw: float | None = None,
                                           shed_kw: float | None = None) -> tuple[InterfaceSchedule, int]:
        """ISO: cap the import or export, or shed kW, in one interval; returns the revised schedule and how
        many resources' instructions changed."""
        caps = {k: v for k, v in (("import_max_kw", import_max_kw), ("export_max_kw", export_max_kw),
                                  ("shed_kw", shed_kw)) if v is not None}
        req = realtime_pb2.SubmitEmergencyInstructionRequest(market_id=market_id, interval_start=_ts(interval_start),
                                                             reason=reason, **caps)
        r = await self._call(self._realtime.SubmitEmergencyInstruction, req, retry=False)
        return InterfaceSchedule.of(r.schedule), r.instructions_changed

    async def list_interface_schedules(self, *, market_id: str = "") -> list[InterfaceSchedule]:
        req = realtime_pb2.ListInterfaceSchedulesRequest(market_id=market_id)
        return [InterfaceSchedule.of(s) async for s in self._pages(self._realtime.ListInterfaceSchedules, req,
                                                                    "schedules")]

    async def schedule_stream(self, *, market_id: str = "", after_sequence: int = 0) -> AsyncIterator[InterfaceSchedule]:
        """Revised interface schedules after ``after_sequence``, then each as it is issued."""
        def request(after):
            return realtime_pb2.ReceiveInterfaceScheduleStreamRequest(market_id=market_id, after_sequence=after)

        async for s in self._follow(self._realtime.ReceiveInterfaceScheduleStream, request, after_sequence):
            yield InterfaceSchedule.of(s)

    async def submit_award(self, market_id: str, awards: Sequence[IntervalAward], *,
                           request_id: str = "") -> AwardResult:
        pb = [iso_pb2.IntervalAward(interval_start=_ts(a.interval_start), import_kw=a.import_kw,
                                    price="" if a.price is None else price_text(a.price)) for a in awards]
        req = iso_pb2.SubmitAwardRequest(market_id=market_id, request_id=request_id or uuid.uuid4().hex,
                                         awards=pb)
        r = await self._call(self._iso.SubmitAward, req)
        return AwardResult(Market.of(r.market), _name(_STATUS, r.status), tuple(r.diagnosis))

    async def submit_interval_award(self, market_id: str, awards: Sequence[IntervalAward], *,
                                    request_id: str = "") -> tuple[AwardResult, int]:
        """ISO: award some intervals of a real-time or hour-ahead market now (typically the next one).

        Returns the result and the number of intervals still without an award.
        """
        pb = [iso_pb2.IntervalAward(interval_start=_ts(a.interval_start), import_kw=a.import_kw,
                                    price="" if a.price is None else price_text(a.price)) for a in awards]
        req = realtime_pb2.SubmitIntervalAwardRequest(market_id=market_id, awards=pb,
                                                      request_id=request_id or uuid.uuid4().hex)
        r = await self._call(self._realtime.SubmitIntervalAward, req)
        return AwardResult(Market.of(r.market), _name(_STATUS, r.status), tuple(r.diagnosis)), r.intervals_remaining

    # -- flexibility auction ------------------------------------------------------------

    async def post_needs(self, market_id: str, needs: Sequence[FlexNeed], *, request_id: str = "") -> Ack:
        """Operator: post needs for a market, all or nothing."""
        req = flex_pb.PostNeedsRequest(market_id=market_id, request_id=request_id or uuid.uuid4().hex,
                                       needs=[n.to_pb() for n in needs])
        r = await self._call(self._flex.PostNeeds, req)
        return Ack(r.posted, _dt(r.acknowledged_at))

    async def list_needs(self, *, market_id: str = "") -> list[PostedFlexNeed]:
        req = flex_pb.ListNeedsRequest(filter=flex_pb.FlexNeedFilter(market_id=market_id))
        return [PostedFlexNeed(n.market_id, n.need_id, _name(_NEED_KINDS, n.kind), n.element,
                               _name(_NEED_DIRECTIONS, n.direction), _dt(n.interval_start), n.required_kw,
                               n.required_pu, _dec(n.max_price), n.partial_ok, _dt(n.posted_at))
                async for n in self._pages(self._flex.ListNeeds, req, "needs")]

    async def submit_flex_offers(self, market_id: str, offers: Sequence[FlexOffer] | flex_pb.FlexOfferColumns, *,
                                 request_id: str = "") -> Ack:
        """Aggregator: submit offers, all or nothing; ``offers`` may be prebuilt :func:`flex_offer_columns`."""
        cols = offers if isinstance(offers, flex_pb.FlexOfferColumns) else flex_offer_columns(offers)
        req = flex_pb.SubmitFlexOffersRequest(market_id=market_id, request_id=request_id or uuid.uuid4().hex,
                                              offers=cols)
        r = await self._call(self._flex.SubmitFlexOffers, req)
        return Ack(r.accepted, _dt(r.acknowledged_at))

    async def withdraw_flex_offers(self, market_id: str, offer_ids: Sequence[str], *, request_id: str = "") -> Ack:
        req = flex_pb.WithdrawFlexOffersRequest(market_id=market_id, request_id=request_id or uuid.uuid4().hex,
                                                offer_ids=list(offer_ids))
        r = await self._call(self._flex.WithdrawFlexOffers, req)
        return Ack(r.withdrawn, _dt(r.acknowledged_at))

    async def list_flex_offers(self, *, market_id: str = "", aggregator_id: str = "",
                               include_withdrawn: bool = False) -> list[PostedFlexOffer]:
        f = flex_pb.FlexOfferFilter(market_id=market_id, aggregator_id=aggregator_id,
                                    include_withdrawn=include_withdrawn)
        return [PostedFlexOffer(o.market_id, o.aggregator_id, o.offer_id, o.resource_id, o.bus,
                                _dt(o.interval_start), _name(_FLEX_DIRECTIONS, o.direction), o.quantity_kw,
                                Decimal(o.price), Decimal(o.availability_price or "0"), o.divisible, o.min_kw,
                                o.tan_phi,
                                "active" if o.status == flex_pb.FLEX_OFFER_STATUS_ACTIVE else "withdrawn",
                                _dt(o.updated_at))
                async for o in self._pages(self._flex.ListFlexOffers, flex_pb.ListFlexOffersRequest(filter=f),
                                           "offers")]

    async def clear_flexibility(self, market_id: str, *, pricing: str = "pay_as_bid") -> FlexClearingReport:
        """Operator: clear the flexibility auction of a market whose gate is closed."""
        req = flex_pb.ClearFlexibilityRequest(market_id=market_id,
                                              pricing=_value(_FLEX_PRICING, pricing, "pricing"))
        r = await self._call(self._flex.ClearFlexibility, req, retry=False)
        return FlexClearingReport(r.market_id, _name(_STATUS, r.status), _name(_FLEX_PRICING, r.pricing),
                                  _dec(r.total_cost), _dec(r.shortfall_cost), r.currency, r.need_count,
                                  r.needs_met, r.offer_count, r.offers_accepted, r.accepted_kw, r.solve_seconds)

    async def list_flex_awards(self, *, market_id: str = "", aggregator_id: str = "") -> list[FlexAward]:
        f = flex_pb.FlexAwardFilter(market_id=market_id, aggregator_id=aggregator_id)
        return [FlexAward(a.market_id, a.aggregator_id, a.offer_id, a.resource_id, a.bus, _dt(a.interval_start),
                          _name(_FLEX_DIRECTIONS, a.direction), a.quantity_kw, a.accepted_kw, _dec(a.price),
                          Decimal(a.payment), a.currency, _name(_FLEX_REASONS, a.reason), a.conflict,
                          tuple(a.need_ids))
                async for a in self._pages(self._flex.ListFlexAwards, flex_pb.ListFlexAwardsRequest(filter=f),
                                           "awards")]

    async def list_flex_need_results(self, *, market_id: str = "") -> list[FlexNeedResult]:
        req = flex_pb.ListFlexNeedResultsRequest(filter=flex_pb.FlexNeedFilter(market_id=market_id))
        return [FlexNeedResult(n.market_id, n.need_id, _name(_NEED_KINDS, n.kind), n.element,
                               _dt(n.interval_start), n.met, n.shortfall, n.shortfall_kw, Decimal(n.cost),
                               _dec(n.marginal_price), n.currency)
                async for n in self._pages(self._flex.ListFlexNeedResults, req, "results")]

    # -- auditor ----------------------------------------------------------------------

    async def list_audit_records(self, *, action_prefix: str = "") -> list[AuditRecord]:
        req = audit_pb2.ListAuditRecordsRequest(action_prefix=action_prefix)
        return [AuditRecord(r.sequence, _dt(r.recorded_at), r.actor, _name(_ROLES, r.role), r.action,
                            r.payload_json, r.prev_hash, r.hash)
                async for r in self._pages(self._audit.ListAuditRecords, req, "records")]

    async def verify_audit_chain(self) -> ChainReport:
        r = await self._call(self._audit.VerifyAuditChain, audit_pb2.VerifyAuditChainRequest())
        return ChainReport(r.ok, r.records, r.first_bad_sequence, r.reason)

    # -- streams ------------------------------------------------------------------------

    async def _follow(self, method, request, after: int):
        attempt = 0
        while True:
            call = method(request(after), metadata=self._metadata)
            try:
                async for item in call:
                    attempt = 0
                    after = item.sequence
                    yield item
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt >= _STREAM_RETRIES:
                    raise _error(exc) from None
            finally:
                call.cancel()
            await asyncio.sleep(min(self.backoff * 2 ** attempt, _STREAM_BACKOFF_MAX))
            attempt += 1
