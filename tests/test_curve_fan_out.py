"""A market of many intervals has its curves traced on the server's runner processes (``runner.CurveFanOut``):
the same curves, so the same clearing digest, as one process traces; a part that fails fails the call."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from datetime import datetime, timedelta, timezone

import grpc
import polars as pl
import pytest

from dsomarket.clients.api import ApiError
from dsomarket.engine.bids import Battery, MarketRules
from dsomarket.engine.feeders import ieee33
from dsomarket.server import runner as runner_mod
from dsomarket.server.errors import Unavailable
from dsomarket.server.markets_engine import MarketInputs, clear_market
from dsomarket.server.runner import CurveFanOut, LocalRunner, TaskResult, _Refusal
from tests.harness import running, simple_bids, small_market

T0 = datetime(2026, 12, 1, 9, tzinfo=timezone.utc)
INTERVALS = [T0 + timedelta(hours=k) for k in range(5)]
BATTERY = (Battery("bat", energy_kwh=60, charge_kw=100, discharge_kw=100, eta_charge=0.9, eta_discharge=0.9),)


def storage_market(formulation: str) -> MarketInputs:
    """ieee33 over five hours: PV at bus 18, a load and a 100 kW battery at bus 25 whose energy couples the hours."""
    rows = []
    for k, iv in enumerate(INTERVALS):
        for bid_id, bus, side, kw, price, rid in ((f"pv-{k}", "18", "sell", 150.0 + 20 * k, 10.0, "pv"),
                                                   (f"load-{k}", "25", "buy", 120.0, 80.0 - 5 * k, "load"),
                                                   (f"bat-in-{k}", "25", "buy", 100.0, 45.0, "bat"),
                                                   (f"bat-out-{k}", "25", "sell", 100.0, 40.0 + 3 * k, "bat")):
            rows.append({"bid_id": bid_id, "bus": bus, "side": side, "quantity_kw": kw, "price": price,
                         "interval": iv, "aggregator_id": "agg-a", "resource_id": rid})
    return MarketInputs(feeder=ieee33(), rules=MarketRules(), intervals=INTERVALS, bids=pl.DataFrame(rows),
                        resources=BATTERY, formulation=formulation)


@pytest.fixture(scope="module")
def pool():
    with LocalRunner(2) as r:
        yield r


@pytest.mark.parametrize("formulation", ["lossless", "lossaware"])
def test_curves_fanned_out_to_two_processes_are_those_one_process_traces(pool, formulation):
    inputs = storage_market(formulation)
    forecast = ["50", "55", "60", "65", "70"]
    serial = clear_market(inputs, forecast)
    fanned = clear_market(inputs, forecast, trace=CurveFanOut(lambda: pool, min_segments=0))
    assert serial.status == fanned.status == "optimal"
    assert [len(c["bands"]) for c in serial.curves] == [len(c["bands"]) for c in fanned.curves]
    assert all(len(c["bands"]) > 1 for c in serial.curves)   # curves with steps, not one flat band each
    assert fanned.curves == serial.curves and fanned.digest == serial.digest


class Broken:
    """A runner of two processes whose curve task ``failing`` (the second: intervals 1, 3, ...) comes back as
    ``value`` or ``error``, the other as what the real runner returns."""

    shards = 2

    def __init__(self, value=None, error: str = "", failing: str = "curves 1"):
        self.value, self.error, self.failing, self.calls = value, error, failing, 0

    def map(self, tasks):
        self.calls += 1
        return [TaskResult(t.interface_id, self.value, self.error) if t.interface_id == self.failing else
                TaskResult(t.interface_id, t.fn(*t.args)) for t in tasks]


def test_a_part_whose_market_refuses_is_the_clearings_reason_as_in_one_process():
    refusal = _Refusal("market", "iso_price", "the market is not solvable at the forecast", None)
    fake = Broken(refusal)
    outcome = clear_market(storage_market("lossless"), ["50"], trace=CurveFanOut(lambda: fake, min_segments=0))
    assert fake.calls == 1
    assert outcome.status == "error"
    assert outcome.diagnosis[0] == "market, field iso_price: the market is not solvable at the forecast"


def test_a_part_that_loses_its_worker_fails_the_call_naming_the_intervals():
    fake = Broken(error="worker lost: BrokenProcessPool: a child process terminated abruptly")
    with pytest.raises(Unavailable, match=r"intervals \[1, 3\] could not be traced in a runner process \(it was lost"):
        clear_market(storage_market("lossless"), ["50"], trace=CurveFanOut(lambda: fake, min_segments=0))


def test_a_part_that_raises_is_a_defect_logged_by_the_server_not_told_to_the_caller(caplog):
    fake = Broken(error="ZeroDivisionError: an engine detail (at losscurve.py:1)")
    outcome = clear_market(storage_market("lossless"), ["50"], trace=CurveFanOut(lambda: fake, min_segments=0))
    assert outcome.status == "error"
    assert outcome.diagnosis[0] == "the engine failed (RuntimeError); the server log has the details"
    assert "an engine detail" not in " ".join(outcome.diagnosis)
    assert any(r.exc_info and "an engine detail" in str(r.exc_info[1]) for r in caplog.records)


def test_a_small_market_or_one_of_cheap_curves_is_traced_in_the_calling_process():
    fake = Broken(error="worker lost: a test runner that fails every part it is sent")
    outcome = clear_market(storage_market("lossless"), ["50"], trace=CurveFanOut(lambda: fake, min_segments=21))
    assert outcome.status == "optimal" and fake.calls == 0
    independent = storage_market("lossless")   # no battery: lossless intervals that nothing couples
    independent = dataclasses.replace(independent, resources=(),
                                      bids=independent.bids.filter(pl.col("resource_id") != "bat"))
    outcome = clear_market(independent, ["50"], trace=CurveFanOut(lambda: fake, min_segments=0))
    assert outcome.status == "optimal" and fake.calls == 0
    with pytest.raises(Unavailable):   # loss-aware: sent out (and the fake failed it)
        clear_market(dataclasses.replace(independent, formulation="lossaware"), ["50"],
                     trace=CurveFanOut(lambda: fake, min_segments=0))
    assert fake.calls == 1


def test_clear_market_over_grpc_fans_out_on_the_servers_runner(tmp_path, monkeypatch, caplog):
    """Two real worker processes; the server's teardown closes them."""
    monkeypatch.setattr(runner_mod, "FAN_OUT_SEGMENTS", 0)

    async def body():
        async with running(tmp_path, workers=2) as env:
            market = await small_market(env)   # loss-aware, the default
            op = env.clients["dso"]
            await env.clients["agg-a"].submit_bids(market.market_id, simple_bids(market))
            await op.close_gate(market.market_id)
            return await op.clear_market(market.market_id, iso_price_forecast=["50"])

    with caplog.at_level(logging.INFO, logger="dsomarket.server.runner"):
        report = asyncio.run(body())
    assert report.status == "optimal" and report.curve_segments > 0
    assert any("4 intervals traced on 2 runner processes" in r.getMessage() for r in caplog.records)


