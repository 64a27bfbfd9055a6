"""gRPC DerRegistryService and HybridService: the DER registry's life cycle, the DSO's review, direct ISO schedules.

Each method converts in, checks, stores (with its audit record, in the writer's
transaction) or calls the engine (:mod:`engine.registry`, :mod:`engine.hybrid`)
on the solver thread, and converts out. The registered fields of a DER are kept
as one JSON record (the columns of :data:`engine.registry.DER_SCHEMA`); its
status, limits and the review's reason are columns, and ``seq`` is the order
of registration that the first-come-first-served review follows (an update goes
to the back of the queue, as a new application would).
"""

from __future__ import annotations

import json
import math

import polars as pl

from dsomarket.engine.hybrid import RULES, check_deliverability
from dsomarket.engine.registry import CONNECTED, CONTROL, DER_KINDS, METERING, prequalify, validate_ders
from dsomarket.engine.errors import InputError
from dsomarket.server import convert, store
from dsomarket.server.auth import Principal
from dsomarket.server.db import now_us
from dsomarket.server.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from dsomarket.server.rpc import unary
from dsomarket.v1 import hybrid_pb2, hybrid_pb2_grpc

OPERATOR, AGGREGATOR, ISO, AUDITOR = "operator", "aggregator", "iso", "auditor"
MAX_ROWS = 100_000
"""Most DERs or schedules in one request."""

STATUS = {"pending": hybrid_pb2.DER_STATUS_PENDING, "approved": hybrid_pb2.DER_STATUS_APPROVED,
          "approved_with_limits": hybrid_pb2.DER_STATUS_APPROVED_WITH_LIMITS,
          "refused": hybrid_pb2.DER_STATUS_REFUSED, "retired": hybrid_pb2.DER_STATUS_RETIRED}
_RECORD = ("kind", "bus", "aggregation_id", "owner", "jurisdiction", "export_kw", "import_kw", "energy_kwh",
           "soc_min_kwh", "soc_init_kwh", "tan_phi", "metering", "control")
_OPTIONAL = ("energy_kwh", "soc_min_kwh", "soc_init_kwh")


# -- conversion -----------------------------------------------------------------------------------------

def der_records(request: hybrid_pb2.RegisterDersRequest, who: Principal) -> list[dict]:
    """Registered fields of each DER, checked by the engine's registry rules (field names ``ders[k].x``)."""
    if not 0 < len(request.ders) <= MAX_ROWS:
        raise InvalidArgument("ders", f"give 1 to {MAX_ROWS} DERs")
    rows = []
    for k, d in enumerate(request.ders):
        field = f"ders[{k}]"
        row = {"der_id": convert.check_id(d.der_id, f"{field}.der_id"),
               "feeder_id": convert.check_id(d.feeder_id, f"{field}.feeder_id"),
               "aggregation_id": convert.optional_id(d.aggregation_id, f"{field}.aggregation_id"),
               "bus": d.bus, "kind": d.kind, "owner": d.owner[:200], "jurisdiction": d.jurisdiction[:200],
               "export_kw": d.export_kw, "import_kw": d.import_kw, "tan_phi": d.tan_phi,
               "metering": d.metering or "none", "control": d.control or "none"}
        for name in _OPTIONAL:
            row[name] = getattr(d, name) if d.HasField(name) else None
        for name, allowed in (("kind", DER_KINDS), ("metering", METERING), ("control", CONTROL)):
            if row[name] not in allowed:
                raise InvalidArgument(f"{field}.{name}", f"must be one of {', '.join(allowed)}")
        rows.append(row)
    try:
        validate_ders(_table(rows, who.name))
    except InputError as exc:
        raise InvalidArgument(f"ders[{exc.row}].{exc.field}" if exc.row is not None else "ders", exc.reason) from None
    return rows


def _table(records: list[dict], aggregator: str | list[str], extra: dict | None = None) -> pl.DataFrame:
    """A registry table (engine form) of records; ``feeder`` is the feeder id."""
    aggs = aggregator if isinstance(aggregator, list) else [aggregator] * len(records)
    cols = {"der_id": [r["der_id"] for r in records], "feeder": [r["feeder_id"] for r in records],
            "aggregator_id": aggs}
    for name in _RECORD:
        cols[name] = [r[name] if name != "aggregation_id" else (r[name] or None) for r in records]
    schema = {name: (pl.Float64 if name in ("export_kw", "import_kw", "tan_phi", *_OPTIONAL) else pl.Utf8)
              for name in cols}
    return pl.DataFrame({**cols, **(extra or {})}, schema={**schema, **{k: None for k in (extra or {})}},
                        strict=False)


