"""Pre-qualification and operating envelopes on synthetic feeders: wall time and AC rounds.

    .venv/bin/python benchmarks/bench_hybrid.py

Absolute times (there is no baseline formulation to take a ratio against); PV of 10-500 kW at random
buses and a 24-hour forecast that swings between 30 % and 100 % of the feeder's loads.
"""

from __future__ import annotations

import time

import numpy as np
import polars as pl

from dsomarket.engine.envelopes import operating_envelopes
from dsomarket.engine.feeders import synthetic
from dsomarket.engine.registry import prequalify

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


def main() -> None:
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


if __name__ == "__main__":
    main()
