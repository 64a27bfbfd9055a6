"""The one door to HiGHS: a warm re-solve that fails is repeated cold before a verdict."""

from __future__ import annotations

import collections
import logging
import math
import sys

import highspy
import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsomarket.engine import solver
from dsomarket.engine.bids import MarketRules, validate_bids
from dsomarket.engine.clearing import ClearingOptions, NodalMarket, clear
from dsomarket.engine.feeders import ieee33, synthetic
from dsomarket.engine.interface import trace_curve
from tests.test_interface import random_bids

NO_AC = ClearingOptions(formulation="lossless", ac_check=False)   # one LP per solve: the runs are counted
RULES = MarketRules(price_floor=-200.0, price_cap=500.0)


class WarmFails:
    """A HiGHS instance whose warm runs (a valid basis at the start) end with status Unknown."""

    def __init__(self, h: highspy.Highs):
        self._h = h
        self.runs: list[bool] = []
        self._status = None

    def __getattr__(self, name):
        return getattr(self._h, name)

    def run(self):
        warm = self._h.getBasis().valid
        self.runs.append(warm)
        status = self._h.run()
        self._status = highspy.HighsModelStatus.kUnknown if warm else None
        return status

    def getModelStatus(self):
        return self._status if self._status is not None else self._h.getModelStatus()


def test_a_failed_warm_resolve_falls_back_to_a_cold_solve_and_says_so(caplog, monkeypatch):
    # No pivots of the solver's own from the kept basis (HighsSolver._pivots): the re-clear is HiGHS's warm run.
    monkeypatch.setattr(solver, "KEPT_PIVOTS", 0)
    f = ieee33()
    book = validate_bids(random_bids(f, 40, seed=5), f, RULES)
    market = NodalMarket(f, book, 10.0, RULES, options=NO_AC)
    assert market.solve().ok                      # cold: builds a basis
    flaky = WarmFails(market.solver.h)
    market.solver.h = flaky
    market.set_iso_price(120.0)
    with caplog.at_level(logging.INFO, logger="dsomarket.engine.solver"):
        res = market.solve()
    assert flaky.runs == [True, False]            # warm, then cold after clearing the basis
    assert res.ok
    assert "solving again from scratch" in caplog.text
    # A recovery is routine (infeasible linearisations, branches): information, not a warning on the user's terminal.
    assert {r.levelno for r in caplog.records} == {logging.INFO}
    fresh = clear(f, book, 120.0, rules=RULES, options=NO_AC)
    assert res.interface_import_kw[0] == pytest.approx(fresh.interface_import_kw[0], abs=1e-6)
    assert res.welfare == pytest.approx(fresh.welfare, rel=1e-9, abs=1e-9)


class Stalls:
    """A HiGHS instance whose first ``n`` runs stop at the stall limit without a verdict (as HiGHS 1.16's dual simplex
    did for minutes on a fixed point's branch held at the floor price, :data:`engine.solver.STALL_S`), recording each
    run's presolve option."""

    def __init__(self, h: highspy.Highs, n: int):
        self._h, self._left = h, n
        self.presolve: list[str] = []
        self._status = None

    def __getattr__(self, name):
        return getattr(self._h, name)

    def run(self):
        self.presolve.append(self._h.getOptionValue("presolve")[1])
        if self._left > 0:
            self._left -= 1
            self._status = highspy.HighsModelStatus.kTimeLimit
            return highspy.HighsStatus.kWarning
        self._status = None
        return self._h.run()

    def getModelStatus(self):
        return self._status if self._status is not None else self._h.getModelStatus()


def test_a_stalled_run_goes_straight_to_the_plain_simplex_and_says_so(caplog, monkeypatch):
    monkeypatch.setattr(solver, "KEPT_PIVOTS", 0)      # the re-clear is HiGHS's warm run
    f = ieee33()
    book = validate_bids(random_bids(f, 40, seed=5), f, RULES)
    market = NodalMarket(f, book, 10.0, RULES, options=NO_AC)
    assert market.solve().ok
    stalls = Stalls(market.solver.h, 1)
    market.solver.h = stalls
    market.set_iso_price(120.0)
    with caplog.at_level(logging.WARNING, logger="dsomarket.engine.solver"):
        res = market.solve()
    # Warm, stalled; then once without presolve, from the slack basis (not first with it: that stalled on the same LP).
    assert stalls.presolve == ["choose", "off"]
    assert "stalled" in caplog.text and res.ok and market.solver.restarted
    assert stalls.getOptionValue("presolve")[1] == "choose"
    fresh = clear(f, book, 120.0, rules=RULES, options=NO_AC)
    assert res.interface_import_kw[0] == pytest.approx(fresh.interface_import_kw[0], abs=1e-6)
    assert res.welfare == pytest.approx(fresh.welfare, rel=1e-9, abs=1e-9)


