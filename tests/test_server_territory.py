"""A territory through the service: one session over several interfaces, checked against standalone clearings.

Every interface's prices and curve through TerritoryService must equal the engine's own clearing and curve
of that interface's feeder (feeders behind one transformer merged by :func:`engine.territory.substation`),
computed here without the server; one infeasible interface is reported and the others publish, are awarded
and settle; the server answers other calls while a territory clears; and the session survives a restart.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import numpy as np
import polars as pl
import pytest

from dsomarket.clients.api import (BidSegment, FailedPrecondition, IntervalAward, InvalidArgument, NotFound, Resource,
                                   TerritoryInterface)
from dsomarket.clients.demo import delivery_day
from dsomarket.engine.bids import MarketRules, validate_bids
from dsomarket.engine.clearing import ClearingOptions, clear
from dsomarket.engine.feeders import builtin
from dsomarket.engine.interface import trace_curve
from dsomarket.engine.territory import substation
from dsomarket.server import db
from dsomarket.server.convert import FORMULATION
from dsomarket.server.replay import replay
from tests.harness import running

FEEDERS = {"f-a": "synth:40:1", "f-b": "synth:40:2", "f-c": "synth:30:3", "f-d": "synth:30:4", "f-x": "ieee33"}
INTERFACES = (TerritoryInterface("", ("f-a",)), TerritoryInterface("", ("f-b",)),
              TerritoryInterface("sub-cd", ("f-c", "f-d"), import_max_kw=2500.0),
              # 100 kW cannot feed ieee33's 3.7 MW of fixed load: this interface is infeasible.
              TerritoryInterface("bad", ("f-x",), import_max_kw=100.0))
FORECAST = "40"
INTERVALS = 2


def _bus_of(interface_id: str, feeder_id: str, bus: str) -> str:
    """A member feeder's bus in its interface's feeder (merged interfaces prefix it)."""
    return f"{feeder_id}/{bus}" if interface_id == "sub-cd" else bus


def _fleet(rng: np.random.Generator) -> dict[str, list[tuple[Resource, str, float, float]]]:
    """Per aggregator: (resource, side, kW, price) of each seeded resource on every interface's feeder."""
    out: dict[str, list] = {"agg-a": [], "agg-b": []}
    for interface in INTERFACES:
        iid = interface.interface_id or interface.feeder_ids[0]
        for fid in interface.feeder_ids:
            buses = builtin(FEEDERS[fid]).topology.bus_ids[1:].astype(str)
            for k in range(6):
                agg = ("agg-a", "agg-b")[k % 2]
                side = ("sell", "buy")[(k // 2) % 2]
                res = Resource(f"{fid}-r{k}", iid, _bus_of(iid, fid, str(rng.choice(buses))),
                               "pv" if side == "sell" else "flexible_load", 500.0)
                out[agg].append((res, side, round(float(rng.uniform(20, 300)), 1),
                                 round(float(rng.uniform(-20, 120)), 2)))
    return out


def _reference(interface: TerritoryInterface, fleet: dict, intervals: list) -> tuple:
    """The engine's own clearing at the forecast price and exact curve of the interface, without the server."""
    members = [builtin(FEEDERS[f]).with_changes(name=f) for f in interface.feeder_ids]
    iid = interface.interface_id or interface.feeder_ids[0]
    feeder = substation(iid, members, [pl.DataFrame()] * len(members),
                        interface.import_max_kw or float("inf")).feeder
    rows = [(f"{agg}/{res.resource_id}-{t}", res.bus, side, kw, price, iv, agg, f"{agg}/{res.resource_id}", 0.0)
            for agg, items in fleet.items() for res, side, kw, price in items if res.feeder_id == iid
            for t, iv in enumerate(intervals)]
    bids = pl.DataFrame(rows, orient="row", schema={
        "bid_id": pl.Utf8, "bus": pl.Utf8, "side": pl.Utf8, "quantity_kw": pl.Float64, "price": pl.Float64,
        "interval": pl.Datetime("us", "UTC"), "aggregator_id": pl.Utf8, "resource_id": pl.Utf8, "tan_phi": pl.Float64})
    rules = MarketRules(price_floor=-1000.0, price_cap=3000.0, interval_minutes=60.0)
    options = ClearingOptions(formulation=FORMULATION[""])   # the server's default, as the sessions use it
    book = validate_bids(bids, feeder, rules, intervals)
    result = clear(feeder, book, float(FORECAST), rules=rules, options=options)
    curve = trace_curve(feeder, book, rules, options=options, forecast=float(FORECAST)) if result.ok else None
    return result, curve


async def _territory_day(env, fleet: dict) -> tuple:
    op = env.clients["dso"]
    for fid, name in FEEDERS.items():
        await op.create_feeder(fid, builtin=name)
    territory = await op.create_territory("north", INTERFACES)
    for agg, items in fleet.items():
        await env.clients[agg].register_resources([r for r, _, _, _ in items])
    session = await op.open_territory_session("da1", territory_id="north", kind="day_ahead",
                                              delivery_start=delivery_day(), interval_count=INTERVALS)
    for agg, items in fleet.items():
        for si in session.interfaces:
            mine = [(r, side, kw, p) for r, side, kw, p in items if r.feeder_id == si.interface_id]
            bids = [BidSegment(f"{r.resource_id}-{t}", r.resource_id, side, kw, Decimal(str(p)), iv)
                    for r, side, kw, p in mine for t, iv in enumerate(si.market.intervals)]
            if bids:
                await env.clients[agg].submit_bids(si.market.market_id, bids)
    return territory, session


def _iid(interface: TerritoryInterface) -> str:
    return interface.interface_id or interface.feeder_ids[0]


# Its awards' loss-aware re-solves pivot from bases with a single-bounded column marked at its infinite bound: no
# arithmetic on that bound (engine.solver.HighsSolver._pivots).
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_a_session_clears_every_interface_as_a_standalone_clearing(tmp_path):
    asyncio.run(_session_day(tmp_path))


async def _session_day(tmp_path):
    fleet = _fleet(np.random.default_rng(7))
    async with running(tmp_path, workers=2) as env:
        op, iso = env.clients["dso"], env.clients["iso"]
        territory, session = await _territory_day(env, fleet)
        assert [i.interface_id for i in territory.interfaces] == ["bad", "f-a", "f-b", "sub-cd"]
        assert [i.market.market_id for i in session.interfaces] == ["da1:bad", "da1:f-a", "da1:f-b", "da1:sub-cd"]
        assert [i.market.feeder_id for i in session.interfaces] == ["bad", "f-a", "f-b", "sub-cd"]
        closed = await op.close_territory_gate("da1")
        assert {i.market.state for i in closed.interfaces} == {"closed"}

        # Another client is answered while the territory clears in the worker processes.
        clearing = asyncio.create_task(op.clear_territory("da1", iso_price_forecast=[FORECAST]))
        assert (await env.clients["agg-a"].get_market("da1:f-a")).state == "closed"
        assert not clearing.done(), "another client's call waited for the territory clearing"
        cleared = await clearing

        assert cleared.optimal == 3 and sorted(cleared.interfaces) == ["bad", "f-a", "f-b", "sub-cd"]
        bad = cleared.interfaces["bad"]
        assert bad.status == "infeasible" and bad.market.state == "closed"
        assert any("import" in d for d in bad.diagnosis), bad.diagnosis
        intervals = session.market_of("f-a").intervals
        references = {}
        for interface in INTERFACES[:3]:
            iid = _iid(interface)
            report = cleared.interfaces[iid]
            assert report.status == "optimal" and report.market.state == "cleared"
            result, curve = references[iid] = _reference(interface, fleet, intervals)
            assert [f.import_kw for f in report.interface] == pytest.approx(
                result.interface["import_kw"].to_list(), abs=1e-6)
            prices = {(p.bus, p.interval_start): float(p.dlmp) for p in await op.list_prices(f"da1:{iid}")}
            expected = {(b, iv): d for b, iv, d in result.prices.select("bus", "interval", "dlmp").iter_rows()}
            assert prices.keys() == expected.keys()
            assert [prices[k] for k in expected] == pytest.approx(list(expected.values()), abs=1e-5)

        published = await op.publish_territory("da1")
        states = {i.interface_id: i.market.state for i in published.interfaces}
        assert states == {"bad": "closed", "f-a": "published", "f-b": "published", "sub-cd": "published"}
        curves = await iso.list_curves()
        assert sorted({c.feeder_id for c in curves}) == ["f-a", "f-b", "sub-cd"]
        assert len(curves) == 3 * INTERVALS
        for c in curves:
            _, curve = references[c.feeder_id]
            expected = curve.bands.filter(pl.col("interval") == c.interval_start)
            assert [float(b.price_low) for b in c.bands] == pytest.approx(expected["price_low"].to_list(), abs=1e-6)
            assert [float(b.price_high) for b in c.bands] == pytest.approx(expected["price_high"].to_list(), abs=1e-6)
            assert [b.import_kw for b in c.bands] == pytest.approx(expected["import_kw"].to_list(), abs=1e-6)

        for iid in ("f-a", "f-b", "sub-cd"):
            flows = cleared.interfaces[iid].interface
            award = await iso.submit_award(f"da1:{iid}", [IntervalAward(f.interval_start, f.import_kw, FORECAST)
                                                          for f in flows])
            assert award.status == "optimal", award.diagnosis
        settled = await op.settle_territory("da1")
        assert sorted(settled.settled) == ["f-a", "f-b", "sub-cd"] and settled.errors == {}
        assert all(r.market.state == "settled" and r.statement_count > 0 for r in settled.settled.values())
        with pytest.raises(FailedPrecondition):
            await op.settle_territory("da1")  # nothing left awarded

    conn = db.connect(env.db_path)
    try:  # every interface's clearing, award and settlement replays from the audit log alone
        checks = replay(conn)
    finally:
        conn.close()
    assert {(c.market_id, c.stage) for c in checks} >= {(f"da1:{i}", s) for i in ("f-a", "f-b", "sub-cd")
                                                        for s in ("clear", "award", "settle")}
    assert all(c.identical for c in checks), [c for c in checks if not c.identical]

    async with running(tmp_path) as env:  # acknowledged steps are on disk: a restarted server has them
        again = await env.clients["dso"].get_territory_session("da1")
        assert {i.interface_id: i.market.state for i in again.interfaces} == {
            "bad": "closed", "f-a": "settled", "f-b": "settled", "sub-cd": "settled"}
        assert (await env.clients["auditor"].get_territory("north")).interfaces == territory.interfaces


def test_territory_requests_are_checked(tmp_path):
    asyncio.run(_refusals(tmp_path))


async def _refusals(tmp_path):
    async with running(tmp_path, workers=1) as env:
        op = env.clients["dso"]
        await op.create_feeder("f-a", builtin="synth:30:1")
        await op.create_feeder("f-b", builtin="synth:30:2")
        with pytest.raises(NotFound, match=r"interfaces\[0\].feeder_ids\[1\]"):
            await op.create_territory("t", [TerritoryInterface("s", ("f-a", "nope"))])
        with pytest.raises(InvalidArgument, match=r"interfaces\[1\].feeder_ids\[0\]"):
            await op.create_territory("t", [TerritoryInterface("", ("f-a",)), TerritoryInterface("", ("f-a",))])
        with pytest.raises(InvalidArgument, match=r"interfaces\[0\].interface_id"):
            await op.create_territory("t", [TerritoryInterface("other", ("f-a",))])
        with pytest.raises(InvalidArgument, match=r"interfaces\[0\].import_max_kw"):
            await op.create_territory("t", [TerritoryInterface("s", ("f-a",), import_max_kw=-1.0)])
        await op.create_territory("t", [TerritoryInterface("s", ("f-a", "f-b"))])
        assert [f.feeder_id for f in await op.list_feeders()] == ["f-a", "f-b", "s"]
        with pytest.raises(InvalidArgument, match="session_id"):
            await op.open_territory_session("x" * 63, territory_id="t", kind="day_ahead",
                                            delivery_start=delivery_day())
        with pytest.raises(InvalidArgument, match=r"market.interval_count"):
            await op.open_territory_session("s1", territory_id="t", kind="day_ahead", delivery_start=delivery_day(),
                                            interval_count=49)
        await op.open_territory_session("s1", territory_id="t", kind="day_ahead", delivery_start=delivery_day())
        with pytest.raises(FailedPrecondition, match="no closed market"):
            await op.clear_territory("s1")
        with pytest.raises(NotFound):
            await op.close_territory_gate("s2")
        # Nothing of a refused territory was written: its merged feeder neither.
        assert (await op.get_territory("t")).interfaces == (TerritoryInterface("s", ("f-a", "f-b")),)


@pytest.fixture
def local_ray(db_backend):
    if db_backend != "sqlite":
        pytest.skip("the runner does not depend on the store: Ray is tested on one backend")
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.xdist_group("ray")
def test_ray_actors_clear_a_session_as_local_workers_do(local_ray, tmp_path):
    fleet = _fleet(np.random.default_rng(11))

    async def cleared(name, **runner):
        async with running(tmp_path, db_name=f"{name}.sqlite", **runner) as env:
            await _territory_day(env, fleet)
            op = env.clients["dso"]
            await op.close_territory_gate("da1")
            report = await op.clear_territory("da1", iso_price_forecast=[FORECAST])
            prices = {iid: await op.list_prices(f"da1:{iid}") for iid, r in report.interfaces.items()
                      if r.status == "optimal"}
            await op.publish_territory("da1")
            curves = await env.clients["iso"].list_curves()
            return ({iid: (r.status, r.diagnosis, r.welfare, r.interface, r.curve_segments)
                     for iid, r in report.interfaces.items()}, prices,
                    [(c.feeder_id, c.interval_start, c.bands, c.segments) for c in curves])

    local = asyncio.run(cleared("local", workers=1))
    on_ray = asyncio.run(cleared("ray", ray_address="auto"))
    assert on_ray == local
    assert sorted(s for s, *_ in local[0].values()) == ["infeasible", "optimal", "optimal", "optimal"]
