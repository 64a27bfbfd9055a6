"""Warm re-clears through TerritoryService: a later real-time session of the same feeders and standing bids
re-clears on the market its worker kept, and records exactly what a cold clearing records.

The reference is the same three sessions on a second server that keeps nothing (``warm_interfaces=0``):
every market's recorded clearing digest (DLMPs, interface import, dispatch, curves and ISO offer) must be the
same byte for byte. The first session, a changed bid and a server that keeps nothing clear cold. A third
server, of two workers, has one of them killed after the first session: its interface clears again on a
fresh worker, cold, says so, and records the same.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from datetime import timedelta
from decimal import Decimal

from dsomarket.clients.api import BidSegment, IntervalAward, Resource, TerritoryInterface
from dsomarket.clients.demo import delivery_day
from dsomarket.server import audit, db
from tests.harness import running

FEEDERS = {"f-a": "synth:30:1", "f-b": "ieee33"}
BIDS = {  # per feeder: (bus, side, kW, price per MWh) of each standing bid
    "f-a": [("5", "sell", 300.0, 20.0), ("12", "buy", 250.0, 90.0), ("21", "sell", 150.0, 60.0),
            ("27", "buy", 120.0, 35.0)],
    "f-b": [("7", "sell", 400.0, 25.0), ("18", "buy", 200.0, 80.0), ("30", "sell", 200.0, 45.0)],
}
# Three 5-minute real-time sessions, one after the other: the standing bids at a new ISO price forecast, then
# with one bid on f-a changed (f-a must clear cold, f-b warm).
SESSIONS = (("rt1", 0, "40", None), ("rt2", 5, "55", None), ("rt3", 10, "48", ("f-a", 1, 95.0)))


def _children(pid: int) -> set[int]:
    out = set()
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):   # gone meanwhile
            continue
        if fields[1] == str(pid) and fields[0] not in ("Z", "X"):
            out.add(int(entry))
    return out


def _workers() -> set[int]:
    """This process's worker processes: the children of its multiprocessing fork server."""
    return {w for child in _children(os.getpid()) for w in _children(child)}


async def _territory(env):
    """The feeders as a territory ``t`` of one interface each, and agg-a's resources: the operator's and
    agg-a's clients."""
    op, agg = env.clients["dso"], env.clients["agg-a"]
    for fid, builtin in FEEDERS.items():
        await op.create_feeder(fid, builtin=builtin)
    await op.create_territory("t", [TerritoryInterface("", (fid,)) for fid in FEEDERS])
    await agg.register_resources([Resource(f"{fid}-r{k}", fid, bus, "pv" if side == "sell" else "flexible_load", 1000.0)
                                  for fid, bids in BIDS.items() for k, (bus, side, _, _) in enumerate(bids)])
    return op, agg


def _digests(path) -> dict:
    """Each market's recorded clearing digest."""
    conn = db.connect(path)
    try:
        return {p["market_id"]: p["digest"] for r in audit.records(conn) if r["action"] == "market.clear"
                for p in [json.loads(r["payload"])]}
    finally:
        conn.close()


async def _cycles(tmp_path, name: str, workers: int = 1, kill_after: str = "", **options) -> tuple[dict, dict]:
    """The sessions on one server: per session the interfaces cleared warm (and, after ``kill_after``, one of
    its workers is killed, the interfaces recovered); per market its clearing digest."""
    start = delivery_day()
    warm = {}
    before = _workers()
    async with running(tmp_path, db_name=f"{name}.sqlite", workers=workers, **options) as env:
        op, agg = await _territory(env)
        for sid, minutes, forecast, change in SESSIONS:
            session = await op.open_territory_session(sid, territory_id="t", kind="real_time",
                                                      delivery_start=start + timedelta(minutes=minutes),
                                                      interval_count=1, formulation="lossless")
            for si in session.interfaces:
                fid = si.interface_id
                segments = []
                for k, (_, side, kw, price) in enumerate(BIDS[fid]):
                    if change is not None and change[:2] == (fid, k):
                        price = change[2]
                    segments.append(BidSegment(f"{fid}-b{k}", f"{fid}-r{k}", side, kw, Decimal(str(price)),
                                               si.market.intervals[0]))
                await agg.submit_bids(si.market.market_id, segments)
            await op.close_territory_gate(sid)
            cleared = await op.clear_territory(sid, iso_price_forecast=[forecast])
            assert cleared.optimal == len(FEEDERS), {i: c.diagnosis for i, c in cleared.interfaces.items()}
            warm[sid] = cleared.warm
            if cleared.recovered:
                warm[f"{sid} recovered"] = frozenset(cleared.recovered)
                assert all("worker lost" in why for why in cleared.recovered.values())
            if sid == kill_after:
                ours = sorted(_workers() - before)
                assert len(ours) == workers
                os.kill(ours[0], signal.SIGKILL)
    return warm, _digests(env.db_path)


