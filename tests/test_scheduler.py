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

from dsomarket.clients.api import Client, FailedPrecondition
from dsomarket.clients.demo import delivery_day
from dsomarket.server import audit, db
from dsomarket.server.scheduler import ManualClock, Scheduler, due
from tests.harness import PARTICIPANTS, create_tokens, running, simple_bids, small_market

ROOT = Path(__file__).resolve().parent.parent
US = 1_000_000


def steps_of(path: Path) -> dict[str, list[str]]:
    """The audited steps per market in log order: close, clear, publish of a market taken whole, and
    ``close[k]``, ``clear[k]``, ``publish[k]`` of interval k at its rolling gate; settle and imbalance."""
    names = {"market.close": "close", "market.clear": "clear", "market.settle": "settle",
             "imbalance.settle": "imbalance", "interval.close": "close", "interval.clear": "clear",
             "interval.publish": "publish"}
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


def rolled(steps: list[str], count: int) -> bool:
    """True when each of ``count`` intervals was closed, cleared and published, in that order, once."""
    return all([s for s in steps if s.endswith(f"[{k}]")] == [f"{step}[{k}]" for step in ("close", "clear", "publish")]
               for k in range(count)) and len(steps) == 3 * count


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


_SERVE = ("import sys; from dsomarket.clients import cli; cli.COMMAND_MODULES = ('service',); "
          "sys.exit(cli.main(sys.argv[1:]))")


def serve(path: Path, start, speed: float) -> tuple[subprocess.Popen, str]:
    argv = [sys.executable, "-c", _SERVE, "-q", "serve", "--db", str(path), "--port", "0", "--scheduler",
            "--clock-start", start.isoformat(), "--clock-speed", str(speed)]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    match = re.search(r"serving on 127\.0\.0\.1:(\d+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, f"127.0.0.1:{match.group(1)}"


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_a_server_killed_mid_timeline_resumes_without_clearing_twice(tmp_path):
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
            for m in await real_time_markets(op, names, day):
                await a.submit_bids(m.market_id, simple_bids(m, "a"))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                states = [m.state for m in await op.list_markets()]
                if "published" in states:
                    break
                await asyncio.sleep(0.05)
            assert "published" in states and states.count("open") >= 2, states  # mid-timeline
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    asyncio.run(setup_and_kill())
    before = steps_of(path)
    # Restarted later in simulated time: every gate has passed; it catches up from the database.
    proc, target = serve(path, day + timedelta(hours=7), 600.0)

    async def wait_all():
        async with Client(target, tokens["auditor"]) as au:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if {m.state for m in await au.list_markets()} == {"published"}:
                    return
                await asyncio.sleep(0.1)
            raise AssertionError([m.state for m in await au.list_markets()])

    asyncio.run(wait_all())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    after = steps_of(path)
    assert set(after) == set(names)
    assert all(s == ["close", "clear", "publish"] for s in after.values()), after
    assert any(len(before.get(n, [])) < 3 for n in names)  # the restart had work left to do
    conn = db.connect(path)
    assert audit.verify(conn).ok
    conn.close()
