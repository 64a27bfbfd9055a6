"""What a network change inside a storage horizon costs: the coupled model against the one-network clearing.

Run: ``python benchmarks/bench_coupled.py [--quick]``. For each case (a synthetic feeder, 24 hourly
intervals, batteries with a charge and a discharge bid per interval, random bids) it times

- ``one network``: ``engine.clearing.clear`` of the horizon on the feeder as loaded;
- ``coupled``: ``engine.runs.clear_runs`` of the same market with a derate of line 2 from hour 12
  (two runs of one network state, cleared as one ``CoupledMarket`` because the batteries link them);

both lossless, and prints the ratio coupled / one network (best of a few repeats, measured in the same
process). The two clearings are also compared: where the derate does not bind they must agree.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dsomarket.engine.bids import Battery, MarketRules, validate_bids  # noqa: E402
from dsomarket.engine.clearing import ClearingOptions, clear  # noqa: E402
from dsomarket.engine.feeders import synthetic  # noqa: E402
from dsomarket.engine.network_changes import validate_changes  # noqa: E402
from dsomarket.engine.runs import clear_runs, runs_for  # noqa: E402

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)
RULES = MarketRules(price_floor=-100, price_cap=400)


def market(n_bus: int, n_bid: int, n_bat: int, seed: int, hours: int = 24):
    rng = np.random.default_rng(seed)
    feeder = synthetic(n_bus, seed)
    buses = feeder.buses["bus"].to_numpy()[1:]
    ivs = [T0 + timedelta(hours=h) for h in range(hours)]
    rows = {"bid_id": [], "bus": [], "side": [], "quantity_kw": [], "price": [], "interval": [], "resource_id": []}

    def add(bid, bus, side, q, p, iv, rid=""):
        for key, v in zip(rows, (bid, bus, side, q, p, iv, rid)):
            rows[key].append(v)

    for k in range(n_bid):
        add(f"b{k}", rng.choice(buses), rng.choice(["buy", "sell"]), rng.uniform(1, 50), round(rng.uniform(0, 150), 2),
            ivs[k % hours])
    bats = []
    for j in range(n_bat):
        bus = rng.choice(buses)
        bats.append(Battery(f"bat{j}", energy_kwh=400.0, charge_kw=100.0, discharge_kw=100.0, soc_init_kwh=200.0,
                            soc_end_kwh=200.0))
        for t, iv in enumerate(ivs):
            add(f"bat{j}-in-{t}", bus, "buy", 100.0, 40.0 + 10 * np.sin(t / 4), iv, f"bat{j}")
            add(f"bat{j}-out-{t}", bus, "sell", 100.0, 60.0 + 10 * np.sin(t / 4), iv, f"bat{j}")
    bids = pl.DataFrame(rows, schema_overrides={"interval": pl.Datetime("us", "UTC")})
    book = validate_bids(bids, feeder, RULES)
    change = pl.DataFrame([{"change_id": "derate", "kind": "rating", "element": "2", "start": ivs[hours // 2],
                            "s_max_kva": 1e6}], schema_overrides={"start": pl.Datetime("us", "UTC")})
    return feeder, book, tuple(bats), runs_for(feeder, validate_changes(change, feeder), book)


def best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smallest case only")
    parser.add_argument("--formulation", default="lossless", choices=["lossless", "lossaware"],
                        help="clearing model of both (the recorded figures are lossless)")
    args = parser.parse_args()
    opts = ClearingOptions(formulation=args.formulation)
    cases = [(33, 500, 5), (200, 2_000, 20)] + ([] if args.quick else [(1_000, 10_000, 100)])
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"{'buses':>6} {'bids':>7} {'batteries':>9} {'one network s':>14} {'coupled s':>10} {'ratio':>6} {'same':>5}")
    for n_bus, n_bid, n_bat in cases:
        feeder, book, bats, runs = market(n_bus, n_bid, n_bat, seed=1)
        repeat = 3 if n_bus <= 200 else 1
        one_s, one = best(lambda: clear(feeder, book, 50.0, rules=RULES, resources=bats, options=opts), repeat)
        coupled_s, coupled = best(lambda: clear_runs(runs, book, 50.0, rules=RULES, resources=bats, options=opts),
                                  repeat)
        same = one.ok and coupled.ok and abs(one.welfare - coupled.welfare) <= 1e-6 * max(1.0, abs(one.welfare))
        print(f"{n_bus:>6} {book.n:>7} {n_bat:>9} {one_s:>14.3f} {coupled_s:>10.3f} {coupled_s / one_s:>6.2f} "
              f"{'yes' if same else 'NO':>5}")


if __name__ == "__main__":
    main()
