"""A kept market's warm re-clear (:meth:`engine.solver.HighsSolver.solve_kept`) of a book whose bids tie (equal
prices on several buses, both sides, and ISO prices equal to bid prices) must give a fresh clearing's bits: its
dispatch, DLMPs and every other table. Several bases are optimal there, and the warm path alone (the kept basis,
own pivots or HiGHS's warm run) ends at another than a fresh clearing's slack start does; the re-clear sees the
tie and clears cold."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsomarket.engine.bids import MarketRules, canonical, validate_bids
from dsomarket.engine.clearing import ClearingOptions, NodalMarket
from dsomarket.engine.feeders import synthetic
from dsomarket.engine.solver import TIE_STREAK, HighsSolver

LOSSLESS = ClearingOptions(formulation="lossless", ac_check=False)
RULES = MarketRules(price_floor=-200.0, price_cap=500.0)
TABLES = ("dispatch", "prices", "lines", "buses", "interface")
TIED = (20.0, 40.0, 55.5)   # the books' only prices; the ISO prices are drawn from these and a few others


def _tied_book(n_bus: int, n_bids: int, seed: int):
    """A seeded synthetic feeder and a book of ``n_bids`` bids on its non-root buses, buys and sells, every
    price one of :data:`TIED` (so bids tie across buses and sides), quantities of 5-400 kW (enough to bind the
    feeder's limits, where DLMPs part from the ISO price)."""
    f = synthetic(n_bus, seed)
    rng = np.random.default_rng(seed)
    buses = f.buses["bus"].to_numpy()[1:]
    bids = pl.DataFrame({"bid_id": [f"t{k:03d}" for k in range(n_bids)], "bus": rng.choice(buses, n_bids),
                         "side": rng.choice(["buy", "sell"], n_bids),
                         "quantity_kw": np.round(rng.uniform(5, 400, n_bids), 1),
                         "price": rng.choice(TIED, n_bids)})
    return f, canonical(validate_bids(bids, f, RULES), f, RULES)


def _differing(f, book, prices) -> list:
    """A kept market cleared at ``prices[0]`` and re-cleared warm at each later price, against a fresh clearing at
    that price: ``(price, table)`` of every table that is not the same bits (welfare as a table)."""
    market = NodalMarket(f, book, prices[0], RULES, options=LOSSLESS)
    assert market.solve().ok
    out = []
    for price in prices[1:]:
        market.set_iso_price(price)
        warm, fresh = market.solve(), NodalMarket(f, book, price, RULES, options=LOSSLESS).solve()
        assert warm.ok and fresh.ok
        out += [(price, name) for name in TABLES if not getattr(warm, name).equals(getattr(fresh, name))]
        if warm.welfare != fresh.welfare:
            out.append((price, "welfare"))
    return out


@given(n_bus=st.integers(2, 30), n_bids=st.integers(2, 40), seed=st.integers(0, 10_000),
       prices=st.lists(st.sampled_from(TIED + (35.0, 60.0, -10.0)), min_size=2, max_size=5))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_warm_re_clear_of_a_tied_book_is_a_fresh_clearing_s_bits(n_bus, n_bids, seed, prices):
    f, book = _tied_book(n_bus, n_bids, seed)
    assert _differing(f, book, prices) == []


# Fixed tied books and price paths on which the warm path alone ends at another optimal vertex than a fresh clearing;
# the ISO prices at bid prices are cleared cold at once, the others (35, 47, 30) warm first.
CASES = [(12, 30, seed, [20.0, 40.0, 55.5, 35.0, 47.0, 40.0, 30.0, 20.0]) for seed in range(6)]


def test_the_tied_books_do_reach_other_vertices_warm_and_are_cleared_cold():
    # The property above would pass unseen if its books had one optimal basis: on these, the warm path alone (the
    # tie checks switched off) gives tables that differ from a fresh clearing's, and with them none do, after
    # re-clears cleared cold: after a warm solve, and at once after a streak of ties (TIE_STREAK) or at a bid's price.
    restarts, at_once = [], []
    kept = HighsSolver.solve_kept

    def counted(self, likely_tied=False):
        before = self.tie_restarts
        at_once.append(self._ties >= TIE_STREAK or likely_tied)     # cleared cold without a warm solve
        sol = kept(self, likely_tied)
        restarts.append(self.tie_restarts - before)
        return sol

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(HighsSolver, "unique_optimum", lambda self, sol: True)
        mp.setattr(NodalMarket, "bid_at_iso_price", lambda self: False)
        warm_alone = [_differing(f, book, prices) for f, book, prices in
                      ((*_tied_book(n, k, seed), prices) for n, k, seed, prices in CASES)]
    assert any(warm_alone), warm_alone
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(HighsSolver, "solve_kept", counted)
        checked = [_differing(f, book, prices) for f, book, prices in
                   ((*_tied_book(n, k, seed), prices) for n, k, seed, prices in CASES)]
    assert checked == [[]] * len(CASES)
    assert sum(restarts) > sum(at_once) > 0


def _untied_book():
    """A 30-bus feeder and 20 bids at distinct prices 30, 31.37, ... (no two tied), the ISO prices tried none of them."""
    f = synthetic(30, 4)
    rng = np.random.default_rng(4)
    bids = pl.DataFrame({"bid_id": [f"u{k}" for k in range(20)], "bus": rng.choice(f.buses["bus"].to_numpy()[1:], 20),
                         "side": rng.choice(["buy", "sell"], 20), "quantity_kw": np.round(rng.uniform(5, 40, 20), 1),
                         "price": 30.0 + np.arange(20) * 1.37})
    return f, canonical(validate_bids(bids, f, RULES), f, RULES)


def test_a_re_clear_at_a_bid_s_price_is_cleared_cold_at_once():
    # A bid priced exactly at the ISO price is at the interface's DLMP wherever no limit binds between them: any
    # quantity of it is optimal. The re-clear is cleared from the slack basis without a warm solve first (one
    # solve_by_basis, the cold clearing's) and gives a fresh clearing's bits; at another price it stays warm.
    f, book = _untied_book()
    market = NodalMarket(f, book, 45.1, RULES, options=LOSSLESS)
    assert market.solve().ok and not market.bid_at_iso_price()
    solves = []
    by_basis = HighsSolver.solve_by_basis
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(HighsSolver, "solve_by_basis", lambda self, *a, **k: solves.append(1) or by_basis(self, *a, **k))
        for price, cold in ((float(book.price[7]), 1), (44.2, 0)):
            market.set_iso_price(price)
            assert market.bid_at_iso_price() == bool(cold)
            before, solves[:] = market.solver.tie_restarts, []
            warm, fresh = market.solve(), NodalMarket(f, book, price, RULES, options=LOSSLESS).solve()
            assert market.solver.tie_restarts - before == cold and len(solves) == 2   # this re-clear's and fresh's
            for name in TABLES:
                assert getattr(warm, name).equals(getattr(fresh, name)), (price, name)


def test_an_untied_re_clear_stays_warm():
    # The check must not clear cold where the optimum is the only one: distinct bid prices, ISO prices none of them.
    f, book = _untied_book()
    market = NodalMarket(f, book, 45.1, RULES, options=LOSSLESS)
    assert market.solve().ok
    for price in (38.3, 51.9, 44.2):
        market.set_iso_price(price)
        warm, fresh = market.solve(), NodalMarket(f, book, price, RULES, options=LOSSLESS).solve()
        for name in TABLES:
            assert getattr(warm, name).equals(getattr(fresh, name)), (price, name)
    assert market.solver.tie_restarts == 0


def test_a_primal_degenerate_optimum_is_seen_and_re_cleared_to_a_fresh_clearing_s_bits():
    # The interface's import limit is exactly the load plus a buy (lines unlimited): at 50 per MWh the buy (60)
    # clears in full and the import sits at its limit, both at a bound, one of them basic; any DLMP from 50 to 60
    # at the buy's bus prices that, so the DLMPs are not unique. No reduced cost is zero (the dual check alone
    # passes it): the check must see the basic value at its bound, and the re-clear must be a fresh clearing's.
    f0 = synthetic(4, 1)
    f = dataclasses.replace(f0, import_max_kw=float(f0.buses["load_kw"].sum()) + 100.0,
                            lines=f0.lines.with_columns(s_max_kva=pl.lit(1e5)))
    bids = pl.DataFrame({"bid_id": ["b1", "s1"], "bus": [f0.buses["bus"][2], f0.buses["bus"][1]],
                         "side": ["buy", "sell"], "quantity_kw": [100.0, 10.0], "price": [60.0, 80.0]})
    book = canonical(validate_bids(bids, f, RULES), f, RULES)
    fresh = NodalMarket(f, book, 50.0, RULES, options=LOSSLESS)
    res = fresh.solve()
    assert res.ok and res.dispatch["cleared_kw"].to_list() == [100.0, 0.0]
    s = fresh.solver
    sol = s._kept_values(0.0, 0)
    k = s._kept
    assert not s.unique_optimum(sol)
    basic = np.zeros(len(s.cost), dtype=bool)
    basic[k.cols] = True
    assert np.all(np.abs(sol.col_dual[~basic & (s.col_lower < s.col_upper)]) > 1e-6)   # dual nondegenerate
    for start in (70.0, 30.0, 90.0):
        market = NodalMarket(f, book, start, RULES, options=LOSSLESS)
        assert market.solve().ok
        market.set_iso_price(50.0)
        warm = market.solve()
        assert market.solver.tie_restarts == 1
        for name in TABLES:
            assert getattr(warm, name).equals(getattr(res, name)), (start, name)
