"""A real-time territory session reads its day-ahead positions; it does not disaggregate the day-ahead awards again.

The server once kept the disaggregations of the last 8 awarded markets only: a real-time ClearTerritory over more
interfaces re-cleared the day-ahead award of each interface that had dropped out, on the server's one solver thread,
every real-time session. What a real-time clearing reads of its day-ahead market (the award's dispatch) is fixed
once that market is awarded, so the server keeps it, bounded by memory rather than by a count.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import polars as pl

from dsomarket.clients.api import BidSegment, IntervalAward, Resource, TerritoryInterface
from dsomarket.clients.demo import delivery_day
from dsomarket.server import audit, db, markets_engine, services
from tests.harness import running

INTERFACES = 9   # more than the 8 disaggregations the server used to keep
RESOURCES = [("pv", "5", "sell", 200.0, 20.0), ("load", "12", "buy", 150.0, 90.0)]


async def _sessions(tmp_path, calls: list, db_name: str) -> tuple[list, list, dict]:
    """A day-ahead territory session cleared, published and awarded, then a real-time session naming it cleared;
    the statuses of both clearings, the day-ahead award's re-clears (``calls``) the real-time one ran, and each
    market's recorded clearing digest."""
    async with running(tmp_path, db_name=db_name, workers=1) as env:
        op, agg, iso = env.clients["dso"], env.clients["agg-a"], env.clients["iso"]
        fids = [f"f{k}" for k in range(INTERFACES)]
        for k, fid in enumerate(fids):
            await op.create_feeder(fid, builtin=f"synth:30:{k + 1}")
            await agg.register_resources([Resource(f"{fid}-{r}", fid, bus, "pv" if side == "sell" else "flexible_load",
                                                   1000.0) for r, bus, side, _, _ in RESOURCES])
        await op.create_territory("t", [TerritoryInterface("", (fid,)) for fid in fids])
        statuses = []
        for sid, kind in (("da", "day_ahead"), ("rt", "real_time")):
            extra = {"day_ahead_session_id": "da"} if kind == "real_time" else {}
            session = await op.open_territory_session(sid, territory_id="t", kind=kind, delivery_start=delivery_day(),
                                                      interval_count=1, formulation="lossless", **extra)
            markets = {i.interface_id: i.market for i in session.interfaces}
            for fid in fids:   # in real time the load bids again; the pv holds its day-ahead position
                m = markets[fid]
                await agg.submit_bids(m.market_id, [
                    BidSegment(f"{fid}-{r}-{sid}", f"{fid}-{r}", side, kw, Decimal(str(price)), m.intervals[0])
                    for r, _, side, kw, price in RESOURCES if kind == "day_ahead" or r == "load"])
            await op.close_territory_gate(sid)
            before = len(calls)
            cleared = (await op.clear_territory(sid, iso_price_forecast=["40"])).interfaces
            statuses.append(sorted({c.status for c in cleared.values()}))
            if kind == "real_time":
                return statuses, calls[before:], _clearing_digests(env.db_path)
            await op.publish_territory(sid)
            for fid in fids:
                award = await iso.submit_award(markets[fid].market_id, [
                    IntervalAward(f.interval_start, f.import_kw, "40") for f in cleared[fid].interface])
                assert award.status == "optimal", award.diagnosis


def _clearing_digests(path) -> dict:
    conn = db.connect(path)
    try:
        return audit.clearing_digests(conn)
    finally:
        conn.close()


def test_a_real_time_territory_session_does_not_disaggregate_its_day_ahead_awards_again(tmp_path, monkeypatch):
    # "none" is the control, and what a restarted server holds: with caches of one byte each (one entry, the
    # last) the positions must be derived again, from the stored awards, on the territory's runner (all at
    # once, not one by one on the solver thread), and the real-time clearings must be the same.
    calls, derived = [], []
    whole_award = markets_engine.whole_award

    def counted(inputs, *args, **kw):
        calls.append(inputs)
        return whole_award(inputs, *args, **kw)

    fan_out = services.App.fan_out

    async def watched(self, tasks):
        derived.extend(t.args[0] for t in tasks if t.fn is markets_engine.award_positions)
        return await fan_out(self, tasks)

    monkeypatch.setattr(markets_engine, "whole_award", counted)
    monkeypatch.setattr(services.App, "fan_out", watched)
    statuses, recomputed, digests = asyncio.run(_sessions(tmp_path, calls, "kept.sqlite"))
    assert statuses == [["optimal"], ["optimal"]]
    assert recomputed == [] and derived == []
    monkeypatch.setattr(services, "POSITIONS_BYTES", 1)
    monkeypatch.setattr(services, "DISAGGREGATIONS_BYTES", 1)
    statuses, recomputed, control = asyncio.run(_sessions(tmp_path, calls, "none.sqlite"))
    assert statuses == [["optimal"], ["optimal"]]
    # The last award's disaggregation is still held (one entry): the other 8 are derived on the runner.
    assert recomputed == [] and len(derived) == len(set(derived)) == INTERFACES - 1
    assert control == digests and len(digests) == 2 * INTERFACES


def test_the_caches_drop_the_least_recently_used_once_over_their_memory_budget():
    frame = pl.DataFrame({"kw": [0.0] * 100})   # 800 bytes
    cache = services._SizedCache(2_000, lambda f: f.estimated_size())
    for key in "abc":
        cache.put(key, frame)
        if key == "b":
            assert cache.get("a") is frame   # "a" is now the most recently used: "b" goes first
    assert [cache.get(k) is frame for k in "abc"] == [True, False, True]
    big = pl.DataFrame({"kw": [0.0] * 1_000})   # over the budget on its own: kept, the others dropped
    cache.put("d", big)
    assert [cache.get(k) is not None for k in "acd"] == [False, False, True]
