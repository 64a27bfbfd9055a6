"""The timeline that runs itself: gates close, markets clear and publish on schedule, once, across crashes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from dsomarket.clients.api import Client, FailedPrecondition, IntervalAward, MeterReading, NetworkChange
from dsomarket.clients.demo import delivery_day
from dsomarket.server import audit, db
from dsomarket.server.replay import replay
from dsomarket.server.scheduler import ManualClock, Scheduler, due
from tests.harness import PARTICIPANTS, create_tokens, running, simple_bids, small_market

ROOT = Path(__file__).resolve().parent.parent
US = 1_000_000


def steps_of(path: Path) -> dict[str, list[str]]:
    """The audited steps per market in log order: close, clear, publish of a market taken whole, and
    ``close[k]``, ``clear[k]``, ``publish[k]`` of interval k at its rolling gate; settle and imbalance."""
    names = {"market.close": "close", "market.clear": "clear", "market.settle": "settle",
             "imbalance.settle": "imbalance", "interval.close": "close", "interval.clear": "clear",
             "interval.publish": "publish", "interval.settle": "settle"}
    conn = db.connect(path)
    try:
        out: dict[str, list[str]] = {}
        for r in audit.records(conn):
            p = json.loads(r["payload"])
            if r["action"] in names:
                ks = p.get("interval_indices", [p["interval_idx"]] if "interval_idx" in p else [None])
                out.setdefault(p["market_id"], []).extend(names[r["action"]] + ("" if k is None else f"[{k}]")
                                                          for k in ks)
            elif r["action"] == "market.publish" and not p.get("by_interval"):
                out.setdefault(p["market_id"], []).append("publish")
        return out
    finally:
        conn.close()


def rolled(steps: list[str], count: int, settled: bool = False) -> bool:
    """True when each of ``count`` intervals was closed, cleared and published (``settled``: and settled), in that
    order, once."""
    order = ("close", "clear", "publish") + (("settle",) if settled else ())
    return all([s for s in steps if s.endswith(f"[{k}]")] == [f"{step}[{k}]" for step in order]
               for k in range(count)) and len(steps) == len(order) * count


async def real_time_markets(env_or_client, names, start, **kw):
    op = env_or_client
    out = []
    for k, name in enumerate(names):
        out.append(await op.create_market(name, feeder_id="ieee33", kind="real_time",
                                          delivery_start=start + timedelta(hours=k), gate_lead=timedelta(0), **kw))
    return out


def test_a_day_runs_itself_in_simulated_time_and_the_operator_can_step_in(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            op, a = env.clients["dso"], env.clients["agg-a"]
            day = delivery_day()
            da = await small_market(env, "da", intervals=24, gate_closure_time=day - timedelta(hours=12))
            await a.submit_bids("da", simple_bids(da, "a"))
            rts = await real_time_markets(op, [f"rt-{h:02d}" for h in range(24)], day)
            for m in rts[:3]:
                await a.submit_bids(m.market_id, simple_bids(m, "a"))
            clock = ManualClock(int((day - timedelta(days=1)).timestamp() * US))
            scheduler = Scheduler(env.server.app, clock)
            assert await scheduler.tick() == []
            clock.set(int((day - timedelta(hours=12)).timestamp() * US))
            assert [(s.market_id, s.action) for s in await scheduler.tick()] == [
                ("da", "close"), ("da", "clear"), ("da", "publish")]
            # The operator steps in for hour 5 before its gate: the scheduler does not clear it again.
            await op.close_gate("rt-05")
            assert (await op.clear_market("rt-05")).status == "optimal"
            done = []
            while clock.now_us() < int((day + timedelta(hours=28)).timestamp() * US):
                # Ticks every 15 simulated minutes until 02:00, then hourly (an hour's gates in one tick).
                clock.advance(15 * 60 if clock.now_us() < int((day + timedelta(hours=2)).timestamp() * US) else 3600)
                done += await scheduler.tick()
                if clock.now_us() == int((day + timedelta(minutes=15)).timestamp() * US):
                    # Hour 0's first four intervals rolled (gates at 00:00 ... 00:15), the rest still take bids.
                    rt0 = rts[0]
                    assert (await op.get_market("rt-00")).state == "open"
                    late = [b for b in simple_bids(rt0, "late") if b.interval_start >= rt0.intervals[4]]
                    assert (await a.submit_bids("rt-00", late)).count == len(late)
                    closed = [b for b in simple_bids(rt0, "later") if b.interval_start == rt0.intervals[3]]
                    with pytest.raises(FailedPrecondition, match="gate of the interval starting .* closed"):
                        await a.submit_bids("rt-00", closed)
                    with pytest.raises(FailedPrecondition, match="clears interval by interval"):
                        await op.close_gate("rt-00")
                    assert len(await env.clients["iso"].list_curves(market_id="rt-00")) == 4
                    gates = [i.gate_open for i in await op.list_intervals("rt-00")]
                    assert gates == [False] * 4 + [True] * 8  # the wall clock is days earlier: the gates rolled
            states = {m.market_id: m.state for m in await op.list_markets()}
            assert set(states.values()) == {"published"}
            assert ("rt-05", "publish", None) in [(s.market_id, s.action, s.interval_idx) for s in done]
            path = env.db_path
        steps = steps_of(path)
        assert len(steps) == 25 and steps.pop("da") == ["close", "clear", "publish"]
        assert steps.pop("rt-05") == ["close", "clear", "publish"]
        # Every other hour rolled: each interval closed at its own gate, then cleared and published, once.
        assert all(rolled(s, 12) for s in steps.values()), steps
        conn = db.connect(path)
        closes = [(json.loads(r["payload"])["market_id"], json.loads(r["payload"])["interval_idx"])
                  for r in audit.records(conn, "interval.close")]
        conn.close()
        assert closes == sorted(closes)  # the log's gate order follows delivery

    asyncio.run(body())


def test_due_steps_follow_the_state_and_a_failed_clearing_is_not_retried():
    market = {"state": "open", "kind": "day_ahead", "gate_closure_us": None, "gate_lead_us": 600 * US,
              "delivery_start_us": 3600 * US, "interval_minutes": 5, "interval_count": 12, "clearing_status": ""}
    assert due(market, 2999 * US) == [] and due(market, 3000 * US) == [("close", None)]
    assert due(market | {"state": "closed"}, 0) == [("clear", None)]
    assert due(market | {"state": "closed", "clearing_status": "infeasible"}, 10**12) == []
    assert due(market | {"state": "cleared"}, 0) == [("publish", None)]
    assert due(market | {"state": "published"}, 10**12) == []
    # A real-time market rolls: each interval's own gate (5 minutes apart, 10 minutes ahead).
    rt = market | {"kind": "real_time"}
    assert due(rt, 3000 * US) == [("close", 0)] and due(rt, 3299 * US, {0: {"close": "done"}}) == [("clear", 0)]
    steps = {0: {"close": "done", "clear": "optimal"}, 1: {"close": "done", "clear": "infeasible"}}
    assert due(rt, 3300 * US, steps) == [("publish", 0)]  # interval 1 failed: left to the operator
    assert due(rt, 3600 * US, steps) == [("publish", 0), ("close", 2)]
    # Settlement once the meter window after the last interval (04:00 simulated seconds = 3600 + 12 x 300).
    end = (3600 + 12 * 300) * US
    awarded = market | {"state": "awarded"}
    assert due(awarded, end + 3599 * US) == [] and due(awarded, end + 3600 * US) == [("settle", None)]
    assert due(awarded, end, meter_window_us=0) == [("settle", None)]
    settled = market | {"state": "settled", "readings": 0, "imbalance_settled": 0}
    assert due(settled, end + 3600 * US) == []  # no meter data: nothing to settle
    assert due(settled | {"readings": 5}, end + 3600 * US) == [("imbalance", None)]
    assert due(settled | {"readings": 5, "imbalance_settled": 1}, end + 3600 * US) == []


def key(instructions):
    return sorted((i.aggregator_id, i.resource_id, i.interval_start, round(i.kw, 6)) for i in instructions)


def test_a_rolling_hour_runs_itself_the_iso_awards_each_interval_and_it_settles_on_its_meters(tmp_path):
    """Gates close one interval at a time; each interval cleared alone is the whole market's clearing of it."""
    async def body():
        async with running(tmp_path) as env:
            op, iso, a, b = (env.clients[n] for n in ("dso", "iso", "agg-a", "agg-b"))
            await small_market(env, "da-fleet", gate_closure_time=delivery_day() + timedelta(days=1))  # the fleet
            start = delivery_day() + timedelta(hours=9)
            rt, twin = [await op.create_market(m, feeder_id="ieee33", kind="real_time", delivery_start=start,
                                               gate_lead=timedelta(0)) for m in ("rt", "twin")]
            early = [x for x in simple_bids(rt, "a") if x.interval_start < rt.intervals[6]]
            late = [x for x in simple_bids(rt, "a", pv_price="12") if x.interval_start >= rt.intervals[6]]
            for m in ("rt", "twin"):
                await a.submit_bids(m, early)
                await b.submit_bids(m, simple_bids(rt, "b", load_price="60"))
            # Reference: the twin, closed and cleared whole by the operator before any gate, with every bid.
            await a.submit_bids("twin", late)
            await op.close_gate("twin")
            assert (await op.clear_market("twin")).status == "optimal"
            await op.publish_market("twin")
            whole = {c.interval_start: c for c in await iso.list_curves(market_id="twin")}

            clock = ManualClock(int(start.timestamp() * US))
            scheduler = Scheduler(env.server.app, clock, meter_window=600)
            awards = []
            for k in range(12):
                steps = [(s.action, s.interval_idx) for s in await scheduler.tick() if s.market_id == "rt"]
                # Each awarded interval settles on its own once its meter window (10 minutes) has passed.
                assert [x for x in steps if x[0] != "settle"] == [("close", k), ("clear", k), ("publish", k)]
                assert [x for x in steps if x[0] == "settle"] == ([("settle", k - 3)] if k >= 3 else [])
                if k == 0:  # agg-a's bids for the second half hour come after the first gate
                    assert (await a.submit_bids("rt", late)).count == len(late)
                (curve,) = [c for c in await iso.list_curves(market_id="rt") if c.interval_start == rt.intervals[k]]
                # The interval cleared alone at its gate has the whole clearing's curve.
                assert [(x.price_low, x.price_high, round(x.import_kw, 6)) for x in curve.bands] == \
                    [(x.price_low, x.price_high, round(x.import_kw, 6)) for x in whole[curve.interval_start].bands]
                price = 30 + 7 * (k % 5)
                awards.append(IntervalAward(curve.interval_start,
                                            next(x.import_kw for x in curve.bands if x.price_high >= price), str(price)))
                result, remaining = await iso.submit_interval_award("rt", [awards[-1]])
                assert result.status == "optimal" and remaining == 11 - k
                assert result.market.state == ("awarded" if k == 11 else "open")
                mine = await a.list_instructions(market_id="rt")
                assert {i.interval_start for i in mine} == set(rt.intervals[:k + 1])  # dispatched at once
                clock.advance(300)
            assert (await iso.submit_award("twin", awards)).status == "optimal"
            assert key(await a.list_instructions(market_id="rt")) == key(await a.list_instructions(market_id="twin"))

            # The last intervals' settlement (and the twin's, whole) waits for the meter window after 10:00, then
            # settles once; the imbalance waits for meters.
            assert [(s.action, s.interval_idx) for s in await scheduler.tick()] == [("settle", 9)]
            assert (await op.get_market("rt")).state == "awarded"
            clock.set(int((start + timedelta(hours=1, minutes=10)).timestamp() * US))
            assert [(s.market_id, s.action, s.interval_idx) for s in await scheduler.tick()] == [
                ("rt", "settle", 10), ("rt", "settle", 11), ("twin", "settle", None)]
            assert (await op.get_market("rt")).state == "settled"
            # Settled interval by interval, the statements are those of the twin settled whole.
            for n in ("agg-a", "agg-b"):
                lines = [await env.clients[n].list_statements(market_id=m) for m in ("rt", "twin")]
                assert [(s.bid_id, s.resource_id, s.interval_start, s.kind, s.amount) for s in lines[0]] == \
                    [(s.bid_id, s.resource_id, s.interval_start, s.kind, s.amount) for s in lines[1]]
            instructed = {(n, i.resource_id, i.interval_start): i.kw for n in ("agg-a", "agg-b")
                          for i in await env.clients[n].list_instructions(market_id="rt")}
            for n in ("agg-a", "agg-b"):
                await env.clients[n].submit_meter_readings("rt", [MeterReading(r, t, kw - 4.2 if r == "pv" else kw)
                                                                  for (m, r, t), kw in instructed.items() if m == n])
            assert await scheduler.tick() == []  # the interface meter is missing: a gap, nothing settled
            await op.submit_meter_readings("rt", [MeterReading("", x.interval_start, x.import_kw + 8.4)
                                                  for x in awards])
            assert [(s.market_id, s.action) for s in await scheduler.tick()] == [("rt", "imbalance")]
            assert await scheduler.tick() == []
            lines = [s for n in ("agg-a", "agg-b") for s in await env.clients[n].list_statements(market_id="rt")]
            assert {s.kind for s in lines} >= {"energy", "imbalance"}
            # Each imbalance line is the metered deviation (-4.2 kW of PV, none of the loads) at the bus's DLMP.
            dlmp = {p.interval_start: p.dlmp for p in await op.list_prices("rt", bus="18")}
            pv = [s for s in lines if s.kind == "imbalance" and s.resource_id == "pv"]
            assert len(pv) == 24 and all(s.kw == pytest.approx(-4.2) and s.price == dlmp[s.interval_start] for s in pv)
            assert all(s.amount == 0 for s in lines if s.kind == "imbalance" and s.resource_id == "load")
            path = env.db_path
        steps = steps_of(path)
        assert rolled([s for s in steps["rt"] if "[" in s], 12, settled=True)
        assert [s for s in steps["rt"] if "[" not in s] == ["settle", "imbalance"]
        conn = db.connect(path)
        checks = replay(conn, "rt")
        conn.close()
        # Gate by gate, each interval settled once its meter window passed.
        assert [c.stage for c in checks] == ["clear", "award"] * 3 + ["settle", "clear", "award"] * 9 + ["settle"] * 3
        assert all(c.identical for c in checks)

    asyncio.run(body())