def der_pb(row) -> hybrid_pb2.Der:
    rec = json.loads(row["record"])
    optional = {name: rec[name] for name in _OPTIONAL if rec.get(name) is not None}
    return hybrid_pb2.Der(
        der_id=row["der_id"], feeder_id=row["feeder_id"], aggregator_id=row["aggregator_id"],
        kind=rec["kind"], bus=rec["bus"], aggregation_id=rec["aggregation_id"] or "", owner=rec["owner"],
        jurisdiction=rec["jurisdiction"], export_kw=rec["export_kw"], import_kw=rec["import_kw"],
        tan_phi=rec["tan_phi"], metering=rec["metering"], control=rec["control"], status=STATUS[row["status"]],
        export_limit_kw=row["export_limit_kw"], import_limit_kw=row["import_limit_kw"], reason=row["reason"],
        updated_at=convert.ts(row["updated_us"]), **optional)


# -- store (writer thread) ----------------------------------------------------------------------------------

def register(conn, who: Principal, records: list[dict], request_id: str, digest: str) -> dict:
    """Insert or update the caller's DERs as PENDING, in request order at the back of the review queue."""
    def run():
        now = now_us()
        seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM ders").fetchone()[0]
        for k, r in enumerate(records):
            if not conn.execute("SELECT 1 FROM feeders WHERE feeder_id = ?", (r["feeder_id"],)).fetchone():
                raise NotFound(f"ders[{k}].feeder_id: no feeder {r['feeder_id']!r}")
            old = conn.execute("SELECT aggregator_id FROM ders WHERE der_id = ?", (r["der_id"],)).fetchone()
            if old is not None and old[0] != who.name:
                raise PermissionDenied(f"ders[{k}].der_id: {r['der_id']!r} is registered by another aggregator")
            record = {name: r[name] for name in _RECORD}
            conn.execute(
                "INSERT INTO ders (der_id, aggregator_id, feeder_id, record, status, export_limit_kw, import_limit_kw, "
                "reason, seq, updated_us) VALUES (?, ?, ?, ?, 'pending', 0, 0, '', ?, ?) ON CONFLICT (der_id) DO "
                "UPDATE SET feeder_id = excluded.feeder_id, record = excluded.record, status = 'pending', "
                "export_limit_kw = 0, import_limit_kw = 0, reason = '', seq = excluded.seq, "
                "updated_us = excluded.updated_us",
                (r["der_id"], who.name, r["feeder_id"], json.dumps(record), seq + k + 1, now))
        store._audit(conn, who, "registry.register", {"ders": records}, now)
        return {"der_ids": [r["der_id"] for r in records]}

    return store._idempotent(conn, who, request_id, digest, run)


def retire(conn, who: Principal, der_id: str, reason: str) -> str:
    row = conn.execute("SELECT aggregator_id, status FROM ders WHERE der_id = ?", (der_id,)).fetchone()
    if row is None or (who.role == AGGREGATOR and row["aggregator_id"] != who.name):
        raise NotFound(f"der_id: no DER {der_id!r}")
    if row["status"] == "retired":
        raise FailedPrecondition(f"der_id: {der_id!r} is already retired")
    now = now_us()
    conn.execute("UPDATE ders SET status = 'retired', export_limit_kw = 0, import_limit_kw = 0, reason = ?, "
                 "updated_us = ? WHERE der_id = ?", (reason, now, der_id))
    store._audit(conn, who, "registry.retire", {"der_id": der_id, "reason": reason}, now)
    return der_id


def record_review(conn, who: Principal, feeder_id: str, decisions: list[tuple], seen: dict) -> list[str]:
    """Store the review of a feeder's DERs, unless one of them changed since it was read."""
    for der_id, updated in seen.items():
        row = conn.execute("SELECT updated_us FROM ders WHERE der_id = ?", (der_id,)).fetchone()
        if row is None or row[0] != updated:
            raise FailedPrecondition(f"feeder_id: DER {der_id!r} changed during the review; review again")
    now = now_us()
    conn.executemany("UPDATE ders SET status = ?, export_limit_kw = ?, import_limit_kw = ?, reason = ?, "
                     "updated_us = ? WHERE der_id = ?", [(s, e, i, why, now, d) for d, s, e, i, why in decisions])
    store._audit(conn, who, "registry.review", {"feeder_id": feeder_id, "decisions": decisions}, now)
    return [d[0] for d in decisions]


