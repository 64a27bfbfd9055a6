"""The loss-aware curve's leaps (:meth:`engine.losscurve._FixedPoints._leap`): fixed points drawn between a walk's
two anchors, without anchoring each, say what ``clear`` (successive LP, then its AC power flow) imports there; and
the fixed points a walk reaches past a row event its flips hold at no price without."""

from __future__ import annotations

import numpy as np
import polars as pl

from dsomarket.engine import losscurve
from dsomarket.engine.bids import MarketRules, validate_bids
from dsomarket.engine.clearing import ClearingOptions, clear
from dsomarket.engine.feeders import ieee33, synthetic
from dsomarket.engine.interface import trace_curve


def _small_bids(feeder, n: int, seed: int) -> pl.DataFrame:
    # Bids of 1-6 kW on a 3.7 MW feeder: several flips fit in one band tolerance (0.2 % of the import), so the
    # walk leaps over runs of them.
    rng = np.random.default_rng(seed)
    buses = feeder.buses["bus"].to_numpy()[1:]
    return pl.DataFrame({"bid_id": [f"b{k}" for k in range(n)], "bus": rng.choice(buses, n),
                         "side": rng.choice(["buy", "sell"], n), "quantity_kw": rng.uniform(1.0, 6.0, n).round(2),
                         "price": rng.uniform(10.0, 90.0, n).round(2)})


def _drawn(monkeypatch) -> list:
    """The fixed points drawn by leaps (the anchored ends left out), each with whether a pivot led its leap and
    whether it went up the price."""
    drawn: list = []
    windows = losscurve._FixedPoints._windows

    def record(self, a, v, samples, cols, q_lp, tol, lead=None, rising=True):
        out = windows(self, a, v, samples, cols, q_lp, tol, lead, rising)
        if not isinstance(out, int):
            # The anchored end is last going up, first going down.
            drawn.extend((s, lead is not None, rising) for s in (out[:-1] if rising else out[1:]))
        return out

    monkeypatch.setattr(losscurve._FixedPoints, "_windows", record)
    return drawn


def _check_drawn(f, book, rules, curve, drawn, below: tuple[float, ...] = ()) -> None:
    """``clear`` (successive LP, then its AC power flow) imports what the curve and each of ``drawn`` say just
    inside either end of its range (where a misplaced switch would show), and what the curve says ``below`` (per
    MWh) under its low end."""
    bound = curve.ac_check["max_error_kw"]
    for s in drawn:
        assert s.high > s.low
        inside = (s.low + 2e-4, s.high - 2e-4)
        for price in (*inside, *(s.low - d for d in below)):
            res = clear(f, book, price, rules=rules, options=ClearingOptions())
            ac = res.ac_check["import_kw"][0]
            ours = curve.import_at(0, price)
            assert abs(ours - ac) <= min(bound, 5e-3 * abs(ac)) + 1e-6, (price, ours, ac)
            if price in inside:
                assert abs(s.q * 1000.0 - ac) <= 1e-3 * abs(ac), (price, s.q * 1000.0, ac)


def _synth200(seed: int, n_bus: int = 200, n: int = 100, feeder=None):
    """A synthetic feeder with rated lines (200 buses) and ``n`` bids of 5-60 kW (100): its feeder, book and
    rules. ``_synth200(5, 1000, 1000)`` is ``benchmarks/bench_physics.py``'s 1,000-bus curve case, and
    ``_synth200(5, n=80, feeder=ieee33())`` its ieee33 one (``feeder``: that feeder instead)."""
    f = synthetic(n_bus, 5) if feeder is None else feeder
    rng = np.random.default_rng(seed)
    bids = pl.DataFrame({"bid_id": [f"b{k}" for k in range(n)], "bus": rng.choice(f.buses["bus"].to_numpy()[1:], n),
                         "side": rng.choice(["buy", "sell"], n), "quantity_kw": rng.uniform(5.0, 60.0, n),
                         "price": np.round(rng.uniform(0, 150, n), 2)})
    rules = MarketRules()
    return f, validate_bids(bids, f, rules), rules


def test_fixed_points_drawn_between_a_leaps_anchors_are_what_clear_imports(monkeypatch):
    f = ieee33()
    rules = MarketRules(price_floor=0.0, price_cap=100.0)
    book = validate_bids(_small_bids(f, 60, 3), f, rules)
    drawn = _drawn(monkeypatch)
    curve = trace_curve(f, book, rules)
    assert len(drawn) >= 10, len(drawn)
    picks = np.random.default_rng(0).choice(len(drawn), 6, replace=False)
    _check_drawn(f, book, rules, curve, [drawn[k][0] for k in picks])


