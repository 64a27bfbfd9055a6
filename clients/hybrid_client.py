"""Client library for the DER registry and hybrid participation (DerRegistryService, HybridService).

``client.hybrid`` (a :class:`HybridClient` over a :class:`clients.api.Client`'s channel and token) has async
keyword methods that validate first and return frozen dataclasses; a refused call raises the typed errors of
:mod:`clients.api`. Powers are kW (injection positive), energies kWh, times UTC.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import grpc

from dsomarket.clients.api import _dt, _error, _ts
from dsomarket.v1 import common_pb2
from dsomarket.v1 import hybrid_pb2 as pb
from dsomarket.v1 import hybrid_pb2_grpc

STATUS = {pb.DER_STATUS_PENDING: "pending", pb.DER_STATUS_APPROVED: "approved",
          pb.DER_STATUS_APPROVED_WITH_LIMITS: "approved_with_limits", pb.DER_STATUS_REFUSED: "refused",
          pb.DER_STATUS_RETIRED: "retired"}
SIDES = {"buy": common_pb2.SIDE_BUY, "sell": common_pb2.SIDE_SELL}
SERVICES = ("dso_energy", "dso_flexibility", "iso_direct")


@dataclass(frozen=True)
class Der:
    """A DER to register (the first fields) and, as listed, its review: ``status``, approved limits (kW) and the
    services the DSO approved. ``services`` (participation) among :data:`SERVICES`."""

    der_id: str
    kind: str
    feeder_id: str
    bus: str
    export_kw: float
    import_kw: float = 0.0
    aggregation_id: str = ""
    owner: str = ""
    jurisdiction: str = ""
    energy_kwh: float | None = None
    soc_min_kwh: float | None = None
    soc_init_kwh: float | None = None
    tan_phi: float = 0.0
    metering: str = "none"
    control: str = "none"
    services: tuple[str, ...] = ()
    aggregator_id: str = ""
    status: str = ""
    export_limit_kw: float = 0.0
    import_limit_kw: float = 0.0
    approved_services: tuple[str, ...] = ()
    reason: str = ""
    updated_at: datetime | None = None

    def to_pb(self) -> pb.Der:
        bad = [s for s in self.services if s not in SERVICES]
        if bad:
            raise ValueError(f"services: {bad[0]!r} is not one of {', '.join(SERVICES)}")
        optional = {n: getattr(self, n) for n in ("energy_kwh", "soc_min_kwh", "soc_init_kwh")
                    if getattr(self, n) is not None}
        return pb.Der(der_id=self.der_id, kind=self.kind, feeder_id=self.feeder_id, bus=self.bus,
                      export_kw=self.export_kw, import_kw=self.import_kw, aggregation_id=self.aggregation_id,
                      owner=self.owner, jurisdiction=self.jurisdiction, tan_phi=self.tan_phi, metering=self.metering,
                      control=self.control, services=list(self.services), **optional)

    @staticmethod
    def of(d: pb.Der) -> "Der":
        return Der(d.der_id, d.kind, d.feeder_id, d.bus, d.export_kw, d.import_kw, d.aggregation_id, d.owner,
                   d.jurisdiction, *(getattr(d, n) if d.HasField(n) else None
                                     for n in ("energy_kwh", "soc_min_kwh", "soc_init_kwh")),
                   d.tan_phi, d.metering, d.control, tuple(d.services), d.aggregator_id,
                   STATUS.get(d.status, "unspecified"), d.export_limit_kw, d.import_limit_kw,
                   tuple(d.approved_services), d.reason, _dt(d.updated_at) if d.HasField("updated_at") else None)


@dataclass(frozen=True)
class DirectSchedule:
    """A direct ISO participant's scheduled net injection at one bus and interval, kW."""

    participant_id: str
    bus: str
    interval_start: datetime
    p_kw: float

    def to_pb(self) -> pb.DirectSchedule:
        return pb.DirectSchedule(participant_id=self.participant_id, bus=self.bus,
                                 interval_start=_ts(self.interval_start), p_kw=self.p_kw)


