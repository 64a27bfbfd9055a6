"""Exact interface curve against a warm-started 100-point price grid on the same model.

Run: ``python benchmarks/bench_curve.py [--buses 1000] [--bids 10000] [--seed 1] [--decimals 2 0]
[--small-bids 1000] [--dayahead-intervals 0]``.

For each bid-price tick (``--decimals 2``: prices to the cent; ``0``: whole currency units) it
builds ``engine.feeders.synthetic(buses, seed)`` and ``bids`` random bids (half buys, half sells,
1-30 kW, prices spread uniformly over -50..250 per MWh, random buses), then prints

- ``exact``: :func:`engine.interface.trace_curve` from the market's floor (-1000) to its cap
  (3000): HiGHS solves, steps walked by bound flips, bands, seconds (model build included);
- ``warm100``: the baseline: one ``NodalMarket`` (a persistent ``highspy.Highs`` model) built once
  and re-solved warm at 100 evenly spaced prices, reading only the import (build included); its
  distinct imports, and a check that every grid price away from a breakpoint gets the exact
  curve's import (an independent solve of each);
- the ratio exact / warm100 (target <= 1.5), of wall and of CPU seconds;
- ``small``: clear + curve of the same feeder with ``--small-bids`` bids (target <= 0.1 s), as two
  calls and as the territory does it (the curve traced on the clearing's market, ``trace_curve(market=)``);
- ``dayahead`` (``--dayahead-intervals 24``): the coupled day-ahead curves: the same ``bids`` spread
  over the hours, plus ``--batteries`` batteries (200 kWh, 50 kW, a charge and a discharge bid in every
  hour) that couple the hours; all curves, each conditional on the forecast in the other hours
  (target < 60 s for 24 hours, 100 batteries, 1,000 buses, 10,000 bids).
"""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta, timezone
import os
import platform
import sys
import time

import highspy
import numpy as np
import polars as pl

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dsomarket.engine.bids import Battery, MarketRules, validate_bids  # noqa: E402
from dsomarket.engine.clearing import ClearingOptions, NodalMarket, clear  # noqa: E402
from dsomarket.engine.feeders import synthetic  # noqa: E402
from dsomarket.engine.interface import trace_curve  # noqa: E402

# The tracer on the lossless LP; the loss-aware curve is measured by bench_physics.py --only curves.
NO_AC = ClearingOptions(formulation="lossless", ac_check=False)
LOSSLESS = ClearingOptions(formulation="lossless")