def test_leaps_led_by_a_thermal_facets_pivot_or_down_the_price_draw_what_clear_imports(monkeypatch):
    # Rated lines of the synthetic feeder: their polygons' facets leave the active set as the price rises,
    # pivots that lead the leaps over the flips after them (one anchor at the run's end for both); where a
    # walk up stops (a bid entering part-way against a limit), walks down from the pair's right end leap.
    f, book, rules = _synth200(37)
    drawn = _drawn(monkeypatch)
    curve = trace_curve(f, book, rules)
    led = [s for s, lead, _ in drawn if lead]
    down = [s for s, _, rising in drawn if not rising]
    assert len(led) >= 1 and len(down) >= 10, (len(led), len(down))
    _check_drawn(f, book, rules, curve, led[:2] + down[::len(down) // 3][:3])


def test_a_walk_whose_flips_hold_at_no_price_alone_takes_the_row_event_after_them_and_draws_what_clear_imports(
        monkeypatch):
    # On the flipped dispatch's linearisation a thermal facet's dual turns before the flipped bid's reduced cost
    # (the two events' order on the walk's start linearisation, reversed): the walk anchors past both
    # (:meth:`engine.losscurve._FixedPoints._past_row`) instead of leaving the pair to clearings.
    f, book, rules = _synth200(8)
    reached: list = []
    past_row = losscurve._FixedPoints._past_row

    def record(self, probe, basis, brk, rising):
        v = past_row(self, probe, basis, brk, rising)
        if v is not None:
            reached.append(v)
        return v

    monkeypatch.setattr(losscurve._FixedPoints, "_past_row", record)
    curve = trace_curve(f, book, rules)
    assert reached
    _check_drawn(f, book, rules, curve, reached, below=(0.01, 0.05))


def test_a_leaps_anchor_whose_windows_do_not_fit_is_kept_past_the_walks_own_and_is_what_clear_imports(monkeypatch):
    # The far anchor of a leap whose windows do not fit is still a fixed point: the walk returns it after the one
    # it anchors nearer (one pair fewer to walk, no anchor more), and clear imports what it says over its range.
    f, book, rules = _synth200(6)
    kept: list = []
    walk = losscurve._FixedPoints.walk

    def record(self, a, limit, tol, rising=True):
        out = walk(self, a, limit, tol, rising)
        if out and rising and self._spare is not None and out[-1] is self._spare:
            kept.append(out[-1])
        return out

    monkeypatch.setattr(losscurve._FixedPoints, "walk", record)
    curve = trace_curve(f, book, rules)
    assert kept
    _check_drawn(f, book, rules, curve, kept)


def test_bids_clearing_part_way_in_turn_are_drawn_from_anchors_at_both_ends_and_are_what_clear_imports(monkeypatch):
    # benchmarks/bench_physics.py's ieee33 book: near 48.0 per MWh bid b70 clears part-way alone from 47.90 to 48.02,
    # b71 joins it up to 48.22, and b70 alone again up to 48.41; no single flip past 47.90 is a fixed point. The
    # stretches at both ends are anchored (:meth:`_FixedPoints._ramps`), the middle one cleared.
    f, book, rules = _synth200(5, n=80, feeder=ieee33())
    ramps: list = []
    own = losscurve._FixedPoints._ramps

    def record(self, a, v, *args):
        out = own(self, a, v, *args)
        ramps.append((a, v, out))
        return out

    monkeypatch.setattr(losscurve._FixedPoints, "_ramps", record)
    curve = trace_curve(f, book, rules)
    drawn = [(a, v, out) for a, v, out in ramps if out]
    assert len(drawn) >= 2, ramps
    bound = curve.ac_check["max_error_kw"]
    for a, v, out in drawn:
        assert all(s.low == s.high for s in out)
        assert all(a.high <= s.price <= v.low for s in out)
        assert all(x.price <= y.price and x.q >= y.q for x, y in zip([a, *out], [*out, v]))
        # Between neighbouring samples (the bands drawn from them) and across the pair's gap.
        prices = [(x.price + y.price) / 2.0 for x, y in zip(out[:-1], out[1:])] + list(np.linspace(a.high, v.low, 6))
        for price in prices:
            res = clear(f, book, float(price), rules=rules, options=ClearingOptions())
            ac = res.ac_check["import_kw"][0]
            ours = curve.import_at(0, float(price))
            assert abs(ours - ac) <= min(bound, 5e-3 * abs(ac)) + 1e-6, (price, ours, ac)
