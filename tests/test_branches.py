"""The loss-aware clearing keeps the better of the fixed points reachable where losses are worth money
(engine/branches.py), and changes nothing where none is negative."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import polars as pl
import polars.testing
import pytest

from dsomarket.engine import branches, solver
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


def _every_basic_bid_a_candidate(monkeypatch) -> None:
    """As before candidates() asked what it costs to force a basic bid: a part-way bid at a negative-DLMP bus is a
    candidate whatever holds it there (for the tests of what the comparison does with such starts)."""
    monkeypatch.setattr(solver.HighsSolver, "forcing_costs", lambda self, sol, cols, up: np.full(len(cols), np.nan))


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
    assert got.convergence["branches"] >= 2   # 4: a second candidate in b8's group, tried alone too
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


def test_candidates_moved_together_back_to_the_same_fixed_point_are_tried_alone_and_clear_falls_with_the_price(
        tmp_path, monkeypatch):
    # bench_hidden_physics --quick --cases 10 --seed 17000, case synth100-s17002 (default rules): its loss-aware
    # curve exited 3 with a bound of 1.56 % at one 110 kW step near -95.787 per MWh, because `clear` itself rose
    # there: 7,198.0 kW at -95.7878 and 7,307.8 kW at -95.7876. Two fixed points hold at both prices: buy b58
    # (120.1 kW at -58.07, bus 50) bought or not, b10 (107.4 of 192.2 kW) part-way in both. Both are candidates
    # (engine.branches), and from the fixed point without b58 the start with both moved (b10 to 0, b58 to its
    # quantity) converged back to it, so `clear` kept it at -95.7878; at -95.7876 its first converge reached the
    # other. Each moved alone as well (and held there while the others settle), both fixed points are compared at
    # both prices and the better (by 0.0012 per hour) is kept.
    from tests.test_coupled_changes import _pandapower_import

    f, book = _generated_case("synth100", 17002, tmp_path, monkeypatch)
    rules = MarketRules()
    below, above = clear(f, book, -95.7878, rules=rules), clear(f, book, -95.7876, rules=rules)
    assert below.convergence["converged"] and above.convergence["converged"]
    # Falls, to within where successive LP settles a fixed point (each bid within STEP_TOL_KW, 0.05 kW: the two
    # differ by 0.012 kW); before, it rose by 109.7 kW.
    assert below.ac_check["import_kw"][0] >= above.ac_check["import_kw"][0] - 1.0
    # Revealed preference: the dispatch kept at -95.7876 is feasible at -95.7878 too, where its welfare is
    # higher by its import times 0.0002 per MWh; the clearing there must be at least as good. The fixed point without
    # b58 (7,198.0 kW, 1094.99739 per hour) is not: 0.0012 per hour short of it.
    moved = above.welfare + above.ac_check["import_kw"][0] / 1000.0 * 0.0002
    assert below.welfare >= moved - 1e-5
    # The import is the one pandapower's AC power flow draws for the dispatch kept (tan phi's kvar included).
    d = below.dispatch
    kw = np.where(d["side"].to_numpy() == "buy", 1.0, -1.0) * d["cleared_kw"].to_numpy()
    w = dict(f.buses.select("bus", "load_kw").iter_rows())
    wq = dict(f.buses.select("bus", "load_kvar").iter_rows())
    for bus, p, q in zip(d["bus"].to_list(), kw, kw * d["tan_phi"].fill_null(0.0).to_numpy()):
        w[bus] += p
        wq[bus] += q
    assert abs(_pandapower_import(f, w, wq) - below.ac_check["import_kw"][0]) <= 0.05


def test_a_held_branch_whose_start_breaks_a_limit_and_whose_lp_is_infeasible_is_no_fixed_point_without_phase_one(
        monkeypatch):
    # At the price floor a bid held at its other side can put its own start past a rating: the LP linearised at
    # that AC point has its values and gradients, so it being infeasible says no dispatch near it meets the limits.
    # Phase one's two feasibility relaxations found none either (seed-2 territory feeders' curves the same to the bit
    # without them, benchmarks/bench_successive_ab.py --feeder); the clearing is the one it was with them.
    from dsomarket.engine import successive
    from dsomarket.engine.territory import synthetic_member

    f, bids = synthetic_member(3, 4, 60, 60, 2)
    rules = MarketRules()
    held, rescued = [], []
    converge, phase_one = successive.converge, successive._phase_one

    def first_solve(solver, parts, set_matrix, sol, rescue=True):
        if not rescue:
            held.append(sol.status)
        return converge(solver, parts, set_matrix, sol, rescue)

    def counted(*args):
        rescued.append(args[-1].status)
        return phase_one(*args)

    monkeypatch.setattr(successive, "converge", first_solve)
    monkeypatch.setattr(successive, "_phase_one", counted)
    _every_basic_bid_a_candidate(monkeypatch)
    res = clear(f, bids, -1000.0, rules=rules, options=ClearingOptions())
    assert "infeasible" in held and not rescued, (held, rescued)
    # With every held start rescued by phase one, as before: the same clearing to the bit.
    monkeypatch.setattr(successive, "converge", lambda solver, parts, set_matrix, sol, rescue=True:
                        converge(solver, parts, set_matrix, sol))
    before = clear(f, bids, -1000.0, rules=rules, options=ClearingOptions())
    assert rescued, "phase one ran on the held start"
    polars.testing.assert_frame_equal(res.dispatch, before.dispatch)
    polars.testing.assert_frame_equal(res.prices, before.prices)
    assert res.convergence["branches"] == before.convergence["branches"] >= 2


def test_a_held_branch_on_which_highs_stalls_is_cut_by_its_cpu_budget_not_the_stall_limit(caplog, monkeypatch):
    # Feeder 6 of `dsomarket territory synth --feeders 8 --buses 1000 --bids 1000 --seed 2` at the price floor: one
    # held start's LP sends HiGHS 1.16's dual simplex into a bound-flipping ratio test over thousands of candidates
    # per pass (18 iterations, then none), which only the one-second wall-clock stall limit ended
    # (solver.STALL_S, "HiGHS stalled" at WARNING). The start is exploratory (solver.EXPLORE_STALL_S): its CPU
    # budget ends it, and the plain simplex decides it as before; the same clearing to the bit.
    from dsomarket.engine.territory import synthetic_member

    f, bids = synthetic_member(6, 8, 1000, 1000, 2)
    options = ClearingOptions(ac_check=False)
    _every_basic_bid_a_candidate(monkeypatch)     # its held starts are bids a limit holds part-way
    with caplog.at_level(logging.INFO, logger="dsomarket.engine.solver"):
        res = clear(f, bids, -1000.0, options=options)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    # Without a budget (one no start reaches), the wall-clock limit ends what stalls.
    monkeypatch.setattr(solver, "EXPLORE_STALL_FACTOR", float("inf"))
    before = clear(f, bids, -1000.0, options=options)
    polars.testing.assert_frame_equal(res.dispatch, before.dispatch)
    polars.testing.assert_frame_equal(res.prices, before.prices)
    assert res.convergence == before.convergence


def test_a_bid_a_limit_holds_part_way_at_the_floor_is_no_candidate_and_the_clearing_is_the_same(monkeypatch):
    # At the price floor every buy is worth clearing, and the bids part-way are those a line's rating or a voltage
    # floor holds there: on feeder 0 of `dsomarket territory synth --feeders 8 --buses 1000 --bids 1000 --seed 1`
    # eight, each small enough that its own losses move its price by far less than forcing it to its other side
    # costs the LP (HighsSolver.forcing_costs). Each was tried and came back to the same fixed point (`python
    # benchmarks/profile_curve.py --feeder DIR/feeder-0000 --branches` before), half of the curve's time. Now none
    # is a candidate, and the clearing is the one the comparison kept.
    from dsomarket.engine.territory import synthetic_member

    f, bids = synthetic_member(0, 8, 1000, 1000, 1)
    options = ClearingOptions(ac_check=False)
    res = clear(f, bids, -1000.0, options=options)
    assert res.convergence["branches"] == 1
    _every_basic_bid_a_candidate(monkeypatch)
    before = clear(f, bids, -1000.0, options=options)
    assert before.convergence["branches"] >= 8
    assert abs(res.interface_import_kw[0] - before.interface_import_kw[0]) <= 1e-6
    assert res.welfare == pytest.approx(before.welfare, rel=1e-12)
    np.testing.assert_allclose(res.dispatch["cleared_kw"].to_numpy(), before.dispatch["cleared_kw"].to_numpy(),
                               atol=1e-6)
    np.testing.assert_allclose(res.prices["dlmp"].to_numpy(), before.prices["dlmp"].to_numpy(), atol=1e-6)
