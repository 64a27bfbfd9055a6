"""gRPC NetworkService: versioned network changes of a feeder, and the re-clearing they trigger.

Convert in, check with the engine's own rules, store, then re-clear each
CLEARED or PUBLISHED market the changes touch on the new network version, and
the touched intervals of an OPEN rolling (real-time, hour-ahead) market that
were cleared at their gates and are not awarded yet; published curves revised
so reach the ISO's stream again, flagged as a revision.
The awarded intervals the changes touch (of AWARDED markets, and of PUBLISHED
ones awarded interval by interval) are re-dispatched on the new network: the
standing award met at least cost, or its largest deliverable part, or reported
as failed; the changed instructions stream to the aggregators and the revised
interface schedules to the ISO (source NETWORK_CHANGE), audited as
``dispatch.network``.
"""

from __future__ import annotations

import asyncio
import math

from dsomarket.engine.errors import InputError
from dsomarket.engine.network_changes import network_runs
from dsomarket.server import convert, limits, markets_engine, network_store, realtime_store, store
from dsomarket.server.errors import AlreadyExists, InvalidArgument
from dsomarket.server.notify import CURVES, dispatch_topic
from dsomarket.server.realtime_service import SCHEDULES
from dsomarket.server.rpc import unary
from dsomarket.v1 import network_pb2, network_pb2_grpc

OPERATOR, AUDITOR = "operator", "auditor"
MAX_CHANGES = 10_000
"""Most changes in one submission."""

KIND = {network_pb2.NETWORK_CHANGE_KIND_OUTAGE: "outage", network_pb2.NETWORK_CHANGE_KIND_RETURN: "return",
        network_pb2.NETWORK_CHANGE_KIND_OPEN: "open", network_pb2.NETWORK_CHANGE_KIND_CLOSE: "close",
        network_pb2.NETWORK_CHANGE_KIND_RATING: "rating", network_pb2.NETWORK_CHANGE_KIND_VOLTAGE: "voltage",
        network_pb2.NETWORK_CHANGE_KIND_INTERFACE: "interface"}
_KIND_PB = {v: k for k, v in KIND.items()}
_VALUES = ("s_max_kva", "vmin_pu", "vmax_pu", "import_max_kw", "export_max_kw")


_RANGES = {"s_max_kva": "kva", "vmin_pu": "v_pu", "vmax_pu": "v_pu", "import_max_kw": "kw_limit",
           "export_max_kw": "kw_limit"}
"""Range (:mod:`server.limits`) of each change value; a rating or interface limit may also be +infinity."""


def _value(change, name: str, field: str) -> float | None:
    if not change.HasField(name):
        return None
    value = getattr(change, name)
    if value == math.inf and name in ("s_max_kva", "import_max_kw", "export_max_kw"):
        return value
    return limits.in_range(value, field, _RANGES[name])


def change_rows(request: network_pb2.SubmitNetworkChangesRequest) -> list[dict]:
    """Stored-form change rows of a request (shape checks only; the network checks come after)."""
    if not 0 < len(request.changes) <= MAX_CHANGES:
        raise InvalidArgument("changes", f"give 1 to {MAX_CHANGES} changes")
    rows = []
    for k, c in enumerate(request.changes):
        field = f"changes[{k}]"
        reason = c.reason.strip()
        if not 0 < len(reason) <= convert.MAX_REASON:
            raise InvalidArgument(f"{field}.reason", f"is required, up to {convert.MAX_REASON} characters")
        row = {"change_id": convert.check_id(c.change_id, f"{field}.change_id"),
               "kind": convert.enum_value(KIND, c.kind, f"{field}.kind", "network change kind"),
               "element": c.element, "start_us": convert.required_us(c, "start", f"{field}.start"),
               "end_us": convert.us_of(c.end, f"{field}.end") if c.HasField("end") else None,
               "shed": int(c.shed), "reason": reason}
        for name in _VALUES:
            row[name] = _value(c, name, f"{field}.{name}")
        rows.append(row)
    return rows


def check_changes(feeder, existing: list[dict], rows: list[dict]) -> None:
    """The engine's checks of the feeder's changes with ``rows`` added: known elements, values in range,
    and a radial feeder without unannounced islanded load at every instant some change starts or ends.

    Raises InvalidArgument naming ``changes[k].field`` (or ``changes`` for a problem of the whole set),
    AlreadyExists for a change id the feeder already has.
    """
    used = {r["change_id"] for r in existing}
    for k, r in enumerate(rows):
        if r["change_id"] in used:
            raise AlreadyExists(f"changes[{k}].change_id: {r['change_id']!r} is already a change of this feeder")
    offset = len(existing)
    every = existing + [{**r, "submitted_by": ""} for r in rows]
    try:
        table = markets_engine.change_table(feeder, every)
        instants = sorted({t for r in every for t in (r["start_us"], r["end_us"]) if t is not None})
        network_runs(feeder, table, [markets_engine.us_to_datetime(t) for t in instants])  # exact, to year 9999
    except InputError as exc:
        if exc.row is not None and exc.row >= offset:
            raise InvalidArgument(f"changes[{exc.row - offset}].{exc.field}", exc.reason) from None
        ids = {r["change_id"]: k for k, r in enumerate(rows)}
        named = [k for cid, k in ids.items() if repr(cid) in exc.reason]
        where = f"changes[{named[0]}].{exc.field}" if named else "changes"
        raise InvalidArgument(where, exc.reason) from None