def submit_schedules(conn, who: Principal, feeder_id: str, rows: list[tuple], request_id: str, digest: str) -> dict:
    """Replace the feeder's direct schedules in the intervals the rows name."""
    def run():
        if not conn.execute("SELECT 1 FROM feeders WHERE feeder_id = ?", (feeder_id,)).fetchone():
            raise NotFound(f"feeder_id: no feeder {feeder_id!r}")
        now = now_us()
        for start in sorted({r[2] for r in rows}):
            conn.execute("DELETE FROM direct_schedules WHERE feeder_id = ? AND interval_us = ?", (feeder_id, start))
        conn.executemany("INSERT INTO direct_schedules (feeder_id, participant_id, bus, interval_us, p_kw, "
                         "submitted_by, submitted_us) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         [(feeder_id, *r, who.name, now) for r in rows])
        store._audit(conn, who, "hybrid.schedules", {"feeder_id": feeder_id, "schedules": rows}, now)
        return {"stored": len(rows)}

    return store._idempotent(conn, who, request_id, digest, run)


# -- servicers ------------------------------------------------------------------------------------------------

def _ders(conn, feeder_id: str) -> list:
    return conn.execute("SELECT * FROM ders WHERE feeder_id = ? ORDER BY seq", (feeder_id,)).fetchall()


def _one(conn, der_id: str):
    return conn.execute("SELECT * FROM ders WHERE der_id = ?", (der_id,)).fetchone()


class DerRegistryService(hybrid_pb2_grpc.DerRegistryServiceServicer):
    def __init__(self, app):
        self.app = app

    @unary(AGGREGATOR)
    async def RegisterDers(self, request, who):
        records = der_records(request, who)
        await self.app.writer.call(register, who, records, convert.request_id(request.request_id),
                                   convert.request_digest(request))
        rows = await self.app.reader.call(lambda conn: [_one(conn, r["der_id"]) for r in records])
        return hybrid_pb2.RegisterDersResponse(ders=[der_pb(r) for r in rows])

    @unary(AGGREGATOR, OPERATOR)
    async def RetireDer(self, request, who):
        der_id = convert.check_id(request.der_id, "der_id")
        await self.app.writer.call(retire, who, der_id, convert.reason(request.reason))
        return hybrid_pb2.RetireDerResponse(der=der_pb(await self.app.reader.call(_one, der_id)))

    @unary(AGGREGATOR, OPERATOR, AUDITOR)
    async def ListDers(self, request, who):
        feeder_id = convert.optional_id(request.feeder_id, "feeder_id")
        owner = who.name if who.role == AGGREGATOR else ""
        scope = f"ListDers|{feeder_id}|{owner}"
        limit, after = convert.page(request.pagination, scope)
        rows = await self.app.reader.call(lambda conn: store._keyset(
            conn, "ders", store._eq("feeder_id", feeder_id) + store._eq("aggregator_id", owner), ("seq",), after,
            limit))
        rows, info = convert.next_page(rows, limit, scope, lambda r: [r["seq"]])
        return hybrid_pb2.ListDersResponse(ders=[der_pb(r) for r in rows], pagination=info)

    @unary(OPERATOR)
    async def PrequalifyDers(self, request, who):
        feeder_id = convert.check_id(request.feeder_id, "feeder_id")
        useful = request.min_useful_kw if request.HasField("min_useful_kw") else 1.0
        if not (useful >= 0 and math.isfinite(useful)):
            raise InvalidArgument("min_useful_kw", "must be a finite number >= 0")
        feeder = await self.app.feeder(feeder_id)
        rows = await self.app.reader.call(_ders, feeder_id)
        if not any(r["status"] == "pending" for r in rows):
            raise FailedPrecondition(f"feeder_id: feeder {feeder_id!r} has no pending DER")
        records = [{**json.loads(r["record"]), "der_id": r["der_id"], "feeder_id": feeder.name} for r in rows]
        table = _table(records, [r["aggregator_id"] for r in rows], {
            "status": [r["status"] for r in rows],
            "export_limit_kw": [r["export_limit_kw"] if r["status"] in CONNECTED else None for r in rows],
            "import_limit_kw": [r["import_limit_kw"] if r["status"] in CONNECTED else None for r in rows]})
        result = await self.app.solve(prequalify, feeder, table, None, None, useful)
        out = result.ders
        reviewed = [r["status"] == "pending" for r in rows]
        decisions = [(d, s, e, i, why) for (d, s, e, i, why), keep in zip(
            out.select("der_id", "status", "export_limit_kw", "import_limit_kw", "reason").iter_rows(), reviewed,
            strict=True) if keep]
        seen = {r["der_id"]: r["updated_us"] for r, keep in zip(rows, reviewed, strict=True) if keep}
        ids = await self.app.writer.call(record_review, who, feeder_id, decisions, seen)
        stored = await self.app.reader.call(lambda conn: [_one(conn, d) for d in ids])
        check = result.ac_checks.get(feeder.name)
        return hybrid_pb2.PrequalifyDersResponse(ders=[der_pb(r) for r in stored],
                                                 ac_check_passed=check is None or check.passed)


class HybridService(hybrid_pb2_grpc.HybridServiceServicer):
    def __init__(self, app):
        self.app = app

    @unary(ISO)
    async def SubmitDirectSchedules(self, request, who):
        feeder_id = convert.check_id(request.feeder_id, "feeder_id")
        if not 0 < len(request.schedules) <= MAX_ROWS:
            raise InvalidArgument("schedules", f"give 1 to {MAX_ROWS} schedules")
        feeder = await self.app.feeder(feeder_id)
        buses = set(feeder.topology.bus_ids.astype(str))
        rows, seen = [], set()
        for k, s in enumerate(request.schedules):
            field = f"schedules[{k}]"
            pid = convert.check_id(s.participant_id, f"{field}.participant_id")
            if s.bus not in buses:
                raise InvalidArgument(f"{field}.bus", f"unknown bus {s.bus!r} of feeder {feeder_id!r}")
            if not math.isfinite(s.p_kw):
                raise InvalidArgument(f"{field}.p_kw", "must be finite")
            start = convert.required_us(s, "interval_start", f"{field}.interval_start")
            if (pid, s.bus, start) in seen:
                raise InvalidArgument(f"{field}.participant_id", "has two schedules for one bus and interval")
            seen.add((pid, s.bus, start))
            rows.append((pid, s.bus, start, s.p_kw))
        out = await self.app.writer.call(submit_schedules, who, feeder_id, rows,
                                         convert.request_id(request.request_id), convert.request_digest(request))
        return hybrid_pb2.SubmitDirectSchedulesResponse(stored=out["stored"])

    @unary(OPERATOR)
    async def CheckDeliverability(self, request, who):
        feeder_id = convert.check_id(request.feeder_id, "feeder_id")
        rule = request.rule or "sensitivity"
        if rule not in RULES:
            raise InvalidArgument("rule", f"must be one of {', '.join(RULES)}")
        feeder = await self.app.feeder(feeder_id)
        rows = await self.app.reader.call(lambda conn: conn.execute(
            "SELECT participant_id, bus, interval_us, p_kw FROM direct_schedules WHERE feeder_id = ? "
            "ORDER BY interval_us, participant_id, bus", (feeder_id,)).fetchall())
        if not rows:
            raise FailedPrecondition(f"feeder_id: feeder {feeder_id!r} has no direct schedule")
        table = pl.DataFrame({"participant_id": [r[0] for r in rows], "service": "iso_direct",
                              "bus": [r[1] for r in rows], "p_kw": [r[3] for r in rows],
                              "interval": pl.Series([r[2] for r in rows]).cast(pl.Datetime("us", "UTC"))})
        result = await self.app.solve(check_deliverability, feeder, table, None, rule)
        us = pl.col("interval").dt.epoch("us")
        violations = [hybrid_pb2.DeliverabilityViolation(
            interval_start=convert.ts(v["_us"]), constraint=v["constraint"], excess=v["excess"],
            participant_ids=[p for p in v["participants"].split(";") if p])
            for v in result.violations.with_columns(us.alias("_us")).iter_rows(named=True)]
        limits = [hybrid_pb2.ScheduleLimit(
            schedule=hybrid_pb2.DirectSchedule(participant_id=s["participant_id"], bus=s["bus"],
                                               interval_start=convert.ts(s["_us"]), p_kw=s["p_kw"]),
            limit_kw=s["limit_kw"], curtailed_kw=s["curtailed_kw"], binding=s["binding"])
            for s in result.schedules.with_columns(us.alias("_us")).iter_rows(named=True)]
        return hybrid_pb2.CheckDeliverabilityResponse(deliverable=result.deliverable, violations=violations,
                                                      limits=limits, ac_check_passed=result.ac_passed)
