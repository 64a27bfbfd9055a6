"""gRPC servicers: convert in, call the store or the engine adapter, convert out.

Each method is wrapped by :mod:`server.rpc` (authentication, role, error
mapping). :class:`App` holds what the servicers share: the writer and readers,
the stream notifier, the solver executor and a few caches of immutable
engine objects.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import functools
import threading
from collections import OrderedDict, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dsomarket.server import audit, auth, convert, db, limits, markets_engine, pagetoken, realtime_service
from dsomarket.server import realtime_store, runner, store
from dsomarket.server import timeline
from dsomarket.v1 import aggregator_pb2 as agg_pb
from dsomarket.v1 import aggregator_pb2_grpc, audit_pb2, audit_pb2_grpc, iso_pb2, iso_pb2_grpc
from dsomarket.v1 import flexibility_pb2 as flex_pb
from dsomarket.v1 import flexibility_pb2_grpc
from dsomarket.v1 import market_pb2, market_pb2_grpc, operator_pb2, operator_pb2_grpc
from dsomarket.server.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, Unauthenticated, Unavailable
from dsomarket.server.requestlog import engine_phase
from dsomarket.server.notify import CURVES, Notifier, dispatch_topic
from dsomarket.server.tokenbook import TokenBook
from dsomarket.server.interceptors import caller
from dsomarket.server.rpc import stream, unary

OPERATOR, AGGREGATOR, ISO, AUDITOR = auth.ROLES
EVERYONE = auth.ROLES
READERS = (OPERATOR, AUDITOR)
_STREAM_BATCH = 1_000
DISAGGREGATIONS_BYTES = 256 * 2**20
"""Estimated memory (bytes) :class:`App` keeps disaggregations of awarded markets in (about 250 kB per interval
of a 1,000-bus, 1,000-bid interface): bounded by memory rather than by a count."""
POSITIONS_BYTES = 2**30
"""Estimated memory (bytes) :class:`App` keeps the day-ahead positions real-time clearings hold in (about 70 kB
per hour of a 1,000-bid interface: 1 GiB holds a day of 600 such interfaces, or 1 hour of 15,000), so that a
real-time session of a territory of thousands of interfaces reads each one's instead of disaggregating its
day-ahead award again; past it, the least recently used are computed again when next needed."""


class _SizedCache:
    """Values by key, the least recently used dropped first once their sizes (``size(value)``, bytes) add up
    to more than ``budget``; the newest value stays whatever its size."""

    def __init__(self, budget: int, size):
        self._budget, self._size = budget, size
        self._items: OrderedDict = OrderedDict()   # key -> (value, size)
        self._bytes = 0

    def get(self, key):
        """The value of ``key`` (now the most recently used), or None."""
        hit = self._items.get(key)
        if hit is None:
            return None
        self._items.move_to_end(key)
        return hit[0]

    def put(self, key, value) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        n = self._size(value)
        self._items[key] = (value, n)
        self._bytes += n
        while self._bytes > self._budget and len(self._items) > 1:
            _, (_, dropped) = self._items.popitem(last=False)
            self._bytes -= dropped


class App:
    """Shared state of one server: storage, notifier, solver executor and caches.

    Parameters
    ----------
    db_path
        SQLite file; created with the schema if missing.
    solve_time_limit
        Seconds a clearing or award solve may take (None: no limit); past it
        the call fails with DEADLINE_EXCEEDED and the market keeps its state.
    token_recheck_seconds
        The longest a revoked token keeps working, for new calls and open streams
        (see :class:`server.tokenbook.TokenBook`).
    workers, ray_address
        The runner a territory session clears on (:func:`server.runner.runner`): local worker processes
        (default one per core), or Ray actors when ``ray_address`` is given. Started at the first
        territory clearing and kept until :meth:`close`.
    warm_interfaces
        Interfaces whose built market one worker keeps between territory clearings (least recently cleared
        dropped first; 0: every clearing is cold); see :data:`server.runner.KEEP`.
    """

    def __init__(self, db_path: str | Path, solve_time_limit: float | None = None,
                 token_recheck_seconds: float = auth.TOKEN_RECHECK_SECONDS, workers: int | None = None,
                 ray_address: str | None = None, warm_interfaces: int = runner.KEEP):
        db.initialise(db_path)
        conn = db.connect(db_path)
        try:
            self.pages = pagetoken.Signer(db.transaction(conn, pagetoken.server_key))
        finally:
            conn.close()
        self.writer = db.Writer(db_path)
        self.reader = db.Reader(db_path)
        self.notifier = Notifier()
        self.solve_time_limit = solve_time_limit
        # One solve at a time: HiGHS runs single-threaded, so the other core stays with the event loop.
        self._solver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsomarket-solver")
        self.tokens = TokenBook(self.reader, token_recheck_seconds)
        # A territory's fan-out is waited for on a thread of its own: the solver thread stays free for single
        # markets, the event loop for every other call.
        self._territory = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsomarket-territory")
        self._runner = None
        self._runner_spec = (workers, ray_address, warm_interfaces)
        self._runner_start = threading.Lock()   # the territory thread and the solver thread both start it
        # A market of many intervals has its curves traced on the runner's processes, not the solver thread.
        self.curves = runner.CurveFanOut(self.territory_runner)
        self._feeders: dict = {}
        self._disaggregations = _SizedCache(DISAGGREGATIONS_BYTES, markets_engine.disaggregation_bytes)
        self._positions = _SizedCache(POSITIONS_BYTES, lambda p: p.nbytes)
        self._locks: defaultdict = defaultdict(asyncio.Lock)

    async def solve(self, fn, *args):
        """Run engine work on the solver thread, never on the event loop; one log line per phase."""
        with engine_phase():
            return await asyncio.get_running_loop().run_in_executor(self._solver, functools.partial(fn, *args))

    async def fan_out(self, tasks: list) -> list:
        """:class:`server.runner.Task` s run on the territory runner; their results in order."""
        with engine_phase():
            return await asyncio.get_running_loop().run_in_executor(self._territory, self._map, tasks)

    def _map(self, tasks: list) -> list:
        return self.territory_runner().map(tasks)

    def territory_runner(self):
        """The runner of territory sessions and of many-interval markets' curves, started at the first call."""
        with self._runner_start:
            if self._runner is None:
                workers, ray_address, keep = self._runner_spec
                self._runner = runner.runner(workers, ray_address, keep=keep)
            return self._runner

    def lock(self, market_id: str) -> asyncio.Lock:
        """Serialises the solve-then-record steps of one market (clear, award, settle, flexibility clearing)
        and the needs posted to its flexibility auction."""
        return self._locks[market_id]

    def feeder_of(self, feeder_id: str, tables: dict):
        """The engine's feeder of stored tables, cached (a feeder never changes); call off the event loop."""
        feeder = self._feeders.get(feeder_id)
        if feeder is None:
            feeder = self._feeders[feeder_id] = markets_engine.feeder_from_tables(tables)
        return feeder

    async def feeder(self, feeder_id: str):
        """The engine's feeder by id: cached, or read and built on a worker thread (not the solver's)."""
        hit = self._feeders.get(feeder_id)
        if hit is not None:
            return hit
        tables = await self.reader.call(store.feeder_tables, feeder_id)
        return await asyncio.get_running_loop().run_in_executor(None, self.feeder_of, feeder_id, tables)

    def inputs(self, rows, day_ahead=None) -> markets_engine.MarketInputs:
        """Engine inputs from :func:`server.store.market_rows`, with the market's accepted flexibility
        activations folded into the feeder (and ``day_ahead``, :meth:`day_ahead_reference`, to clear on);
        call on the solver thread."""
        inputs = markets_engine.stored_inputs(rows, self.feeder_of(rows[0]["feeder_id"], rows[1]))
        return inputs if day_ahead is None else dataclasses.replace(inputs, day_ahead=day_ahead)

    async def day_ahead_reference(self, market: dict) -> markets_engine.DayAheadPositions | None:
        """The positions of the day-ahead market a real-time market refers to, once that is awarded (else None:
        no position is known to hold yet), for clearing the real-time market on them. They are fixed from the
        award on, so they are computed once (from :meth:`disaggregation`) and kept: a real-time clearing does
        not disaggregate its day-ahead award again."""
        ref = market["day_ahead_market_id"]
        if not ref:
            return None
        hit = self._positions.get(ref)
        if hit is not None:
            return hit
        if not timeline.at_least((await self.reader.call(store.get_market, ref))["state"], "awarded"):
            return None
        positions = markets_engine.day_ahead_positions(ref, await self.disaggregation(ref))
        self._positions.put(ref, positions)
        return positions

    async def day_ahead_references(self, markets: list[dict]) -> list[markets_engine.DayAheadPositions | None]:
        """:meth:`day_ahead_reference` of each of a territory session's markets. The awarded day-ahead markets whose
        positions neither cache holds (the first real-time session after a restart) are derived again from their
        stored awards on the territory's runner, all at once (:func:`server.markets_engine.award_positions`), not
        one after another on the solver thread; one whose derivation fails there is derived as before."""
        refs = {m["day_ahead_market_id"] for m in markets if m["day_ahead_market_id"]}
        todo = sorted(r for r in refs if self._positions.get(r) is None and self._disaggregations.get(r) is None)
        derived: dict = {}
        if len(todo) > 1:
            def read(conn):
                out = []
                for ref in todo:
                    rows = store.market_rows(conn, ref)
                    # A day-ahead market holds no positions of its own (no reference to disaggregate first).
                    if timeline.at_least(rows[0]["state"], "awarded") and not rows[0]["day_ahead_market_id"]:
                        awards, forecast, by_interval = realtime_store.award_context(conn, ref)
                        out.append((ref, rows, awards, forecast, by_interval))
                return out

            found = await self.reader.call(read)
            tasks = [runner.Task(ref, markets_engine.award_positions,   # market ids: unique, as map() requires
                                 (ref, rows, awards, forecast, by_interval, self.solve_time_limit),
                                 weight=float(len(rows[1]["buses"]["bus"]) + rows[2].height))
                     for ref, rows, awards, forecast, by_interval in found]
            for (ref, *_), res in zip(found, await self.fan_out(tasks), strict=True):
                if not res.error:
                    derived[ref] = res.value
                    self._positions.put(ref, res.value)
        return [derived.get(m["day_ahead_market_id"]) or await self.day_ahead_reference(m) for m in markets]

    async def disaggregation(self, market_id: str):
        """The engine's disaggregation of an awarded market: cached, or recomputed from the stored award."""
        hit = self._disaggregations.get(market_id)
        if hit is not None:
            return hit
        rows = await self.reader.call(store.market_rows, market_id)
        market = rows[0]
        if not timeline.at_least(market["state"], "awarded"):
            raise FailedPrecondition(f"market {market_id!r} is {market['state']}: it has no award yet")
        awards, forecast, by_interval = await self.reader.call(realtime_store.award_context, market_id)
        reference = None
        if market["day_ahead_market_id"]:
            reference = await self.disaggregation(market["day_ahead_market_id"])
        outcome = await self.solve(lambda: markets_engine.whole_award(
            self.inputs(rows), awards, by_interval, forecast, reference, self.solve_time_limit))
        self.remember(market_id, outcome.disaggregation)
        return outcome.disaggregation

    async def clear(self, who: auth.Principal, market_id: str, forecast_values=(),
                    first: bool = False) -> tuple[dict, dict, object]:
        """Clear a CLOSED market and record it (the operator's call and the scheduler's): the market row
        before and after, and the :class:`server.markets_engine.ClearOutcome`. ``first``: only a market never
        cleared (the scheduler's rule), checked again in the recording transaction, so that of several
        server processes only one records it."""
        async with self.lock(market_id):
            rows = await self.reader.call(store.market_rows, market_id)
            market = rows[0]
            store.require_state(market, ("closed",), "clearing")
            if first:
                store.require_first_clearing(market)
            forecast = convert.forecast(forecast_values, market)
            reference = await self.day_ahead_reference(market)
            outcome = await self.solve(lambda: markets_engine.clear_market(self.inputs(rows, reference), forecast,
                                                                           self.solve_time_limit, self.curves))
            activations = rows[4]  # of a flexibility auction cleared before, or None
            row = await self.writer.call(store.record_clearing, who, market_id, forecast, outcome, activations,
                                         first)
        return market, row, outcome

    async def clear_intervals(self, who: auth.Principal, market_id: str, indices: list[int] | None = None,
                              forecast_values=()) -> tuple[dict, object]:
        """Clear closed intervals of a rolling market together on their own bids and record it
        (:func:`server.realtime_store.record_interval_clearing`): ``indices`` at the default forecast price (the
        scheduler), or None: the intervals whose clearing was not optimal, at ``forecast_values`` (the operator's
        way out). Returns the market row after it and the :class:`server.markets_engine.ClearOutcome`."""
        async with self.lock(market_id):
            def read(conn):
                return store.market_rows(conn, market_id), realtime_store.failed_intervals(conn, market_id)

            rows, failed = await self.reader.call(read)
            retry = indices is None
            indices = failed if retry else indices
            if not indices:
                raise FailedPrecondition(f"market {market_id!r} clears interval by interval, and no interval's "
                                         "clearing failed: there is nothing to clear")
            forecast = convert.forecast(forecast_values, rows[0])
            if len(forecast) > 1:  # one price per interval of the market: those of the intervals cleared
                forecast = [forecast[k] for k in indices]
            reference = await self.day_ahead_reference(rows[0])
            outcome = await self.solve(lambda: markets_engine.clear_intervals(
                self.inputs(rows, reference), indices, forecast, self.solve_time_limit))
            await self.writer.call(realtime_store.record_interval_clearing, who, market_id, indices, forecast,
                                   outcome, retry)
            row = await self.reader.call(store.get_market, market_id)
        return row, outcome

    async def settles_by_interval(self, market_id: str) -> bool:
        """True for a market that settles interval by interval (:func:`server.realtime_service.settle_intervals`):
        one rolled through its own gates, or one cleared whole and awarded interval by interval whose intervals
        are independent. Each awarded interval then settles as it was dispatched, on its own and on the network of
        its dispatch in force, at the prices listed for it: the whole award disaggregated again at once may price
        it otherwise where its prices are not unique (degenerate duals, e.g. a bus a network change cut off)."""
        if await self.reader.call(realtime_store.rolled, market_id):
            return True
        if not (await self.reader.call(realtime_store.award_context, market_id))[2]:
            return False
        rows = await self.reader.call(store.market_rows, market_id)
        return not await self.solve(lambda: markets_engine.couples(self.inputs(rows)))

    async def settlement(self, market_id: str):
        """The :class:`server.markets_engine.SettleOutcome` of an AWARDED market, not yet recorded; call holding
        the market's lock."""
        rows = await self.reader.call(store.market_rows, market_id)
        market = rows[0]
        store.require_state(market, ("awarded",), "settling")
        own = await self.disaggregation(market_id)
        reference = (await self.disaggregation(market["day_ahead_market_id"])
                     if market["day_ahead_market_id"] else None)
        outcome = await self.solve(lambda: markets_engine.settle_market(self.inputs(rows), own, reference))
        moved = await self.reader.call(realtime_store.moved_instructions, market_id)
        if moved:  # overrides: the deviation at the award's DLMP and the lost margin (docs/realtime.md)
            lines = await self.solve(realtime_service.curtailment_statements, self, rows, own, moved)
            outcome = markets_engine.with_lines(outcome, lines)
        return outcome

    def remember(self, market_id: str, disaggregation) -> None:
        self._disaggregations.put(market_id, disaggregation)

    def close(self) -> None:
        self._solver.shutdown(wait=True)
        self._territory.shutdown(wait=True)
        if self._runner is not None:
            self._runner.close()
        self.writer.close()
        self.reader.close()


