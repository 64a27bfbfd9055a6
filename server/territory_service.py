"""TerritoryService: a DSO territory's interfaces run as one market session.

Servicers stay thin: checks here, state in :mod:`server.territory_store`, engine work through
:mod:`server.markets_engine`. A session's clearing is the one place the server fans work out: each closed
market's stored rows go to a :class:`server.runner.Task` that runs
:func:`server.markets_engine.clear_kept` in a worker process (or a Ray actor), so every interface clears
exactly as ClearMarket would clear its market, and the results are recorded in one transaction. Each
interface goes to the same worker every time, which keeps its built market: a later session of the same
inputs at another ISO price forecast re-clears warm there.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time

from dsomarket.server import convert, limits, markets_engine, store, territory_store
from dsomarket.server.errors import FailedPrecondition, InvalidArgument, NotFound, ServiceError
from dsomarket.server.notify import CURVES
from dsomarket.server.rpc import unary
from dsomarket.server.runner import Shared, Task
from dsomarket.server.services import OPERATOR, READERS, App
from dsomarket.v1 import operator_pb2, territory_pb2, territory_pb2_grpc

log = logging.getLogger(__name__)

MAX_INTERFACES = 10_000
"""Interfaces of one territory."""


def _interfaces(request) -> list[dict]:
    """The request's interfaces, checked: ids, feeders, limits (0 = none); a feeder in one interface only."""
    items = request.interfaces
    if not 1 <= len(items) <= MAX_INTERFACES:
        raise InvalidArgument("interfaces", f"give 1 to {MAX_INTERFACES} interfaces (got {len(items)})")
    out, seen, owner = [], set(), {}
    for k, i in enumerate(items):
        if not i.feeder_ids:
            raise InvalidArgument(f"interfaces[{k}].feeder_ids", "name at least one loaded feeder")
        feeders = [convert.check_id(f, f"interfaces[{k}].feeder_ids[{j}]") for j, f in enumerate(i.feeder_ids)]
        for j, f in enumerate(feeders):
            if f in owner:
                raise InvalidArgument(f"interfaces[{k}].feeder_ids[{j}]", f"feeder {f!r} is already behind "
                                                                          f"interface {owner[f]!r}")
            owner[f] = i.interface_id or f
        imax = limits.in_range(i.import_max_kw, f"interfaces[{k}].import_max_kw", "kw_limit") or None
        emax = limits.in_range(i.export_max_kw, f"interfaces[{k}].export_max_kw", "kw_limit") or None
        as_loaded = len(feeders) == 1 and imax is None and emax is None
        if as_loaded:
            if i.interface_id and i.interface_id != feeders[0]:
                raise InvalidArgument(f"interfaces[{k}].interface_id", "an interface of one feeder without limits "
                                      f"is that feeder: leave it empty or give {feeders[0]!r}")
            iid = feeders[0]
        else:
            iid = convert.check_id(i.interface_id, f"interfaces[{k}].interface_id")
        if iid in seen:
            raise InvalidArgument(f"interfaces[{k}].interface_id", f"interface {iid!r} appears twice")
        seen.add(iid)
        out.append({"interface_id": iid, "feeder_ids": feeders, "import_max_kw": imax, "export_max_kw": emax,
                    "as_loaded": as_loaded})
    return out


def _merged_feeders(interfaces: list[dict], tables: dict) -> list[dict]:
    """The interfaces with the feeder each one clears: None as loaded, else the merged feeder's (tables,
    summary); InvalidArgument naming the interface when its feeders cannot be merged. Engine work."""
    out = []
    for k, i in enumerate(interfaces):
        feeder = None
        if not i["as_loaded"]:
            members = [(f, tables[f]) for f in i["feeder_ids"]]
            limit = [math.inf if v is None else v for v in (i["import_max_kw"], i["export_max_kw"])]
            try:
                merged, stored = markets_engine.interface_feeder(i["interface_id"], members, *limit)
            except ValueError as exc:  # InputError: members on different root voltages, their own limits
                raise InvalidArgument(f"interfaces[{k}].feeder_ids", str(exc)) from None
            feeder = (stored, markets_engine.feeder_summary(merged))
        out.append({c: i[c] for c in ("interface_id", "feeder_ids", "import_max_kw", "export_max_kw")}
                   | {"feeder": feeder})
    return out