def change_pb(row) -> network_pb2.NetworkChange:
    values = {name: row[name] for name in _VALUES if row[name] is not None}
    return network_pb2.NetworkChange(
        change_id=row["change_id"], kind=_KIND_PB[row["kind"]], element=row["element"],
        start=convert.ts(row["start_us"]), end=convert.ts(row["end_us"]), shed=bool(row["shed"]),
        reason=row["reason"], submitted_by=row["submitted_by"], version=row["version"],
        submitted_at=convert.ts(row["submitted_us"]), **values)


class NetworkService(network_pb2_grpc.NetworkServiceServicer):
    def __init__(self, app):
        self.app = app

    @unary(OPERATOR)
    async def SubmitNetworkChanges(self, request, who):
        app = self.app
        feeder_id = convert.check_id(request.feeder_id, "feeder_id")
        request_id, digest = convert.request_id(request.request_id), convert.request_digest(request)
        stored = await app.reader.call(store.stored_result, who, request_id, digest)
        if stored is not None:
            return _response(stored)
        rows = change_rows(request)
        feeder = await app.feeder(feeder_id)

        def existing(conn):
            version = store.network_version(conn, feeder_id)
            return version, store.network_changes(conn, feeder_id, version)

        version, before = await app.reader.call(existing)
        await asyncio.get_running_loop().run_in_executor(None, check_changes, feeder, before, rows)
        result = await app.writer.call(network_store.submit_changes, who, feeder_id, rows, version, request_id,
                                       digest)
        # Dispatched intervals first: their standing dispatch is read on the network of the market's clearing,
        # which a re-clear of a market awarded interval by interval moves to the new version.
        revisions = [await self._redispatch(market_id, touched, result["version"], who)
                     for market_id, touched in result.get("dispatched", [])]
        for market_id in result["markets"]:
            revisions.append(await self._revise(market_id, who))
        for market_id, touched in result.get("rolling", []):
            revised = await self._revise_intervals(market_id, touched, result["version"], who)
            if revised is not None:
                revisions.append(revised)
        if any(r["republished"] for r in revisions):
            app.notifier.notify(CURVES)
        return _response({**result, "revisions": revisions})

    async def _redispatch(self, market_id: str, touched: list[int], version: int, who) -> dict:
        """Re-dispatch the standing award of a market's ``touched`` awarded intervals on network ``version``;
        store and stream the changed instructions and the revised interface schedules (source network)."""
        app = self.app
        async with app.lock(market_id):
            def read(conn):
                rows = store.market_rows(conn, market_id)   # on the network its award was dispatched on
                changed = (version, store.network_changes(conn, rows[0]["feeder_id"], version))
                current = {k: realtime_store.current_instructions(conn, market_id, k) for k in touched}
                scheduled = {k: realtime_store.scheduled_import(conn, market_id, k)[1] for k in touched}
                fixed = {k: f for k in touched if (f := realtime_store.current_instructions(conn, market_id, k, True))}
                return rows, (*rows[:5], changed, *rows[6:]), realtime_store.award_context(conn, market_id), \
                    current, scheduled, fixed

            rows, after, (awards, forecast, by_interval), current, scheduled, fixed = await app.reader.call(read)
            market = rows[0]
            reference = (await app.disaggregation(market["day_ahead_market_id"])
                         if market["day_ahead_market_id"] else None)
            outcome = await app.solve(lambda: markets_engine.redispatch_after_change(
                app.inputs(rows), app.inputs(after), awards, by_interval, touched, forecast, scheduled, reference,
                app.solve_time_limit, fixed))
            intervals = []
            for iv in outcome.intervals:
                before = {(r["aggregator_id"], r["resource_id"]): r["kw"] for r in current[iv["interval_idx"]]}
                new = {(a, r): kw + 0.0 for a, r, kw in iv["instructions"]}
                if iv["mode"] != "failed":
                    new |= {key: 0.0 for key in before if key not in new}
                moved = [(a, r, kw) for (a, r), kw in sorted(new.items()) if abs(before.get((a, r), 0.0) - kw) > 1e-6]
                intervals.append({k: v for k, v in iv.items() if k != "instructions"} | {
                    "changed": moved, "reason": f"network version {version}: {iv['reason']}"})
            # What a replay needs beyond the log's bids and network (``server.replay``), as the award records do.
            inputs = {"before_version": rows[5][0], "awards": [list(a) for a in awards], "by_interval": by_interval,
                      "forecast": forecast, "scheduled": [[k, scheduled[k]] for k in touched],
                      "overrides": [[k, f] for k, f in sorted(fixed.items())], "digest": outcome.digest}
            done = await app.writer.call(realtime_store.record_network_redispatch, who, market_id, version,
                                         intervals, inputs, outcome)
        app.notifier.notify(SCHEDULES, dispatch_topic(None), *map(dispatch_topic, done["aggregators"]))
        failed = [iv for iv in intervals if iv["mode"] != "redispatched"]
        return {"market_id": market_id, "status": "infeasible" if failed else "optimal",
                "diagnosis": [f"interval {iv['interval_idx']}: {iv['mode']}: {iv['reason']}" for iv in intervals],
                "revision": 0, "republished": False}

    async def _revise(self, market_id: str, who) -> dict:
        """Clear a market again on its feeder's latest network version and store the revision."""
        app = self.app
        async with app.lock(market_id):
            def read(conn):
                rows = store.market_rows(conn, market_id)
                market = rows[0]
                version = store.network_version(conn, market["feeder_id"])
                network = (version, store.network_changes(conn, market["feeder_id"], version))
                return (*rows[:5], network, *rows[6:]), network_store.clear_forecast(conn, market_id)

            rows, forecast = await app.reader.call(read)
            reference = await app.day_ahead_reference(rows[0])
            outcome = await app.solve(lambda: markets_engine.clear_market(app.inputs(rows, reference), forecast,
                                                                          app.solve_time_limit))
            done = await app.writer.call(network_store.record_revision, who, market_id, outcome)
        return {"market_id": market_id, "status": outcome.status, "diagnosis": list(outcome.diagnosis), **done}

    async def _revise_intervals(self, market_id: str, touched: list[int], version: int, who) -> dict | None:
        """Clear again, on the feeder's latest network, the ``touched`` intervals of an open rolling market that
        were cleared on an earlier version and are not awarded (:func:`server.network_store.stale_intervals`),
        each at its own clearing's forecast; store the revision. None when no interval needs it."""
        app = self.app
        async with app.lock(market_id):
            def read(conn):
                rows = store.market_rows(conn, market_id)
                latest = (version, store.network_changes(conn, rows[0]["feeder_id"], version))
                # On the new version (a PUBLISHED market's rows name the version of its last clearing).
                return (*rows[:5], latest, *rows[6:]), network_store.stale_intervals(conn, market_id, touched, version)

            rows, stale = await app.reader.call(read)
            if not stale:
                return None
            reference = await app.day_ahead_reference(rows[0])
            groups: dict = {}  # intervals cleared at the same forecast are cleared again together
            for k, forecast in stale.items():
                groups.setdefault(tuple(forecast), []).append(k)

            def clear(indices: list[int], forecast: list[str]):
                return markets_engine.clear_intervals(app.inputs(rows, reference), indices, forecast,
                                                      app.solve_time_limit)

            done = []
            for forecast, indices in groups.items():
                outcome = await app.solve(clear, indices, list(forecast))
                stored = await app.writer.call(network_store.record_interval_revision, who, market_id, indices,
                                               list(forecast), outcome)
                done.append((outcome, stored))
        revision = max(d["revision"] for _, d in done)
        failed = [o for o, _ in done if o.status != "optimal"]
        return {"market_id": market_id, "status": failed[0].status if failed else "optimal",
                "diagnosis": [d for o, _ in done for d in o.diagnosis], "revised": any(d["revised"] for _, d in done),
                "revision": revision, "republished": any(d["republished"] for _, d in done)}

    @unary(OPERATOR, AUDITOR)
    async def ListNetworkChanges(self, request, who):
        feeder_id = convert.check_id(request.feeder_id, "feeder_id")
        scope = f"ListNetworkChanges|{feeder_id}"
        limit, after = convert.page(request.pagination, scope)
        rows = await self.app.reader.call(network_store.list_changes, feeder_id, after, limit)
        rows, info = convert.next_page(rows, limit, scope, lambda r: [r["version"], r["position"]])
        return network_pb2.ListNetworkChangesResponse(changes=[change_pb(r) for r in rows], pagination=info)


def _response(result: dict) -> network_pb2.SubmitNetworkChangesResponse:
    return network_pb2.SubmitNetworkChangesResponse(
        network_version=result["version"],
        revisions=[network_pb2.MarketRevision(market_id=r["market_id"], status=convert.CLEARING_STATUS[r["status"]],
                                              diagnosis=r["diagnosis"], revision=r["revision"],
                                              republished=r["republished"])
                   for r in result.get("revisions", [])])
