"""Pre-qualification and operating envelopes on synthetic feeders: wall time, AC rounds, and the water fill
against the one-limit-per-round, one-interval-at-a-time fill it replaced.

    .venv/bin/python benchmarks/bench_hybrid.py [--no-baseline]

PV of 10-500 kW at random buses and a 24-hour forecast that swings between 30 % and 100 % of the feeder's
loads. The baseline (``tests.reference.water_fill_one_limit_per_round``) fills the same constraints once,
per interval and direction; the ratio is its time over the new fill's, measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from dsomarket.engine.envelopes import operating_envelopes, water_fill
from dsomarket.engine.feeders import synthetic
from dsomarket.engine.operating import constraints, forecast_loads
from dsomarket.engine.registry import prequalify, validate_ders

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.reference import water_fill_one_limit_per_round  # noqa: E402

HOURS = 24


def case(n_bus: int, n_der: int) -> tuple:
    feeder = synthetic(n_bus, 1)
    topo = feeder.topology
    rng = np.random.default_rng(0)
    ders = pl.DataFrame({"der_id": [f"d{k}" for k in range(n_der)], "kind": "pv", "feeder": feeder.name,
                         "bus": rng.choice(topo.bus_ids[1:].astype(str), n_der), "aggregator_id": "a",
                         "export_kw": rng.uniform(10, 500, n_der), "import_kw": rng.uniform(0, 200, n_der)})
    scale = 0.3 + 0.7 * np.sin(np.pi * np.arange(HOURS) / HOURS) ** 2
    forecast = pl.DataFrame({
        "bus": np.tile(topo.bus_ids.astype(str), HOURS),
        "interval": np.repeat([f"2026-07-01T{h:02d}:00:00Z" for h in range(HOURS)], n_bus),
        "p_kw": np.concatenate([topo.load_kw * s for s in scale])})
    return feeder, ders, forecast


def fill_ratio(feeder, ders: pl.DataFrame, forecast: pl.DataFrame) -> tuple[float, float, float]:
    """One fill of the linear constraints: new (all intervals, both directions) and baseline; worst kW apart."""
    t = validate_ders(ders)
    ivs, p_kw, q_kvar = forecast_loads(feeder, forecast)
    cons = constraints(feeder, p_kw, q_kvar, feeder.topology.bus_index_of(t["bus"].to_numpy()), t["tan_phi"].to_numpy())
    cap = {"export": t["export_limit_kw"].to_numpy(), "import": t["import_limit_kw"].to_numpy()}
    margins = {"export": cons.margin_export, "import": cons.margin_import}
    t0 = time.perf_counter()
    fill = sp.bmat([[cons.sens, cons.cross], [cons.cross, cons.sens]]).tocsc()
    both = np.concatenate([cap["export"], cap["import"]])
    new, _ = water_fill(np.vstack([margins["export"], margins["import"]]), fill, both, both)
    t1 = time.perf_counter()
    dense = cons.sens.toarray()
    old = np.vstack([np.stack([water_fill_one_limit_per_round(margins[d][:, k], dense, cap[d], cap[d])
                               for k in range(len(ivs))], axis=1) for d in ("export", "import")])
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, float(np.abs(new - old).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-baseline", action="store_true", help="skip the old fill (about 40 s at 1,000 buses)")
    args = parser.parse_args()
    for n_bus, n_der in ((200, 100), (1000, 500)):
        feeder, ders, forecast = case(n_bus, n_der)
        t0 = time.perf_counter()
        review = prequalify(feeder, ders, forecasts={feeder.name: forecast})
        t1 = time.perf_counter()
        env = operating_envelopes(feeder, ders, forecast)
        t2 = time.perf_counter()
        check = review.ac_checks[feeder.name]
        print(f"{n_bus} buses, {n_der} DERs, {HOURS} intervals: prequalify {t1 - t0:.2f} s "
              f"(AC rounds {check.rounds}, passed {check.passed}); envelopes {t2 - t1:.2f} s "
              f"(AC rounds {env.ac_check.rounds}, passed {env.ac_check.passed})")
        if not args.no_baseline:
            new, old, apart = fill_ratio(feeder, ders, forecast)
            print(f"    one water fill: {new:.3f} s, one limit per round per interval {old:.2f} s: "
                  f"{old / new:.1f}x faster; largest difference {apart:.2e} kW")


if __name__ == "__main__":
    # One BLAS thread: the baseline's dense products otherwise spin OpenBLAS threads on a shared machine and
    # its time swings tenfold from run to run.
    with threadpool_limits(1):
        main()
