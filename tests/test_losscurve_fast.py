"""The loss-aware curve's per-anchor shortcuts (:meth:`engine.losscurve._FixedPoints.anchor`): its compiled AC power
flow against the numpy sweep, the re-linearisation by values alone against a fresh build, and bases first met
after a pivot, factorised on the column order of the basis walked from, drawing what ``clear`` imports."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from dsomarket.engine import losscurve, losses, tracer, tracerjit
from dsomarket.engine.clearing import ClearingOptions, NodalMarket, clear
from dsomarket.engine.feeders import ieee33, synthetic
from dsomarket.engine.interface import trace_curve
from dsomarket.engine.network import S_BASE_KVA
from dsomarket.engine.powerflow import backward_forward_sweep
from dsomarket.engine.results import net_withdrawal
from tests.test_losscurve_leap import _check_drawn, _synth200


@pytest.mark.parametrize("feeder", [ieee33(), synthetic(200, 3)], ids=["ieee33", "synth200"])
@pytest.mark.parametrize("k", [None, 3])
def test_the_compiled_sweep_reaches_the_numpy_sweeps_voltages_in_as_many_sweeps(feeder, k):
    t = feeder.topology
    rng = np.random.default_rng(4)
    shape = (t.n_bus,) if k is None else (t.n_bus, k)
    s = (rng.uniform(-50, 150, shape) + 1j * rng.uniform(-20, 50, shape)) / S_BASE_KVA
    # cold, warm, diverging, and from voltages not finite (a diverged sweep's: both start flat)
    for start, load in ((None, s), ("warm", s * 1.02), (None, s * 1000.0), ("nan", s)):
        v_start = None if start is None else backward_forward_sweep(t, t.r_pu, t.x_pu, feeder.v0_pu, s).v
        if start == "nan":
            v_start = v_start.copy()
            v_start[-1] = np.nan
        a = backward_forward_sweep(t, t.r_pu, t.x_pu, feeder.v0_pu, load, v_start=v_start)
        b = tracerjit.tree_sweep(t, t.r_pu, t.x_pu, feeder.v0_pu, load, v_start=v_start)
        assert a.converged == b.converged
        assert b.v.shape == a.v.shape and b.current.shape == a.current.shape and b.s_send.shape == a.s_send.shape
        if a.converged:
            assert abs(a.iterations - b.iterations) <= 1
            assert np.max(np.abs(a.v - b.v)) <= 1e-9
            assert np.max(np.abs(a.s_send - b.s_send)) <= 1e-9
            assert np.max(np.abs(a.current - b.current)) <= 1e-9


def test_a_relinearisation_by_values_is_the_model_built_at_the_point():
    f, book, rules = _synth200(37)
    m = NodalMarket(f, book, 40.0, rules, options=ClearingOptions(formulation="lossaware"))
    rng = np.random.default_rng(1)
    bid = m.model.var("bid").slice
    hi = m.solver.col_upper[bid]
    w = net_withdrawal(f, m.columns.book, hi * (rng.random(len(hi)) < 0.5), m.loads(), None)
    point = losses.operating_point(f, *w)
    assert m._relinearise.distinct
    got = m._relinearise.at(point).assemble()[3]
    built = losses.build(f, m.columns.book, m.iso_price, rules, point, (), None, None,
                         m.options.polygon_sides).assemble()[3]
    assert abs(sp.csc_matrix(got) - sp.csc_matrix(built)).max() <= 1e-12


def test_bases_first_met_on_a_walk_are_factorised_on_its_order_and_draw_what_clear_imports(monkeypatch):
    # The rated lines' facets pivot out of the active set as the price rises, and held thermal rows move to the
    # faces tangent at each anchor's flows: bases new to the curve's factorisations, factorised on the column
    # order of the basis walked from rather than by SuperLU (1k/1k: 58 of 60 such; 0.6 ms against 2).
    f, book, rules = _synth200(5, 1000, 1000)
    fresh = [0]
    init = tracerjit.SparseLu.__init__

    def count(self, *args, **kwargs):
        fresh[0] += 1
        init(self, *args, **kwargs)

    walked: list = []
    anchor = losscurve._FixedPoints.anchor

    def record(self, x, structural, inactive, keep=True, near=None):
        v = anchor(self, x, structural, inactive, keep, near)
        if v is not None and near is not None and v.high - v.low > 1e-3:
            walked.append(v)
        return v

    monkeypatch.setattr(tracerjit.SparseLu, "__init__", count)
    monkeypatch.setattr(losscurve._FixedPoints, "anchor", record)
    curve = trace_curve(f, book, rules)
    anchored = curve.ac_check["anchored"]
    assert len(walked) >= 20 and anchored >= 100, (len(walked), anchored)
    # SuperLU for the clearings' bases, and the few that the kept order does not serve.
    assert fresh[0] <= curve.ac_check["clearings"] + anchored // 20, (fresh[0], anchored)
    _check_drawn(f, book, rules, curve, walked[::len(walked) // 3][:3])


def test_an_anchors_basis_from_its_price_ranges_duals_has_the_events_of_its_own_solve(monkeypatch):
    # The basis an anchor keeps to walk on is factorised with the duals its price range solved for
    # (:meth:`engine.tracer._Probe.dual_range`, then ``_factor``'s ``duals``): the same events as solved afresh.
    f, book, rules = _synth200(37)
    factor = tracer._Probe._factor
    compared = [0]

    def both(self, price, x, g, structural, inactive, *args, duals=None, **kwargs):
        out = factor(self, price, x, g, structural, inactive, *args, duals=duals, **kwargs)
        if duals is not None:
            own = factor(self, price, x, g, structural, inactive, *args, **kwargs)
            assert (out is None) == (own is None)
            if out is not None:
                for mine, theirs in ((out.up, own.up), (out.down, own.down)):
                    np.testing.assert_array_equal(mine[1:][0], theirs[1:][0])
                    np.testing.assert_array_equal(mine[2], theirs[2])
                    np.testing.assert_allclose(mine[0], theirs[0], rtol=1e-9, atol=1e-9)
                compared[0] += 1
        return out

    monkeypatch.setattr(tracer._Probe, "_factor", both)
    trace_curve(f, book, rules)
    assert compared[0] >= 20, compared[0]


@pytest.mark.parametrize("size, via_lp", [((5,), False), ((5, 1000, 1000), True)], ids=["synth200", "1k-1k"])
def test_the_caps_fixed_point_is_anchored_without_a_clearing_and_is_what_clear_imports(monkeypatch, size, via_lp):
    # 200 buses / 100 bids: the slack basis is optimal at the cap on the market's linearisation, and anchored there
    # (:meth:`_FixedPoints.crash`); 1k/1k: it breaks line limits, so the LP at the cap on the floor clearing's
    # linearisation (HiGHS from the slack basis) is anchored instead. Neither clears at the cap.
    f, book, rules = _synth200(*size)
    solved, cleared = [], []
    solve_from, at = tracer._Probe.solve_from, losscurve._FixedPoints.at

    def lp(self, crash, price):
        solved.append(price)
        return solve_from(self, crash, price)

    def clearing(self, price, *args, **kwargs):
        cleared.append(price)
        return at(self, price, *args, **kwargs)

    monkeypatch.setattr(tracer._Probe, "solve_from", lp)
    monkeypatch.setattr(losscurve._FixedPoints, "at", clearing)
    curve = trace_curve(f, book, rules)
    assert rules.price_cap not in cleared and solved == ([rules.price_cap] if via_lp else [])
    bound = curve.ac_check["max_error_kw"]
    for price in (rules.price_cap, float(curve.bands["price_low"][-1]) + 2e-4):
        ac = clear(f, book, price, rules=rules, options=ClearingOptions()).ac_check["import_kw"][0]
        assert abs(curve.import_at(0, price) - ac) <= min(bound, 5e-3 * abs(ac)) + 1e-6, (price, ac)


def test_an_anchor_optimal_at_every_price_is_factorised_at_a_finite_price():
    # A basis optimal over (-inf, inf) (bids that no price moves: the islanded buses of tests/test_server_network.py's
    # outage) was factorised at -inf, where its duals y0 + price z are not numbers.
    _inside = losscurve._inside
    assert _inside(-math.inf, math.inf, 1.0) == 0.0
    assert _inside(-math.inf, 40.0, 1.0) == 39.0 and _inside(40.0, math.inf, 1.0) == 41.0
    assert _inside(-math.inf, 40.0, 0.0) == 40.0 and _inside(10.0, 40.0, 1.0) == 25.0 and _inside(5.0, 5.0, 1.0) == 5.0


def test_a_step_within_the_band_tolerance_is_placed_without_fresh_clearings_and_within_it_of_clear(monkeypatch):
    # A territory's books at negative prices (``dsomarket territory synth``): where both a bid clearing and not are
    # fixed points over a range of prices, steps between them no larger than the band tolerance were each located by
    # fresh clearings (:meth:`_FixedPoints.switch`, ``confirm``), each comparing every candidate's branch: 80 % of a
    # 1,000-bus feeder's curve for steps of 20-30 kW at 55 MW. Placed in the middle of the range both hold over, the
    # curve is off ``clear`` there by at most the step, which its stated bound counts.
    from dsomarket.engine.bids import MarketRules, validate_bids
    from dsomarket.engine.territory import synthetic_member

    placed, located = [], []
    decide = losscurve._FixedPoints.placed

    def record(self, a, b):
        out = decide(self, a, b)
        if out:
            placed.append((a, b))
        return out

    monkeypatch.setattr(losscurve._FixedPoints, "placed", record)
    for name in ("switch", "confirm"):
        def searched(self, a, b, lo, hi, max_clearings, _search=getattr(losscurve._FixedPoints, name)):
            located.append(a.q - b.q <= losscurve._band_tol(a, b, self.small))
            return _search(self, a, b, lo, hi, max_clearings)

        monkeypatch.setattr(losscurve._FixedPoints, name, searched)
    f, bids = synthetic_member(0, 4, 40, 40, 3)
    rules = MarketRules()
    book = validate_bids(bids, f, rules)
    curve = trace_curve(f, book, rules)
    chk = curve.ac_check
    assert chk["placed_steps"] == len(placed) >= 1, (chk, len(placed))
    assert not any(located), located          # no fresh clearing looked for where a small step switches
    bound = chk["max_error_kw"]
    for a, b in placed[:3]:
        lo, hi = max(b.low, a.price), min(a.high, b.price)
        gap = (a.q - b.q) * 1000.0
        assert 0.0 < gap <= min(bound, losses.CURVE_REL_TOL * 1000.0 * abs(b.q)) + 1e-9, (gap, bound)
        # The step in the middle of the range both hold over (a's import before it, b's after), off what `clear`
        # imports (its AC power flow) by at most the step, wherever `clear` switches.
        for price, q in ((lo + 0.25 * (hi - lo), a.q), (lo + 0.75 * (hi - lo), b.q)):
            ours = curve.import_at(0, price)
            assert abs(ours - q * 1000.0) <= 1e-6, (price, ours, q)
            ac = clear(f, book, price, rules=rules, options=ClearingOptions()).ac_check["import_kw"][0]
            assert abs(ours - ac) <= gap + losses.RESIDUAL_TOL_KW, (price, ours, ac, gap)