def test_a_run_that_stalls_without_presolve_too_is_no_verdict_not_the_callers_time_limit(caplog):
    f = ieee33()
    book = validate_bids(random_bids(f, 40, seed=5), f, RULES)
    market = NodalMarket(f, book, 10.0, RULES, options=NO_AC)
    stalls = Stalls(market.solver.h, 2)
    market.solver.h = stalls
    with caplog.at_level(logging.WARNING, logger="dsomarket.engine.solver"):
        sol = market.solver.solve()
    assert stalls.presolve == ["choose", "off"] and sol.status == "error"
    assert "no verdict" in caplog.text


def test_the_stall_limit_stops_highs_and_the_callers_time_limit_stays_its_own(monkeypatch, caplog):
    f = synthetic(200, 3)
    book = validate_bids(random_bids(f, 500, seed=5), f, RULES)
    # The caller's limit binds before the stall limit: its status, no second run.
    market = NodalMarket(f, book, 10.0, RULES, options=ClearingOptions(formulation="lossless", ac_check=False,
                                                                       time_limit=1e-9))
    with caplog.at_level(logging.WARNING, logger="dsomarket.engine.solver"):
        assert market.solver.solve().status == "time_limit"
    assert caplog.text == ""
    # A stall limit of nothing: HiGHS stops at once, with it and without presolve, and says nothing decided.
    monkeypatch.setattr(solver, "STALL_S", 0.0)
    monkeypatch.setattr(solver, "STALL_S_PER_NONZERO", 0.0)
    market = NodalMarket(f, book, 10.0, RULES, options=NO_AC)
    with caplog.at_level(logging.WARNING, logger="dsomarket.engine.solver"):
        assert market.solver.solve().status == "error"
    assert "stalled" in caplog.text and "no verdict" in caplog.text


def test_the_plain_simplex_that_decides_starts_from_the_slack_basis(monkeypatch):
    # A market no dispatch serves (the interface capped at 1 kW, no seller, no load shed): the cold run with presolve
    # says infeasible; the plain simplex that decides starts from the network's slack basis, not HiGHS's crash, and
    # says what HiGHS from its crash says (independent: a copy of the model, presolve off, cleared).
    f = ieee33().with_changes(import_max_kw=1.0)
    book = validate_bids(random_bids(f, 10, seed=6).filter(pl.col("side") == "buy"), f, RULES)
    s = NodalMarket(f, book, 30.0, RULES, options=NO_AC).solver
    starts, start = [], solver.HighsSolver.start_from_slack

    def recorded(self):
        starts.append(self.h.getOptionValue("presolve")[1])
        return start(self)

    monkeypatch.setattr(solver.HighsSolver, "start_from_slack", recorded)
    assert s.solve().status == "infeasible"
    assert starts == ["off"] and s.restarted
    crash = s.copy()
    crash.h.setOptionValue("presolve", "off")
    assert crash.run() == "infeasible"


def test_a_cold_solve_that_fails_is_the_verdict():
    f = ieee33()
    book = validate_bids(random_bids(f, 10, seed=6), f, RULES)
    market = NodalMarket(f, book, 10.0, RULES, options=NO_AC)
    flaky = WarmFails(market.solver.h)
    market.solver.h = flaky
    assert market.solver.solve().ok               # no basis yet: a cold run, no fallback needed
    assert flaky.runs == [False]


