"""Exact interface curve against price sweeps of cold solves.

Run: ``python benchmarks/bench_curve.py [--buses 1000] [--bids 10000] [--seed 1] [--decimals 2 0]``.

For each bid-price tick (``--decimals 2``: prices to the cent; ``0``: whole currency units) it
builds ``engine.feeders.synthetic(buses, seed)`` and ``bids`` random bids (half buys, half sells,
1-30 kW, prices spread uniformly over -50..250 per MWh, random buses), then prints

- ``exact``: :func:`engine.interface.trace_curve` from the market's floor (-1000) to its cap
  (3000): HiGHS solves, steps walked by bound flips, bands, seconds (model build included);
- ``sweep100``: a fresh model built and solved cold at each of 100 evenly spaced prices (the
  cheapest cold solve: ``NodalMarket`` + HiGHS, no result tables); its distinct imports, and a
  check that every sweep price away from a breakpoint gets the exact curve's import;
- ``fine``: the grid a cold sweep would need to find the same steps (spacing = the narrowest
  band), its number of points and its time *estimated* from the measured mean cold solve
  (running it is out of the question: it is millions of solves);
- the ratios sweep100 / exact and fine / exact (above 1 = the exact curve is faster).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

import highspy
import numpy as np
import polars as pl

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dsomarket.engine.bids import MarketRules, validate_bids  # noqa: E402
from dsomarket.engine.clearing import ClearingOptions, NodalMarket  # noqa: E402
from dsomarket.engine.feeders import synthetic  # noqa: E402
from dsomarket.engine.interface import trace_curve  # noqa: E402

NO_AC = ClearingOptions(ac_check=False)


def make_bids(feeder, n: int, seed: int, decimals: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    buses = feeder.buses["bus"].to_numpy()[1:]
    return pl.DataFrame({"bid_id": [f"b{k:05d}" for k in range(n)], "bus": rng.choice(buses, n),
                         "side": np.where(rng.random(n) < 0.5, "buy", "sell"),
                         "quantity_kw": np.round(rng.uniform(1, 30, n), 1),
                         "price": np.round(rng.uniform(-50, 250, n), decimals)})


def cold_import(feeder, book, rules, price: float) -> tuple[float, float]:
    t0 = time.perf_counter()
    market = NodalMarket(feeder, book, price, rules, options=NO_AC)
    sol = market.solve_raw()
    seconds = time.perf_counter() - t0
    assert sol.ok, sol.status
    return float(sol.x[market.model.var("import_p").start]) * 1000.0, seconds


def run(buses: int, n_bids: int, seed: int, decimals: int) -> None:
    feeder = synthetic(buses, seed)
    rules = MarketRules()
    book = validate_bids(make_bids(feeder, n_bids, seed + 1, decimals), feeder, rules)
    print(f"\n== {buses} buses, {n_bids} bids, prices to {10.0 ** -decimals:g} per MWh, "
          f"curve over [{rules.price_floor:g}, {rules.price_cap:g}]")

    t0 = time.perf_counter()
    curve = trace_curve(feeder, book, rules)
    exact = time.perf_counter() - t0
    b = curve.bands
    lo, hi, q = b["price_low"].to_numpy(), b["price_high"].to_numpy(), b["import_kw"].to_numpy()
    print(f"exact     {exact:8.2f} s  {curve.solves:6d} HiGHS solves  {curve.bound_flips:6d} bound flips  "
          f"{len(q):6d} bands")

    prices = np.linspace(rules.price_floor, rules.price_cap, 100)
    t0 = time.perf_counter()
    sweep = [cold_import(feeder, book, rules, p) for p in prices]
    sweep_s = time.perf_counter() - t0
    imports = np.array([s[0] for s in sweep])
    per_solve = sweep_s / len(prices)
    off_breaks = [k for k, p in enumerate(prices) if np.min(np.abs(hi[:-1] - p), initial=np.inf) > 1e-6]
    bad = sum(abs(imports[k] - curve.import_at(0, prices[k])) > 1e-3 for k in off_breaks)
    print(f"sweep100  {sweep_s:8.2f} s  {len(prices):6d} cold solves ({per_solve * 1000:.1f} ms each)  "
          f"{len(np.unique(np.round(imports, 3))):6d} distinct imports; "
          f"{len(off_breaks) - bad}/{len(off_breaks)} agree with the exact curve")

    width = float(np.min(hi - lo)) if len(q) > 1 else rules.price_cap - rules.price_floor
    points = math.ceil((rules.price_cap - rules.price_floor) / width) + 1
    fine_s = points * per_solve
    print(f"fine      {fine_s:8.3g} s  {points:6.3g} cold solves (estimated from the mean cold solve above: "
          f"a grid step of {width:.3g} per MWh, the narrowest band)")
    print(f"ratio     sweep100 / exact = {sweep_s / exact:6.1f}x   fine / exact = {fine_s / exact:8.3g}x")
    if bad:
        print(f"WARNING: {bad} sweep prices disagree with the exact curve")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buses", type=int, default=1000)
    parser.add_argument("--bids", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--decimals", type=int, nargs="+", default=[2, 0],
                        help="bid-price ticks to run: 2 = cents, 0 = whole units (default both)")
    args = parser.parse_args(argv)
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; Python {platform.python_version()}, highspy {highspy.Highs().version()}; "
          f"HiGHS on 1 thread")
    for d in args.decimals:
        run(args.buses, args.bids, args.seed, d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
