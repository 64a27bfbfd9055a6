"""Day-ahead schedules on the AC feeder, and the real-time re-clears that hold them.

Run: ``python benchmarks/bench_held_schedules.py [--draws N] [--seed S]``. Draws the arguments of the
two-settlement property of ``tests/test_settlement.py`` (synthetic 6-bus feeder, 2-8 bids with reactive
power, day-ahead and real-time ISO prices in 0-400, each 0 half the time) with ``numpy.random.default_rng(S)``;
for each, clears the day-ahead market at its price (``disaggregate`` with the price alone), reads the AC
power flow of that schedule (``ac_check``: the worst line loading, at either end), and clears the real-time
market of resource r1's new bids holding everyone else's day-ahead position (``holding_day_ahead``). Prints the
worst day-ahead loading and every real-time re-clear that fails, with its diagnosis.

``--property`` runs the whole property instead (``both`` drawn too: the award with the price or alone) and
prints every draw that fails it, with the assertion that failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from datetime import timedelta

import numpy as np
import polars as pl

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dsomarket.engine.bids import validate_bids  # noqa: E402
from dsomarket.engine.clearing import ClearingOptions, clear  # noqa: E402
from dsomarket.engine.disaggregation import disaggregate, holding_day_ahead  # noqa: E402
from dsomarket.engine.feeders import synthetic  # noqa: E402
from tests.test_interface import random_bids  # noqa: E402
from tests.test_settlement import DA_RULES, LOSSAWARE, RT_RULES, T0, award  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--draws", type=int, default=150)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--property", action="store_true", help="run the whole settlement property on each draw")
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    if args.property:
        return whole_property(rng, args.draws)
    worst, failed, total = 0.0, [], 0
    for _ in range(args.draws):
        seed, n_bids = int(rng.integers(0, 10_001)), int(rng.integers(2, 9))
        da_price = float(rng.choice([0.0, rng.uniform(0, 400)]))
        rt_price = float(rng.choice([0.0, rng.uniform(0, 400)]))
        f = synthetic(6, seed)
        b = random_bids(f, n_bids, seed + 3, tan_phi=True).with_columns(
            interval=pl.lit(T0), resource_id=pl.Series([f"r{k % 3}" for k in range(n_bids)]))
        da = disaggregate(f, validate_bids(b, f, DA_RULES), award(None, da_price, T0), DA_RULES,
                          options=ClearingOptions())
        if not da.clearing.ok:
            continue
        worst = max(worst, da.clearing.ac_check["max_loading_pct"])
        again = b.filter(pl.col("resource_id") == "r1").with_columns(price=(pl.col("price") * 0.7 + 15).round(2))
        ivs = [T0 + timedelta(minutes=5 * j) for j in range(2)]
        rt_book = validate_bids(pl.concat([again.with_columns(interval=pl.lit(iv), bid_id=pl.col("bid_id") + f"-rt{j}")
                                           for j, iv in enumerate(ivs)]), f, RT_RULES)
        ref = clear(holding_day_ahead(f, rt_book, da.clearing.dispatch, 60), rt_book, rt_price, rules=RT_RULES,
                    options=LOSSAWARE)
        total += 1
        if not ref.ok:
            failed.append((seed, n_bids, round(da_price, 2), round(rt_price, 2), ref.diagnosis[0]["limit"]))
    print(f"day-ahead schedules: worst AC line loading {worst:.9f} %")
    print(f"real-time re-clears holding them: {len(failed)} of {total} failed")
    for seed, n_bids, da_price, rt_price, limit in failed:
        print(f"  seed {seed}, {n_bids} bids, day-ahead {da_price}, real-time {rt_price}: {limit}")


def whole_property(rng: np.random.Generator, draws: int) -> None:
    """Each draw through the body of the property (its hypothesis wrapper's inner test), failures by assertion."""
    from tests.test_settlement import \
        test_loss_aware_two_settlement_balances_and_is_revenue_adequate_at_non_negative_prices as prop
    failed = []
    for _ in range(draws):
        kw = dict(seed=int(rng.integers(0, 10_001)), n_bids=int(rng.integers(2, 9)),
                  da_price=float(rng.choice([0.0, round(rng.uniform(0, 400), 2)])),
                  rt_price=float(rng.choice([0.0, round(rng.uniform(0, 400), 2)])), both=bool(rng.random() < 0.5))
        try:
            prop.hypothesis.inner_test(**kw)
        except AssertionError as err:
            frame = traceback.extract_tb(err.__traceback__)[-1]
            failed.append((kw, f"line {frame.lineno}: {frame.line}"))
    print(f"settlement property: {len(failed)} of {draws} draws failed")
    for kw, where in failed:
        print(f"  {kw}: {where}")


if __name__ == "__main__":
    main()