@dataclass(frozen=True)
class DirectBid:
    """A segment of a direct ISO participant's bid: ``side`` sell (inject) or buy, ``quantity_kw`` > 0, ``price``
    per MWh."""

    participant_id: str
    bus: str
    interval_start: datetime
    side: str
    quantity_kw: float
    price: Decimal | str | int | float

    def to_pb(self) -> pb.DirectBid:
        if self.side not in SIDES:
            raise ValueError(f"side: must be sell or buy (got {self.side!r})")
        return pb.DirectBid(participant_id=self.participant_id, bus=self.bus, interval_start=_ts(self.interval_start),
                            side=SIDES[self.side], quantity_kw=self.quantity_kw, price=str(self.price))


@dataclass(frozen=True)
class ScheduleLimit:
    """A schedule (direct, or the DSO market's award: ``service``) and the most it may deliver, kW."""

    service: str
    participant_id: str
    bus: str
    interval_start: datetime
    p_kw: float
    limit_kw: float
    curtailed_kw: float
    binding: str


@dataclass(frozen=True)
class BidLimit:
    """A direct bid's range (offered) and the part deliverable with the schedules and the DSO's awards fixed."""

    participant_id: str
    bus: str
    interval_start: datetime
    offered_export_kw: float
    offered_import_kw: float
    export_limit_kw: float
    import_limit_kw: float
    export_binding: str
    import_binding: str


@dataclass(frozen=True)
class Violation:
    interval_start: datetime
    constraint: str
    excess: float
    participant_ids: tuple[str, ...]


@dataclass(frozen=True)
class Deliverability:
    """The DSO's check (DOE M5): whether everything fits, what breaks, and each schedule's and bid's limit."""

    deliverable: bool
    ac_check_passed: bool
    dso_award_count: int
    violations: tuple[Violation, ...] = field(default=())
    limits: tuple[ScheduleLimit, ...] = field(default=())
    bid_limits: tuple[BidLimit, ...] = field(default=())


@dataclass(frozen=True)
class Envelope:
    """A DER's operating envelope in one interval: any net injection in ``[-import_max_kw, export_max_kw]``."""

    der_id: str
    aggregation_id: str
    aggregator_id: str
    bus: str
    interval_start: datetime | None
    export_max_kw: float
    import_max_kw: float
    export_binding: str
    import_binding: str


@dataclass(frozen=True)
class ConflictAlert:
    """A commitment refused because it would sell a registered resource twice (DOE M10)."""

    sequence: int
    feeder_id: str
    resource_id: str
    aggregator_id: str
    kind: str
    interval_start: datetime | None
    services: tuple[str, ...]
    committed: float
    limit: float
    excess: float
    refused: str
    market_id: str
    raised_at: datetime

    @staticmethod
    def of(a: pb.ConflictAlert) -> "ConflictAlert":
        return ConflictAlert(a.sequence, a.feeder_id, a.resource_id, a.aggregator_id, a.kind,
                             _dt(a.interval_start) if a.HasField("interval_start") else None, tuple(a.services),
                             a.committed, a.limit, a.excess, a.refused, a.market_id, _dt(a.raised_at))


