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

from dsomarket.engine.envelopes import RULES as ENVELOPE_RULES
from dsomarket.engine.envelopes import operating_envelopes
from dsomarket.engine.errors import InputError
from dsomarket.engine.hybrid import RULES, SERVICES, bid_limits, check_deliverability
from dsomarket.engine.registry import CONNECTED, CONTROL, DER_KINDS, METERING, prequalify, validate_ders
from dsomarket.server import convert, limits, markets_engine, registry_store, store
from dsomarket.server.auth import Principal
from dsomarket.server.db import now_us
from dsomarket.server.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from dsomarket.server.registry_store import OPTIONAL_FIELDS as _OPTIONAL
from dsomarket.server.registry_store import RECORD_FIELDS as _RECORD
from dsomarket.server.registry_store import alert_topic, registry_table
from dsomarket.server.rpc import stream, unary
from dsomarket.v1 import hybrid_pb2, hybrid_pb2_grpc

OPERATOR, AGGREGATOR, ISO, AUDITOR = "operator", "aggregator", "iso", "auditor"
MAX_ROWS = 100_000
"""Most DERs or schedules in one request."""

STATUS = {"pending": hybrid_pb2.DER_STATUS_PENDING, "approved": hybrid_pb2.DER_STATUS_APPROVED,
          "approved_with_limits": hybrid_pb2.DER_STATUS_APPROVED_WITH_LIMITS,
          "refused": hybrid_pb2.DER_STATUS_REFUSED, "retired": hybrid_pb2.DER_STATUS_RETIRED}


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
               "metering": d.metering or "none", "control": d.control or "none",
               "services": sorted(set(d.services))}
        for name in _OPTIONAL:
            row[name] = getattr(d, name) if d.HasField(name) else None
        for name, allowed in (("kind", DER_KINDS), ("metering", METERING), ("control", CONTROL)):
            if row[name] not in allowed:
                raise InvalidArgument(f"{field}.{name}", f"must be one of {', '.join(allowed)}")
        for service in row["services"]:
            if service not in SERVICES:
                raise InvalidArgument(f"{field}.services", f"must be among {', '.join(SERVICES)} (got {service!r})")
        rows.append(row)
    try:
        validate_ders(registry_table(rows, who.name))
    except InputError as exc:
        raise InvalidArgument(f"ders[{exc.row}].{exc.field}" if exc.row is not None else "ders", exc.reason) from None
    return rows


def der_pb(row) -> hybrid_pb2.Der:
    rec = json.loads(row["record"])
    optional = {name: rec[name] for name in _OPTIONAL if rec.get(name) is not None}
    return hybrid_pb2.Der(
        der_id=row["der_id"], feeder_id=row["feeder_id"], aggregator_id=row["aggregator_id"],
        kind=rec["kind"], bus=rec["bus"], aggregation_id=rec["aggregation_id"] or "", owner=rec["owner"],
        jurisdiction=rec["jurisdiction"], export_kw=rec["export_kw"], import_kw=rec["import_kw"],
        tan_phi=rec["tan_phi"], metering=rec["metering"], control=rec["control"], status=STATUS[row["status"]],
        export_limit_kw=row["export_limit_kw"], import_limit_kw=row["import_limit_kw"], reason=row["reason"],
        updated_at=convert.ts(row["updated_us"]), services=rec.get("services", []),
        approved_services=registry_store.approved_services(row), **optional)


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
            record = {name: r[name] for name in (*_RECORD, "services")}
            conn.execute(
                "INSERT INTO ders (der_id, aggregator_id, feeder_id, record, status, export_limit_kw, import_limit_kw, "
                "reason, seq, updated_us) VALUES (?, ?, ?, ?, 'pending', 0, 0, '', ?, ?) ON CONFLICT (der_id) DO "
                "UPDATE SET feeder_id = excluded.feeder_id, record = excluded.record, status = 'pending', "
                "export_limit_kw = 0, import_limit_kw = 0, reason = '', seq = excluded.seq, "
                "updated_us = excluded.updated_us, approved_services = ''",
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
                 "updated_us = ?, approved_services = '' WHERE der_id = ?", (reason, now, der_id))
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
                     "approved_services = ?, updated_us = ? WHERE der_id = ?",
                     [(s, e, i, why, svc, now, d) for d, s, e, i, why, svc in decisions])
    store._audit(conn, who, "registry.review", {"feeder_id": feeder_id, "decisions": decisions}, now)
    return [d[0] for d in decisions]