def _market_filter_states(values) -> list[str]:
    names = {v: k for k, v in convert.STATE.items()}
    out = []
    for k, v in enumerate(values):
        if v not in names:
            raise InvalidArgument(f"filter.states[{k}]", f"must be a known market state (got {v})")
        out.append(names[v])
    return out


class MarketService(market_pb2_grpc.MarketServiceServicer):
    def __init__(self, app: App):
        self.app = app

    @unary(*EVERYONE)
    async def GetIdentity(self, request, who):
        return market_pb2.GetIdentityResponse(name=who.name, role=convert.ROLE[who.role])

    @unary(*EVERYONE)
    async def ListMarkets(self, request, who):
        f = request.filter
        feeder_id = convert.optional_id(f.feeder_id, "filter.feeder_id")
        states = _market_filter_states(f.states)
        kind = (convert.enum_value(convert.MARKET_KIND, f.kind, "filter.kind", "market kind") if f.kind
                else None)
        scope = f"ListMarkets|{feeder_id}|{states}|{kind}"
        limit, after = convert.page(request.pagination, scope)
        rows = await self.app.reader.call(store.list_markets, feeder_id, states, kind, after, limit)
        rows, info = convert.next_page(rows, limit, scope, lambda r: [r["market_id"]])
        return market_pb2.ListMarketsResponse(markets=[convert.market(r) for r in rows], pagination=info)

    @unary(*EVERYONE)
    async def GetMarket(self, request, who):
        market_id = convert.check_id(request.market_id, "market_id")
        return market_pb2.GetMarketResponse(market=convert.market(await self.app.reader.call(store.get_market,
                                                                                             market_id)))

    @unary(*EVERYONE)
    async def ListMarketIntervals(self, request, who):
        market_id = convert.check_id(request.market_id, "market_id")

        def read(conn):
            return store.get_market(conn, market_id), frozenset(store.rolled_intervals(conn, market_id))

        market, rolled = await self.app.reader.call(read)
        scope = f"ListMarketIntervals|{market_id}"
        limit, after = convert.page(request.pagination, scope)
        if after and not isinstance(after[0], int):
            raise InvalidArgument("pagination.page_token", "is malformed")
        start = after[0] + 1 if after else 0
        rows = list(range(start, min(market["interval_count"], start + limit + 1)))
        rows, info = convert.next_page(rows, limit, scope, lambda k: [k])
        now = db.now_us()
        intervals = [convert.interval(market, k, now, rolled) for k in rows]
        return market_pb2.ListMarketIntervalsResponse(intervals=intervals, pagination=info)

    @unary(OPERATOR, AUDITOR, AGGREGATOR)
    async def ListMarketPrices(self, request, who):
        market_id = convert.check_id(request.market_id, "market_id")
        market = await self.app.reader.call(store.get_market, market_id)
        visible = "published" if who.role == AGGREGATOR else "cleared"
        # An open rolling market shows the intervals cleared (published) at their own gates so far.
        rolling = market["state"] == "open" and market["kind"] in timeline.ROLLING
        if not (rolling or timeline.at_least(market["state"], visible)):
            raise FailedPrecondition(f"market {market_id!r} is {market['state']}: its prices are not "
                                     f"{visible} yet")
        history = request.include_superseded
        scope = f"ListMarketPrices|{market_id}|{request.bus}|{int(history)}"
        limit, after = convert.page(request.pagination, scope)
        rows = await self.app.reader.call(store.list_prices, market_id, request.bus, after, limit,
                                          rolling and visible == "published", history)
        rows, info = convert.next_page(rows, limit, scope,
                                       lambda r: [r["interval_idx"], r["bus"], r["stage"], r["revision"]])
        return market_pb2.ListMarketPricesResponse(prices=[convert.bus_price(r, market) for r in rows],
                                                   pagination=info)


