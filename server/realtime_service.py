"""gRPC RealTimeService: the rolling real-time loop (the ISO's award interval by interval).

Servicers convert in, call the engine adapter (:mod:`server.markets_engine`) on the solver thread and
the store on the writer, and convert out; dispatch of each awarded interval streams out at once.
"""

from __future__ import annotations

import asyncio

import polars as pl

from dsomarket.engine.errors import InputError
from dsomarket.server import auth, convert, limits, markets_engine, realtime_store, store, timeline
from dsomarket.server.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from dsomarket.server.notify import dispatch_topic
from dsomarket.server.rpc import stream, unary
from dsomarket.v1 import realtime_pb2, realtime_pb2_grpc

ISO, OPERATOR, AUDITOR, AGGREGATOR = "iso", "operator", "auditor", "aggregator"
MAX_READINGS = 1_000_000
SCHEDULES = "schedules"
"""Notifier topic of revised interface schedules."""
_SOURCE = {"override": realtime_pb2.SCHEDULE_SOURCE_OVERRIDE, "emergency": realtime_pb2.SCHEDULE_SOURCE_EMERGENCY,
           "network": realtime_pb2.SCHEDULE_SOURCE_NETWORK_CHANGE}


def schedule_pb(row, market) -> realtime_pb2.InterfaceSchedule:
    return realtime_pb2.InterfaceSchedule(
        sequence=row["seq"], market_id=row["market_id"], feeder_id=market["feeder_id"],
        interval_start=convert.ts(timeline.interval_start(market, row["interval_idx"])), import_kw=row["import_kw"],
        awarded_import_kw=row["awarded_import_kw"], source=_SOURCE[row["source"]], mode=row["mode"],
        reason=row["reason"], issued_at=convert.ts(row["issued_us"]))


async def change_interval(app, who, market_id: str, start_us: int, fixed: list[dict], source: str, reason: str,
                          detail: dict, import_max_kw=None, export_max_kw=None, shed_kw=None) -> tuple[dict, dict]:
    """Override a resource (``fixed``) or cap the interface in one interval of an awarded market, network-checked;
    store the changed instructions and the revised schedule; notify. Returns ``(stored, outcome)``."""
    async with app.lock(market_id):
        def read(conn):
            rows = store.market_rows(conn, market_id)
            (k,) = store.interval_indices(rows[0], [start_us], "interval_start")
            store.require_state(rows[0], ("awarded",), "an override")
            return rows, k, realtime_store.current_instructions(conn, market_id, k), \
                realtime_store.scheduled_import(conn, market_id, k)

        rows, k, current, (awarded_kw, scheduled_kw, _) = await app.reader.call(read)
        own = await app.disaggregation(market_id)
        iso_price = float(own.award["price"][k])
        if shed_kw is not None:
            cap = scheduled_kw - shed_kw
            import_max_kw = cap if import_max_kw is None else min(import_max_kw, cap)
        outcome = await app.solve(lambda: markets_engine.redispatch_interval(
            app.inputs(rows), k, iso_price, current, fixed, import_max_kw, export_max_kw, app.solve_time_limit))
        if outcome.mode == "refused":
            raise FailedPrecondition(f"{'kw' if fixed else 'import_max_kw'}: the feeder cannot carry it: "
                                     + "; ".join(outcome.diagnosis))
        before = {(r["aggregator_id"], r["resource_id"]): r["kw"] for r in current}
        changed = [(a, r, kw) for a, r, kw in outcome.instructions.iter_rows()
                   if abs(before.get((a, r), 0.0) - kw) > 1e-6 or any(
                       (f["aggregator_id"], f["resource_id"]) == (a, r) for f in fixed)]
        schedule = {"import_kw": outcome.import_kw, "awarded_import_kw": awarded_kw, "source": source,
                    "mode": outcome.mode, "reason": reason}
        action = "dispatch.override" if source == "override" else "dispatch.emergency"
        stored = await app.writer.call(realtime_store.record_redispatch, who, market_id, k, changed, schedule, action,
                                       detail, tuple((f["aggregator_id"], f["resource_id"]) for f in fixed))
    app.notifier.notify(SCHEDULES, dispatch_topic(None), *{dispatch_topic(a) for a, _, _ in changed})
    return stored, {"mode": outcome.mode, "import_kw": outcome.import_kw, "changed": changed}