def _territory(row: dict) -> territory_pb2.Territory:
    return territory_pb2.Territory(
        territory_id=row["territory_id"], created_at=convert.ts(row["created_us"]),
        interfaces=[territory_pb2.TerritoryInterface(interface_id=i["interface_id"], feeder_ids=i["feeder_ids"],
                                                     import_max_kw=i["import_max_kw"] or 0.0,
                                                     export_max_kw=i["export_max_kw"] or 0.0)
                    for i in row["interfaces"]])


def _session(row: dict) -> territory_pb2.TerritorySession:
    return territory_pb2.TerritorySession(
        session_id=row["session_id"], territory_id=row["territory_id"], created_at=convert.ts(row["created_us"]),
        interfaces=[territory_pb2.SessionInterface(interface_id=iid, market=convert.market(m))
                    for iid, m in row["interfaces"]])


def _market_template(request) -> dict:
    """The market spec every interface of a new session gets (``market`` with empty market and feeder ids)."""
    t = request.market
    for name in ("market_id", "feeder_id"):
        if getattr(t, name):
            raise InvalidArgument(f"market.{name}", "must be empty: the session names each interface's market")
    req = operator_pb2.CreateMarketRequest()
    req.CopyFrom(t)
    req.market_id = req.feeder_id = "template"
    try:
        spec = convert.market_spec(req)
    except InvalidArgument as exc:
        raise InvalidArgument(f"market.{exc.field}", str(exc).split(": ", 1)[1]) from None
    return spec


@contextlib.asynccontextmanager
async def _locked(app: App, market_ids: list[str]):
    """Every market's lock (in id order, so that two callers never wait on each other)."""
    async with contextlib.AsyncExitStack() as stack:
        for mid in sorted(market_ids):
            await stack.enter_async_context(app.lock(mid))
        yield


