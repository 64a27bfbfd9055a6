"""Loss-aware curves of a horizon that storage links, with and without a network change inside it.

Every point of each interval's curve must be a clearing of the horizon at that price (``clear_runs``), and
an ISO award at it must be delivered at the interface after losses: checked independently by pandapower's
AC power flow of the award's dispatch, on the interval's own feeder. The rolling award (interval by
interval, ``disaggregate_rolling``) of the top of the first interval's curve, which includes the losses,
used to come back infeasible: its first solve was on the lossless linearisation, which cannot import more
than the bids withdraw.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from dsomarket.engine.bids import Battery, validate_bids
from dsomarket.engine.clearing import ClearingOptions
from dsomarket.engine.losses import CURVE_TOL
from dsomarket.engine.network_changes import validate_changes
from dsomarket.engine.runs import CoupledMarket, clear_runs, disaggregate_rolling, disaggregate_runs, runs_for, trace_runs
from tests.test_coupled_changes import _pandapower_import, by_hand
from tests.test_network_changes import IVS, RULES, at, changes, tied_feeder

T = 3
FORECAST = [30.0, 70.0, 50.0]
"""Distinct ISO prices per interval: the battery charges in the cheap one and discharges in the dear one."""
BATS = (Battery("bat", energy_kwh=45, charge_kw=30, discharge_kw=30),)


def _market(outage: bool):
    rows = []
    for t, iv in enumerate(IVS[:T]):
        for bus, side, q, p, rid in (("25", "buy", 40.0, 80.0, "load"),
                                     ("18", "buy", 30.0, 40.0, "bat"), ("18", "sell", 30.0, 55.0, "bat")):
            rows.append({"bid_id": f"{rid}{side}-{t}", "bus": bus, "side": side, "quantity_kw": q, "price": p,
                         "interval": iv, "aggregator_id": "agg", "resource_id": rid})
    f = tied_feeder()
    book = validate_bids(pl.DataFrame(rows), f, RULES)
    change = None
    if outage:   # line 17 out from the second interval, bus 18 fed through the tie instead
        change = validate_changes(changes({"change_id": "fault", "kind": "outage", "element": "17", "start": IVS[1]},
                                          {"change_id": "tie", "kind": "close", "element": "tie18-33",
                                           "start": IVS[1]}), f)
    return f, book, runs_for(f, change, book)


def _ac_import(f, outage: bool, dispatch: pl.DataFrame, t: int) -> float:
    """pandapower's AC import of interval t's dispatch on the interval's own feeder, written out by hand."""
    feeder = by_hand(f, 2) if outage and t >= 1 else f   # by_hand's feeder of the outage (line 17 out, tie in)
    d = at(dispatch, t)
    w = dict(feeder.buses.select("bus", "load_kw").iter_rows())
    wq = dict(feeder.buses.select("bus", "load_kvar").iter_rows())
    for bus, kw in zip(d["bus"], np.where(d["side"].to_numpy() == "buy", 1.0, -1.0) * d["cleared_kw"].to_numpy()):
        w[bus] += kw
    return _pandapower_import(feeder, w, wq)


