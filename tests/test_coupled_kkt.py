"""A horizon whose network changes while a battery links its intervals converges to a KKT point of the AC problem.

:class:`engine.runs.CoupledMarket` runs the successive LP of the one-network market
(:func:`engine.successive.converge`). It used to halve a trust region at every solve
and report convergence once that region had shrunk to nothing, without checking that
the dispatch was stationary. Checked here against the AC power flow alone
(:func:`tests.kkt.horizon_kkt`: finite differences on each interval's own feeder, the
battery's state of charge written out from its law), not the LP's own duals.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from dsomarket.engine.bids import Battery, MarketRules, validate_bids
from dsomarket.engine.feeders import ieee33
from dsomarket.engine.network_changes import validate_changes
from dsomarket.engine.runs import clear_runs, coupled_runs, runs_for
from tests.kkt import horizon_kkt
from tests.test_losses import _acopf_case
from tests.test_network_changes import IVS, changes

RULES = MarketRules(price_floor=-100, price_cap=400)
T = 3
BATTERY = (Battery("bat", energy_kwh=200, charge_kw=150, discharge_kw=150),)


def _storage_horizon(seed: int, rating_kva: float, derated_kva: float):
    """ieee33 with its voltage floor at 0.95 and line 2 rated ``rating_kva``, derated to ``derated_kva`` from
    the second hour (two network states, hence one coupled LP); per hour 20 random unity-pf bids and a
    battery that charges below 55 and discharges above 66 per MWh."""
    f, _ = _acopf_case(ieee33(), seed, 0.95, "2", rating_kva)
    rng = np.random.default_rng(seed)
    ids = f.buses["bus"].to_list()[1:]
    battery_bus = str(rng.choice(ids))
    rows = []
    for t in range(T):
        for k in range(20):
            rows.append({"bid_id": f"b{k}-{t}", "bus": str(rng.choice(ids)),
                         "side": "sell" if rng.random() < 0.75 else "buy",
                         "quantity_kw": round(float(rng.uniform(50, 400)), 1),
                         "price": round(float(rng.uniform(20, 90)), 2), "interval": IVS[t], "resource_id": f"r{k}",
                         "t": t})
        for side, price in (("buy", 55.0), ("sell", 66.0)):
            rows.append({"bid_id": f"bat{side}-{t}", "bus": battery_bus, "side": side, "quantity_kw": 150.0,
                         "price": price, "interval": IVS[t], "resource_id": "bat", "t": t})
    bids = pl.DataFrame(rows).with_columns(aggregator_id=pl.lit("agg"))
    book = validate_bids(bids.drop("t"), f, RULES)
    derate = validate_changes(changes({"change_id": "hot", "kind": "rating", "element": "2", "start": IVS[1],
                                       "end": IVS[T], "s_max_kva": derated_kva}), f)
    runs = runs_for(f, derate, book)
    feeders = [next(run.feeder for run in runs if t in run.indices) for t in range(T)]
    return bids, book, runs, feeders


@pytest.mark.parametrize("seed, rating_kva, derated_kva, prices", [
    # Stopped falsely before: 0.52 per MWh off stationarity, reported converged after 17 solves.
    (21, 2600.0, 2400.0, [61.23, 52.43, 79.74]),
])
def test_a_coupled_horizon_reports_convergence_only_at_a_kkt_point_of_the_ac_problem(
        seed, rating_kva, derated_kva, prices):
    bids, book, runs, feeders = _storage_horizon(seed, rating_kva, derated_kva)
    assert coupled_runs(runs, book, BATTERY)   # cleared as one CoupledMarket
    res = clear_runs(runs, book, prices, rules=RULES, resources=BATTERY)
    assert res.ok and res.convergence["converged"]
    cleared = dict(zip(res.dispatch["bid_id"].to_list(), res.dispatch["cleared_kw"].to_list()))
    residual, active = horizon_kkt(feeders, bids, cleared, prices, BATTERY)
    # What makes the case hard, read off the AC power flow of the dispatch: the voltage floor in the first
    # hour, the derated line in the second, and the battery charged in the first hour and emptied in the
    # second, so its state of charge links the two networks.
    assert any(a.startswith("vmin") and a.endswith("@0") for a in active), active
    assert "rating 2 @1" in active, active
    assert {"charge @0", "soc_min @1"} <= set(active), active
    assert residual <= 0.005