class OperatorService(operator_pb2_grpc.OperatorServiceServicer):
    def __init__(self, app: App):
        self.app = app

    @unary(OPERATOR)
    async def CreateFeeder(self, request, who):
        feeder_id = convert.check_id(request.feeder_id, "feeder_id")
        kind, source = convert.feeder_source(request)
        feeder, tables = await self.app.solve(markets_engine.load_feeder, kind, source)
        row = await self.app.writer.call(store.create_feeder, who, feeder_id, tables,
                                         markets_engine.feeder_summary(feeder))
        return operator_pb2.CreateFeederResponse(feeder=convert.feeder(row))

    @unary(*READERS)
    async def ListFeeders(self, request, who):
        limit, after = convert.page(request.pagination, "ListFeeders")
        rows = await self.app.reader.call(store.list_feeders, after, limit)
        rows, info = convert.next_page(rows, limit, "ListFeeders", lambda r: [r["feeder_id"]])
        return operator_pb2.ListFeedersResponse(feeders=[convert.feeder(r) for r in rows], pagination=info)

    @unary(OPERATOR)
    async def CreateMarket(self, request, who):
        row = await self.app.writer.call(store.create_market, who, convert.market_spec(request))
        return operator_pb2.CreateMarketResponse(market=convert.market(row))

    @unary(OPERATOR)
    async def CloseGate(self, request, who):
        market_id = convert.check_id(request.market_id, "market_id")
        row = await self.app.writer.call(store.close_gate, who, market_id)
        return operator_pb2.CloseGateResponse(market=convert.market(row))

    @unary(OPERATOR)
    async def ReopenMarket(self, request, who):
        market_id = convert.check_id(request.market_id, "market_id")
        reason = convert.reason(request.reason)
        async with self.app.lock(market_id):  # not while a clearing of the market is being solved
            row = await self.app.writer.call(store.reopen, who, market_id, reason)
        return operator_pb2.ReopenMarketResponse(market=convert.market(row))

    @unary(OPERATOR)
    async def ClearMarket(self, request, who):
        app = self.app
        market_id = convert.check_id(request.market_id, "market_id")
        if await app.reader.call(store.rolled_intervals, market_id):
            # A market clearing interval by interval: the intervals whose clearing failed, cleared again.
            row, outcome = await app.clear_intervals(who, market_id, None, request.iso_price_forecast)
        else:
            _, row, outcome = await app.clear(who, market_id, request.iso_price_forecast)
        if outcome.status == "time_limit":
            raise DeadlineExceeded(f"the clearing of market {market_id!r} hit the solver time limit; "
                                   "the market stays closed")
        return convert.clear_response(row, outcome)

    @unary(OPERATOR)
    async def PublishMarket(self, request, who):
        market_id = convert.check_id(request.market_id, "market_id")
        row = await self.app.writer.call(store.publish, who, market_id)
        self.app.notifier.notify(CURVES)
        return operator_pb2.PublishMarketResponse(market=convert.market(row))

    @unary(OPERATOR)
    async def SettleMarket(self, request, who):
        app = self.app
        market_id = convert.check_id(request.market_id, "market_id")
        if await app.settles_by_interval(market_id):  # this settles every interval left
            store.require_state(await app.reader.call(store.get_market, market_id), ("awarded",), "settling")
            row = await realtime_service.settle_intervals(app, who, market_id)
            totals, count = await app.reader.call(_settled, market_id)
            return operator_pb2.SettleMarketResponse(market=convert.market(row), totals=totals, statement_count=count)
        async with app.lock(market_id):
            outcome = await app.settlement(market_id)
            row = await app.writer.call(store.record_settlement, who, market_id, outcome)
        return operator_pb2.SettleMarketResponse(market=convert.market(row), totals=outcome.totals,
                                                 statement_count=outcome.statements.height)

    @unary(OPERATOR)
    async def OverrideDispatch(self, request, who):
        market_id = convert.check_id(request.market_id, "market_id")
        aggregator_id = convert.check_id(request.aggregator_id, "aggregator_id")
        resource_id = convert.check_id(request.resource_id, "resource_id")
        start = convert.required_us(request, "interval_start", "interval_start")
        kw = limits.in_range(request.kw, "kw", "kw_signed")
        reason = convert.reason(request.reason)
        row, outcome = await realtime_service.override(self.app, who, market_id, aggregator_id, resource_id, start,
                                                       kw, reason)
        market = await self.app.reader.call(store.get_market, market_id)
        event = convert.dispatch_event(row, market)
        return operator_pb2.OverrideDispatchResponse(instruction=event.instruction, mode=outcome["mode"],
                                                     import_kw=outcome["import_kw"],
                                                     redispatched=len(outcome["changed"]) - 1)