def submit_schedules(conn, who: Principal, feeder_id: str, rows: list[tuple], minutes: int, request_id: str,
                     digest: str) -> dict:
    """Replace the feeder's direct schedules in the intervals the rows name, unless one sells a DER twice."""
    def run():
        if not conn.execute("SELECT 1 FROM feeders WHERE feeder_id = ?", (feeder_id,)).fetchone():
            raise NotFound(f"feeder_id: no feeder {feeder_id!r}")
        starts = sorted({r[2] for r in rows})
        _require_iso_direct(conn, feeder_id, [r[0] for r in rows])
        registry_store.guard(conn, feeder_id, [("", pid, "iso_direct", start, kw, minutes)
                                               for pid, _, start, kw in rows], "direct_schedules",
                             skip_direct=set(starts))
        now = now_us()
        for start in starts:
            conn.execute("DELETE FROM direct_schedules WHERE feeder_id = ? AND interval_us = ?", (feeder_id, start))
        conn.executemany("INSERT INTO direct_schedules (feeder_id, participant_id, bus, interval_us, p_kw, "
                         "submitted_by, submitted_us, minutes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         [(feeder_id, *r, who.name, now, minutes) for r in rows])
        store._audit(conn, who, "hybrid.schedules", {"feeder_id": feeder_id, "schedules": rows, "minutes": minutes},
                     now)
        return {"stored": len(rows)}

    return store._idempotent(conn, who, request_id, digest, run)


def _require_iso_direct(conn, feeder_id: str, participants: list[str]) -> None:
    """A direct participant that is a registered DER (or aggregation) of the feeder needs iso_direct approved."""
    ders = conn.execute("SELECT * FROM ders WHERE feeder_id = ? AND status != 'retired'", (feeder_id,)).fetchall()
    named = {}
    for row in ders:
        for key in {row["der_id"], json.loads(row["record"])["aggregation_id"] or row["der_id"]}:
            named.setdefault(key, []).append(row)
    for k, pid in enumerate(participants):
        for row in named.get(pid, ()):
            registry_store.require_service(row, "iso_direct", f"schedules[{k}].participant_id")


def submit_bids(conn, who: Principal, feeder_id: str, rows: list[tuple], request_id: str, digest: str) -> dict:
    """Replace the feeder's direct bids in the intervals the rows name."""
    def run():
        if not conn.execute("SELECT 1 FROM feeders WHERE feeder_id = ?", (feeder_id,)).fetchone():
            raise NotFound(f"feeder_id: no feeder {feeder_id!r}")
        now = now_us()
        for start in sorted({r[2] for r in rows}):
            conn.execute("DELETE FROM direct_bids WHERE feeder_id = ? AND interval_us = ?", (feeder_id, start))
        conn.executemany("INSERT INTO direct_bids (feeder_id, participant_id, bus, interval_us, segment, side, "
                         "quantity_kw, price, submitted_by, submitted_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         [(feeder_id, *r, who.name, now) for r in rows])
        store._audit(conn, who, "hybrid.bids", {"feeder_id": feeder_id, "bids": rows}, now)
        return {"stored": len(rows)}

    return store._idempotent(conn, who, request_id, digest, run)


def deliverability_rows(conn, feeder_id: str, with_dso: bool) -> tuple[list, list, list]:
    """The feeder's direct schedules, the DSO market's awards in their intervals, and the direct bids."""
    schedules = conn.execute("SELECT participant_id, bus, interval_us, p_kw FROM direct_schedules WHERE feeder_id = ? "
                             "ORDER BY interval_us, participant_id, bus", (feeder_id,)).fetchall()
    bids = conn.execute("SELECT participant_id, bus, interval_us, side, quantity_kw FROM direct_bids WHERE "
                        "feeder_id = ? ORDER BY interval_us, participant_id, bus, segment", (feeder_id,)).fetchall()
    starts = sorted({r[2] for r in schedules} | {r[2] for r in bids})
    dso = []
    if with_dso and starts:
        marks = ", ".join("?" * len(starts))
        start = "m.delivery_start_us + {} * m.interval_minutes * 60000000"
        dso = conn.execute(
            f"SELECT d.aggregator_id || '/' || d.resource_id, 'dso_energy', r.bus, {start.format('d.interval_idx')} AS s, "
            "d.kw FROM dispatch d JOIN markets m ON m.market_id = d.market_id JOIN resources r ON r.aggregator_id = "
            "d.aggregator_id AND r.resource_id = d.resource_id WHERE m.feeder_id = ? AND d.kind = 'instruction' AND "
            f"d.source = 'award' AND {start.format('d.interval_idx')} IN ({marks}) "
            f"UNION ALL SELECT a.aggregator_id || '/' || a.resource_id, 'dso_flexibility', a.bus, "
            f"{start.format('a.interval_idx')}, CASE WHEN a.direction = 'up' THEN a.accepted_kw ELSE -a.accepted_kw "
            "END FROM flex_awards a JOIN markets m ON m.market_id = a.market_id WHERE m.feeder_id = ? AND "
            f"a.accepted_kw > 0 AND {start.format('a.interval_idx')} IN ({marks})",
            (feeder_id, *starts, feeder_id, *starts)).fetchall()
    return schedules, dso, bids


# -- servicers ------------------------------------------------------------------------------------------------

def _stamps(values: list) -> pl.Series:
    return pl.Series("interval", values, dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))


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
        table = registry_table(records, [r["aggregator_id"] for r in rows], {
            "status": [r["status"] for r in rows],
            "export_limit_kw": [r["export_limit_kw"] if r["status"] in CONNECTED else None for r in rows],
            "import_limit_kw": [r["import_limit_kw"] if r["status"] in CONNECTED else None for r in rows]})
        # Participation (M1): each DER's services, offered by its aggregation (a lone DER is its own).
        part = pl.DataFrame([(rec.get("aggregation_id") or rec["der_id"], svc)
                             for rec, row in zip(records, rows, strict=True) if row["status"] != "retired"
                             for svc in rec.get("services", [])],
                            schema={"aggregation_id": pl.Utf8, "service": pl.Utf8}, orient="row")
        result = await self.app.solve(prequalify, feeder, table, part.unique(maintain_order=True), None, useful)
        out = result.ders
        services = result.participation.filter(pl.col("status") == "approved").group_by(
            "aggregation_id", maintain_order=True).agg(pl.col("service").sort().str.join(";"))
        approved = dict(zip(services["aggregation_id"], services["service"], strict=True))
        refused = {}
        for agg, svc, why in result.participation.filter(pl.col("status") == "refused").select(
                "aggregation_id", "service", "reason").iter_rows():
            refused.setdefault(agg, []).append(f"{svc} refused: {why}")
        reviewed = [r["status"] == "pending" for r in rows]
        decisions = [(d, s, e, i, "; ".join(filter(None, [why, *refused.get(agg or d, [])])),
                      approved.get(agg or d, "") if s in CONNECTED else "")
                     for (d, s, e, i, why, agg), keep in zip(
            out.select("der_id", "status", "export_limit_kw", "import_limit_kw", "reason",
                       "aggregation_id").iter_rows(), reviewed, strict=True) if keep]
        seen = {r["der_id"]: r["updated_us"] for r, keep in zip(rows, reviewed, strict=True) if keep}
        ids = await self.app.writer.call(record_review, who, feeder_id, decisions, seen)
        stored = await self.app.reader.call(lambda conn: [_one(conn, d) for d in ids])
        check = result.ac_checks.get(feeder.name)
        return hybrid_pb2.PrequalifyDersResponse(ders=[der_pb(r) for r in stored],
                                                 ac_check_passed=check is None or check.passed)


    @unary(AGGREGATOR, OPERATOR, ISO, AUDITOR)
    async def GetOperatingEnvelopes(self, request, who):
        feeder_id = convert.check_id(request.feeder_id, "feeder_id")
        market_id = convert.optional_id(request.market_id, "market_id")
        rule = request.rule or "proportional"
        if rule not in ENVELOPE_RULES:
            raise InvalidArgument("rule", f"must be one of {', '.join(ENVELOPE_RULES)}")
        feeder = await self.app.feeder(feeder_id)

        def read(conn):
            rows = conn.execute("SELECT * FROM ders WHERE feeder_id = ? AND status IN ('approved', "
                                "'approved_with_limits') ORDER BY seq", (feeder_id,)).fetchall()
            if not market_id:
                return rows, None, None
            market = store.get_market(conn, market_id)
            if market["feeder_id"] != feeder_id:
                raise InvalidArgument("market_id", f"market {market_id!r} clears feeder {market['feeder_id']!r}")
            return rows, market, store.market_forecast(conn, market_id)

        rows, market, forecast = await self.app.reader.call(read)
        if not rows:
            raise FailedPrecondition(f"feeder_id: feeder {feeder_id!r} has no approved DER")
        intervals = None
        if market is not None:
            intervals = markets_engine.market_intervals(market)
            feeder = markets_engine.forecast_feeder(feeder, intervals, forecast)
        table = registry_store.stored_table(rows).with_columns(pl.lit(feeder.name).alias("feeder"))
        env = await self.app.solve(operating_envelopes, feeder, table, None, intervals, rule)
        out = env.ders.join(table.select("der_id", "aggregator_id"), on="der_id", how="left", maintain_order="left")
        if who.role == AGGREGATOR:
            out = out.filter(pl.col("aggregator_id") == who.name)
        return hybrid_pb2.GetOperatingEnvelopesResponse(rule=rule, ac_check_passed=env.ac_check.passed, envelopes=[
            hybrid_pb2.OperatingEnvelope(
                der_id=e["der_id"], aggregation_id=e["aggregation_id"], aggregator_id=e["aggregator_id"], bus=e["bus"],
                interval_start=convert.ts(e["_us"]), export_max_kw=e["export_max_kw"],
                import_max_kw=e["import_max_kw"], export_binding=e["export_binding"],
                import_binding=e["import_binding"])
            for e in out.with_columns(pl.col("interval").dt.epoch("us").alias("_us")).iter_rows(named=True)])


class HybridService(hybrid_pb2_grpc.HybridServiceServicer):
    def __init__(self, app):
        self.app = app

    @unary(ISO)
    async def SubmitDirectSchedules(self, request, who):
        feeder_id = convert.check_id(request.feeder_id, "feeder_id")
        if not 0 < len(request.schedules) <= MAX_ROWS:
            raise InvalidArgument("schedules", f"give 1 to {MAX_ROWS} schedules")
        minutes = request.interval_minutes if request.HasField("interval_minutes") else 60
        if not 0 < minutes <= 1440:
            raise InvalidArgument("interval_minutes", f"must be 1 to 1440 (got {minutes})")
        buses = await self._buses(feeder_id)
        rows, seen = [], set()
        for k, s in enumerate(request.schedules):
            field = f"schedules[{k}]"
            pid, start = self._where(s, field, buses, feeder_id)
            if not math.isfinite(s.p_kw):
                raise InvalidArgument(f"{field}.p_kw", "must be finite")
            if (pid, s.bus, start) in seen:
                raise InvalidArgument(f"{field}.participant_id", "has two schedules for one bus and interval")
            seen.add((pid, s.bus, start))
            rows.append((pid, s.bus, start, s.p_kw))
        out = await self.app.writer.call(submit_schedules, who, feeder_id, rows, minutes,
                                         convert.request_id(request.request_id), convert.request_digest(request))
        return hybrid_pb2.SubmitDirectSchedulesResponse(stored=out["stored"])

    @unary(ISO)
    async def SubmitDirectBids(self, request, who):
        feeder_id = convert.check_id(request.feeder_id, "feeder_id")
        if not 0 < len(request.bids) <= MAX_ROWS:
            raise InvalidArgument("bids", f"give 1 to {MAX_ROWS} bid segments")
        buses = await self._buses(feeder_id)
        rows, segments = [], {}
        for k, b in enumerate(request.bids):
            field = f"bids[{k}]"
            pid, start = self._where(b, field, buses, feeder_id)
            side = convert.enum_value(convert.SIDE, b.side, f"{field}.side", "side")
            if not b.quantity_kw > 0:
                raise InvalidArgument(f"{field}.quantity_kw", f"must be positive (got {b.quantity_kw})")
            quantity = limits.in_range(b.quantity_kw, f"{field}.quantity_kw", "kw")
            price = limits.decimal_text(b.price, f"{field}.price")
            n = segments[(pid, b.bus, start)] = segments.get((pid, b.bus, start), -1) + 1
            rows.append((pid, b.bus, start, n, side, quantity, price))
        out = await self.app.writer.call(submit_bids, who, feeder_id, rows, convert.request_id(request.request_id),
                                         convert.request_digest(request))
        return hybrid_pb2.SubmitDirectBidsResponse(stored=out["stored"])

    async def _buses(self, feeder_id: str) -> set:
        return set((await self.app.feeder(feeder_id)).topology.bus_ids.astype(str))

    @staticmethod
    def _where(msg, field: str, buses: set, feeder_id: str) -> tuple[str, int]:
        pid = convert.check_id(msg.participant_id, f"{field}.participant_id")
        if msg.bus not in buses:
            raise InvalidArgument(f"{field}.bus", f"unknown bus {msg.bus!r} of feeder {feeder_id!r}")
        return pid, convert.required_us(msg, "interval_start", f"{field}.interval_start")

    @unary(OPERATOR)
    async def CheckDeliverability(self, request, who):
        feeder_id = convert.check_id(request.feeder_id, "feeder_id")
        rule = request.rule or "sensitivity"
        if rule not in RULES:
            raise InvalidArgument("rule", f"must be one of {', '.join(RULES)}")
        feeder = await self.app.feeder(feeder_id)
        direct, dso, bids = await self.app.reader.call(deliverability_rows, feeder_id, not request.exclude_dso_awards)
        if not direct and not bids:
            raise FailedPrecondition(f"feeder_id: feeder {feeder_id!r} has no direct schedule or bid")
        rows = [(p, "iso_direct", b, t, kw) for p, b, t, kw in direct] + [tuple(r) for r in dso]
        # One row per participant, service, bus and interval (a resource may hold several flexibility awards).
        table = pl.DataFrame({"participant_id": [r[0] for r in rows], "service": [r[1] for r in rows],
                              "bus": [r[2] for r in rows], "p_kw": [float(r[4]) for r in rows],
                              "interval": _stamps([r[3] for r in rows])}).group_by(
            "participant_id", "service", "bus", "interval", maintain_order=True).agg(pl.col("p_kw").sum())
        us = pl.col("interval").dt.epoch("us")
        violations, limits_out, deliverable, ac_passed, held = [], [], True, True, None
        if rows:
            result = await self.app.solve(check_deliverability, feeder, table, None, rule)
            deliverable, ac_passed = result.deliverable, result.ac_passed
            violations = [hybrid_pb2.DeliverabilityViolation(
                interval_start=convert.ts(v["_us"]), constraint=v["constraint"], excess=v["excess"],
                participant_ids=[p for p in v["participants"].split(";") if p])
                for v in result.violations.with_columns(us.alias("_us")).iter_rows(named=True)]
            limits_out = [hybrid_pb2.ScheduleLimit(
                schedule=hybrid_pb2.DirectSchedule(participant_id=s["participant_id"], bus=s["bus"],
                                                   interval_start=convert.ts(s["_us"]), p_kw=s["p_kw"]),
                limit_kw=s["limit_kw"], curtailed_kw=s["curtailed_kw"], binding=s["binding"], service=s["service"])
                for s in result.schedules.with_columns(us.alias("_us")).iter_rows(named=True)]
            # Bids are checked around the schedules as curtailed to their limits: what is sure to flow.
            held = result.schedules.select("participant_id", "service", "bus", "interval",
                                           pl.col("limit_kw").alias("p_kw"))
        bid_out = []
        if bids:
            bid_table = pl.DataFrame({"participant_id": [r[0] for r in bids], "bus": [r[1] for r in bids],
                                      "interval": _stamps([r[2] for r in bids]), "side": [r[3] for r in bids],
                                      "quantity_kw": [r[4] for r in bids]})
            ranges = await self.app.solve(bid_limits, feeder, bid_table, held, None)
            bid_out = [hybrid_pb2.BidLimit(
                participant_id=b["participant_id"], bus=b["bus"], interval_start=convert.ts(b["_us"]),
                offered_export_kw=b["offered_export_kw"], offered_import_kw=b["offered_import_kw"],
                export_limit_kw=b["export_limit_kw"], import_limit_kw=b["import_limit_kw"],
                export_binding=b["export_binding"], import_binding=b["import_binding"])
                for b in ranges.with_columns(us.alias("_us")).iter_rows(named=True)]
            deliverable = deliverable and all(b.export_limit_kw >= b.offered_export_kw - 1e-6
                                              and b.import_limit_kw >= b.offered_import_kw - 1e-6 for b in bid_out)
        return hybrid_pb2.CheckDeliverabilityResponse(deliverable=deliverable, violations=violations,
                                                      limits=limits_out, ac_check_passed=ac_passed,
                                                      bid_limits=bid_out, dso_award_count=len(dso))

    @unary(AGGREGATOR, OPERATOR, ISO, AUDITOR)
    async def ListConflictAlerts(self, request, who):
        feeder_id = convert.optional_id(request.feeder_id, "feeder_id")
        owner = who.name if who.role == AGGREGATOR else None
        scope = f"ListConflictAlerts|{feeder_id}|{owner or ''}"
        limit, after = convert.page(request.pagination, scope)
        rows = await self.app.reader.call(registry_store.list_alerts, owner, feeder_id, after[0] if after else 0,
                                          limit + 1)
        rows, info = convert.next_page(rows, limit, scope, lambda r: [r["seq"]])
        return hybrid_pb2.ListConflictAlertsResponse(alerts=[alert_pb(r) for r in rows], pagination=info)

    @stream(AGGREGATOR, OPERATOR, ISO, AUDITOR)
    async def ReceiveConflictAlertStream(self, request, who):
        from dsomarket.server.services import _STREAM_BATCH, _follow

        feeder_id = convert.optional_id(request.feeder_id, "feeder_id")
        owner = who.name if who.role == AGGREGATOR else None

        def read(conn, after):
            rows = registry_store.list_alerts(conn, owner, feeder_id, after, _STREAM_BATCH + 1)
            return rows, {r["market_id"]: None for r in rows}

        async for row, _ in _follow(self.app, alert_topic(owner), read, request.after_sequence):
            yield alert_pb(row)


def alert_pb(row) -> hybrid_pb2.ConflictAlert:
    return hybrid_pb2.ConflictAlert(
        sequence=row["seq"], feeder_id=row["feeder_id"], resource_id=row["resource_id"],
        aggregator_id=row["aggregator_id"], kind=row["kind"], interval_start=convert.ts(row["interval_us"]),
        services=[s for s in row["services"].split(";") if s], committed=row["committed"], limit=row["limit_value"],
        excess=row["excess"], refused=row["refused"], market_id=row["market_id"], raised_at=convert.ts(row["raised_us"]))