async def override(app, who, market_id: str, aggregator_id: str, resource_id: str, start_us: int, kw: float,
                   reason: str) -> tuple[dict, dict]:
    """The operator's override of one resource (see OperatorService.OverrideDispatch)."""
    def resource(conn):
        return conn.execute("SELECT bus FROM resources WHERE aggregator_id = ? AND resource_id = ?",
                            (aggregator_id, resource_id)).fetchone()

    row = await app.reader.call(resource)
    if row is None:
        raise NotFound(f"resource_id: aggregator {aggregator_id!r} has no resource {resource_id!r}")
    fixed = [{"aggregator_id": aggregator_id, "resource_id": resource_id, "bus": row["bus"], "kw": kw}]
    detail = {"aggregator_id": aggregator_id, "resource_id": resource_id, "kw": kw}
    stored, outcome = await change_interval(app, who, market_id, start_us, fixed, "override", reason, detail)
    target = next(r for r in stored["instructions"]
                  if (r["aggregator_id"], r["resource_id"]) == (aggregator_id, resource_id))
    return target, outcome


def curtailment_statements(app, rows, own, moved) -> pl.DataFrame:
    """Statement lines of the overrides of a market being settled (call on the solver thread)."""
    table = pl.DataFrame(moved, schema={"aggregator_id": pl.Utf8, "resource_id": pl.Utf8, "interval_idx": pl.Int64,
                                        "kw": pl.Float64}, orient="row")
    return markets_engine.curtailment_lines(app.inputs(rows), own, table)


def interval_awards(market: dict, submitted: list[tuple[int, float, str]]) -> list[tuple[int, float, str]]:
    """``(interval_idx, import_kw, price)`` of the submitted intervals, each at most once, in interval order."""
    indices = store.interval_indices(market, [s for s, _, _ in submitted], "awards.interval_start")
    seen: dict = {}
    for j, k in enumerate(indices):
        if k in seen:
            raise InvalidArgument(f"awards[{j}].interval_start", f"repeats awards[{seen[k]}]")
        seen[k] = j
    return sorted((k, q, p) for k, (_, q, p) in zip(indices, submitted, strict=True))



def _profile_length(profile, field: str) -> int:
    """Rows of a columnar per-bus profile (forecast or metered history); the columns must agree."""
    n = len(profile.bus)
    if n == 0 or len(profile.interval_start) != n or len(profile.p_kw) != n or len(profile.q_kvar) not in (0, n):
        raise InvalidArgument(field, "give bus, interval_start and p_kw (and q_kvar or none) of one length")
    return n

async def settle_imbalance(app, who, market_id: str) -> tuple[dict, dict, dict]:
    """Settle the metered deviations and the interface imbalance of a SETTLED market (the operator's
    SettleImbalance and the scheduler's): ``(market row, engine result, stored counts)``; FAILED_PRECONDITION
    on a gap in the readings."""
    async with app.lock(market_id):
        def read(conn):
            return store.market_rows(conn, market_id), realtime_store.imbalance_inputs(conn, market_id)

        rows, data = await app.reader.call(read)
        store.require_state(rows[0], ("settled",), "settling imbalance")
        own = await app.disaggregation(market_id)
        prices = [float(p) for p in own.award["price"].to_list()]
        try:
            out = await app.solve(lambda: markets_engine.metered_settlement(app.inputs(rows), data, prices))
        except InputError as exc:  # a gap in the readings: the operator must complete them first
            raise FailedPrecondition(f"readings: {exc.reason}") from None
        stored = await app.writer.call(realtime_store.record_imbalance, who, market_id, out["lines"],
                                       out["interface"], out["totals"])
    return rows[0], out, stored