class AggregatorService(aggregator_pb2_grpc.AggregatorServiceServicer):
    def __init__(self, app: App):
        self.app = app

    @unary(AGGREGATOR)
    async def RegisterResources(self, request, who):
        out = await self.app.writer.call(store.register_resources, who, convert.resources(request),
                                         *_request_key(request))
        return agg_pb.RegisterResourcesResponse(registered=out["registered"])

    @unary(AGGREGATOR, *READERS)
    async def ListResources(self, request, who):
        owner = auth.scope(who, convert.optional_id(request.filter.aggregator_id, "filter.aggregator_id"))
        feeder_id = convert.optional_id(request.filter.feeder_id, "filter.feeder_id")
        scope = f"ListResources|{owner}|{feeder_id}"
        limit, after = convert.page(request.pagination, scope)
        rows = await self.app.reader.call(store.list_resources, owner, feeder_id, after, limit)
        rows, info = convert.next_page(rows, limit, scope, lambda r: [r["aggregator_id"], r["resource_id"]])
        return agg_pb.ListResourcesResponse(resources=[convert.resource(r) for r in rows], pagination=info)

    async def _write_bids(self, fn, request, who) -> dict:
        market_id = convert.check_id(request.market_id, "market_id")
        batch = convert.bid_batch(request.bids)
        return await self.app.writer.call(fn, who, market_id, batch, *_request_key(request))

    @unary(AGGREGATOR)
    async def SubmitBids(self, request, who):
        out = await self._write_bids(store.submit_bids, request, who)
        return agg_pb.SubmitBidsResponse(accepted=out["count"],
                                         acknowledged_at=convert.ts(out["acknowledged_us"]))

    @unary(AGGREGATOR)
    async def ReplaceBids(self, request, who):
        out = await self._write_bids(store.replace_bids, request, who)
        return agg_pb.ReplaceBidsResponse(replaced=out["count"],
                                          acknowledged_at=convert.ts(out["acknowledged_us"]))

    @unary(AGGREGATOR)
    async def WithdrawBids(self, request, who):
        market_id = convert.check_id(request.market_id, "market_id")
        bid_ids = convert.bid_ids(request.bid_ids)
        out = await self.app.writer.call(store.withdraw_bids, who, market_id, bid_ids, *_request_key(request))
        return agg_pb.WithdrawBidsResponse(withdrawn=out["count"],
                                           acknowledged_at=convert.ts(out["acknowledged_us"]))

    @unary(AGGREGATOR, *READERS)
    async def ListBids(self, request, who):
        withdrawn = request.filter.include_withdrawn
        bids, info = await _list_own(
            self.app, request, who, "ListBids",
            lambda conn, m, o, after, limit: store.list_bids(conn, m, o, withdrawn, after, limit),
            _own_key("bid_id"), convert.bid)
        return agg_pb.ListBidsResponse(bids=bids, pagination=info)

    async def _dispatch_page(self, request, who, kind: str):
        owner = auth.scope(who, convert.optional_id(request.filter.aggregator_id, "filter.aggregator_id"))
        market_id = convert.optional_id(request.filter.market_id, "filter.market_id")
        scope = f"{kind}|{owner}|{market_id}"
        limit, after = convert.page(request.pagination, scope)

        def read(conn):
            rows = store.list_dispatch(conn, kind, market_id, owner, after[0] if after else 0, limit)
            return rows, store.markets_by_id(conn, {r["market_id"] for r in rows})

        rows, markets = await self.app.reader.call(read)
        rows, info = convert.next_page(rows, limit, scope, lambda r: [r["seq"]])
        return [convert.dispatch_event(r, markets[r["market_id"]]) for r in rows], info

    @unary(AGGREGATOR, *READERS)
    async def ListAwards(self, request, who):
        events, info = await self._dispatch_page(request, who, "award")
        return agg_pb.ListAwardsResponse(awards=[e.award for e in events], pagination=info)

    @unary(AGGREGATOR, *READERS)
    async def ListInstructions(self, request, who):
        events, info = await self._dispatch_page(request, who, "instruction")
        return agg_pb.ListInstructionsResponse(instructions=[e.instruction for e in events], pagination=info)

    @unary(AGGREGATOR, *READERS)
    async def ListStatements(self, request, who):
        statements, info = await _list_own(self.app, request, who, "ListStatements", store.list_statements,
                                           lambda r: [r[c] for c in store.STATEMENT_KEY], convert.statement)
        return agg_pb.ListStatementsResponse(statements=statements, pagination=info)

    @stream(AGGREGATOR, *READERS)
    async def ReceiveDispatchStream(self, request, who):
        owner = auth.scope(who, convert.optional_id(request.filter.aggregator_id, "filter.aggregator_id"))
        market_id = convert.optional_id(request.filter.market_id, "filter.market_id")

        def read(conn, after):
            rows = store.list_dispatch(conn, None, market_id, owner, after, _STREAM_BATCH)
            return rows, store.markets_by_id(conn, {r["market_id"] for r in rows})

        async for row, market in _follow(self.app, dispatch_topic(owner), read, request.after_sequence):
            yield convert.dispatch_event(row, market)


