"""The loss-aware curve's own error bound (``ac_check.max_error_kw`` / ``max_error_pct``) and the warning of
``dsomarket curve`` on it: silent on ordinary books, exit 3 and one line where the bound exceeds 0.5 %."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from dsomarket.clients.commands.market import EXIT_PHYSICS
from dsomarket.clients.files import read_feeder, read_table
from dsomarket.engine import interface, losscurve, losses
from dsomarket.engine.bids import MarketRules, validate_bids
from dsomarket.engine.clearing import ClearingOptions, clear
from dsomarket.engine.interface import trace_curve

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ARGS = ("curve", "--feeder", EXAMPLES / "ieee33_rated", "--bids", EXAMPLES / "ieee33_bids.csv")


def test_the_example_books_curve_is_within_its_tolerance_and_warns_of_nothing(run, tmp_path):
    code, _, err = run(*ARGS, "--out", tmp_path / "c")
    assert code == 0 and "warning" not in err, err
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    check = summary["ac_check"]
    assert summary["warnings"] == [] and check["unresolved_steps"] == 0
    assert 0 < check["max_error_pct"] <= losses.CURVE_TOL * 100 and check["max_error_kw"] > 0


def test_a_curve_whose_subdivisions_run_out_reports_its_error_and_the_command_warns_and_exits_3(
        run, tmp_path, monkeypatch):
    # No subdivision allowed: the curve is one step from the floor's import to the cap's, placed where the
    # tangents meet. Between them a clearing may lie anywhere, and the bound says so.
    monkeypatch.setattr(losscurve, "CURVE_MAX_DEPTH", 0)
    monkeypatch.setattr(losscurve, "LOCATE_BISECTIONS", 0)
    code, out, err = run(*ARGS, "--out", tmp_path / "c")
    assert code == EXIT_PHYSICS and err.count("\n") == 1
    assert err.startswith("dsomarket: warning: loss-aware curve:") and "unresolved" in err
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["warnings"] and summary["ac_check"]["unresolved_steps"] == 1
    assert summary["ac_check"]["max_error_pct"] > losses.CURVE_TOL * 100
    assert (tmp_path / "c" / "curve.csv").exists()    # the outputs are written, as for clear's warnings
    # The bound covers what the curve misses by: clear at prices across the one step.
    f = read_feeder(EXAMPLES / "ieee33_rated")
    book = validate_bids(read_table(EXAMPLES / "ieee33_bids.csv", "bids"), f, MarketRules())
    bands = pl.read_csv(tmp_path / "c" / "curve.csv")
    step = bands["price_high"][0]
    for price in (step - 20.0, step - 1.0, step + 1.0, step + 20.0):
        res = clear(f, book, price, options=ClearingOptions())
        ours = bands.filter((pl.col("price_low") <= price) & (pl.col("price_high") > price))["import_kw"][0]
        assert abs(ours - res.interface_import_kw[0]) <= summary["ac_check"]["max_error_kw"] + 1e-3, price



def _forty_random_bids():
    """The rated ieee33 example and 40 random bids on it (validated): a book whose curve takes 7 clearings."""
    f = read_feeder(EXAMPLES / "ieee33_rated")
    rng = np.random.default_rng(2)
    n = 40
    bids = pl.DataFrame({"bid_id": [f"b{k}" for k in range(n)], "bus": rng.choice(f.buses["bus"].to_numpy()[1:], n),
                         "side": rng.choice(["buy", "sell"], n), "quantity_kw": rng.uniform(5.0, 60.0, n),
                         "price": np.round(rng.uniform(0, 150, n), 2)})
    return f, validate_bids(bids, f, MarketRules())


def test_a_curve_out_of_clearings_stops_and_its_bound_covers_what_it_left(monkeypatch):
    # A book that would need more clearings than the budget gets a curve at once, not an unbounded trace or an
    # error: the pairs left are steps where their tangents meet, and the bound covers the full curve's imports.
    # (The example book's curve is walked from the floor's and the cap's clearings alone: 40 random bids whose
    # curve takes 7.)
    f, book = _forty_random_bids()
    full = trace_curve(f, book)
    budget = full.ac_check["clearings"] - 1     # floor and cap, and one fewer than it takes in all
    assert budget >= 2 and full.ac_check["unresolved_steps"] == 0
    monkeypatch.setattr(interface, "CURVE_MAX_CLEARINGS", budget)
    monkeypatch.setattr(interface, "CURVE_HARD_CLEARINGS", budget)    # no clearings past it, whatever the bound
    cut = trace_curve(f, book)
    assert cut.ac_check["clearings"] <= budget and cut.ac_check["unresolved_steps"] >= 1
    assert cut.ac_check["max_error_pct"] > losses.CURVE_TOL * 100
    bands = full.interval_bands(0)
    for lo, hi in zip(bands["price_low"], bands["price_high"]):
        price = (lo + hi) / 2.0
        miss = abs(cut.import_at(0, price) - full.import_at(0, price))
        assert miss <= cut.ac_check["max_error_kw"] + full.ac_check["max_error_kw"] + 1e-3, price


def test_a_curve_past_its_clearing_budget_resolves_the_pairs_its_stated_bound_needs(monkeypatch):
    # The book of the test above, its budget one clearing short: at the budget the pair left put the bound past
    # 0.5 % (exit 3 from `dsomarket curve`); clearings past it, up to losses.CURVE_HARD_CLEARINGS, go to the pairs
    # that would, and the curve is the full one.
    f, book = _forty_random_bids()
    full = trace_curve(f, book)
    budget = full.ac_check["clearings"] - 1
    monkeypatch.setattr(interface, "CURVE_MAX_CLEARINGS", budget)
    cut = trace_curve(f, book)
    assert cut.ac_check["max_error_pct"] <= losses.CURVE_TOL * 100
    assert cut.ac_check["clearings"] > budget
    assert cut.bands.equals(full.bands)