def test_an_interval_whose_clearing_fails_waits_for_the_operator_and_the_rest_roll_on(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            op, iso, a = env.clients["dso"], env.clients["iso"], env.clients["agg-a"]
            await small_market(env, "da-fleet", gate_closure_time=delivery_day() + timedelta(days=1))
            start = delivery_day() + timedelta(hours=9)
            rt = await op.create_market("rt", feeder_id="ieee33", kind="real_time", delivery_start=start,
                                        interval_count=3, gate_lead=timedelta(0))
            await a.submit_bids("rt", simple_bids(rt, "a"))
            # The ISO caps the interface at nothing in the second interval: the feeder's load cannot be served.
            t1, t2 = rt.intervals[1], rt.intervals[2]
            await op.submit_network_changes("ieee33", [NetworkChange("cap", "interface", "", t1, "ISO cap", end=t2,
                                                                     import_max_kw=0.0)])
            clock = ManualClock(int(start.timestamp() * US))
            scheduler = Scheduler(env.server.app, clock)
            steps = []
            for _ in range(3):
                steps += [(s.action, s.interval_idx, s.status) for s in await scheduler.tick() if s.market_id == "rt"]
                clock.advance(300)
            assert [x for x in steps if x[0] == "clear"] == [("clear", 0, "optimal"), ("clear", 1, "infeasible"),
                                                              ("clear", 2, "optimal")]
            assert ("publish", 1, "") not in steps and await scheduler.tick() == []  # never retried on its own
            assert (await op.get_market("rt")).state == "open"
            assert len(await iso.list_curves(market_id="rt")) == 2
            # The way out: the operator lifts the cap and clears again; only the failed interval is cleared.
            await op.submit_network_changes("ieee33", [NetworkChange("lift", "interface", "", t1, "cap lifted",
                                                                     end=t2, import_max_kw=1e6)])
            report = await op.clear_market("rt", iso_price_forecast=["45"])
            assert report.status == "optimal" and [f.interval_start for f in report.interface] == [t1]
            assert [(s.action, s.interval_idx) for s in await scheduler.tick() if s.market_id == "rt"] == [
                ("publish", 1)]
            assert (await op.get_market("rt")).state == "published"
            with pytest.raises(FailedPrecondition, match="nothing to clear"):
                await op.clear_market("rt")

    asyncio.run(body())


_SERVE = ("import sys; from dsomarket.clients import cli; cli.COMMAND_MODULES = ('service',); "
          "sys.exit(cli.main(sys.argv[1:]))")


@pytest.fixture
def serve():
    """Start ``dsomarket serve --scheduler`` on a simulated clock; every process started is killed at teardown,
    so a failed assertion never leaves a scheduler clearing markets in the background."""
    procs: list[subprocess.Popen] = []

    def launch(path: Path, start, speed: float) -> tuple[subprocess.Popen, str]:
        argv = [sys.executable, "-c", _SERVE, "-q", "serve", "--db", str(path), "--port", "0", "--scheduler",
                "--clock-start", start.isoformat(), "--clock-speed", str(speed), "--meter-window", "0"]
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(proc)
        line = proc.stdout.readline()
        match = re.search(r"serving on 127\.0\.0\.1:(\d+)", line)
        if not match:
            raise RuntimeError(f"server did not start: {line!r}")
        return proc, f"127.0.0.1:{match.group(1)}"

    yield launch
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stdout.close()


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_a_server_killed_mid_timeline_resumes_without_clearing_twice(tmp_path, serve):
    path = tmp_path / "market.sqlite"
    tokens = create_tokens(path, PARTICIPANTS)
    day = delivery_day()
    names = [f"rt-{h}" for h in range(6)]
    # Ten simulated minutes per second; the first gate (day 00:00) comes 12 s after the start.
    proc, target = serve(path, day - timedelta(hours=2), 600.0)

    async def setup_and_kill():
        async with Client(target, tokens["dso"]) as op, Client(target, tokens["agg-a"]) as a:
            await op.create_feeder("ieee33", builtin="ieee33")
            from dsomarket.clients.api import Resource
            await a.register_resources([Resource("pv", "ieee33", "18", "pv", 300.0),
                                        Resource("load", "ieee33", "25", "flexible_load", 200.0)])
            # Lossless: what is under test is the scheduler's durability, not the model; 72 loss-aware clearings
            # made the catch-up outlast the waits below on a loaded machine.
            for m in await real_time_markets(op, names, day, formulation="lossless"):
                await a.submit_bids(m.market_id, simple_bids(m, "a"))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # until an hour is part rolled: mid-timeline, mid-market
                curves = [len(await op.list_curves(market_id=n)) for n in names]
                if any(0 < c < 12 for c in curves[1:]):
                    break
                await asyncio.sleep(0.05)
            assert curves[0] == 12 and any(0 < c < 12 for c in curves[1:]) and curves[-1] == 0, curves
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    asyncio.run(setup_and_kill())
    before = steps_of(path)
    # Restarted later in simulated time: every gate has passed; it catches up from the database.
    proc, target = serve(path, day + timedelta(hours=7), 600.0)

    async def wait_for(client, state: str):
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if {m.state for m in await client.list_markets()} == {state}:
                return
            await asyncio.sleep(0.1)
        raise AssertionError([m.state for m in await client.list_markets()])

    async def award_and_settle():
        async with Client(target, tokens["auditor"]) as au, Client(target, tokens["iso"]) as iso:
            await wait_for(au, "published")
            # The ISO awards every interval at its curve's import at 40; the scheduler then settles each hour
            # on its own (the meter window is 0 and every hour has ended on the simulated clock).
            for name in names:
                for c in await iso.list_curves(market_id=name):
                    award = IntervalAward(c.interval_start, next(b.import_kw for b in c.bands if b.price_high >= 40))
                    await iso.submit_interval_award(name, [award])
            await wait_for(au, "settled")

    asyncio.run(award_and_settle())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    after = steps_of(path)
    assert set(after) == set(names)
    # Every interval closed, cleared and published exactly once across the kill, and each hour settled once.
    assert all(rolled([s for s in steps if "[" in s], 12, settled=True) for steps in after.values()), after
    assert all([s for s in steps if "[" not in s] == ["settle"] for steps in after.values()), after
    assert any(len(before.get(n, [])) < 36 for n in names)  # the restart had work left to do
    conn = db.connect(path)
    assert audit.verify(conn).ok
    conn.close()
