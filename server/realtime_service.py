"""gRPC RealTimeService: the rolling real-time loop (the ISO's award interval by interval).

Servicers convert in, call the engine adapter (:mod:`server.markets_engine`) on the solver thread and
the store on the writer, and convert out; dispatch of each awarded interval streams out at once.
"""

from __future__ import annotations

from dsomarket.server import convert, markets_engine, realtime_store, store
from dsomarket.server.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument
from dsomarket.server.notify import dispatch_topic
from dsomarket.server.rpc import unary
from dsomarket.v1 import realtime_pb2, realtime_pb2_grpc

ISO = "iso"


def interval_awards(market: dict, submitted: list[tuple[int, float, str]]) -> list[tuple[int, float, str]]:
    """``(interval_idx, import_kw, price)`` of the submitted intervals, each at most once, in interval order."""
    indices = store.interval_indices(market, [s for s, _, _ in submitted], "awards.interval_start")
    seen: dict = {}
    for j, k in enumerate(indices):
        if k in seen:
            raise InvalidArgument(f"awards[{j}].interval_start", f"repeats awards[{seen[k]}]")
        seen[k] = j
    return sorted((k, q, p) for k, (_, q, p) in zip(indices, submitted, strict=True))


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
                    return store.market_rows(conn, market_id), realtime_store.awarded_intervals(conn, market_id)

                rows, done = await app.reader.call(read)
                market = rows[0]
                awards = interval_awards(market, submitted)
                realtime_store.check_interval_award(market, done, [k for k, _, _ in awards])
                if await app.solve(lambda: markets_engine.couples(app.inputs(rows))):
                    raise FailedPrecondition(f"market {market_id!r}: storage, EV or ramp resources couple its "
                                             "intervals; award it whole (IsoService.SubmitAward)")
                reference = (await app.disaggregation(market["day_ahead_market_id"])
                             if market["day_ahead_market_id"] else None)
                outcome = await app.solve(lambda: markets_engine.disaggregate_intervals(
                    app.inputs(rows), awards, reference, app.solve_time_limit))
                result = await app.writer.call(realtime_store.record_interval_award, who, market_id, awards,
                                               outcome, request_id, digest)
                if outcome.status == "optimal":
                    app.notifier.notify(dispatch_topic(None), *map(dispatch_topic, result["aggregators"]))
        if result["status"] == "time_limit":
            raise DeadlineExceeded(f"the interval award of market {market_id!r} hit the solver time limit")
        market = await app.reader.call(store.get_market, market_id)
        return realtime_pb2.SubmitIntervalAwardResponse(
            market=convert.market(market), status=convert.CLEARING_STATUS[result["status"]],
            diagnosis=result["diagnosis"], intervals_remaining=result["remaining"])