class HybridClient:
    """DerRegistryService and HybridService calls over an open :class:`clients.api.Client`."""

    def __init__(self, client):
        self._client = client
        self._registry = hybrid_pb2_grpc.DerRegistryServiceStub(client._channel)
        self._hybrid = hybrid_pb2_grpc.HybridServiceStub(client._channel)

    async def register_ders(self, ders: Sequence[Der], *, request_id: str = "") -> list[Der]:
        """Aggregator: register DERs, or update its own (same der_id); each is pending until reviewed."""
        req = pb.RegisterDersRequest(ders=[d.to_pb() for d in ders], request_id=request_id or uuid.uuid4().hex)
        return [Der.of(d) for d in (await self._client._call(self._registry.RegisterDers, req)).ders]

    async def retire_der(self, der_id: str, reason: str) -> Der:
        """Aggregator (its own) or operator: retire a DER; it keeps its history."""
        r = await self._client._call(self._registry.RetireDer, pb.RetireDerRequest(der_id=der_id, reason=reason))
        return Der.of(r.der)

    async def list_ders(self, *, feeder_id: str = "") -> list[Der]:
        """DERs in registration order (an aggregator sees its own)."""
        req = pb.ListDersRequest(feeder_id=feeder_id)
        return [Der.of(d) async for d in self._client._pages(self._registry.ListDers, req, "ders")]

    async def prequalify_ders(self, feeder_id: str, *, min_useful_kw: float | None = None) -> tuple[list[Der], bool]:
        """Operator: review a feeder's pending DERs; the decisions and whether the AC check passed."""
        req = pb.PrequalifyDersRequest(feeder_id=feeder_id)
        if min_useful_kw is not None:
            req.min_useful_kw = min_useful_kw
        r = await self._client._call(self._registry.PrequalifyDers, req)
        return [Der.of(d) for d in r.ders], r.ac_check_passed

    async def operating_envelopes(self, feeder_id: str, *, market_id: str = "", rule: str = "proportional"
                                  ) -> tuple[list[Envelope], bool]:
        """Envelopes of the feeder's approved DERs (on a market's forecast and intervals, or the feeder's loads),
        and whether the AC check of their corners passed. An aggregator gets its own DERs' rows."""
        r = await self._client._call(self._registry.GetOperatingEnvelopes, pb.GetOperatingEnvelopesRequest(
            feeder_id=feeder_id, market_id=market_id, rule=rule))
        return [Envelope(e.der_id, e.aggregation_id, e.aggregator_id, e.bus,
                         _dt(e.interval_start) if e.HasField("interval_start") else None, e.export_max_kw,
                         e.import_max_kw, e.export_binding, e.import_binding) for e in r.envelopes], r.ac_check_passed

    async def submit_direct_schedules(self, feeder_id: str, schedules: Sequence[DirectSchedule], *,
                                      interval_minutes: int = 60, request_id: str = "") -> int:
        """ISO: store (replace, per interval) direct participants' schedules; a conflict is FailedPrecondition."""
        req = pb.SubmitDirectSchedulesRequest(feeder_id=feeder_id, schedules=[s.to_pb() for s in schedules],
                                              interval_minutes=interval_minutes,
                                              request_id=request_id or uuid.uuid4().hex)
        return (await self._client._call(self._hybrid.SubmitDirectSchedules, req)).stored

    async def submit_direct_bids(self, feeder_id: str, bids: Sequence[DirectBid], *, request_id: str = "") -> int:
        """ISO: store (replace, per interval) direct participants' bid segments."""
        req = pb.SubmitDirectBidsRequest(feeder_id=feeder_id, bids=[b.to_pb() for b in bids],
                                         request_id=request_id or uuid.uuid4().hex)
        return (await self._client._call(self._hybrid.SubmitDirectBids, req)).stored

    async def check_deliverability(self, feeder_id: str, *, rule: str = "sensitivity",
                                   exclude_dso_awards: bool = False) -> Deliverability:
        """Operator: the direct schedules and bids with the DSO market's awards against the feeder (DOE M5)."""
        r = await self._client._call(self._hybrid.CheckDeliverability, pb.CheckDeliverabilityRequest(
            feeder_id=feeder_id, rule=rule, exclude_dso_awards=exclude_dso_awards))
        return Deliverability(
            r.deliverable, r.ac_check_passed, r.dso_award_count,
            tuple(Violation(_dt(v.interval_start), v.constraint, v.excess, tuple(v.participant_ids))
                  for v in r.violations),
            tuple(ScheduleLimit(s.service, s.schedule.participant_id, s.schedule.bus, _dt(s.schedule.interval_start),
                                s.schedule.p_kw, s.limit_kw, s.curtailed_kw, s.binding) for s in r.limits),
            tuple(BidLimit(b.participant_id, b.bus, _dt(b.interval_start), b.offered_export_kw, b.offered_import_kw,
                           b.export_limit_kw, b.import_limit_kw, b.export_binding, b.import_binding)
                  for b in r.bid_limits))

    async def list_conflict_alerts(self, *, feeder_id: str = "") -> list[ConflictAlert]:
        """Conflict alerts so far (an aggregator sees its own)."""
        req = pb.ListConflictAlertsRequest(feeder_id=feeder_id)
        return [ConflictAlert.of(a) async for a in self._client._pages(self._hybrid.ListConflictAlerts, req,
                                                                       "alerts")]

    async def follow_conflict_alerts(self, *, feeder_id: str = "", after_sequence: int = 0
                                     ) -> AsyncIterator[ConflictAlert]:
        """Conflict alerts after ``after_sequence``, then each as it is raised."""
        call = self._hybrid.ReceiveConflictAlertStream(pb.ReceiveConflictAlertStreamRequest(
            feeder_id=feeder_id, after_sequence=after_sequence), metadata=self._client._metadata)
        try:
            async for alert in call:
                yield ConflictAlert.of(alert)
        except grpc.aio.AioRpcError as exc:
            raise _error(exc) from None