def test_a_clearing_starts_from_the_slack_basis_and_falls_back_cold(caplog):
    """A new market's solve starts from the network's slack basis (a warm run in HiGHS's terms); where
    that run fails, the cold solve decides, and it is the clearing a slack start reaches."""
    f = ieee33()
    book = validate_bids(random_bids(f, 40, seed=6), f, RULES)
    market = NodalMarket(f, book, 30.0, RULES, options=NO_AC)
    flaky = WarmFails(market.solver.h)
    market.solver.h = flaky
    with caplog.at_level(logging.INFO, logger="dsomarket.engine.solver"):
        res = market.solve()
    assert flaky.runs == [True, False]
    assert "solving again from scratch" in caplog.text
    slack = clear(f, book, 30.0, rules=RULES, options=NO_AC)
    assert res.ok and slack.ok
    assert res.welfare == pytest.approx(slack.welfare, rel=1e-9, abs=1e-9)
    assert res.interface_import_kw[0] == pytest.approx(slack.interface_import_kw[0], abs=1e-6)


@pytest.mark.parametrize("n_bus, n_bid, intervals, sides", [(33, 60, 1, 8), (200, 500, 1, 12), (120, 300, 3, 8)])
def test_a_plain_lossless_matrix_from_the_kept_network_columns_is_assemble_s(n_bus, n_bid, intervals, sides):
    """lindistflow.build puts a plain market's bid columns before the network's columns kept from the first market
    on the topology: the matrix LinearModel.assemble makes of the model's terms, to the bit (a second book on the
    same network takes the kept columns; -0.0 and 0.0 of the bids' reactive terms stay apart)."""
    from datetime import datetime, timedelta, timezone

    import numpy as np
    import polars as pl

    from dsomarket.engine import lindistflow
    from dsomarket.engine.bids import canonical, merge_columns
    from dsomarket.engine.feeders import synthetic

    feeder = ieee33() if n_bus == 33 else synthetic(n_bus, 3)
    start = datetime(2026, 12, 2, tzinfo=timezone.utc)
    for seed in (1, 2):
        bids = random_bids(feeder, n_bid, seed, tan_phi=True)
        if intervals > 1:
            bids = bids.with_columns(interval=pl.Series([start + timedelta(hours=k % intervals) for k in range(n_bid)],
                                                        dtype=pl.Datetime("us", "UTC")))
        book = merge_columns(canonical(validate_bids(bids, feeder, RULES), feeder, RULES, indexed=True), set()).book
        model = lindistflow.build(feeder, book, np.full(intervals, 50.0), RULES, polygon_sides=sides)
        kept = model.assemble()[3]
        model._assembled = None
        made = model.assemble()[3]
        assert kept.shape == made.shape and kept.indptr.dtype == made.indptr.dtype
        assert kept.indices.dtype == made.indices.dtype
        assert np.array_equal(kept.indptr, made.indptr) and np.array_equal(kept.indices, made.indices)
        assert np.array_equal(kept.data.view(np.int64), made.data.view(np.int64))


def test_a_basis_started_from_replaces_the_one_kept_from_the_last_solve():
    # Two optimal vertices of one LP: max x1 + x2 with x1 + x2 <= 1. A market put back at a basis (after a curve
    # traced on it, a fixed point's branch restored) must start from that basis, not from the one its last solve
    # kept, which would be set again and taken in its place wherever it is still optimal.
    model = solver.LinearModel()
    model.add_variables("x", 2, lower=0.0, upper=1.0, cost=-1.0)
    model.add_constraints("sum", {"x": sp.csr_matrix(np.ones((1, 2)))}, lower=-np.inf, upper=1.0)
    s = solver.HighsSolver(model)
    first = s.solve_by_basis()
    assert first.ok and first.x.sum() == pytest.approx(1.0)
    other = s.h.getBasis()
    at = int(np.argmax(first.x))    # the vertex HiGHS chose: the other one is basic in the other's column
    other.col_status = [highspy.HighsBasisStatus.kBasic if k != at else highspy.HighsBasisStatus.kLower
                        for k in range(2)]
    other.row_status = [highspy.HighsBasisStatus.kUpper]
    s.start_from(other)
    again = s.solve_by_basis()
    assert again.ok and again.objective == pytest.approx(first.objective)
    assert again.x[at] == pytest.approx(0.0) and again.x[1 - at] == pytest.approx(1.0)