def make_bids(feeder, n: int, seed: int, decimals: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    buses = feeder.buses["bus"].to_numpy()[1:]
    return pl.DataFrame({"bid_id": [f"b{k:05d}" for k in range(n)], "bus": rng.choice(buses, n),
                         "side": np.where(rng.random(n) < 0.5, "buy", "sell"),
                         "quantity_kw": np.round(rng.uniform(1, 30, n), 1),
                         "price": np.round(rng.uniform(-50, 250, n), decimals)})


def warm_grid(feeder, book, rules, prices: np.ndarray) -> np.ndarray:
    """Imports (kW) at each price from one persistent model re-solved warm (the baseline)."""
    market = NodalMarket(feeder, book, prices[0], rules, options=NO_AC)
    col = market.model.var("import_p").start
    out = np.empty(len(prices))
    for k, p in enumerate(prices):
        market.set_iso_price(p)
        sol = market.solve_raw()
        assert sol.ok, sol.status
        out[k] = sol.x[col] * 1000.0
    return out


def run(buses: int, n_bids: int, seed: int, decimals: int) -> None:
    feeder = synthetic(buses, seed)
    rules = MarketRules()
    book = validate_bids(make_bids(feeder, n_bids, seed + 1, decimals), feeder, rules)
    print(f"\n== {buses} buses, {n_bids} bids, prices to {10.0 ** -decimals:g} per MWh, "
          f"curve over [{rules.price_floor:g}, {rules.price_cap:g}]")

    t0, c0 = time.perf_counter(), time.process_time()
    curve = trace_curve(feeder, book, rules, options=LOSSLESS)
    exact, exact_cpu = time.perf_counter() - t0, time.process_time() - c0
    b = curve.bands
    hi, q = b["price_high"].to_numpy(), b["import_kw"].to_numpy()
    print(f"exact     {exact:8.2f} s  {curve.solves:6d} HiGHS solves  {curve.bound_flips:6d} bound flips  "
          f"{len(q):6d} bands")

    prices = np.linspace(rules.price_floor, rules.price_cap, 100)
    t0, c0 = time.perf_counter(), time.process_time()
    imports = warm_grid(feeder, book, rules, prices)
    grid_s, grid_cpu = time.perf_counter() - t0, time.process_time() - c0
    off_breaks = [k for k, p in enumerate(prices) if np.min(np.abs(hi[:-1] - p), initial=np.inf) > 1e-6]
    bad = sum(abs(imports[k] - curve.import_at(0, prices[k])) > 1e-3 for k in off_breaks)
    print(f"warm100   {grid_s:8.2f} s  {len(prices):6d} warm solves on one model  "
          f"{len(np.unique(np.round(imports, 3))):6d} distinct imports; "
          f"{len(off_breaks) - bad}/{len(off_breaks)} agree with the exact curve")
    # CPU seconds too: on a shared machine the wall clock of either side swings with the others' load.
    print(f"ratio     exact / warm100 = {exact / grid_s:6.2f}x wall, {exact_cpu / grid_cpu:6.2f}x CPU (target <= 1.5)")
    if bad:
        print(f"WARNING: {bad} grid prices disagree with the exact curve")


def small(buses: int, n_bids: int, seed: int) -> None:
    """Clear + curve of one feeder with few bids, end to end (the per-feeder cost of a territory)."""
    feeder = synthetic(buses, seed)
    rules = MarketRules()
    book = validate_bids(make_bids(feeder, n_bids, seed + 1, 2), feeder, rules)
    clear(feeder, book, 50.0, rules=rules, options=NO_AC)    # warm up imports and caches
    # The tracer's imports and compiled kernels (loaded from numba's cache), once per process as in a territory's
    # worker, warmed on another feeder: the first trace in a process also loads them.
    other = synthetic(buses, seed + 1000)
    trace_curve(other, validate_bids(make_bids(other, n_bids, seed + 1001, 2), other, rules), rules, options=LOSSLESS)
    t0 = time.perf_counter()
    res = clear(feeder, book, 50.0, rules=rules, options=NO_AC)
    t1 = time.perf_counter()
    curve = trace_curve(feeder, book, rules, options=LOSSLESS)
    t2 = time.perf_counter()
    print(f"\n== small: {buses} buses, {n_bids} bids: clear {t1 - t0:.3f} s ({res.status}) + curve {t2 - t1:.3f} s "
          f"({curve.bands.height} bands, {curve.solves} solves) = {t2 - t0:.3f} s (target <= 0.1 s)")
    # The territory's path (engine.territory): the curve traced on the clearing's own market, from its basis.
    t0 = time.perf_counter()
    market = NodalMarket(feeder, book, 50.0, rules, options=NO_AC)
    res = market.solve()
    t1 = time.perf_counter()
    kept = trace_curve(feeder, book, rules, options=LOSSLESS, market=market)
    t2 = time.perf_counter()
    same = kept.bands.height == curve.bands.height and np.allclose(kept.bands["import_kw"].to_numpy(),
                                                                   curve.bands["import_kw"].to_numpy(), atol=1e-3)
    print(f"   on the clearing's market: clear {t1 - t0:.3f} s ({res.status}) + curve {t2 - t1:.3f} s "
          f"({kept.solves} solves; bands the same: {same}) = {t2 - t0:.3f} s")


def day_bids(feeder, n: int, hours: int, n_bat: int, seed: int) -> tuple[pl.DataFrame, tuple[Battery, ...]]:
    """``n`` random bids over ``hours`` hours plus a charge and a discharge bid per battery and hour."""
    rng = np.random.default_rng(seed)
    day = [datetime(2026, 3, 1, tzinfo=timezone.utc) + timedelta(hours=h) for h in range(hours)]
    plain = make_bids(feeder, n, seed, 2).with_columns(
        interval=pl.Series([day[h] for h in rng.integers(0, hours, n)]), resource_id=pl.lit(""))
    buses = rng.choice(feeder.buses["bus"].to_numpy()[1:], n_bat)
    rows = [(f"bat{k:03d}-{side}{h:02d}", buses[k], side, 50.0, price, day[h], f"bat{k:03d}")
            for k in range(n_bat) for h in range(hours)
            for side, price in (("buy", round(float(rng.uniform(0, 60)), 2)),
                                ("sell", round(float(rng.uniform(80, 160)), 2)))]
    bat = pl.DataFrame(rows, schema=["bid_id", "bus", "side", "quantity_kw", "price", "interval", "resource_id"],
                       orient="row")
    batteries = tuple(Battery(f"bat{k:03d}", 200.0, 50.0, 50.0, soc_init_kwh=100.0, soc_end_kwh=100.0)
                      for k in range(n_bat))
    return pl.concat([plain, bat], how="diagonal_relaxed"), batteries


def dayahead(buses: int, n_bids: int, hours: int, n_bat: int, seed: int) -> None:
    """The coupled day-ahead curves of every hour (batteries link the hours)."""
    feeder = synthetic(buses, seed)
    rules = MarketRules()
    bids, batteries = day_bids(feeder, n_bids, hours, n_bat, seed + 1)
    book = validate_bids(bids, feeder, rules)
    t0 = time.perf_counter()
    clear(feeder, book, 50.0, rules=rules, resources=batteries, options=NO_AC)
    t1 = time.perf_counter()
    curve = trace_curve(feeder, book, rules, batteries, options=LOSSLESS)
    t2 = time.perf_counter()
    print(f"\n== dayahead: {buses} buses, {n_bids} bids + {n_bat} batteries over {hours} hours: clear {t1 - t0:.2f} s; "
          f"{hours} coupled curves {t2 - t1:.2f} s ({curve.bands.height} bands, {curve.solves} HiGHS solves, "
          f"{curve.bound_flips} bound flips; conditional={curve.conditional}) (target < 60 s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buses", type=int, default=1000)
    parser.add_argument("--bids", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--decimals", type=int, nargs="+", default=[2, 0],
                        help="bid-price ticks to run: 2 = cents, 0 = whole units (default both)")
    parser.add_argument("--small-bids", type=int, default=1000, help="bids of the clear + curve case (0: skip)")
    parser.add_argument("--dayahead-intervals", type=int, default=0,
                        help="hours of the coupled day-ahead case (0: skip; the target case is 24)")
    parser.add_argument("--batteries", type=int, default=100, help="batteries of the day-ahead case")
    args = parser.parse_args(argv)
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; Python {platform.python_version()}, highspy {highspy.Highs().version()}; "
          f"HiGHS on 1 thread; load average {os.getloadavg()[0]:.1f}")
    for d in args.decimals:
        run(args.buses, args.bids, args.seed, d)
    if args.small_bids:
        small(args.buses, args.small_bids, args.seed)
    if args.dayahead_intervals:
        dayahead(args.buses, args.bids, args.dayahead_intervals, args.batteries, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