class IsoService(iso_pb2_grpc.IsoServiceServicer):
    def __init__(self, app: App):
        self.app = app

    @unary(ISO, *READERS)
    async def ListInterfaceCurves(self, request, who):
        market_id = convert.optional_id(request.filter.market_id, "filter.market_id")
        feeder_id = convert.optional_id(request.filter.feeder_id, "filter.feeder_id")
        scope = f"ListInterfaceCurves|{market_id}|{feeder_id}"
        limit, after = convert.page(request.pagination, scope)

        def read(conn):
            rows = store.list_curves(conn, market_id, feeder_id, after[0] if after else 0, limit)
            return rows, store.markets_by_id(conn, {r["market_id"] for r in rows})

        rows, markets = await self.app.reader.call(read)
        rows, info = convert.next_page(rows, limit, scope, lambda r: [r["seq"]])
        curves = [convert.curve(r, markets[r["market_id"]]) for r in rows]
        return iso_pb2.ListInterfaceCurvesResponse(curves=curves, pagination=info)

    @stream(ISO, *READERS)
    async def ReceiveInterfaceCurveStream(self, request, who):
        market_id = convert.optional_id(request.filter.market_id, "filter.market_id")
        feeder_id = convert.optional_id(request.filter.feeder_id, "filter.feeder_id")

        def read(conn, after):
            rows = store.list_curves(conn, market_id, feeder_id, after, _STREAM_BATCH)
            return rows, store.markets_by_id(conn, {r["market_id"] for r in rows})

        async for row, market in _follow(self.app, CURVES, read, request.after_sequence):
            yield convert.curve(row, market)

    @unary(ISO)
    async def SubmitAward(self, request, who):
        app = self.app
        market_id = convert.check_id(request.market_id, "market_id")
        request_id, digest = _request_key(request)
        submitted = convert.iso_awards(request)
        async with app.lock(market_id):
            # A retry of an award already applied gets the first reply, not a wrong-state error.
            result = await app.reader.call(store.stored_result, who, request_id, digest)
            if result is None:
                rows = await app.reader.call(store.market_rows, market_id)
                market = rows[0]
                store.require_state(market, ("published",), "an award")
                awards = _award_rows(market, submitted)
                reference = (await app.disaggregation(market["day_ahead_market_id"])
                             if market["day_ahead_market_id"] else None)
                outcome = await app.solve(lambda: markets_engine.disaggregate_award(
                    app.inputs(rows), awards, reference, app.solve_time_limit))
                result = await app.writer.call(store.record_award, who, market_id, awards, outcome,
                                               request_id, digest)
                if outcome.status == "optimal":
                    app.remember(market_id, outcome.disaggregation)
                    app.notifier.notify(dispatch_topic(None), *map(dispatch_topic, result["aggregators"]))
        if result["status"] == "time_limit":
            raise DeadlineExceeded(f"the award of market {market_id!r} hit the solver time limit; "
                                   "the market stays published")
        market = await app.reader.call(store.get_market, market_id)
        return iso_pb2.SubmitAwardResponse(market=convert.market(market),
                                           status=convert.CLEARING_STATUS[result["status"]],
                                           diagnosis=result["diagnosis"])