def _carried_both_ways(s: solver.HighsSolver) -> tuple:
    """The basis :meth:`HighsSolver._carried` carries to a new matrix from the optimum HiGHS's last run holds, read
    from its basic variables and solution and, HiGHS's run forgotten, from its basis statuses one by one."""
    assert s._ran_at == s.h.getRunTime()
    ran = s._carried(s.h.getBasis())
    s._ran_at = None
    statuses = s._carried(s.h.getBasis())
    return ran, statuses


def _assert_same_carry(ran, statuses) -> None:
    assert ran is not None and statuses is not None
    assert np.array_equal(ran.basic, statuses.basic)
    assert np.array_equal(ran.at_lower, statuses.at_lower)
    assert np.array_equal(ran.held_lower, statuses.held_lower)


def test_the_basis_carried_from_a_run_is_the_one_highs_statuses_give():
    # Every kind of nonbasic variable, at each of its bounds: boxed columns at lower and upper, fixed columns with
    # a positive and a negative reduced cost, equality rows with a positive and a negative dual, ranged rows held at
    # lower and upper; HiGHS marks the fixed ones by their duals' signs, which the carry from a run must read alike.
    model = solver.LinearModel()
    model.add_variables("boxed", 2, lower=0.0, upper=1.0, cost=np.array([-1.0, 1.0]))
    model.add_variables("fixed", 2, lower=np.array([0.5, 0.3]), upper=np.array([0.5, 0.3]),
                        cost=np.array([-2.0, 2.0]))
    model.add_variables("free", 2, cost=np.array([1.0, -1.0]))
    model.add_variables("ranged", 2, lower=-10.0, upper=10.0, cost=np.array([-1.0, 1.0]))
    eye = sp.identity(2, format="csr")
    model.add_constraints("equal", {"free": eye, "fixed": eye}, lower=1.0, upper=1.0)
    model.add_constraints("range", {"ranged": eye}, lower=np.array([0.0, -3.0]), upper=np.array([2.0, 3.0]))
    model.add_constraints("slack", {"boxed": sp.csr_matrix(np.ones((1, 2)))}, lower=-np.inf, upper=5.0)
    s = solver.HighsSolver(model)
    assert s.solve().ok
    col_dual, row_dual = s.h.getSolution().col_dual, s.h.getSolution().row_dual
    assert col_dual[2] * col_dual[3] < 0 and row_dual[0] * row_dual[1] < 0   # both signs of each
    ran, statuses = _carried_both_ways(s)
    _assert_same_carry(ran, statuses)
    assert not statuses.at_lower.all() and not statuses.held_lower.all()      # upper bounds among them


def test_the_basis_carried_from_a_loss_aware_market_s_run_is_the_one_highs_statuses_give():
    f = ieee33()
    book = validate_bids(random_bids(f, 80, seed=3), f, RULES)
    for price in (-40.0, 30.0, 140.0):
        market = NodalMarket(f, book, price, RULES, options=ClearingOptions(ac_check=False))
        assert market.solve().ok
        s = market.solver
        s.h.clearSolver()
        assert s.solve().ok                       # a plain cold run of the last linearisation
        _assert_same_carry(*_carried_both_ways(s))


