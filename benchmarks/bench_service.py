"""Service load: concurrent aggregator clients over loopback, then gate closure to published curves.

Run: ``python benchmarks/bench_service.py [--clients 50] [--segments 100000] [--batch 250]
[--db postgresql://...]``.

The server runs in its own process (``server.app.serve`` on a fresh SQLite
file in a temporary directory, WAL and ``synchronous=FULL``; or on an empty
PostgreSQL database or schema given by ``--db``) so that the
clients' CPU does not share its interpreter. Each of ``--clients`` aggregators
registers ten resources on the IEEE 33-bus feeder and submits its share of
``--segments`` bid segments to one day-ahead market, batch after batch, each
batch a columnar ``SubmitBids`` call built beforehand. Reported:

- throughput of acknowledged segments and requests (wall time from the first
  submission to the last acknowledgement), and p50 / p90 / p99 / max latency
  of one acknowledged request;
- the count of stored segments (read from the database afterwards);
- the time from the operator's ``CloseGate`` to the ISO having every interval's
  curve on its stream (``CloseGate`` + ``ClearMarket`` + ``PublishMarket`` +
  delivery), with the server-side clearing and tracing time from the reply.

Bid prices sit on a grid of ``--price-levels`` values per side, as real bids
cluster on round prices; the number of distinct prices, more than the number
of bids, sets how many steps the exact interface curves have.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dsomarket.clients.api import BidSegment, Client, Resource, bid_columns  # noqa: E402
from dsomarket.server import db  # noqa: E402
from tests.harness import create_tokens, delivery_day  # noqa: E402

_SERVE = ("import asyncio, sys; from dsomarket.server.app import serve; "
          "asyncio.run(serve('127.0.0.1:0', sys.argv[1], ready=lambda p: print(p, flush=True), "
          "workers=int(sys.argv[2]) or None))")
_ROOT = Path(__file__).resolve().parent.parent
MARKET = "bench-da"


def start_server(db_path: Path | str, workers: int = 0) -> tuple[subprocess.Popen, str]:
    """The server in its own process; ``workers``: its runner's processes (0: one per core)."""
    proc = subprocess.Popen([sys.executable, "-c", _SERVE, str(db_path), str(workers)], cwd=_ROOT,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not re.fullmatch(r"\d+\n", line):
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, f"127.0.0.1:{line.strip()}"


def plan(n_clients: int, segments: int, batch: int, intervals: list, levels: int, seed: int) -> dict:
    """Per aggregator: its resources and its prebuilt request columns."""
    rng = np.random.default_rng(seed)
    buses = [str(b) for b in range(2, 34)]
    out = {}
    share = segments // n_clients
    for c in range(n_clients):
        name = f"agg-{c:03d}"
        resources = [Resource(f"pv{k}", "ieee33", str(rng.choice(buses)), "pv", 100.0) for k in range(5)]
        resources += [Resource(f"load{k}", "ieee33", str(rng.choice(buses)), "flexible_load", 100.0)
                      for k in range(5)]
        side = rng.choice(["buy", "sell"], share)
        level = rng.integers(0, levels, share)
        price = np.where(side == "sell", level * 2, 40 + level * 2)
        res = np.where(side == "sell", "pv", "load") + rng.integers(0, 5, share).astype(str)
        qty = np.round(rng.uniform(0.5, 5.0, share), 1)
        when = rng.integers(0, len(intervals), share)
        segs = [BidSegment(f"s{k}", str(res[k]), str(side[k]), float(qty[k]), int(price[k]),
                           intervals[when[k]])
                for k in range(share)]
        out[name] = (resources, [bid_columns(segs[k:k + batch]) for k in range(0, share, batch)])
    return out


async def load(target: str, tokens: dict, work: dict) -> tuple[list[float], float]:
    latencies: list[float] = []

    async def aggregator(name: str):
        async with Client(target, tokens[name], timeout=120.0) as c:
            await start.wait()
            for cols in work[name][1]:
                t0 = time.perf_counter()
                await c.submit_bids(MARKET, cols)
                latencies.append(time.perf_counter() - t0)

    start = asyncio.Event()
    tasks = [asyncio.create_task(aggregator(name)) for name in work]
    await asyncio.sleep(0.5)  # every channel connected before the clock starts
    t0 = time.perf_counter()
    start.set()
    await asyncio.gather(*tasks)
    return latencies, time.perf_counter() - t0


async def gate_to_curves(target: str, tokens: dict, n_intervals: int) -> dict:
    async with Client(target, tokens["dso"], timeout=3600.0) as op, Client(target, tokens["iso"]) as iso:
        ready = asyncio.Event()

        async def iso_side():
            got = 0
            ready.set()
            async for _ in iso.curve_stream(market_id=MARKET):
                got += 1
                if got == n_intervals:
                    return time.perf_counter()

        listener = asyncio.create_task(iso_side())
        await ready.wait()
        t0 = time.perf_counter()
        await op.close_gate(MARKET)
        t1 = time.perf_counter()
        report = await op.clear_market(MARKET, iso_price_forecast=["50"])
        t2 = time.perf_counter()
        await op.publish_market(MARKET)
        t3 = time.perf_counter()
        t4 = await asyncio.wait_for(listener, 120)
        return {"status": report.status, "close": t1 - t0, "clear": t2 - t1,
                "server_solve": report.solve_seconds,
                "publish": t3 - t2, "delivery": t4 - t3, "total": t4 - t0, "segments": report.curve_segments}


async def setup(target: str, tokens: dict, work: dict, n_intervals: int, formulation: str):
    async with Client(target, tokens["dso"]) as op:
        await op.create_feeder("ieee33", builtin="ieee33")
        market = await op.create_market(MARKET, feeder_id="ieee33", kind="day_ahead",
                                        delivery_start=delivery_day(), interval_count=n_intervals,
                                        formulation=formulation)

    async def register(name):
        async with Client(target, tokens[name]) as c:
            await c.register_resources(work[name][0])

    await asyncio.gather(*(register(n) for n in work))
    return market


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--segments", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=250, help="segments per SubmitBids request")
    p.add_argument("--intervals", type=int, default=4, help="hourly intervals of the market")
    p.add_argument("--price-levels", type=int, default=20, help="distinct prices per side")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--skip-curves", action="store_true", help="measure the load only")
    p.add_argument("--formulation", default="lossless", choices=["lossless", "lossaware"],
                   help="the market's clearing model (the recorded gate-to-curves figures are lossless)")
    p.add_argument("--workers", type=int, default=0, help="the server's runner processes, which also trace a "
                   "many-interval market's curves (0: one per core; 1: curves on the solver thread)")
    p.add_argument("--db", default=None, metavar="URL", help="an empty postgresql:// database or schema "
                   "(default: a fresh SQLite file)")
    args = p.parse_args()

    print(f"# {platform.platform()}, python {platform.python_version()}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="dsomarket-bench-") as tmp:
        path = args.db or Path(tmp) / "bench.sqlite"
        names = [f"agg-{c:03d}" for c in range(args.clients)]
        tokens = create_tokens(path, {"dso": "operator", "iso": "iso", **{n: "aggregator" for n in names}})
        proc, target = start_server(path, args.workers)
        try:
            start = delivery_day()
            intervals = [start + timedelta(hours=h) for h in range(args.intervals)]
            t = time.perf_counter()
            work = plan(args.clients, args.segments, args.batch, intervals, args.price_levels, args.seed)
            print(f"# requests built client-side in {time.perf_counter() - t:.1f} s (not timed below)")
            asyncio.run(setup(target, tokens, work, args.intervals, args.formulation))
            latencies, wall = asyncio.run(load(target, tokens, work))
            lat = np.array(latencies) * 1000.0
            sent = sum(len(c.bid_id) for _, cols in work.values() for c in cols)
            conn = db.connect(path)
            try:
                (stored,) = conn.execute("SELECT COUNT(*) FROM bids").fetchone()
            finally:
                conn.close()
            print(f"load: {args.clients} clients, {len(lat)} SubmitBids requests of {args.batch} segments, "
                  f"{sent} segments in {wall:.2f} s")
            print(f"  throughput {sent / wall:,.0f} segments/s, {len(lat) / wall:,.0f} requests/s")
            p50, p90, p99 = np.percentile(lat, [50, 90, 99])
            print(f"  latency of an acknowledged request: p50 {p50:.1f} ms, p90 {p90:.1f} ms, "
                  f"p99 {p99:.1f} ms, max {lat.max():.1f} ms")
            verdict = "all" if stored == sent else "MISSING SOME"
            print(f"  stored after the run: {stored} segments ({verdict})")
            if not args.skip_curves:
                g = asyncio.run(gate_to_curves(target, tokens, args.intervals))
                print(f"gate closure to published curves ({args.intervals} intervals, {stored} segments): "
                      f"{g['total']:.2f} s, clearing {g['status']}")
                print(f"  CloseGate {g['close'] * 1000:.0f} ms, ClearMarket {g['clear']:.2f} s "
                      f"(server: clearing and curve tracing {g['server_solve']:.2f} s), "
                      f"PublishMarket {g['publish'] * 1000:.0f} ms, "
                      f"stream delivery to the ISO {g['delivery'] * 1000:.0f} ms; "
                      f"{g['segments']} curve segments")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