async def settle_intervals(app, who, market_id: str, indices: list[int] | None = None) -> dict:
    """Settle awarded intervals of a rolled market, each once and on its own (the scheduler's step once an
    interval's meter window has passed; the operator's SettleMarket settles every one left): ``indices``, or
    None: every awarded interval not settled yet. Returns the market row after the last one."""
    async with app.lock(market_id):
        def read(conn):
            rows = store.market_rows(conn, market_id)
            return (rows, realtime_store.settle_networks(conn, rows[0]), realtime_store.deliverable_awards(
                conn, market_id), realtime_store.settled_intervals(conn, market_id),
                realtime_store.moved_instructions(conn, market_id),
                realtime_store.listed_award_prices(conn, market_id))

        rows, networks, awards, settled, moved, listed = await app.reader.call(read)
        market = rows[0]
        todo = [k for k in (sorted(awards) if indices is None else indices) if k not in settled]
        if not todo:
            raise FailedPrecondition(f"market {market_id!r} settles interval by interval: no awarded interval is "
                                     "left to settle")
        reference = (await app.disaggregation(market["day_ahead_market_id"])
                     if market["day_ahead_market_id"] else None)

        def settle(k: int):
            mine = [(a, r, kw) for a, r, t, kw in moved if t == k]
            on = (*rows[:5], networks[k], *rows[6:])   # the network of the interval's dispatch in force
            return markets_engine.settle_interval(app.inputs(on), k, awards[k], reference, mine, listed.get(k))

        for k in todo:
            outcome = await app.solve(settle, k)
            market = await app.writer.call(realtime_store.record_interval_settlement, who, market_id, k, outcome,
                                           networks[k][0], awards[k], listed.get(k))
    return market


def _reading_owner(who, reading, field: str, interface: bool) -> tuple[str, str]:
    """``(aggregator_id, resource_id)`` of a reading: an aggregator reads its own resources only, the operator
    names the owner; an empty resource (the interface meter, ``interface`` readings only) is the operator's."""
    agg = convert.optional_id(reading.aggregator_id, f"{field}.aggregator_id")
    res = (convert.optional_id if interface else convert.check_id)(reading.resource_id, f"{field}.resource_id")
    if who.role == AGGREGATOR:
        if not res:
            raise PermissionDenied(f"{field}.resource_id: only the operator reads the interface meter")
        if agg and agg != who.name:
            raise PermissionDenied(f"{field}.aggregator_id: not yours")
        return who.name, res
    if res and not agg:
        raise InvalidArgument(f"{field}.aggregator_id", "is required for a resource's meter")
    return ("" if not res else agg), res