def test_the_statuses_known_of_a_basis_are_those_highs_holds_through_a_loss_aware_curve(monkeypatch):
    # A loss-aware curve down to negative prices re-linearises, holds thermal rows on new faces, pivots on its own,
    # and restores fixed points' bases (engine.branches); wherever the solver gives HiGHS a basis whose statuses it
    # knows, or reads them from a run, they must be the ones HiGHS holds, converted one by one.
    seen = collections.Counter()

    def assert_held(s, statuses, where):
        basis = s.h.getBasis()
        held = solver._Statuses.of(solver._status_codes(basis.col_status), solver._status_codes(basis.row_status))
        assert held is not None and statuses is not None, where
        assert np.array_equal(statuses.basic, held.basic), where
        assert np.array_equal(statuses.at_lower, held.at_lower), where
        assert np.array_equal(statuses.held_lower, held.held_lower), where
        seen[where] += 1

    def checked_set_basis(self, basis, statuses=None):
        set_basis(self, basis, statuses)
        if statuses is not None:
            caller = sys._getframe(1).f_code.co_name
            assert_held(self, statuses, caller if caller != "_factorise" else sys._getframe(2).f_code.co_name)

    def checked_run_statuses(self, *args):
        out = run_statuses(self, *args)
        if out is not None:
            assert_held(self, out, "run")
        return out

    def checked_carried(self, basis):
        kept = self._kept is not None and self.h.getRunTime() == self._kept.run_time
        out = carried(self, basis)
        if not kept and out is not None:
            assert_held(self, out.statuses, "carried")
        return out

    def checked_held_basis(self):
        out = held_basis(self)
        if out.statuses is not None:
            assert_held(self, out.statuses, "held_basis")
        return out

    set_basis, run_statuses = solver.HighsSolver._set_basis, solver.HighsSolver._run_statuses
    carried, held_basis = solver.HighsSolver._carried, solver.HighsSolver.held_basis
    for name, checked in (("_set_basis", checked_set_basis), ("_run_statuses", checked_run_statuses),
                          ("_carried", checked_carried), ("held_basis", checked_held_basis)):
        monkeypatch.setattr(solver.HighsSolver, name, checked)
    f = synthetic(60, 3)
    book = validate_bids(random_bids(f, 40, seed=5), f, RULES)
    curve = trace_curve(f, book, RULES, options=ClearingOptions())
    assert curve.bands.height > 0
    # A kept lossless market's re-clears: pivots of the solver's own, their basis factorised (_rebase).
    market = NodalMarket(ieee33(), validate_bids(random_bids(ieee33(), 40, seed=5), ieee33(), RULES), 10.0, RULES,
                         options=NO_AC)
    for price in (10.0, 20.0, 40.0, 60.0, 80.0, 120.0):
        market.set_iso_price(price)
        assert market.solve().ok
    assert {"run", "set_basis", "set_matrix", "hold_instead", "_kept_optimal", "_rebase", "start_from", "carried",
            "held_basis"} <= set(seen), seen


def test_a_basis_carried_from_a_long_run_is_left_to_highs_and_the_clearing_is_the_same(monkeypatch):
    # The loss-aware iteration's first LP and first re-linearisation take many pivots; the bases they end in were
    # optimal on the next matrix in none of the cases looked at (solver.KEPT_RUN_ITERATIONS), so their check (a
    # factorisation on the new matrix, two basis solves) is skipped there and tried after short runs.
    f = synthetic(200, 3)
    book = validate_bids(random_bids(f, 2000, seed=4), f, RULES)
    options = ClearingOptions(formulation="lossaware", ac_check=False)
    tried = []
    check = solver.HighsSolver._kept_optimal

    def recorded(self, t0, pivots=None, primal_tol=solver.KEPT_PRIMAL_TOL):
        k = self._kept
        out = check(self, t0, pivots, primal_tol)
        if k is not None and np.isnan(k.run_time):          # carried to a new matrix
            tried.append((k.iterations, k.far, self._kept is not k or out is not None))
        return out

    monkeypatch.setattr(solver.HighsSolver, "_kept_optimal", recorded)
    res = clear(f, book, 40.0, rules=RULES, options=options)
    assert any(it > solver.KEPT_RUN_ITERATIONS for it, _, _ in tried), tried
    assert any(it <= solver.KEPT_RUN_ITERATIONS for it, _, _ in tried), tried
    for it, far, checked in tried:
        assert far == (it > solver.KEPT_RUN_ITERATIONS) and checked == (not far), tried
    monkeypatch.setattr(solver, "KEPT_RUN_ITERATIONS", sys.maxsize)   # every carried basis checked, as before
    before = clear(f, book, 40.0, rules=RULES, options=options)
    assert res.prices.equals(before.prices) and res.dispatch.equals(before.dispatch)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(price=st.floats(-80.0, 200.0), seed=st.integers(0, 1000), formulation=st.sampled_from(["lossaware", "lossless"]))