def _settled(conn, market_id: str) -> tuple[dict, int]:
    """The stored totals and statement count of a settled market."""
    (totals,) = conn.execute("SELECT totals FROM settlements WHERE market_id = ?", (market_id,)).fetchone()
    (count,) = conn.execute("SELECT COUNT(*) FROM statements WHERE market_id = ?", (market_id,)).fetchone()
    return json.loads(totals), count


def _request_key(request) -> tuple[str, str]:
    """``(request_id, digest)`` of an idempotent write."""
    return convert.request_id(request.request_id), convert.request_digest(request)


def _award_rows(market: dict, submitted: list[tuple[int, float, str]]) -> list[tuple[int, float, str]]:
    """``(interval_idx, import_kw, price)``: exactly one award per interval of the market."""
    rows = realtime_service.interval_awards(market, submitted)
    if len(rows) != market["interval_count"]:
        missing = min(set(range(market["interval_count"])) - {k for k, _, _ in rows})
        raise InvalidArgument("awards", f"no award for the interval starting "
                                        f"{timeline.iso(timeline.interval_start(market, missing))}")
    return rows


async def _list_own(app: App, request, who, name: str, list_rows, key, to_pb) -> tuple[list, object]:
    """One page of an aggregator-scoped list (bids, offers, statements, awards) as messages.

    ``list_rows(conn, market_id, owner, after, limit)`` reads the rows the caller
    may see; ``key(row)`` is the row's pagination key.
    """
    f = request.filter
    owner = auth.scope(who, convert.optional_id(f.aggregator_id, "filter.aggregator_id"))
    market_id = convert.optional_id(f.market_id, "filter.market_id")
    scope = f"{name}|{owner}|{market_id}|{getattr(f, 'include_withdrawn', '')}"
    limit, after = convert.page(request.pagination, scope)

    def read(conn):
        rows = list_rows(conn, market_id, owner, after, limit)
        return rows, store.markets_by_id(conn, {r["market_id"] for r in rows})

    rows, markets = await app.reader.call(read)
    rows, info = convert.next_page(rows, limit, scope, key)
    return [to_pb(r, markets[r["market_id"]]) for r in rows], info


