"""Flexibility auction at scale: end-to-end clearing time against the raw HiGHS solve of the same model.

A 1,000-bus synthetic feeder, 4 hourly intervals, 50 needs (line, voltage and import;
half of them all-or-nothing) and 10,000 offers (a third indivisible or with a
minimum size, a fifth of them second segments of a resource that has a
capability row).

Run: ``python benchmarks/bench_flexibility.py [--buses N] [--offers K] [--needs M] [--seed S]``.
Three cases: all offers divisible and all needs partial (an LP), the mix above (a
MILP), and the MILP with every line and bus of the feeder monitored for new violations.
"End to end" is :func:`clear_flexibility` (validation, sensitivities, model build,
solve, for a MILP the fixed-binaries LP re-solve for duals, result tables); "raw HiGHS"
is one solve of the model that :func:`build_model` returns, in a fresh HiGHS instance.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from dsomarket.engine.feeders import synthetic
from dsomarket.engine.flexibility import BaseCase, build_model, clear_flexibility
from dsomarket.engine.network import Feeder
from dsomarket.engine.solver import HighsSolver


def instance(feeder: Feeder, n_needs: int, n_offers: int, n_intervals: int, seed: int):
    """Random needs, offers and capabilities on a feeder (seeded)."""
    rng = np.random.default_rng(seed)
    topo = feeder.topology
    start = datetime(2025, 1, 15, 17, tzinfo=UTC)
    intervals = [start + timedelta(hours=k) for k in range(n_intervals)]
    iso = np.array([iv.isoformat() for iv in intervals])
    subtree = np.asarray(topo.path_matrix.sum(axis=1)).ravel()

    n_line = int(n_needs * 0.7)
    n_volt = int(n_needs * 0.2)
    n_imp = n_needs - n_line - n_volt
    lines = rng.choice(np.nonzero(subtree >= 20)[0], n_line, replace=False)
    deep = np.argsort(topo.depth)[-max(n_volt * 4, 1):]
    vbuses = rng.choice(deep, n_volt, replace=False)
    kind = ["line"] * n_line + ["voltage"] * n_volt + ["import"] * n_imp
    element = list(topo.line_ids[lines].astype(str)) + list(topo.bus_ids[vbuses].astype(str)) + [""] * n_imp
    direction = [("forward" if s > 0 else "reverse") for s in topo.line_sign[lines]] + ["raise"] * n_volt \
        + ["forward"] * n_imp
    required_kw = np.concatenate([rng.uniform(20, 150, n_line), np.full(n_volt, np.nan),
                                  rng.uniform(200, 800, n_imp)])
    required_pu = np.concatenate([np.full(n_line, np.nan), rng.uniform(0.002, 0.006, n_volt),
                                  np.full(n_imp, np.nan)])
    needs = pl.DataFrame({
        "need_id": [f"n{k}" for k in range(n_needs)], "kind": kind, "element": element,
        "direction": direction,
        "interval": iso[rng.integers(0, n_intervals, n_needs)],
        "required_kw": required_kw, "required_pu": required_pu,
        "max_price": rng.uniform(150, 400, n_needs), "partial_ok": rng.random(n_needs) < 0.5,
    }).with_columns(pl.col("required_kw", "required_pu").fill_nan(None))

    # A fifth of the offers are second segments of an earlier resource: same bus, interval, direction.
    n_res = int(n_offers * 0.8)
    res_bus = rng.integers(1, topo.n_bus, n_res)
    res_t = rng.integers(0, n_intervals, n_res)
    res_up = rng.random(n_res) < 0.8
    owner = np.concatenate([np.arange(n_res), rng.integers(0, n_res, n_offers - n_res)])
    quantity = np.round(rng.uniform(5, 80, n_offers), 1)
    kind_of = rng.random(n_offers)
    offers = pl.DataFrame({
        "offer_id": [f"o{k}" for k in range(n_offers)],
        "aggregator_id": [f"agg{k % 20}" for k in owner],
        "resource_id": [f"r{k}" for k in owner],
        "bus": topo.bus_ids[res_bus[owner]].astype(str),
        "interval": iso[res_t[owner]],
        "direction": np.where(res_up[owner], "up", "down"),
        "quantity_kw": quantity,
        "price": np.round(rng.uniform(20, 300, n_offers), 2),
        "availability_price": np.where(rng.random(n_offers) < 0.3,
                                       np.round(rng.uniform(1, 10, n_offers), 2), 0.0),
        "divisible": kind_of >= 0.2,
        "min_kw": np.where((kind_of >= 0.2) & (kind_of < 0.33), np.round(quantity / 2, 1), 0.0),
        "tan_phi": np.where(rng.random(n_offers) < 0.2, 0.3, 0.0),
    })
    seconds = np.unique(owner[n_res:])
    capabilities = pl.DataFrame({
        "resource_id": [f"r{k}" for k in seconds],
        "interval": iso[res_t[seconds]],
        "capability_up_kw": np.round(rng.uniform(40, 120, len(seconds)), 1),
        "capability_down_kw": np.round(rng.uniform(40, 120, len(seconds)), 1),
        "already_committed_kw": np.round(rng.uniform(-20, 20, len(seconds)), 1),
    })
    return intervals, needs, offers, capabilities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buses", type=int, default=1000)
    parser.add_argument("--needs", type=int, default=50)
    parser.add_argument("--offers", type=int, default=10_000)
    parser.add_argument("--intervals", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    feeder = synthetic(args.buses, args.seed)
    intervals, needs, offers, caps = instance(feeder, args.needs, args.offers, args.intervals, args.seed)
    print(f"feeder {feeder.name}: {feeder.topology.n_bus} buses; {needs.height} needs, "
          f"{offers.height} offers "
          f"({int((~offers['divisible']).sum())} all-or-nothing, {int((offers['min_kw'] > 0).sum())} with "
          f"min_kw), {caps.height} capability rows, {len(intervals)} intervals")

    divisible = offers.with_columns(divisible=pl.lit(True), min_kw=pl.lit(0.0))
    scenarios = (
        ("LP: every offer divisible, every need partial", needs.with_columns(partial_ok=pl.lit(True)),
         divisible, None),
        ("MILP", needs, offers, None),
        ("MILP, every line and bus monitored", needs, offers, BaseCase.from_feeder(feeder, intervals)),
    )
    for label, needs, offers, base in scenarios:
        t0 = time.perf_counter()
        result = clear_flexibility(feeder, needs, offers, caps, base=base)
        end_to_end = time.perf_counter() - t0

        fm = build_model(feeder, needs, offers, caps, base=base)
        raw = HighsSolver(fm.model).solve()
        model = fm.model
        awards = result.awards
        reasons = awards.group_by("reason").len().sort("reason")
        print(f"\n[{label}] status {result.status}; model {model.n_col} columns x {model.n_row} rows; "
              f"{len(fm.in_model)} offers in the model")
        print(f"  accepted {int((awards['accepted_kw'] > 0).sum())} offers, "
              f"{awards['accepted_kw'].sum():.1f} kW; cost {result.total_cost:.2f}; "
              f"needs met {int(result.needs['met'].sum())}/{needs.height}; "
              f"reasons {dict(zip(reasons['reason'], reasons['len']))}")
        print(f"  end to end      {end_to_end * 1e3:8.1f} ms  (build {result.build_seconds * 1e3:.1f} ms, "
              f"in HiGHS {result.solve_seconds * 1e3:.1f} ms)")
        print(f"  raw HiGHS       {raw.solve_seconds * 1e3:8.1f} ms  (objective {raw.objective:.4f})")
        print(f"  ratio end-to-end / raw: {end_to_end / raw.solve_seconds:.2f}")


if __name__ == "__main__":
    main()