def test_the_solver_s_own_factors_of_a_basis_solve_as_highs_s_do(price, seed, formulation):
    # Against HiGHS's own basis solves of the basis its run ended in (its factorisation, its sign conventions):
    # B z = r and B^T y = r, B the columns of [A, I] at the basic variables, by basis position.
    f = ieee33()
    book = validate_bids(random_bids(f, 40, seed=seed, tan_phi=seed % 2 == 1), f, RULES)
    s = NodalMarket(f, book, price, RULES, options=ClearingOptions(formulation=formulation, ac_check=False)).solver
    assert s.solve().ok
    status, basic = s.h.getBasicVariables()
    assert status != highspy.HighsStatus.kError
    factor = solver._Factor.of(s._matrix()[0], np.asarray(basic))
    assert factor is not None
    rng = np.random.default_rng(seed)
    for _ in range(3):
        r = rng.normal(size=len(basic))
        z, y = np.asarray(s.h.getBasisSolve(r)[1]), np.asarray(s.h.getBasisTransposeSolve(r)[1])
        assert np.allclose(factor.solve(r), z, rtol=1e-8, atol=1e-8 * np.abs(z).max())
        assert np.allclose(factor.tsolve(r), y, rtol=1e-8, atol=1e-8 * np.abs(y).max())


def test_a_singular_or_unsquare_basis_has_no_factors():
    a = sp.csc_matrix(np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 1.0]]))
    assert solver._Factor.of(a, np.array([0, 1, -3])) is None        # columns 0 and 1 parallel on rows 0 and 1
    assert solver._Factor.of(a, np.array([0, -2])) is None            # two variables basic on three rows
    ok = solver._Factor.of(a, np.array([2, 0, -2]))                  # row 1's logical basic: a regular core
    assert ok is not None
    assert np.allclose(ok.solve(np.array([1.0, 5.0, 3.0])), [3.0, 1.0, 3.0])   # x2 = 3, x0 = 1, logical 5 - 2


def test_a_re_linearised_basis_still_optimal_is_taken_without_highs_factorising_the_new_matrix(monkeypatch):
    # HiGHS's factorisation of a basis on a matrix it has not factorised costs its LP set-up too (python
    # benchmarks/profile_clearing.py --factor): a basis carried to a re-linearisation is checked on the solver's own
    # factors, and the clearing ends where one that leaves every carried basis to HiGHS's run ends.
    f = synthetic(200, 3)
    book = validate_bids(random_bids(f, 2000, seed=4), f, RULES)
    options = ClearingOptions(formulation="lossaware", ac_check=False)
    inside, taken = [0], []
    check, factorise = solver.HighsSolver._kept_optimal, highspy.Highs.getBasicVariables

    def recorded(self, t0, pivots=None, primal_tol=solver.KEPT_PRIMAL_TOL):
        k = self._kept
        inside[0] += 1
        try:
            out = check(self, t0, pivots, primal_tol)
        finally:
            inside[0] -= 1
        if k is not None and np.isnan(k.run_time) and not k.far:
            taken.append(out is not None)
        return out

    def counted(h):
        assert not inside[0], "HiGHS factorised a kept basis"
        return factorise(h)

    monkeypatch.setattr(solver.HighsSolver, "_kept_optimal", recorded)
    monkeypatch.setattr(highspy.Highs, "getBasicVariables", counted)
    res = clear(f, book, 40.0, rules=RULES, options=options)
    assert any(taken), taken
    monkeypatch.setattr(solver, "KEPT_RUN_ITERATIONS", -1)     # every carried basis left to HiGHS's run
    runs = clear(f, book, 40.0, rules=RULES, options=options)
    assert np.allclose(res.prices["dlmp"].to_numpy(), runs.prices["dlmp"].to_numpy(), atol=1e-6)
    assert np.allclose(res.dispatch["cleared_kw"].to_numpy(), runs.dispatch["cleared_kw"].to_numpy(), atol=1e-3)


def test_a_mixed_integer_model_is_held_to_no_stall_limit(monkeypatch):
    # The flexibility auction's branch and bound searches as long as it needs (the caller's time limit bounds it):
    # with a stall limit of nothing, its indivisible offer still clears.
    from tests.test_flexibility import award, line_need, offers_table, small_feeder
    from dsomarket.engine.flexibility import clear_flexibility

    monkeypatch.setattr(solver, "STALL_S", 0.0)
    monkeypatch.setattr(solver, "STALL_S_PER_NONZERO", 0.0)
    offers = offers_table(("block", "d", "up", 40, 10), ("flex", "d", "up", 50, 20), divisible=[False, True])
    r = clear_flexibility(small_feeder(), line_need(30.0), offers)
    assert r.status == "optimal"
    assert award(r, "block")["accepted_kw"] == 40.0 and award(r, "flex")["accepted_kw"] == 0.0


