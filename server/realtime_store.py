"""Store side of the rolling real-time loop: the ISO's award interval by interval.

Writers run on the writer thread inside a savepoint and append their audit
record in the same transaction (see :mod:`server.store`).
"""

from __future__ import annotations

from dsomarket.server import store, timeline
from dsomarket.server.auth import Principal
from dsomarket.server.db import now_us
from dsomarket.server.errors import FailedPrecondition


def awarded_intervals(conn, market_id: str) -> set[int]:
    return {k for (k,) in conn.execute("SELECT interval_idx FROM iso_awards WHERE market_id = ?", (market_id,))}


def check_interval_award(market: dict, awarded: set[int], indices: list[int]) -> None:
    """FAILED_PRECONDITION unless the market takes these intervals' awards now."""
    store.require_state(market, ("published",), "an interval award")
    if market["kind"] not in timeline.ROLLING:
        raise FailedPrecondition(f"market {market['market_id']!r} is {market['kind']}: only real-time and "
                                 "hour-ahead markets are awarded interval by interval")
    for j, k in enumerate(indices):
        if k in awarded:
            raise FailedPrecondition(f"awards[{j}].interval_start: the interval starting "
                                     f"{timeline.iso(timeline.interval_start(market, k))} is already awarded")


def record_interval_award(conn, who: Principal, market_id: str, awards: list, outcome, request_id: str,
                          digest: str) -> dict:
    """Store the award of some intervals (:class:`server.markets_engine.AwardOutcome` of
    :func:`server.markets_engine.disaggregate_intervals`); the last one makes the market AWARDED."""
    def run():
        market = store.get_market(conn, market_id)
        done = awarded_intervals(conn, market_id)
        check_interval_award(market, done, [k for k, _, _ in awards])
        now = now_us()
        optimal = outcome.status == "optimal"
        remaining = int(market["interval_count"]) - len(done)
        if optimal:
            store.store_award_tables(conn, market_id, awards, outcome, now)
            remaining -= len(awards)
            if remaining == 0:
                store._set_state(conn, market, "awarded", now, "optimal")
                store._record_outcome(conn, market_id, "award", "optimal", {"by_interval": True}, outcome.digest,
                                      now)
        store._audit(conn, who, "award.interval", {"market_id": market_id, "awards": [list(a) for a in awards],
                                                    "status": outcome.status, "diagnosis": list(outcome.diagnosis),
                                                    "digest": outcome.digest}, now)
        aggregators = sorted(set(outcome.awards["aggregator_id"].to_list())) if optimal else []
        return {"status": outcome.status, "diagnosis": list(outcome.diagnosis), "aggregators": aggregators,
                "remaining": remaining}

    return store._idempotent(conn, who, request_id, digest, run)