def _own_key(id_col: str):
    return lambda r: [r["market_id"], r["aggregator_id"], r[id_col]]


async def _follow(app: App, topic: str, read, after: int):
    """Rows after ``after`` from ``read(conn, after)``, then each new one as it commits, until shutdown or
    until the caller's token is revoked.

    Each read checks the token in the same snapshot as the rows, so nothing committed after a revocation
    is sent; between wake-ups the stream looks at the token book every ``recheck / 4`` seconds, so a
    revoked token ends the stream (UNAUTHENTICATED) within the same time as it stops new calls.
    """
    who = caller()
    after = convert.sequence(after, "after_sequence")

    def read_if_active(conn, after):
        return read(conn, after) if auth.is_active(conn, who.token_digest) else None

    with app.notifier.subscribe(topic) as wake:
        while not app.notifier.closed:
            wake.clear()
            got = await app.reader.call(read_if_active, after)
            if got is None:
                raise Unauthenticated("the token of this stream was revoked")
            rows, markets = got
            for row in rows:
                yield row, markets[row["market_id"]]
                after = row["seq"]
            if len(rows) > _STREAM_BATCH:
                continue
            while not wake.is_set():
                try:
                    await asyncio.wait_for(wake.wait(), app.tokens.recheck / 4)
                except asyncio.TimeoutError:
                    if not app.tokens.active(who):
                        raise Unauthenticated("the token of this stream was revoked") from None
    # Ending with UNAVAILABLE rather than OK tells clients to reconnect (to the restarted server).
    raise Unavailable("the server is shutting down")