class RealTimeService(realtime_pb2_grpc.RealTimeServiceServicer):
    def __init__(self, app):
        self.app = app

    @unary(ISO)
    async def SubmitIntervalAward(self, request, who):
        app = self.app
        market_id = convert.check_id(request.market_id, "market_id")
        request_id, digest = convert.request_id(request.request_id), convert.request_digest(request)
        submitted = convert.iso_awards(request)
        async with app.lock(market_id):
            result = await app.reader.call(store.stored_result, who, request_id, digest)
            if result is None:
                def read(conn):
                    return (store.market_rows(conn, market_id), realtime_store.award_context(conn, market_id),
                            realtime_store.published_intervals(conn, market_id))

                rows, (before, forecast, _), published = await app.reader.call(read)
                market = rows[0]
                awards = interval_awards(market, submitted)
                realtime_store.check_interval_award(market, {k for k, _, _ in before}, [k for k, _, _ in awards],
                                                    published)
                if market["state"] == "open" and await app.solve(lambda: markets_engine.couples(app.inputs(rows))):
                    # Its later intervals still take bids: the open future the award re-optimises is not final.
                    raise FailedPrecondition(f"market {market_id!r}: storage, EV or ramp resources couple its "
                                             "intervals; award them once the whole market is published (interval "
                                             "by interval, in order) or award it whole (IsoService.SubmitAward)")
                reference = (await app.disaggregation(market["day_ahead_market_id"])
                             if market["day_ahead_market_id"] else None)
                outcome = await app.solve(lambda: markets_engine.interval_award(
                    app.inputs(rows), before, awards, forecast, reference, app.solve_time_limit))
                result = await app.writer.call(realtime_store.record_interval_award, who, market_id, awards,
                                               outcome, request_id, digest, rows[5][0])
                if outcome.status == "optimal":
                    app.notifier.notify(dispatch_topic(None), *map(dispatch_topic, result["aggregators"]))
        if result["status"] == "time_limit":
            raise DeadlineExceeded(f"the interval award of market {market_id!r} hit the solver time limit")
        market = await app.reader.call(store.get_market, market_id)
        return realtime_pb2.SubmitIntervalAwardResponse(
            market=convert.market(market), status=convert.CLEARING_STATUS[result["status"]],
            diagnosis=result["diagnosis"], intervals_remaining=result["remaining"])

    @unary(ISO)
    async def SubmitEmergencyInstruction(self, request, who):
        market_id = convert.check_id(request.market_id, "market_id")
        start = convert.required_us(request, "interval_start", "interval_start")
        caps = {}
        for name in ("import_max_kw", "export_max_kw", "shed_kw"):
            if request.HasField(name):
                caps[name] = limits.in_range(getattr(request, name), name, "kw" if name == "shed_kw" else "kw_limit")
        if not caps:
            raise InvalidArgument("import_max_kw", "give import_max_kw, export_max_kw or shed_kw")
        reason = convert.reason(request.reason)
        stored, outcome = await change_interval(self.app, who, market_id, start, [], "emergency", reason, caps,
                                                **caps)
        market = await self.app.reader.call(store.get_market, market_id)
        return realtime_pb2.SubmitEmergencyInstructionResponse(
            schedule=schedule_pb(stored["schedule"], market), instructions_changed=len(outcome["changed"]))

    @unary(ISO, OPERATOR, AUDITOR)
    async def ListInterfaceSchedules(self, request, who):
        market_id = convert.optional_id(request.market_id, "market_id")
        scope = f"ListInterfaceSchedules|{market_id}"
        limit, after = convert.page(request.pagination, scope)

        def read(conn):
            rows = realtime_store.list_schedules(conn, market_id, after[0] if after else 0, limit)
            return rows, store.markets_by_id(conn, {r["market_id"] for r in rows})

        rows, markets = await self.app.reader.call(read)
        rows, info = convert.next_page(rows, limit, scope, lambda r: [r["seq"]])
        return realtime_pb2.ListInterfaceSchedulesResponse(
            schedules=[schedule_pb(r, markets[r["market_id"]]) for r in rows], pagination=info)

    @stream(ISO, OPERATOR, AUDITOR)
    async def ReceiveInterfaceScheduleStream(self, request, who):
        from dsomarket.server.services import _follow as follow  # services imports this module

        market_id = convert.optional_id(request.market_id, "market_id")

        def read(conn, after):
            rows = realtime_store.list_schedules(conn, market_id, after, 1000)
            return rows, store.markets_by_id(conn, {r["market_id"] for r in rows})

        async for row, market in follow(self.app, SCHEDULES, read, request.after_sequence):
            yield schedule_pb(row, market)

    @unary(AGGREGATOR, OPERATOR)
    async def SubmitMeterReadings(self, request, who):
        app = self.app
        market_id = convert.check_id(request.market_id, "market_id")
        request_id, digest = convert.request_id(request.request_id), convert.request_digest(request)
        if not 0 < len(request.readings) <= MAX_READINGS:
            raise InvalidArgument("readings", f"give 1 to {MAX_READINGS} readings")
        market = await app.reader.call(store.get_market, market_id)
        rows = []
        for k, r in enumerate(request.readings):
            field = f"readings[{k}]"
            agg, res = _reading_owner(who, r, field, interface=True)
            (t,) = store.interval_indices(market, [convert.required_us(r, "interval_start", f"{field}.interval_start")],
                                          f"{field}.interval_start")
            rows.append(("" if not res else agg, res, t, limits.in_range(r.kw, f"{field}.kw", "kw_signed")))
        kinds = await app.reader.call(realtime_store.resource_kinds, {(a, r) for a, r, _, _ in rows if r})
        await asyncio.get_running_loop().run_in_executor(None, markets_engine.check_meters, market, rows, kinds)
        out = await app.writer.call(realtime_store.store_meter_readings, who, market_id, rows, request_id, digest)
        return realtime_pb2.SubmitMeterReadingsResponse(count=out["count"])

    @unary(OPERATOR)
    async def SettleImbalance(self, request, who):
        market_id = convert.check_id(request.market_id, "market_id")
        market, out, stored = await settle_imbalance(self.app, who, market_id)
        return realtime_pb2.SettleImbalanceResponse(
            totals=out["totals"], statement_count=stored["count"],
            interface=[realtime_pb2.InterfaceImbalance(
                interval_start=convert.ts(timeline.interval_start(market, r["interval_idx"])),
                scheduled_kw=r["scheduled_kw"], metered_kw=r["metered_kw"], imbalance_kw=r["imbalance_kw"],
                price=r["price"], amount=r["amount"]) for r in out["interface"]],
            demand_response=[realtime_pb2.DemandResponseRow(
                interval_start=convert.ts(timeline.interval_start(market, r["interval_idx"])),
                **{k: v for k, v in r.items() if k != "interval_idx"}) for r in out["demand_response"]])

    @unary(AGGREGATOR, OPERATOR)
    async def SubmitResourceHistory(self, request, who):
        app = self.app
        request_id, digest = convert.request_id(request.request_id), convert.request_digest(request)
        if not 0 < len(request.readings) <= MAX_READINGS:
            raise InvalidArgument("readings", f"give 1 to {MAX_READINGS} readings")
        rows = []
        for k, r in enumerate(request.readings):
            field = f"readings[{k}]"
            agg, res = _reading_owner(who, r, field, interface=False)
            kw = limits.in_range(r.kw, f"{field}.kw", "kw_signed")
            if kw > 0:
                raise InvalidArgument(f"{field}.kw", f"{kw} kW: a flexible load cannot inject")
            rows.append((agg, res, convert.required_us(r, "interval_start", f"{field}.interval_start"), kw))
        kinds = await app.reader.call(realtime_store.resource_kinds, {(a, r) for a, r, _, _ in rows})
        for k, (agg, res, _, _) in enumerate(rows):
            if kinds.get((agg, res), "flexible_load") != "flexible_load":
                raise InvalidArgument(f"readings[{k}].resource_id", f"{res!r} is a {kinds[(agg, res)]}: a "
                                                                    "demand-response baseline is of a flexible load")
        out = await app.writer.call(realtime_store.store_resource_history, who, rows, request_id, digest)
        return realtime_pb2.SubmitResourceHistoryResponse(count=out["count"])

    @unary(OPERATOR, AGGREGATOR, AUDITOR)
    async def GetPerformanceReport(self, request, who):
        app = self.app
        market_id = convert.check_id(request.market_id, "market_id")
        owner = auth.scope(who, convert.optional_id(request.aggregator_id, "aggregator_id"))

        def read(conn):
            rows = store.market_rows(conn, market_id)
            awarded = store.energy_commitments(conn, rows[0])
            return rows, realtime_store.imbalance_inputs(conn, market_id), awarded

        rows, data, awarded = await app.reader.call(read)
        if awarded is None:
            raise FailedPrecondition(f"market {market_id!r} is {rows[0]['state']}: it has no award yet")
        try:
            table = await app.solve(lambda: markets_engine.performance_rows(app.inputs(rows), data,
                                                                            list(awarded.iter_rows())))
        except InputError as exc:  # a demand-response resource whose history cannot make its baseline
            raise FailedPrecondition(f"readings: {exc.reason}") from None
        if owner:
            table = table.filter(pl.col("aggregator_id") == owner)
        market = rows[0]
        return realtime_pb2.GetPerformanceReportResponse(rows=[realtime_pb2.PerformanceRow(
            aggregator_id=r["aggregator_id"],
            interval_start=convert.ts(timeline.interval_start(market, r["interval_idx"])),
            instructed_kw=r["instructed_kw"], metered_kw=r["metered_kw"], error_kw=r["error_kw"],
            awarded_kw=r["awarded_kw"], instructed_move_kw=r["instructed_move_kw"],
            delivered_move_kw=r["delivered_move_kw"],
            **({} if r["delivery"] is None else {"delivery": r["delivery"]})) for r in table.iter_rows(named=True)])

    @unary(OPERATOR)
    async def SubmitForecast(self, request, who):
        app = self.app
        market_id = convert.check_id(request.market_id, "market_id")
        request_id, digest = convert.request_id(request.request_id), convert.request_digest(request)
        f = request.forecast
        n = _profile_length(f, "forecast")
        market = await app.reader.call(store.get_market, market_id)
        starts = [convert.us_of(ts, f"forecast.interval_start[{k}]") for k, ts in enumerate(f.interval_start)]
        indices = store.interval_indices(market, starts, "forecast.interval_start")
        rows = [(f.bus[k], indices[k], limits.in_range(f.p_kw[k], f"forecast.p_kw[{k}]", "load_kw"),
                 limits.in_range(f.q_kvar[k] if f.q_kvar else 0.0, f"forecast.q_kvar[{k}]", "load_kw"))
                for k in range(n)]
        feeder = await app.feeder(market["feeder_id"])
        await asyncio.get_running_loop().run_in_executor(None, markets_engine.check_forecast, feeder, market, rows)
        out = await app.writer.call(realtime_store.store_forecast, who, market_id, rows, request_id, digest)
        return realtime_pb2.SubmitForecastResponse(count=out["count"])

    @unary(ISO, OPERATOR, AUDITOR)
    async def GetForecastSchedule(self, request, who):
        app = self.app
        market_id = convert.check_id(request.market_id, "market_id")

        def read(conn):
            return store.market_rows(conn, market_id), realtime_store.cleared_imports(conn, market_id)

        rows, cleared = await app.reader.call(read)
        table = pl.DataFrame(cleared, schema={"interval_idx": pl.Int64, "import_kw": pl.Float64}, orient="row")
        out = await app.solve(lambda: markets_engine.forecast_schedule(app.inputs(rows), table))
        market = rows[0]
        return realtime_pb2.GetForecastScheduleResponse(
            source="operator" if rows[6]["operator"] else "history" if rows[6]["history"] else "feeder",
            intervals=[realtime_pb2.ForecastScheduleInterval(
                interval_start=convert.ts(timeline.interval_start(market, r["interval_idx"])), fixed_kw=r["fixed_kw"],
                expected_kw=r["expected_kw"], import_kw=r["import_kw"]) for r in out.iter_rows(named=True)])

    @unary(OPERATOR)
    async def SubmitLoadHistory(self, request, who):
        app = self.app
        feeder_id = convert.check_id(request.feeder_id, "feeder_id")
        request_id, digest = convert.request_id(request.request_id), convert.request_digest(request)
        h = request.history
        n = _profile_length(h, "history")
        rows = [(h.bus[k], convert.us_of(h.interval_start[k], f"history.interval_start[{k}]"),
                 limits.in_range(h.p_kw[k], f"history.p_kw[{k}]", "load_kw"),
                 limits.in_range(h.q_kvar[k] if h.q_kvar else 0.0, f"history.q_kvar[{k}]", "load_kw"))
                for k in range(n)]
        feeder = await app.feeder(feeder_id)
        await asyncio.get_running_loop().run_in_executor(None, markets_engine.check_history, feeder, rows)
        out = await app.writer.call(realtime_store.store_history, who, feeder_id, rows, request_id, digest)
        return realtime_pb2.SubmitLoadHistoryResponse(count=out["count"])