@pytest.mark.timeout(900)   # some 10-20 s of CPU: several minutes on a loaded machine
@pytest.mark.parametrize("outage", [False, True])
def test_each_point_of_a_storage_horizons_curve_is_its_clearing_and_is_delivered_after_losses(outage):
    f, book, runs = _market(outage)
    assert len(runs) == (2 if outage else 1)
    curve = trace_runs(runs, book, RULES, BATS, forecast=FORECAST)
    assert curve.conditional and curve.ac_check["max_error_pct"] <= CURVE_TOL * 100
    for t in range(T):
        bands = at(curve.bands, t)
        assert np.all(np.diff(bands["import_kw"].to_numpy()) <= 1e-9)
        # The widest bands off the curve's ends (where a bid or limit sets the price), and the ends.
        inner = bands.filter((pl.col("price_low") > RULES.price_floor) & (pl.col("price_high") < RULES.price_cap))
        picks = inner.with_columns(w=pl.col("price_high") - pl.col("price_low")).sort("w").tail(2)
        prices = [RULES.price_floor + 1.0, *((picks["price_low"] + picks["price_high"]) / 2).to_list(),
                  RULES.price_cap - 1.0]
        for price in prices:
            q = curve.import_at(t, price)
            iso = list(FORECAST)
            iso[t] = price
            cleared = clear_runs(runs, book, iso, rules=RULES, resources=BATS)
            assert cleared.ok
            assert at(cleared.interface, t)["import_kw"].item() == pytest.approx(q, rel=CURVE_TOL)
            # The ISO awards interval t that import at that price; the others stay at the forecast.
            award = pl.DataFrame({"interval": IVS[:T], "import_kw": [q if k == t else None for k in range(T)],
                                  "price": iso}, schema_overrides={"import_kw": pl.Float64})
            dis = disaggregate_runs(runs, book, award, RULES, BATS)
            assert dis.clearing.ok, (t, price, dis.clearing.diagnosis)
            assert _ac_import(f, outage, dis.clearing.dispatch, t) == pytest.approx(q, rel=CURVE_TOL)
    # Awarded interval by interval, the top of the first interval's curve (which includes the losses: more
    # than the bids and loads withdraw) is delivered too.
    price = RULES.price_floor + 1.0
    q = curve.import_at(0, price)
    assert q > at(curve.fixed_net_load_kw, 0)["fixed_kw"].item() + 40.0 + 30.0
    step = pl.DataFrame({"interval": [IVS[0]], "import_kw": [q], "price": [price]})
    dis = disaggregate_rolling(runs, book, [step], RULES, BATS, forecast=FORECAST)
    assert dis.clearing.ok, dis.clearing.diagnosis
    assert dis.clearing.intervals == IVS[:1]
    assert _ac_import(f, outage, dis.clearing.dispatch, 0) == pytest.approx(q, rel=CURVE_TOL)


def test_a_live_interval_re_linearises_only_its_own_part_and_its_ends_on_the_whole_horizon():
    """``LiveInterval``: inside the curve, the intervals not traced keep the linearisation of the forecast's
    fixed point (the same operating point object) while the traced one converges to the AC power flow of
    its own dispatch; at the price cap (an end of the curve) every interval converges, to what
    ``clear_runs`` clears there."""
    from dsomarket.engine.clearing import ClearingOptions
    from dsomarket.engine.runs import CoupledMarket, LiveInterval

    f, book, runs = _market(True)
    market = LiveInterval.of(CoupledMarket(runs, book, FORECAST, RULES, BATS, ClearingOptions()))
    assert market.settle().ok
    forecast_points = [part.point for part in market.parts]
    market.around(1)
    market.set_iso_price([FORECAST[0], 20.0, FORECAST[2]])   # the battery charges in interval 1 instead
    sol = market.converge()
    assert sol.ok and market.convergence["converged"]
    assert [part.point is p for part, p in zip(market.parts, forecast_points)] == [True, False, True]
    assert market.convergence["residual_import_kw"] <= 0.01   # interval 1's import is its AC power flow's
    iso = [FORECAST[0], RULES.price_cap, FORECAST[2]]
    market.set_iso_price(iso)
    sol = market.converge()
    assert sol.ok and not market.frozen
    cleared = clear_runs(runs, book, iso, rules=RULES, resources=BATS)
    # The converged solution's own values: a re-solve the kept basis settles runs no HiGHS, so HiGHS's
    # solution can be an earlier iterate's.
    got = market.solver.block(sol.x, "import_p") * 1000.0
    assert got == pytest.approx(cleared.interface["import_kw"].to_numpy(), rel=1e-4)


def test_a_restart_puts_limits_widened_for_a_linearisation_s_noise_back():
    # Room given to a limit for one linearisation's noise (successive._widen_by_noise) must not outlive it: a
    # restarted horizon, like a restarted NodalMarket, starts from the model's own limits (review: the horizon's
    # restart kept a widened row).
    _, book, runs = _market(True)
    market = CoupledMarket(runs, book, FORECAST, RULES, BATS, ClearingOptions())
    assert market.solve().ok
    s = market.solver
    row = s.model.con("line_thermal").start
    s.row_upper[row] += 1e-6
    s.h.changeRowsBounds(1, np.array([row], dtype=np.int32), s.row_lower[[row]], s.row_upper[[row]])
    market.restart()
    own = s.model.assemble()
    assert np.array_equal(s.row_upper, own[5]) and np.array_equal(s.row_lower, own[4])
    assert market.solve().ok
