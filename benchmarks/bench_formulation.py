"""A server market's clearing model and what it costs: the demo's day on each formulation.

Run: ``python benchmarks/bench_formulation.py [--formulations lossless lossaware] [--uncoupled] [--workers N]``.

It runs ``dsomarket demo`` (its markets lossless, the quicker) into a temporary directory, reads the day-ahead
market back from the database exactly as the server does (``server.store.market_rows`` then
``server.markets_engine.market_inputs``), and clears it again with each formulation through the server's
own ``markets_engine.clear_market`` (clearing at the forecast plus the 24 interface curves), printing wall
and CPU time per formulation and the ratio to the first. ``--uncoupled`` also drops the batteries' and EVs'
bids, whose energy couples the hours, to show what the coupling costs. Wall time on a shared machine is
mostly waiting for a core: the CPU time is the figure to compare. ``--workers N`` (N >= 2) also clears each
case with its curves fanned out to a runner of N processes, as the server does (``server.runner.CurveFanOut``,
the processes started inside the timing): wall time, the ratio to the clearing in this process and whether the
recorded digest is the same.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dsomarket.clients.demo import WHOLESALE, run_demo  # noqa: E402
from dsomarket.server import db, markets_engine, store  # noqa: E402
from dsomarket.server.runner import CurveFanOut, LocalRunner  # noqa: E402


def demo_inputs(workdir: Path) -> markets_engine.MarketInputs:
    """The demo's day-ahead market as the server builds it for a clearing."""
    if asyncio.run(run_demo(workdir, out=lambda _: None, formulation="lossless")) != 0:
        raise SystemExit("the demo failed")
    conn = db.connect(workdir / "dsomarket.sqlite")
    try:
        (market_id,) = [m["market_id"] for m in store.list_markets(conn, None, [], "day_ahead", None, 10)]
        market, tables, bids, resources, activations, network, forecast = store.market_rows(conn, market_id)
    finally:
        conn.close()
    return markets_engine.market_inputs(markets_engine.feeder_from_tables(tables), market, bids, resources,
                                        activations, network, forecast)


def timed(inputs: markets_engine.MarketInputs, formulation: str, trace=None) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    outcome = markets_engine.clear_market(dataclasses.replace(inputs, formulation=formulation),
                                          [f"{p:.2f}" for p in WHOLESALE], trace=trace)
    return time.perf_counter() - wall, time.process_time() - cpu, outcome


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--formulations", nargs="+", default=["lossless", "lossaware"])
    p.add_argument("--uncoupled", action="store_true", help="also clear without the battery and EV bids")
    p.add_argument("--workers", type=int, default=0,
                   help="also clear with the curves fanned out to this many runner processes (0: not)")
    args = p.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        inputs = demo_inputs(Path(tmp))
    cases = [("demo day-ahead", inputs)]
    if args.uncoupled:
        coupled = [r.resource_id for r in inputs.resources]
        cases.append(("without battery/EV bids", dataclasses.replace(
            inputs, bids=inputs.bids.filter(~pl.col("resource_id").is_in(coupled)), resources=())))
    for name, case in cases:
        base = None
        for formulation in args.formulations:
            wall, cpu, outcome = timed(case, formulation)
            base = base or cpu
            bands = sum(len(c["bands"]) for c in outcome.curves)
            print(f"{name} ({case.bids.height} segments, {len(case.intervals)} intervals): {formulation:9s} "
                  f"{outcome.status}, {bands} bands; wall {wall:7.2f} s, CPU {cpu:7.2f} s ({cpu / base:5.1f}x), "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
            if args.workers >= 2:
                with LocalRunner(args.workers) as pool:
                    fan, _, fanned = timed(case, formulation, CurveFanOut(lambda: pool, min_segments=0))
                print(f"  curves on {args.workers} runner processes: wall {fan:7.2f} s ({wall / fan:.2f}x faster), "
                      f"load {os.getloadavg()[0]:.1f}; identical digest: {fanned.digest == outcome.digest}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