def test_an_exploratory_solve_past_its_cpu_budget_is_decided_by_the_plain_simplex_and_the_next_is_not_cut(
        caplog, monkeypatch):
    f = synthetic(200, 3)
    book = validate_bids(random_bids(f, 500, seed=5), f, RULES)
    lossless = ClearingOptions(formulation="lossless", ac_check=False)
    market = NodalMarket(f, book, 10.0, RULES, options=lossless)
    assert market.solve().ok      # a run that ended in a verdict, which sizes the budget
    s = market.solver
    # A budget of nothing: HiGHS is interrupted at its first callback; the plain simplex then solves the LP.
    monkeypatch.setattr(solver, "EXPLORE_STALL_S", 0.0)
    monkeypatch.setattr(solver, "EXPLORE_STALL_FACTOR", 0.0)
    market.set_iso_price(120.0)
    with caplog.at_level(logging.INFO, logger="dsomarket.engine.solver"):
        sol = s.solve(explore=True)
    assert sol.ok and s.restarted and "exploratory start's budget" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    fresh = NodalMarket(f, book, 120.0, RULES, options=lossless).solver.solve()
    assert sol.objective == pytest.approx(fresh.objective, rel=1e-9, abs=1e-9)
    # HiGHS keeps a callback's interrupt flag from run to run: the next exploratory run, within its budget, is the
    # plain warm run it would be without one.
    monkeypatch.setattr(solver, "EXPLORE_STALL_S", 60.0)
    market.set_iso_price(60.0)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dsomarket.engine.solver"):
        again = s.solve(explore=True)
    assert again.ok and not s.restarted and caplog.text == ""
    fresh = NodalMarket(f, book, 60.0, RULES, options=lossless).solver.solve()
    assert again.objective == pytest.approx(fresh.objective, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("seed", [3, 8])
def test_what_forcing_a_basic_column_costs_is_what_the_lp_pays_to_move_it_a_little(seed):
    # HighsSolver.forcing_costs (the ratio test along a basic column's row of the tableau), against the LP itself:
    # the column fixed a hundredth of a kW up or down from its value and solved again, the objective's rise per MW.
    f = synthetic(200, seed)
    book = validate_bids(random_bids(f, 400, seed=seed), f, RULES)
    market = NodalMarket(f, book, 50.0, RULES, options=ClearingOptions(formulation="lossless", ac_check=False))
    s = market.solver
    sol = s.solve()
    bid = s.model.var("bid").slice
    lo, hi = s.col_lower[bid], s.col_upper[bid]
    part_way = np.flatnonzero((sol.x[bid] > lo + 1e-6) & (sol.x[bid] < hi - 1e-6))[:6] + bid.start
    assert part_way.size >= 2
    eps = 1e-5   # MW
    matched = 0
    for up in (True, False):
        costs = s.forcing_costs(sol, part_way, np.full(part_way.size, up))
        for c, cost in zip(part_way, costs):
            saved = s.checkpoint()
            v = sol.x[c] + (eps if up else -eps)
            s.col_lower[c] = s.col_upper[c] = v
            s.h.changeColBounds(int(c), v, v)
            moved = s.solve()
            s.rollback(saved)
            # Where a basic variable at its own bound blocks the move at once (a degenerate basis), the LP pays more
            # than the ratio test says, or cannot move it at all: it is a lower bound, which is what candidates()
            # needs (a bid is ruled out only where even that exceeds what its own losses move its price by).
            paid = (moved.objective - sol.objective) / eps if moved.ok else math.inf
            assert moved.ok or moved.status == "infeasible"
            assert cost <= paid + 1e-6 * (1.0 + abs(paid)), (c, up, cost, paid)
            matched += cost == pytest.approx(paid, rel=1e-6, abs=1e-6)
    assert matched >= part_way.size, matched     # most moves are not blocked: there the two agree
    # A column that is not basic: nothing known.
    nonbasic = np.flatnonzero(sol.x[bid] <= lo + 1e-9)[:1] + bid.start
    assert np.isnan(s.forcing_costs(sol, nonbasic, np.array([True]))).all()
