"""The loss-aware clearing keeps the better of the fixed points reachable where losses are worth money
(engine/branches.py), and changes nothing where none is negative."""

from __future__ import annotations

import dataclasses
import numpy as np
import polars as pl
import polars.testing

from dsomarket.engine import branches
from dsomarket.engine.bids import MarketRules
from dsomarket.engine.clearing import ClearingOptions, NodalMarket, clear
from dsomarket.engine.losses import RESIDUAL_TOL_KW
from tests.test_hidden_physics import _generated_case

RULES = MarketRules(price_floor=-45.0, price_cap=300.0)


def _walked(market, prices: list, t: int = 0) -> tuple[float, float]:
    """Interval t's import (kW, the AC power flow's) and the welfare (per hour) at the last of ``prices`` (ISO
    prices, each a scalar or per interval) of ``market`` converged by plain successive LP at each in turn, warm
    from the one before (``compare=False``: no second start, :mod:`engine.branches`): it stays on the branch it
    started on, an independent sample of that branch's fixed point."""
    for p in prices:
        market.set_iso_price(np.atleast_1d(p))
        sol = market.converge(compare=False)
        assert market.convergence["converged"], p
    res = market.result(sol)
    return float(res.ac_check["import_kw"][t]), res.welfare


def _market(f, book, price: float) -> NodalMarket:
    return NodalMarket(f, book, price, RULES, (), ClearingOptions())


def test_clear_keeps_the_better_fixed_point_and_is_monotone_in_the_price(tmp_path, monkeypatch):
    # bench_hidden_physics --quick --cases 10 --seed 900, case ieee33-s908 (benchmarks/bench_fixed_points.py).
    # Buy b8 (815.5 kW at -41.26 at bus 21) clears near its whole quantity on the upper branch and not at all on
    # the lower; both are fixed points from about -42.1 to -41.8 per MWh, and the upper one is the better
    # optimum below about -41.95. Successive LP alone reached either by its path (floating point steers it):
    # a fresh clear imported 4,984 kW at -42.4, 4,174 at -42.2 and 4,975 at -42.1 on one machine.
    f, book = _generated_case("ieee33", 908, tmp_path, monkeypatch)
    upper = _walked(_market(f, book, -42.5), [-42.5, -42.2])
    lower = _walked(_market(f, book, -41.9), [-41.9, -42.2])
    assert upper[0] > lower[0] + 500.0 and upper[1] > lower[1] + 0.1     # 267.8719 against 267.6680
    got = clear(f, book, -42.2, rules=RULES)
    assert got.convergence["branches"] == 2
    assert abs(got.ac_check["import_kw"][0] - upper[0]) <= RESIDUAL_TOL_KW
    assert got.welfare >= upper[1] - 1e-6

    upper, lower = _walked(_market(f, book, -42.5), [-42.5, -41.9]), _walked(_market(f, book, -41.9), [-41.9])
    assert upper[0] > lower[0] + 500.0 and lower[1] > upper[1] + 0.01    # 266.4200 against 266.3828
    got = clear(f, book, -41.9, rules=RULES)
    assert abs(got.ac_check["import_kw"][0] - lower[0]) <= RESIDUAL_TOL_KW
    assert got.welfare >= lower[1] - 1e-6

    # A kept market's re-clear (warm from the other branch, as the curve's walk and a territory's re-clears
    # are) keeps the same fixed point: the choice is made in NodalMarket.converge, which all of them call.
    m = NodalMarket(f, book, -42.5, RULES, (), ClearingOptions())
    m.solve()
    for p in (-41.9, -42.2):
        m.set_iso_price(np.array([p]))
        kept, fresh = m.solve(), clear(f, book, p, rules=RULES)
        assert abs(kept.ac_check["import_kw"][0] - fresh.ac_check["import_kw"][0]) <= RESIDUAL_TOL_KW, p

    prices = np.round(np.arange(-42.6, -41.35, 0.05), 4)
    imports = np.array([clear(f, book, p, rules=RULES).ac_check["import_kw"][0] for p in prices])
    assert np.all(np.diff(imports) <= RESIDUAL_TOL_KW), list(zip(prices, imports))   # non-increasing
    assert imports[0] > 4900.0 > 4200.0 > imports[-1]                                # both branches, one jump


def test_a_clearing_where_no_dlmp_is_negative_is_the_one_successive_lp_alone_gives(tmp_path, monkeypatch):
    # No price negative, no loss worth money: no second start, and the clearing bit for bit what it was.
    f, book = _generated_case("ieee33", 908, tmp_path, monkeypatch)
    for price in (20.0, 60.0):
        got = clear(f, book, price, rules=RULES)
        assert got.convergence["branches"] == 1
        assert (got.prices["dlmp"] >= 0.0).all()
        with monkeypatch.context() as patched:
            patched.setattr(branches, "best_fixed_point",
                            lambda solver, parts, set_matrix, sol, convergence: (sol, convergence))
            alone = clear(f, book, price, rules=RULES)
        assert alone.convergence | {"branches": 1} == got.convergence
        assert got.welfare == alone.welfare
        for name in ("dispatch", "prices", "lines", "buses", "interface"):
            polars.testing.assert_frame_equal(getattr(got, name), getattr(alone, name), check_exact=True)


def test_resource_ids_that_name_no_modelled_resource_leave_the_comparison_as_it_is(tmp_path, monkeypatch):
    # A resource_id is also a DER's label (clients send one per bid); only a resource the market models (its state
    # links its bids across intervals) makes a group of its own in branches.candidates. Grouped by label, every
    # candidate bid would be tried alone: more converges, and another fixed point where two must move together.
    f, book = _generated_case("ieee33", 908, tmp_path, monkeypatch)
    relabelled = dataclasses.replace(book, table=book.table.with_columns(
        resource_id=pl.format("der-{}", pl.col("bid_id"))))
    for price in (-42.2, -41.9, -41.6):
        plain, tagged = clear(f, book, price, rules=RULES), clear(f, relabelled, price, rules=RULES)
        assert tagged.convergence["branches"] == plain.convergence["branches"], price
        assert tagged.convergence["iterations"] == plain.convergence["iterations"], price
        assert tagged.welfare == plain.welfare and tagged.ac_check["import_kw"] == plain.ac_check["import_kw"], price