class FlexibilityService(flexibility_pb2_grpc.FlexibilityServiceServicer):
    def __init__(self, app: App):
        self.app = app

    @unary(OPERATOR)
    async def PostNeeds(self, request, who):
        app = self.app
        market_id = convert.check_id(request.market_id, "market_id")
        needs = convert.flex_needs(request)
        market = await app.reader.call(store.get_market, market_id)
        feeder = await app.feeder(market["feeder_id"])
        await asyncio.get_running_loop().run_in_executor(None, markets_engine.check_flex_needs, feeder, needs)
        # Offers cannot change once the gate has closed, but needs can: the market's lock keeps a need
        # from landing between a clearing's read and its record.
        async with app.lock(market_id):
            out = await app.writer.call(store.post_needs, who, market_id, needs, *_request_key(request))
        return flex_pb.PostNeedsResponse(posted=out["count"], acknowledged_at=convert.ts(out["acknowledged_us"]))

    @unary(OPERATOR, AUDITOR, AGGREGATOR)
    async def ListNeeds(self, request, who):
        market_id = convert.optional_id(request.filter.market_id, "filter.market_id")
        scope = f"ListNeeds|{market_id}"
        limit, after = convert.page(request.pagination, scope)

        def read(conn):
            rows = store.list_flex_needs(conn, market_id, after, limit)
            return rows, store.markets_by_id(conn, {r["market_id"] for r in rows})

        rows, markets = await self.app.reader.call(read)
        rows, info = convert.next_page(rows, limit, scope, lambda r: [r["market_id"], r["need_id"]])
        # An aggregator sees what is needed where, not what the DSO would pay for it.
        needs = [convert.flex_need(r, markets[r["market_id"]], with_price=who.role != AGGREGATOR) for r in rows]
        return flex_pb.ListNeedsResponse(needs=needs, pagination=info)

    @unary(AGGREGATOR)
    async def SubmitFlexOffers(self, request, who):
        market_id = convert.check_id(request.market_id, "market_id")
        batch = convert.flex_offer_batch(request.offers)
        out = await self.app.writer.call(store.submit_flex_offers, who, market_id, batch, *_request_key(request))
        return flex_pb.SubmitFlexOffersResponse(accepted=out["count"],
                                                acknowledged_at=convert.ts(out["acknowledged_us"]))

    @unary(AGGREGATOR)
    async def WithdrawFlexOffers(self, request, who):
        market_id = convert.check_id(request.market_id, "market_id")
        offer_ids = convert.offer_ids(request.offer_ids)
        out = await self.app.writer.call(store.withdraw_flex_offers, who, market_id, offer_ids,
                                         *_request_key(request))
        return flex_pb.WithdrawFlexOffersResponse(withdrawn=out["count"],
                                                  acknowledged_at=convert.ts(out["acknowledged_us"]))

    @unary(AGGREGATOR, *READERS)
    async def ListFlexOffers(self, request, who):
        withdrawn = request.filter.include_withdrawn
        offers, info = await _list_own(
            self.app, request, who, "ListFlexOffers",
            lambda conn, m, o, after, limit: store.list_flex_offers(conn, m, o, withdrawn, after, limit),
            _own_key("offer_id"), convert.flex_offer)
        return flex_pb.ListFlexOffersResponse(offers=offers, pagination=info)

    @unary(OPERATOR)
    async def ClearFlexibility(self, request, who):
        app = self.app
        market_id = convert.check_id(request.market_id, "market_id")
        pricing = convert.flex_pricing(request.pricing)
        async with app.lock(market_id):
            market, tables, needs, offers, status, committed = await app.reader.call(store.flex_rows, market_id)
            store.require_flex_clearable(market, status, needs.height)
            outcome = await app.solve(lambda: markets_engine.clear_flex(
                app.feeder_of(market["feeder_id"], tables), market, needs, offers, pricing, app.solve_time_limit,
                committed))
            await app.writer.call(store.record_flex_clearing, who, market_id, pricing, outcome)
        if outcome.status == "time_limit":
            raise DeadlineExceeded(f"the flexibility auction of market {market_id!r} hit the solver time limit; "
                                   "it can be cleared again")
        optimal = outcome.status == "optimal"
        accepted = outcome.awards["accepted_kw"] if optimal else None
        return flex_pb.ClearFlexibilityResponse(
            market_id=market_id, status=convert.CLEARING_STATUS.get(outcome.status, convert.CLEARING_STATUS["error"]),
            pricing=convert.flex_pricing_value(pricing), total_cost=outcome.total_cost,
            shortfall_cost=outcome.shortfall_cost, currency=market["currency"], need_count=needs.height,
            needs_met=int(outcome.needs["met"].sum()) if optimal else 0, offer_count=offers.height,
            offers_accepted=int((accepted > 0).sum()) if optimal else 0,
            accepted_kw=float(accepted.sum()) if optimal else 0.0, solve_seconds=outcome.seconds)

    @unary(AGGREGATOR, *READERS)
    async def ListFlexAwards(self, request, who):
        awards, info = await _list_own(self.app, request, who, "ListFlexAwards", store.list_flex_awards,
                                       _own_key("offer_id"), convert.flex_award)
        return flex_pb.ListFlexAwardsResponse(awards=awards, pagination=info)

    @unary(*READERS)
    async def ListFlexNeedResults(self, request, who):
        market_id = convert.optional_id(request.filter.market_id, "filter.market_id")
        scope = f"ListFlexNeedResults|{market_id}"
        limit, after = convert.page(request.pagination, scope)

        def read(conn):
            rows = store.list_flex_need_results(conn, market_id, after, limit)
            return rows, store.markets_by_id(conn, {r["market_id"] for r in rows})

        rows, markets = await self.app.reader.call(read)
        rows, info = convert.next_page(rows, limit, scope, lambda r: [r["market_id"], r["need_id"]])
        results = [convert.flex_need_result(r, markets[r["market_id"]]) for r in rows]
        return flex_pb.ListFlexNeedResultsResponse(results=results, pagination=info)


class AuditService(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, app: App):
        self.app = app

    @unary(*READERS)
    async def ListAuditRecords(self, request, who):
        scope = f"ListAuditRecords|{request.action_prefix}"
        limit, after = convert.page(request.pagination, scope)
        rows = await self.app.reader.call(audit.records, request.action_prefix, after[0] if after else 0,
                                          limit + 1)
        rows, info = convert.next_page(rows, limit, scope, lambda r: [r["seq"]])
        records = [convert.audit_record(r) for r in rows]
        return audit_pb2.ListAuditRecordsResponse(records=records, pagination=info)

    @unary(*READERS)
    async def VerifyAuditChain(self, request, who):
        report = await self.app.reader.call(audit.verify)
        return audit_pb2.VerifyAuditChainResponse(ok=report.ok, records=report.records,
                                                  first_bad_sequence=report.first_bad, reason=report.reason)