def test_a_lost_curve_worker_is_unavailable_over_grpc_and_the_market_stays_closed(tmp_path, monkeypatch):
    monkeypatch.setattr(runner_mod, "FAN_OUT_SEGMENTS", 0)
    fake = Broken(error="worker lost: BrokenProcessPool: a child process terminated abruptly")
    from dsomarket.server import services
    monkeypatch.setattr(services.App, "territory_runner", lambda self: fake)

    async def body():
        async with running(tmp_path) as env:
            market = await small_market(env)   # loss-aware, the default
            op = env.clients["dso"]
            await env.clients["agg-a"].submit_bids(market.market_id, simple_bids(market))
            await op.close_gate(market.market_id)
            with pytest.raises(ApiError) as err:
                await op.clear_market(market.market_id, iso_price_forecast=["50"])
            assert err.value.code == grpc.StatusCode.UNAVAILABLE, err.value
            assert "could not be traced in a runner process" in str(err.value)
            stored = await op.get_market(market.market_id)
            assert stored.state == "closed" and stored.clearing_status == "unspecified"   # nothing recorded

    asyncio.run(body())
    assert fake.calls == 1


def test_the_runner_serves_two_threads_mapping_at_once(pool):
    """A server maps territory tasks on one thread and a market's curves on another."""
    from concurrent.futures import ThreadPoolExecutor

    from dsomarket.server.runner import Task

    def work(base: int) -> list:
        return [r.value for r in pool.map([Task(f"t{k}", pow, (base, k)) for k in range(6)])]

    inside, most, real = [0], [0], pool._map

    def one_at_a_time(*args):   # the lock lets no second caller in while the first holds the workers
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.05)
        try:
            return real(*args)
        finally:
            inside[0] -= 1

    pool._map = one_at_a_time
    try:
        with ThreadPoolExecutor(2) as threads:
            twos, threes = threads.map(work, (2, 3))
    finally:
        del pool._map
    assert twos == [2 ** k for k in range(6)] and threes == [3 ** k for k in range(6)]
    assert most[0] == 1