class TerritoryService(territory_pb2_grpc.TerritoryServiceServicer):
    def __init__(self, app: App):
        self.app = app

    @unary(OPERATOR)
    async def CreateTerritory(self, request, who):
        app = self.app
        territory_id = convert.check_id(request.territory_id, "territory_id")
        interfaces = _interfaces(request)
        merged = {f for i in interfaces if not i["as_loaded"] for f in i["feeder_ids"]}

        def read(conn):
            loaded = {r[0] for r in conn.execute("SELECT feeder_id FROM feeders").fetchall()}
            return loaded, {f: store.feeder_tables(conn, f) for f in sorted(merged & loaded)}

        loaded, tables = await app.reader.call(read)
        for k, i in enumerate(interfaces):
            for j, f in enumerate(i["feeder_ids"]):
                if f not in loaded:
                    raise NotFound(f"interfaces[{k}].feeder_ids[{j}]: no feeder {f!r}")
        rows = await app.solve(_merged_feeders, interfaces, tables)
        row = await app.writer.call(territory_store.create_territory, who, territory_id, rows)
        return territory_pb2.CreateTerritoryResponse(territory=_territory(row))

    @unary(*READERS)
    async def GetTerritory(self, request, who):
        territory_id = convert.check_id(request.territory_id, "territory_id")
        row = await self.app.reader.call(territory_store.get_territory, territory_id)
        return territory_pb2.GetTerritoryResponse(territory=_territory(row))

    @unary(OPERATOR)
    async def OpenTerritorySession(self, request, who):
        session_id = convert.check_id(request.session_id, "session_id")
        territory_id = convert.check_id(request.territory_id, "territory_id")
        spec = _market_template(request)
        row = await self.app.writer.call(territory_store.open_session, who, session_id, territory_id, spec)
        return territory_pb2.OpenTerritorySessionResponse(session=_session(row))

    @unary(*READERS)
    async def GetTerritorySession(self, request, who):
        session_id = convert.check_id(request.session_id, "session_id")
        row = await self.app.reader.call(territory_store.get_session, session_id)
        return territory_pb2.GetTerritorySessionResponse(session=_session(row))

    @unary(OPERATOR)
    async def CloseTerritoryGate(self, request, who):
        session_id = convert.check_id(request.session_id, "session_id")
        row, closed = await self.app.writer.call(territory_store.close_gate, who, session_id)
        return territory_pb2.CloseTerritoryGateResponse(session=_session(row), closed=len(closed))

    @unary(OPERATOR)
    async def ClearTerritory(self, request, who):
        app = self.app
        session_id = convert.check_id(request.session_id, "session_id")
        session = await app.reader.call(territory_store.get_session, session_id)
        closed = territory_store.require_markets(session, "closed", "clear")
        forecast = convert.forecast(request.iso_price_forecast, closed[0][1])  # the session's markets share rules
        ids = [m["market_id"] for _, m in closed]
        async with _locked(app, ids):
            def read(conn):
                return [store.market_rows(conn, mid) for mid in ids]

            rows = [r for r in await app.reader.call(read) if r[0]["state"] == "closed"]
            if not rows:  # cleared meanwhile by single ClearMarket calls, or by another server process
                raise FailedPrecondition(f"session {session_id!r} has no closed market left to clear")
            # A real-time market clears holding the positions of the awarded day-ahead market it refers to, as
            # ClearMarket clears it, so that its curve describes the feeder its award is disaggregated on.
            references = await app.day_ahead_references([r[0] for r in rows])
            # keep: each interface's worker keeps its built market, so a later session of the same feeders and
            # bids (the real-time one after the day-ahead one) re-clears warm, with the same outcome.
            # The positions cross to each worker once (runner.Shared), not in every real-time session of the day.
            tasks = [Task(r[0]["feeder_id"], markets_engine.clear_kept,
                          (r, forecast, app.solve_time_limit, ref if ref is None else Shared(ref.key, ref)),
                          weight=float(len(r[1]["buses"]["bus"]) + r[2].height), keep=True)
                     for r, ref in zip(rows, references, strict=True)]
            t0 = time.perf_counter()
            results = await app.fan_out(tasks)
            seconds = time.perf_counter() - t0
            outcomes = [res.value if not res.error else markets_engine.clearing_error(
                f"the interface's worker failed: {res.error}") for res in results]
            cleared = [(r[0]["market_id"], forecast, o, r[4]) for r, o in zip(rows, outcomes, strict=True)]
            after, recorded = await app.writer.call(territory_store.record_clearings, who, session_id, cleared)
        for res in results:
            if res.recovered:
                log.warning("session %s, interface %s: %s", session_id, res.interface_id, res.recovered)
        markets = {m["market_id"]: (iid, m) for iid, m in after["interfaces"]}
        report = [territory_pb2.InterfaceClearing(interface_id=markets[mid][0],
                                                  clearing=convert.clear_response(markets[mid][1], o), warm=o.warm,
                                                  recovered=res.recovered)
                  for (mid, _, o, _), res in zip(cleared, results, strict=True) if mid in recorded]
        return territory_pb2.ClearTerritoryResponse(
            session=_session(after), interfaces=report, solve_seconds=seconds,
            optimal=sum(r.clearing.status == convert.CLEARING_STATUS["optimal"] for r in report))

    @unary(OPERATOR)
    async def PublishTerritory(self, request, who):
        session_id = convert.check_id(request.session_id, "session_id")
        row, published = await self.app.writer.call(territory_store.publish, who, session_id)
        self.app.notifier.notify(CURVES)
        return territory_pb2.PublishTerritoryResponse(session=_session(row), published=len(published))

    @unary(OPERATOR)
    async def SettleTerritory(self, request, who):
        app = self.app
        session_id = convert.check_id(request.session_id, "session_id")
        session = await app.reader.call(territory_store.get_session, session_id)
        awarded = territory_store.require_markets(session, "awarded", "settle")
        outcomes, errors = {}, {}
        async with _locked(app, [m["market_id"] for _, m in awarded]):
            for _, m in awarded:
                try:
                    outcomes[m["market_id"]] = await app.settlement(m["market_id"])
                except ServiceError as exc:  # this market only (settled meanwhile, say); the others settle
                    errors[m["market_id"]] = str(exc)
            after, settled = ((session, []) if not outcomes else
                              await app.writer.call(territory_store.record_settlements, who, session_id, outcomes))
        markets = {m["market_id"]: m for _, m in after["interfaces"]}
        report = []
        for iid, m in awarded:
            mid = m["market_id"]
            if mid in settled:
                o = outcomes[mid]
                report.append(territory_pb2.InterfaceSettlement(interface_id=iid, settlement=operator_pb2.SettleMarketResponse(
                    market=convert.market(markets[mid]), totals=o.totals, statement_count=o.statements.height)))
            else:
                report.append(territory_pb2.InterfaceSettlement(
                    interface_id=iid, error=errors.get(mid, f"market {mid!r} is {markets[mid]['state']}")))
        return territory_pb2.SettleTerritoryResponse(session=_session(after), interfaces=report)