def test_a_real_time_re_clear_from_kept_markets_records_what_a_cold_one_does(tmp_path):
    warm, digests = asyncio.run(_cycles(tmp_path, "warm"))
    cold_warm, cold_digests = asyncio.run(_cycles(tmp_path, "cold", warm_interfaces=0))

    killed_warm, killed_digests = asyncio.run(_cycles(tmp_path, "killed", workers=2, kill_after="rt1"))

    assert warm == {"rt1": frozenset(), "rt2": frozenset(FEEDERS), "rt3": frozenset({"f-b"})}
    assert cold_warm == {sid: frozenset() for sid, *_ in SESSIONS}
    lost = killed_warm.pop("rt2 recovered")
    assert len(lost) == 1 and killed_warm == {"rt1": frozenset(), "rt2": frozenset(FEEDERS) - lost,
                                              "rt3": frozenset({"f-b"})}
    assert len(digests) == len(SESSIONS) * len(FEEDERS)
    assert digests == cold_digests == killed_digests
    # A new forecast changes what is recorded (the interface's ISO price at least): a kept outcome handed back
    # as it was would fail the comparison above.
    assert digests["rt2:f-a"] != digests["rt1:f-a"] and digests["rt3:f-a"] != digests["rt2:f-a"]


# Day-ahead then real-time: two hourly day-ahead intervals (the second with one price 5 higher, so that it is
# another model than the first), awarded; then three 5-minute real-time sessions in
# the first hour: every resource bids again as it bid day-ahead (nothing held: the day-ahead hour's model),
# then only the first resource of each feeder (the others hold their day-ahead positions: a new fixed load),
# then the same again (the last session's model).
REAL_TIME = (("rt-a", 0, "55", None), ("rt-b", 5, "47", 1), ("rt-c", 10, "62", 1))


async def _day(tmp_path, name: str, **options) -> tuple[dict, dict]:
    """The day-ahead session and the real-time sessions on one server: per session the interfaces cleared warm;
    per market its clearing digest."""
    start = delivery_day()
    warm = {}
    async with running(tmp_path, db_name=f"{name}.sqlite", workers=1, **options) as env:
        (op, agg), iso = await _territory(env), env.clients["iso"]
        sessions = (("da", "day_ahead", 0, "40", None, 2),) + tuple((s, "real_time", m, f, n, 1)
                                                                     for s, m, f, n in REAL_TIME)
        for sid, kind, minutes, forecast, first, count in sessions:
            session = await op.open_territory_session(
                sid, territory_id="t", kind=kind, delivery_start=start + timedelta(minutes=minutes),
                interval_count=count, formulation="lossless", day_ahead_session_id="da" if kind == "real_time" else "")
            for si in session.interfaces:
                fid = si.interface_id
                await agg.submit_bids(si.market.market_id, [
                    BidSegment(f"{fid}-b{k}-{t}", f"{fid}-r{k}", side, kw, Decimal(str(price + (5 if (t, k) == (1, 0)
                                                                                   else 0))), iv)
                    for k, (_, side, kw, price) in enumerate(BIDS[fid][:first])
                    for t, iv in enumerate(si.market.intervals)])
            await op.close_territory_gate(sid)
            cleared = await op.clear_territory(sid, iso_price_forecast=[forecast])
            assert cleared.optimal == len(FEEDERS), {i: c.diagnosis for i, c in cleared.interfaces.items()}
            warm[sid] = cleared.warm
            if kind == "day_ahead":
                await op.publish_territory(sid)
                for iid, c in cleared.interfaces.items():
                    award = await iso.submit_award(c.market.market_id, [IntervalAward(f.interval_start, f.import_kw,
                                                                                      forecast) for f in c.interface])
                    assert award.status == "optimal", award.diagnosis
    return warm, _digests(env.db_path)


def test_a_real_time_session_takes_the_day_ahead_curve_of_the_same_model_and_records_what_a_cold_one_does(tmp_path):
    warm, digests = asyncio.run(_day(tmp_path, "warm"))
    cold_warm, cold_digests = asyncio.run(_day(tmp_path, "cold", warm_interfaces=0))

    every = frozenset(FEEDERS)
    assert warm == {"da": frozenset(), "rt-a": every, "rt-b": frozenset(), "rt-c": every}
    assert set(cold_warm.values()) == {frozenset()}
    assert len(digests) == (1 + len(REAL_TIME)) * len(FEEDERS) and digests == cold_digests
    # The positions held make rt-b another market than rt-a (not only another forecast).
    assert digests["rt-b:f-a"] != digests["rt-a:f-a"]
