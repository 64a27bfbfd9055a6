"""Defects found by ``benchmarks/bench_hidden_physics.py`` (issue 9's hidden checks run ahead of time), one test each."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from dsomarket.engine.bids import validate_bids
from dsomarket.engine.clearing import ClearingOptions, clear
from dsomarket.engine.disaggregation import disaggregate, holding_day_ahead
from dsomarket.engine.feeders import synthetic
from dsomarket.engine.results import VIOLATION_TOL_PCT
from tests.test_interface import random_bids
from tests.test_settlement import DA_RULES, LOSSAWARE, RT_RULES, T0, award


def _rated(feeder, line: str, factor: float):
    return feeder.with_changes(lines=feeder.lines.with_columns(
        pl.when(pl.col("line") == line).then(pl.col("s_max_kva") * factor).otherwise(pl.col("s_max_kva"))
        .alias("s_max_kva")))


def test_a_real_time_re_clear_holding_a_schedule_a_milli_va_over_a_rating_clears_as_if_it_were_on_it():
    # tests/test_settlement.py's two-settlement property, seed 5781 with 4 bids, day ahead at 100, real time at 0:
    # the day-ahead schedule leaves line 3 at 100.0000003 % (4.7e-10 MVA over, read back to the micro-kW) and
    # the only bid of real time sits upstream of it. HiGHS found every linearisation infeasible by that much.
    f = synthetic(6, 5781)
    b = random_bids(f, 4, 5784, tan_phi=True).with_columns(
        interval=pl.lit(T0), resource_id=pl.Series([f"r{k % 3}" for k in range(4)]))
    da = disaggregate(f, validate_bids(b, f, DA_RULES), award(None, 100.0, T0), DA_RULES, options=LOSSAWARE)
    again = b.filter(pl.col("resource_id") == "r1").with_columns(price=(pl.col("price") * 0.7 + 15).round(2))
    rt_book = validate_bids(pl.concat([again.with_columns(interval=pl.lit(T0 + timedelta(minutes=5 * j)),
                                                          bid_id=pl.col("bid_id") + f"-rt{j}") for j in range(2)]),
                            f, RT_RULES)
    held = holding_day_ahead(f, rt_book, da.clearing.dispatch, 60)
    res = clear(held, rt_book, 0.0, rules=RT_RULES, options=ClearingOptions())
    assert res.ok, res.diagnosis
    assert res.convergence["converged"]
    assert res.ac_check["violations"] == [] and res.ac_check["max_loading_pct"] <= 100.0 + VIOLATION_TOL_PCT
    # Independent of the noise: the same market with that rating 1e-8 of itself wider (which HiGHS solves
    # without phase one) clears the same to a hundredth of a kW.
    wider = clear(_rated(held, "3", 1.0 + 1e-8), rt_book, 0.0, rules=RT_RULES, options=ClearingOptions())
    assert wider.ok and wider.convergence["iterations"] <= res.convergence["iterations"]
    assert abs(res.dispatch["cleared_kw"] - wider.dispatch["cleared_kw"]).max() < 0.01
    assert abs(res.interface_import_kw - wider.interface_import_kw).max() < 0.02


def test_curve_of_a_market_infeasible_at_every_price_exits_1_with_the_limit_as_clear_does(run, tmp_path):
    # A line rated below what the fixed load alone draws through it, no bid behind it: infeasible at any price.
    # `clear` exits 1 naming the line; `curve` exited 2 as if an input were bad.
    from dsomarket.clients.files import write_feeder
    from dsomarket.engine.feeders import ieee33

    f = ieee33()
    write_feeder(f.with_changes(lines=f.lines.with_columns(
        pl.when(pl.col("line") == "32").then(pl.lit(50.0)).otherwise(pl.col("s_max_kva")).alias("s_max_kva"))),
        tmp_path / "f")
    pl.DataFrame({"bid_id": ["pv"], "bus": ["18"], "side": ["sell"], "quantity_kw": [100.0],
                  "price": [20.0]}).write_csv(tmp_path / "bids.csv")
    args = ("--feeder", tmp_path / "f", "--bids", tmp_path / "bids.csv")
    code, _, err = run("clear", *args, "--iso-price", 40, "--out", tmp_path / "c")
    assert code == 1 and "line_thermal at 32" in err
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "curve.csv").write_text("stale")
    code, _, err = run("curve", *args, "--out", tmp_path / "k")
    assert code == 1 and err.strip().splitlines()[-1] == "dsomarket: market infeasible: line_thermal at 32"
    summary = json.loads((tmp_path / "k" / "summary.json").read_text())
    assert summary["status"] == "infeasible" and summary["diagnosis"][0]["element"] == "32"
    assert not (tmp_path / "k" / "curve.csv").exists()


def test_where_two_fixed_points_overlap_the_curve_steps_where_clear_switches():
    # The CLI test's book (tests/test_cli_market.py) near -81: sell b0034 (-44.23 at bus 25, behind a voltage
    # limit) clears in full or not at all, and either way its own losses put its bus's DLMP on the side of
    # its price that keeps it there, so between -80.995 and -80.88 two dispatches are both KKT points of the
    # AC problem (at a negative ISO price losses earn money: the AC problem is not convex). `clear` reaches
    # one; the curve put its step in the middle of the overlap, up to 271 kW (4.9 %) off `clear` there.
    from dsomarket.engine.bids import MarketRules
    from dsomarket.engine.feeders import ieee33
    from dsomarket.engine.interface import trace_curve

    f = ieee33()
    book = validate_bids(random_bids(f, 40, 17, lo=-80, hi=380).with_columns(resource_id=pl.lit("")), f,
                         MarketRules(price_floor=-100, price_cap=400))
    rules = MarketRules(price_floor=-82, price_cap=-80)   # the stretch in question
    curve = trace_curve(f, book, rules)
    low, high = clear(f, book, -81.0, rules=rules), clear(f, book, -80.8, rules=rules)
    assert low.convergence["converged"] and high.convergence["converged"]
    assert low.ac_check["ok"] and high.ac_check["ok"]
    assert low.interface_import_kw[0] - high.interface_import_kw[0] > 200.0
    breaks = curve.bands["price_high"].to_numpy()[:-1]
    checked = 0
    for p in np.arange(-81.0, -80.79, 0.02):
        if np.min(np.abs(breaks - p)) < 1e-3:
            continue
        res = clear(f, book, float(p), rules=rules)
        assert abs(curve.import_at(0, float(p)) - res.ac_check["import_kw"][0]) <= 5e-3 * res.ac_check["import_kw"][0]
        checked += 1
    assert checked >= 8   # not every price skipped as a breakpoint


def _bench_case(line: str, rating: float, vmin: float, vmax: float, rows: list[tuple]):
    """An ieee33 case of ``bench_hidden_physics``: every line rated at twice its base-case flow plus 500 kVA (at
    least 1,000 kVA), ``line`` at ``rating``; one voltage band; unity-pf bids ``(bid_id, bus, side, kW, price)``."""
    from dsomarket.engine.feeders import ieee33
    from dsomarket.engine.powerflow import ac_power_flow

    f = ieee33()
    base = ac_power_flow(f)
    kva = np.maximum(2.0 * np.hypot(base.line_p_kw, base.line_q_kvar), 500.0) + 500.0
    kva[base.line_ids.astype(str) == line] = rating
    rated = pl.DataFrame({"line": base.line_ids.astype(str), "s_max_kva": kva})
    f = f.with_changes(lines=f.lines.drop("s_max_kva").join(rated, on="line").select(f.lines.columns),
                       buses=f.buses.with_columns(vmin_pu=pl.lit(vmin), vmax_pu=pl.lit(vmax)))
    return f, pl.DataFrame(rows, schema=["bid_id", "bus", "side", "quantity_kw", "price"], orient="row")


def test_a_curve_steps_where_clear_switches_at_a_negative_price_where_a_sell_both_clears_and_not():
    # bench_hidden_physics --quick --seed 400, case ieee33-s408: line 28 rated near its flow, voltages within
    # 0.9077-1.01 pu, 12 unity-pf bids. Sell b7 (238.5 kW at bus 11 for -14.05) part-cleared and fully cleared
    # are both fixed points near -12.7; the curve stepped at -12.62 where `clear` switches at -12.68: 179 kW
    # (4.3 %) off `clear` and the AC power flow of its dispatch, and the curve exited 0.
    from dsomarket.engine.bids import MarketRules
    from dsomarket.engine.interface import trace_curve

    rows = [("b0", "11", "buy", 651.5, 17.08), ("b1", "3", "buy", 258.3, 36.69), ("b2", "7", "buy", 404.5, 43.82),
            ("b3", "16", "sell", 528.0, 233.45), ("b4", "22", "buy", 674.5, -59.83),
            ("b5", "11", "sell", 514.5, -36.33), ("b6", "3", "sell", 574.9, 40.85),
            ("b7", "11", "sell", 238.5, -14.05), ("b8", "32", "buy", 1114.2, 141.73),
            ("b9", "31", "sell", 502.8, -73.88), ("b10", "28", "sell", 1348.8, 163.48),
            ("b11", "32", "buy", 548.3, 27.32)]
    f, bids = _bench_case("28", 995.7051, 0.9077289644663079, 1.01, rows)
    book = validate_bids(bids, f, MarketRules())
    rules = MarketRules(price_floor=-20, price_cap=-5)   # the stretch in question
    curve = trace_curve(f, book, rules)
    breaks = curve.bands["price_high"].to_numpy()[:-1]
    gaps = []
    for p in np.arange(-13.0, -12.4, 0.025):
        if np.min(np.abs(breaks - p)) < 1e-3:
            continue
        res = clear(f, book, float(p), rules=rules)
        assert res.convergence["converged"] and res.ac_check["ok"]
        gaps.append(abs(curve.import_at(0, float(p)) - res.ac_check["import_kw"][0]) / res.ac_check["import_kw"][0])
    assert max(gaps) <= 5e-3


def test_a_loss_aware_curve_on_ieee33_with_fourteen_bids_stays_on_clear_between_130_and_200():
    # bench_hidden_physics --quick --seed 100, case ieee33-s103 (line 18 rated near its flow, floor 0.922 pu).
    # With bands to 0.25 % (losses.CURVE_REL_TOL, f7df201) the curve spent its 120 clearings, left 289 steps
    # unresolved and drew -368 kW where `clear` gives -714 kW (48 %) and -1,698 kW (78 %); at 0.2 %: 7 clearings.
    from dsomarket.engine.bids import MarketRules
    from dsomarket.engine.interface import trace_curve

    rows = [("b0", "23", "buy", 335.6, 4.88), ("b1", "31", "sell", 238.6, 200.42), ("b2", "27", "sell", 1826.1, 116.68),
            ("b3", "4", "buy", 778.9, 247.27), ("b4", "15", "sell", 432.2, 3.82), ("b5", "7", "buy", 467.5, -1.38),
            ("b6", "7", "sell", 354.9, -65.5), ("b7", "26", "sell", 312.4, -69.92), ("b8", "22", "sell", 368.2, 37.81),
            ("b9", "3", "sell", 1179.3, 56.63), ("b10", "32", "buy", 341.1, 116.15),
            ("b11", "23", "sell", 346.3, 129.9), ("b12", "14", "sell", 489.7, 40.97),
            ("b13", "25", "sell", 989.0, 181.04)]
    f, bids = _bench_case("18", 334.338975, 0.9219564141132482, 1.05, rows)
    rules = MarketRules()
    book = validate_bids(bids, f, rules)
    curve = trace_curve(f, book, rules)
    assert curve.ac_check["max_error_pct"] <= 0.5
    for p in (132.85, 159.86, 197.72):
        res = clear(f, book, p, rules=rules)
        assert abs(curve.import_at(0, p) - res.ac_check["import_kw"][0]) <= 5e-3 * abs(res.ac_check["import_kw"][0])


def test_a_curve_that_spends_its_clearing_budget_leaves_the_narrowest_pairs_unresolved(tmp_path, monkeypatch):
    # bench_hidden_physics --quick --cases 1 --seed 301 (ieee33, 37 bids with tan phi): a steep stretch near
    # 140-175 per MWh needs more clearings than losses.CURVE_MAX_CLEARINGS. Settled left to right, the budget
    # was gone there and the pair from 175 to the cap was left one step: 407 kW (169 %) reported, the curve
    # at -46.5 kW where `clear` gives -247.7 kW at 214.35. Settled widest first, what is left is narrow.
    from dsomarket.engine.bids import MarketRules
    from dsomarket.engine.interface import trace_curve

    rules = MarketRules()
    f, book = _generated_case("ieee33", 301, tmp_path, monkeypatch)
    curve = trace_curve(f, book, rules)
    check = curve.ac_check
    assert check["clearings"] >= 100 and check["unresolved_steps"] > 0   # the budget is spent
    # The pairs left are bands at their middle import (the import between them is off by at most half their
    # gap), not steps (off by all of it): 0.68 % reported as steps, 0.35 % as bands, within the curve's 0.5 %.
    assert check["max_error_pct"] <= 0.5
    for p in (214.3548, 225.6917, 230.0):
        got = clear(f, book, p, rules=rules).ac_check["import_kw"][0]
        assert abs(curve.import_at(0, p) - got) <= check["max_error_kw"] + 1e-6


def _generated_case(kind: str, seed: int, tmp_path, monkeypatch):
    """The feeder and book (validated under the default rules) of ``bench_hidden_physics.make_case(kind, seed)``."""
    import importlib.util
    import sys
    from pathlib import Path

    from dsomarket.clients.files import read_feeder, read_table
    from dsomarket.engine.bids import MarketRules

    spec = importlib.util.spec_from_file_location(
        "bench_hidden_physics", Path(__file__).parent.parent / "benchmarks" / "bench_hidden_physics.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)   # its dataclasses look their module up
    spec.loader.exec_module(bench)
    case = bench.make_case(kind, seed, tmp_path)
    f = read_feeder(case.feeder_dir)
    return f, validate_bids(read_table(case.bids, "bids"), f, MarketRules())


def _assert_converged_on_rating(res, line: str) -> None:
    """``res`` converged, and the AC power flow of its dispatch (an independent sweep) breaks no limit, has ``line``
    the most loaded and on its rating, and imports what the LP does within 0.01 kW; every bid priced consistently
    with its bus DLMP."""
    from tests.test_clearing import assert_prices_consistent

    assert res.ok, res.diagnosis
    assert res.convergence["converged"], res.convergence
    assert res.ac_check["ok"] and not res.ac_check["violations"]
    assert res.ac_check["max_loading_line"] == line
    assert res.ac_check["max_loading_pct"] == pytest.approx(100.0, abs=0.01)
    assert abs(res.ac_check["import_kw"][0] - res.interface["import_kw"][0]) < 0.01
    assert_prices_consistent(res)


def test_a_flow_cycling_on_its_rating_between_two_close_polygon_vertices_converges(tmp_path, monkeypatch):
    # bench_hidden_physics --quick --cases 10 --seed 1500, case ieee69-s1501: line 36 on its rating (174 kVA).
    # Its ends' polygons closed in to the trust region's old floor (1e-3 rad) and the flow then turned +-5e-4 rad
    # between the two vertices either side of the tangent face, which moved two bids 0.24 and 0.17 kW each way
    # (over STEP_TOL_KW) for all 80 iterations: not converged (exit 3). Each must converge on the rating, hold on
    # the AC power flow of its dispatch and price every bid consistently with its bus DLMP.
    from dsomarket.engine.losses import STEP_TOL_KW

    f, book = _generated_case("ieee69", 1501, tmp_path, monkeypatch)
    for price in (228.99, 267.817):
        res = clear(f, book, price)
        assert res.convergence is not None and res.convergence["last_step_kw"] <= STEP_TOL_KW, res.convergence
        _assert_converged_on_rating(res, "36")


def test_bids_stepping_the_full_trust_region_the_same_way_are_given_room_and_converge(tmp_path, monkeypatch):
    # bench_hidden_physics --quick --cases 10 --seed 1500, case ieee33-s1508 at 190.7186 (a curve check's price):
    # past BRACKET_ITERATIONS the bids' trust region took over, and for its last 25 iterations bids b0 and b16
    # stepped the full 2.4 W of their region the same way, each step gaining 0.6-0.7 of its promise: the region
    # widened only after a gain of 0.75, so they crept to MAX_ITERATIONS, not converged (exit 3). It must converge,
    # hold on the AC power flow of its dispatch and price every bid consistently with its bus DLMP.
    from tests.test_clearing import assert_prices_consistent

    f, book = _generated_case("ieee33", 1508, tmp_path, monkeypatch)
    res = clear(f, book, 190.7186)
    assert res.ok, res.diagnosis
    assert res.convergence["converged"], res.convergence
    assert res.ac_check["ok"] and not res.ac_check["violations"]
    assert abs(res.ac_check["import_kw"][0] - res.interface["import_kw"][0]) < 0.01
    assert_prices_consistent(res)


def test_a_step_placed_after_where_fresh_clearings_switch_is_moved_back_to_it():
    # The CLI test's book (ieee33, 40 bids): a 126 kW step that clearings started from their neighbours put
    # 0.005 per MWh after the price where `clear` switches (-43.955 on the old curve: 5,558.2 kW against
    # `clear`'s 5,432.0, with that whole step as its bound). Fresh clearings confirm the step, and the bands
    # drawn past it are cut back.
    from dsomarket.engine.bids import MarketRules
    from dsomarket.engine.feeders import ieee33
    from dsomarket.engine.interface import trace_curve

    f = ieee33()
    book = validate_bids(random_bids(f, 40, 17, lo=-80, hi=380).with_columns(resource_id=pl.lit("")), f,
                         MarketRules(price_floor=-100, price_cap=400))
    rules = MarketRules(price_floor=-46, price_cap=-42)
    curve = trace_curve(f, book, rules)
    imports = {p: clear(f, book, p, rules=rules).ac_check["import_kw"][0] for p in (-43.96, -43.955, -43.95)}
    assert imports[-43.96] - imports[-43.95] > 100.0          # the step is there
    for p, at in imports.items():
        assert abs(curve.import_at(0, p) - at) <= 5e-3 * at, p
    assert curve.ac_check["max_error_kw"] < 5e-3 * imports[-43.95]


def test_a_curve_steps_where_fresh_clearings_switch_or_counts_the_step_in_its_bound(tmp_path, monkeypatch):
    # bench_hidden_physics --quick --cases 10 --seed 400, case ieee69-s406, here between -76 and -62.
    # At -64.21 the curve said 5,445.04 kW where `clear` gives 5,618.77 (3.09 %) with a bound of 0.03 %: the
    # clearing at -68.03 holds to -64.185, but its range was clipped to where the next fixed point's starts
    # (-64.260), so the two only met and nobody asked where `clear` switches (between -64.21 and -64.20).
    # Near -74.71 a 63 kW jump was put between two clearings started from their neighbours' fixed points,
    # 9 thousandths of a price before the point where fresh clearings jump: 1.12 % off `clear`, bound 0.03 %.
    # Converged there (SPREAD_MIN 1e-5), the two fixed points both hold on [-74.7150, -74.7125] and every fresh
    # clearing in that overlap takes the upper import, which `clear` keeps to -74.705: the switch lies outside it.
    from dsomarket.engine.bids import MarketRules
    from dsomarket.engine.interface import trace_curve

    rules = MarketRules(price_floor=-76, price_cap=-62)
    f, book = _generated_case("ieee69", 406, tmp_path, monkeypatch)
    curve = trace_curve(f, book, rules)
    bound = curve.ac_check["max_error_kw"]
    at = clear(f, book, -64.21, rules=rules).ac_check["import_kw"][0]
    assert abs(curve.import_at(0, -64.21) - at) <= 5e-3 * at
    for p in (-64.25, -64.195, -74.7148, -74.71, -74.7058):
        got = clear(f, book, p, rules=rules).ac_check["import_kw"][0]
        assert abs(curve.import_at(0, p) - got) <= bound + 1e-3, p


def test_bands_walked_on_a_branch_that_fresh_clearings_leave_are_redrawn_by_fresh_clearings(tmp_path, monkeypatch):
    # bench_hidden_physics --quick --cases 10 --seed 900, case ieee33-s908: walked from fixed point to fixed
    # point, the curve bought bid b8 part-way from -42.15 to -41.54 per MWh (4,978 to 4,865 kW) where `clear`
    # leaves that branch near -42.4 (4,174 to 4,063 kW): 4,876.3 kW against `clear`'s 4,073.2 at -41.5947
    # (19.7 %, one step unresolved in an 808 kW bound). The floor and cap keep the walk that drew those bands.
    # Both are fixed points from about -42.1 to -41.8; successive LP alone reached either by its path, so `clear`
    # was not monotone (4,984 kW at -42.4, 4,174 at -42.2, 4,975 at -42.1 on one machine) and no curve could match
    # it. `clear` now keeps the better of the two (engine/branches.py: b8 bought below about -41.95, where its
    # welfare is higher), and the curve's fresh clearings and re-clears choose alike (tests/test_branches.py).
    from dsomarket.engine.bids import MarketRules
    from dsomarket.engine.interface import trace_curve

    rules = MarketRules(price_floor=-45.0, price_cap=300.0)
    f, book = _generated_case("ieee33", 908, tmp_path, monkeypatch)
    curve = trace_curve(f, book, rules)
    check = curve.ac_check
    assert check["unresolved_steps"] == 0 and check["max_error_pct"] <= 0.5
    for p in (-42.5, -42.2, -42.0, -41.8, -41.5947):
        res = clear(f, book, p, rules=rules)
        got = res.ac_check["import_kw"][0]
        assert abs(curve.import_at(0, p) - got) <= min(check["max_error_kw"] + 1e-6, 5e-3 * abs(got)), p
        assert res.convergence["branches"] >= 2, p   # both branches' fixed points compared (4: a second candidate beside b8)


def test_a_redrawing_coarser_than_the_walk_keeps_the_walked_bands(tmp_path, monkeypatch):
    # bench_hidden_physics --quick --cases 10 --seed 1100, case synth200-s1104: redrawn by fresh clearings (its
    # repair budget spent on a steep stretch), the curve was 17.7 kW (3.8 %) off `clear` at 147.828 and 147.8555
    # with an 82.6 kW bound, where the walked bands it replaced were 0.07 kW off and the step's own bound smaller.
    from dsomarket.engine.bids import MarketRules
    from dsomarket.engine.interface import trace_curve

    rules = MarketRules(price_floor=100.0, price_cap=200.0)
    f, book = _generated_case("synth200", 1104, tmp_path, monkeypatch)
    curve = trace_curve(f, book, rules)
    for p in (147.828, 147.8555):
        got = clear(f, book, p, rules=rules).ac_check["import_kw"][0]
        assert abs(curve.import_at(0, p) - got) <= min(curve.ac_check["max_error_kw"] + 1e-6, 1.0), p
    assert curve.ac_check["max_error_kw"] < 20.0


def test_a_steep_stretch_through_a_zero_import_is_drawn_from_fresh_clearings_within_the_budget(tmp_path, monkeypatch):
    # bench_hidden_physics --quick --cases 10 --seed 1500, case synth100-s1502, here between 200 and 230. Sell b11
    # clears part-way from 219.64 to 221.16 per MWh and, from 220.58 to 220.67, buy b30 at bus 1 (next to the root,
    # hardly any losses of its own) too: 6,900 kW per MWh through a zero import. Clearings started near their
    # neighbours stop up to 3 kW apart from `clear`'s smooth import there (anywhere within losses.MARGINAL_TOL of
    # stationarity), so no chord held; held to 0.1 kW near zero (not the 5 % of the size the curve states its
    # error against), bisected to an ISO price's width, each pair was then taken for a jump that fresh clearings
    # did not confirm: the 120 clearings were spent, 46 steps left unresolved (a 21 % bound), and the curve was
    # 1.1 % off `clear` at 208.5 (on the whole curve, 0.98 % at 115.5547). The points of a steep stretch being
    # sampled are now fresh clearings, and two of them an ISO price's width apart are sampled on.
    from dsomarket.engine.bids import MarketRules
    from dsomarket.engine.interface import trace_curve
    from dsomarket.engine.losses import CURVE_MAX_CLEARINGS, CURVE_SIZE_SHARE, CURVE_TOL

    rules = MarketRules(price_floor=200.0, price_cap=230.0)
    f, book = _generated_case("synth100", 1502, tmp_path, monkeypatch)
    curve = trace_curve(f, book, rules)
    check = curve.ac_check
    assert check["clearings"] < CURVE_MAX_CLEARINGS          # the budget is not spent (97 of 120)
    small = CURVE_SIZE_SHARE * float(curve.bands["import_kw"].abs().max())
    for p in (208.5, 219.9, 220.5775, 220.62, 220.6455, 220.6655, 220.67, 221.0):
        got = clear(f, book, p, rules=rules).ac_check["import_kw"][0]
        gap = abs(curve.import_at(0, p) - got)
        assert gap <= check["max_error_kw"] + 1e-6, (p, curve.import_at(0, p), got)
        assert gap <= CURVE_TOL * max(abs(got), small), (p, curve.import_at(0, p), got)


def test_the_lossless_clearing_is_the_textbook_lp_s_on_a_voltage_floor_with_a_large_dual(tmp_path, monkeypatch):
    # bench_hidden_physics --cases 6 --seed 5100, case synth200-s5104 at -53.99: line 135 on its polygon and three
    # buses on their voltage floor. At Clarabel's default tolerances the textbook LP left that floor by ~1e-6 pu^2,
    # which moved the marginal bid: DLMPs 10.1 per MWh off at 194 buses. At tests/reference.py's tolerances it is
    # HiGHS's vertex; the engine's optimum was right (HiGHS cold and from the slack basis agree).
    from dsomarket.clients.files import read_table
    from tests.reference import solve_reference

    f, book = _generated_case("synth200", 5104, tmp_path, monkeypatch)
    bids = read_table(str(tmp_path / "synth200-s5104" / "bids.csv"), "bids")
    for price in (-53.99, -50.0):
        res = clear(f, book, price, options=ClearingOptions(formulation="lindistflow"))
        ref = solve_reference(f, bids, price)
        worst = max(abs(d - ref.dlmp[b]) for b, d in zip(res.prices["bus"], res.prices["dlmp"]))
        assert worst <= 0.01, (price, worst)
        assert abs(res.interface_import_kw[0] - ref.import_kw) <= 1e-3, price
        assert abs(res.welfare - ref.welfare) <= 1e-5 * abs(ref.welfare), price


def test_the_default_clearing_is_the_ac_opf_s_where_pips_converges_only_short_of_the_tightest_tolerances(
        tmp_path, monkeypatch):
    # bench_hidden_physics --quick --cases 10 --seed 6100, case synth200-s6109 at 205.27: PIPS does not converge at
    # 1e-10, and at pandapower's default tolerances it stopped with buy b15 (205.16 per MWh at bus 186) bought
    # 2.34 kW where its own DLMP there was 205.169, above the bid's price, at a cost 4.2e-5 above the engine's:
    # 2.34 kW "off" the AC OPF. The engine leaves b15 out (its DLMP 205.1637); at 1e-9 PIPS does the same.
    pytest.importorskip("pandapower")
    from dsomarket.clients.files import read_table
    from tests.acopf import ac_opf_tightest

    f, book = _generated_case("synth200", 6109, tmp_path, monkeypatch)
    bids = read_table(str(tmp_path / "synth200-s6109" / "bids.csv"), "bids")
    res = clear(f, book, 205.27)
    assert res.ok and res.convergence["converged"] and res.ac_check["ok"]
    ref, rung = ac_opf_tightest(f, bids, 205.27)
    assert ref.converged and rung < 2, rung
    cleared = dict(zip(res.dispatch["bid_id"], res.dispatch["cleared_kw"]))
    assert max(abs(kw - ref.cleared_kw[b]) for b, kw in cleared.items()) <= 1.0
    assert max(abs(d - ref.dlmp[b]) for b, d in zip(res.prices["bus"], res.prices["dlmp"])) <= 0.01
    assert -res.welfare == pytest.approx(ref.cost, rel=1e-6)


def test_a_clearing_stopped_on_a_flat_optimum_is_polished_to_a_stationary_point(tmp_path, monkeypatch):
    # bench_hidden_physics --cases 6 --seed 9100, case ieee33-s9100: at three ISO prices the iteration stopped after
    # MAX_ITERATIONS with the AC residual and the last step in tolerance but bids pressed on a trust region shrunk
    # to next to nothing (exit 3): at 193.7 buy b24 and sell b31 crept along a flat valley of the losses, at 194.5
    # their region had halved on the AC merit's noise, and at -28.2826 sell b28 sat 8 W below its quantity at line
    # 8's rating, its reduced cost -3.94 on one side and +6.79 on the other (benchmarks/README.md, flat12, flat14).
    # Each must converge, hold on the AC power flow of its dispatch and price every bid consistently with its DLMP.
    from tests.test_clearing import assert_prices_consistent

    f, book = _generated_case("ieee33", 9100, tmp_path, monkeypatch)
    for price in (-28.2826, 193.7, 194.5):
        res = clear(f, book, price)
        assert res.ok, res.diagnosis
        assert res.convergence["converged"], (price, res.convergence)
        assert res.ac_check["ok"] and not res.ac_check["violations"]
        assert abs(res.ac_check["import_kw"][0] - res.interface["import_kw"][0]) < 0.01
        assert_prices_consistent(res)


def test_a_polish_in_regions_of_its_own_within_the_step_tolerance_reaches_the_ac_opf():
    # tests/test_cli_market.py's book (ieee33, 40 bids at unity power factor, floor -100, cap 400) at 155.7407, a
    # clearing of its curve: after MAX_ITERATIONS the residual and the last step were in tolerance but two bids sat
    # on regions of 4e-5 kW with reduced costs of 0.004 and 0.028 per MWh (exit 3). In the regions the iteration
    # left, the polish's Newton point made them stationary, but two all but indifferent bids (reduced costs within
    # MARGINAL_TOL) had been left 0.057 and 0.079 kW and crossed them each way every solve, over the step
    # tolerance: not converged. In the polish's own regions (POLISH_REGION_KW) it converges, to the AC OPF's optimum.
    import types

    pytest.importorskip("pandapower")
    from dsomarket.engine.bids import MarketRules
    from dsomarket.engine.feeders import ieee33
    from tests.acopf import ac_opf_tightest
    from tests.test_clearing import assert_prices_consistent

    f, rules = ieee33(), MarketRules(price_floor=-100.0, price_cap=400.0)
    bids = random_bids(f, 40, 17, lo=-80, hi=380).with_columns(resource_id=pl.lit(""))
    res = clear(f, validate_bids(bids, f, rules), 155.7407, rules=rules)
    assert res.ok and res.convergence["converged"], res.convergence
    assert res.ac_check["ok"] and not res.ac_check["violations"]
    assert_prices_consistent(res)
    # The reference needs every line rated: the unrated ones at a rating no flow comes near.
    rated = f.lines.with_columns(pl.when(pl.col("s_max_kva").is_finite()).then(pl.col("s_max_kva"))
                                 .otherwise(1e5).alias("s_max_kva"))
    ref, rung = ac_opf_tightest(types.SimpleNamespace(buses=f.buses, lines=rated, root_bus=f.root_bus,
                                                      v0_pu=f.v0_pu, base_kv=f.base_kv), bids, 155.7407)
    assert ref.converged and rung < 2, rung
    cleared = dict(zip(res.dispatch["bid_id"], res.dispatch["cleared_kw"]))
    assert max(abs(kw - ref.cleared_kw[b]) for b, kw in cleared.items()) <= 0.1
    assert max(abs(d - ref.dlmp[b]) for b, d in zip(res.prices["bus"], res.prices["dlmp"])) <= 0.001
    assert -res.welfare == pytest.approx(ref.cost, rel=1e-7)


def test_a_polish_that_does_not_converge_leaves_the_clearing_and_the_next_warm_ones_as_they_were(monkeypatch):
    # The polish past MAX_ITERATIONS (engine.successive._polish) runs on a copy of the solver's HiGHS model and,
    # where it does not converge, rolls the parts' linearisations and the solver back: the result and every warm
    # solve after it are those of the iteration without it, to the bit (tests/test_cli_market.py's curve
    # warm-starts its later clearings from unconverged ones; a worse state left behind moved them by up to 47 kW).
    # On that test's book at 156.48 the iteration capped at 40 solves stops unconverged and the polish converges
    # (uncapped it converges in 61 of MAX_ITERATIONS's 80, no polish, since the bids the basis moves with a pin are
    # linearised where it moves them); here the AC power flows the polish runs after its first solve are reported
    # unconverged, so it stops there and rolls back.
    import dataclasses

    from dsomarket.engine import losses, successive
    from dsomarket.engine.bids import MarketRules
    from dsomarket.engine.clearing import NodalMarket
    from dsomarket.engine.feeders import ieee33

    f, rules = ieee33(), MarketRules(price_floor=-100.0, price_cap=400.0)
    book = validate_bids(random_bids(f, 40, 17, lo=-80, hi=380).with_columns(resource_id=pl.lit("")), f, rules)
    monkeypatch.setattr(losses, "MAX_ITERATIONS", 40)
    polish, polished = successive._polish, []

    def counted(*args):
        real = successive.points

        def unconverged(*a):
            return [dataclasses.replace(p, converged=False) for p in real(*a)]

        monkeypatch.setattr(successive, "points", unconverged)
        try:
            out = polish(*args)
        finally:
            monkeypatch.setattr(successive, "points", real)
        polished.append(out is not None)
        return out

    def clearings():
        m = NodalMarket(f, book, 156.48, rules)
        out = []
        for price in (156.48, 150.0, 170.0):      # the later ones warm, from where the one before left the market
            m.set_iso_price(price)
            sol = m.converge()
            out.append((sol, m.convergence, m.result(sol)))
        return out

    monkeypatch.setattr(successive, "_polish", counted)
    polishing = clearings()
    assert polished == [False] and not polishing[0][1]["converged"]
    monkeypatch.setattr(successive, "_polish", lambda *args: None)   # no polish at all
    for (a, conv_a, res_a), (b, conv_b, res_b) in zip(polishing, clearings()):
        assert conv_a == conv_b
        for va, vb in ((a.x, b.x), (a.row_dual, b.row_dual), (a.col_dual, b.col_dual)):
            assert np.array_equal(va, vb)
        assert res_a.dispatch.equals(res_b.dispatch) and res_a.prices.equals(res_b.prices)


def test_a_trust_region_taking_over_after_a_released_bracket_leaps_starts_where_the_bids_had_settled(
        tmp_path, monkeypatch):
    # bench_hidden_physics --quick --cases 10 --seed 7900, case ieee33-s7908 at 138.589 (a curve check's price):
    # line 9 on its rating, buy b22 and sell b21 trading along it, b9 and b21 bracketed and settling (the last
    # bracketed solve moved 0.06 kW). On the last bracketed solve both brackets closed on reduced costs still
    # open and were released; the free solve leapt 120 kW to a vertex, the trust region took over around the leap
    # and, its steps held to ~1 kW by the rating's curvature, crept back for the 60 solves left: not converged
    # (exit 3). It starts around the settled dispatch, where the AC merit is better, and converges.
    from dsomarket.engine.losses import MAX_ITERATIONS, STEP_TOL_KW
    from tests.test_clearing import assert_prices_consistent

    f, book = _generated_case("ieee33", 7908, tmp_path, monkeypatch)
    res = clear(f, book, 138.589)
    assert res.ok, res.diagnosis
    assert res.convergence["converged"], res.convergence
    assert res.convergence["iterations"] < MAX_ITERATIONS and res.convergence["last_step_kw"] <= STEP_TOL_KW
    assert res.ac_check["ok"] and not res.ac_check["violations"]
    assert res.ac_check["max_loading_line"] == "9"
    assert abs(res.ac_check["import_kw"][0] - res.interface["import_kw"][0]) < 0.01
    assert_prices_consistent(res)


def test_a_chord_through_three_clearings_is_drawn_only_where_it_meets_the_area_their_costs_imply(
        tmp_path, monkeypatch):
    # bench_hidden_physics --cases 6 --seed 9100, case ieee33-s9100: from 193.6 to 194.6 per MWh `clear` steps
    # 450 kW (from 1,802 kW at 194.0 to 1,356 at 194.1) with bids part-way either side. The curve's middle
    # clearing of a pair lay on the line through the pair's ends, so the line was drawn across the step: 1,466 kW
    # at 194.3705 where `clear` gives 1,313 (11.7 %), within a stated bound of 0.2 % (exit 0). The cost at a
    # clearing has the import as its slope, so the cost difference of two clearings is the area under the import
    # between them, which a chord across a step misses (by 52-58 kW on average on synth100-s8502 near 20 per MWh).
    from dsomarket.engine.bids import MarketRules
    from dsomarket.engine.interface import trace_curve
    from dsomarket.engine.losses import CURVE_SIZE_SHARE, CURVE_TOL

    f, book = _generated_case("ieee33", 9100, tmp_path, monkeypatch)
    rules = MarketRules()
    curve = trace_curve(f, book, rules)
    small = CURVE_SIZE_SHARE * float(curve.bands["import_kw"].abs().max())
    for p in (193.9, 194.0, 194.2, 194.3705, 194.6):
        got = clear(f, book, p, rules=rules).ac_check["import_kw"][0]
        gap = abs(curve.import_at(0, p) - got)
        assert gap <= CURVE_TOL * max(abs(got), small), (p, curve.import_at(0, p), got)
        assert gap <= curve.ac_check["max_error_kw"] + 1e-6, (p, curve.import_at(0, p), got)



def test_a_curve_brackets_where_two_fixed_points_costs_cross_before_bisecting_the_switch(tmp_path, monkeypatch):
    # bench_hidden_physics --quick --cases 10 --seed 7300, case synth200-s7309: where a bid both clears and not as
    # fixed points over a range of prices, `clear` settles on the cheaper, so it switches where the two fixed points'
    # costs (linear in the price, slopes their imports) cross. Bisected from 0.10-0.32 per MWh wide, five such
    # steps took 7-9 clearings each, 40 of the curve's 120 (its bound 1.55 %, 35 steps unresolved). Bracketed at
    # the crossing, each takes two, and fresh clearings either side of the step it draws take each side's import.
    from dsomarket.engine import losscurve
    from dsomarket.engine.bids import MarketRules
    from dsomarket.engine.interface import trace_curve

    switches = []
    bisect = losscurve._FixedPoints.switch

    def counted(self, a, b, lo, hi, max_clearings):
        before = self.clearings
        located = bisect(self, a, b, lo, hi, max_clearings)
        switches.append((a.q, b.q, located, self.clearings - before))
        return located

    monkeypatch.setattr(losscurve._FixedPoints, "switch", counted)
    rules = MarketRules()
    f, book = _generated_case("synth200", 7309, tmp_path, monkeypatch)
    curve = trace_curve(f, book, rules)
    assert len(switches) >= 5
    assert all(spent <= 2 for *_, spent in switches), switches
    q_a, q_b, (lo, hi), _ = next(s for s in switches if s[2][0] < -55.1 < s[2][1] + 0.05)   # near -55.14
    assert hi - lo <= 1e-3
    for p, q in ((lo - 1e-4, q_a), (hi + 1e-4, q_b)):
        got = clear(f, book, p, rules=rules).ac_check["import_kw"][0]
        assert abs(got - q * 1000.0) <= 0.002 * abs(got), (p, got, q)
        assert abs(curve.import_at(0, p) - got) <= curve.ac_check["max_error_kw"] + 1e-6, p


def test_an_award_of_a_quantity_alone_is_delivered_by_the_converged_dispatch_not_a_re_solve_of_it(
        tmp_path, monkeypatch):
    # bench_hidden_physics --cases 12 --seed 15000, case ieee33-s15003 awarded -276.694 kW with no price: the
    # award converged (a trust region held the bids at the end), then the ISO price was set to the interface
    # DLMP and the LP re-solved with the bids free, which moved them off the fixed point: pandapower drew
    # -274.153 kW for the dispatch (0.92 % short of the award, over the 0.5 % issue 9 allows) while the result
    # said converged with no residual. The converged dispatch itself must be the one instructed.
    from tests.test_clearing import assert_prices_consistent
    from tests.test_coupled_changes import _pandapower_import

    f, book = _generated_case("ieee33", 15003, tmp_path, monkeypatch)
    dis = disaggregate(f, book, pl.DataFrame({"import_kw": [-276.694]}))
    res = dis.clearing
    assert res.ok and res.convergence["converged"], res.convergence
    assert res.interface["import_kw"][0] == pytest.approx(-276.694, abs=1e-6)
    d = res.dispatch
    w = dict(f.buses.select("bus", "load_kw").iter_rows())
    wq = dict(f.buses.select("bus", "load_kvar").iter_rows())
    sign = np.where(d["side"].to_numpy() == "buy", 1.0, -1.0)
    for bus, kw, tan in zip(d["bus"], sign * d["cleared_kw"].to_numpy(), d["tan_phi"].to_numpy()):
        w[bus] += kw
        wq[bus] += kw * tan
    assert _pandapower_import(f, w, wq) == pytest.approx(-276.694, abs=0.01)
    assert abs(res.ac_check["import_kw"][0] + 276.694) < 0.01
    # Priced at the interface DLMP (the award names no price), every bid consistent with its bus DLMP.
    root = res.prices.filter(pl.col("bus") == f.root_bus)["dlmp"][0]
    assert dis.award["price"][0] == pytest.approx(root)
    assert_prices_consistent(res)


def test_a_polish_moves_the_basic_bids_with_the_pressed_ones_and_halves_a_newton_step_that_overshoots(
        tmp_path, monkeypatch):
    # bench_hidden_physics --quick --cases 8 --seed 13300, case ieee33-s13305 at 58.6443 (a curve check's price):
    # line 25 on its rating, bid 7 pressed on the trust region, bids 20 and 27 part-way and basic. The polish's
    # first Newton step moved bid 7 alone, and the regions held the others where they were: with the rating
    # binding, infeasible (exit 3 after 80 solves). Moved as the basis moves them, the steps were feasible but
    # overshot (bid 27's reduced cost changed sign and grew each step: the thermal polygon turns with the point,
    # a curvature the Newton model leaves out); halved where they do not reduce it, the polish converges.
    f, book = _generated_case("ieee33", 13305, tmp_path, monkeypatch)
    _assert_converged_on_rating(clear(f, book, 58.6443), "25")


def test_the_textbook_reference_steps_back_from_tolerances_clarabel_cannot_reach(tmp_path, monkeypatch):
    # bench_hidden_physics --cases 12 --seed 18000, case synth100-s18009 at 24.93: Clarabel at 1e-12 ended
    # optimal_inaccurate, so the lossless clearing had no reference to be checked against; at 1e-11 it is
    # optimal. The reference must be optimal there and agree with the lossless clearing.
    from dsomarket.engine.bids import MarketRules
    from tests.reference import solve_reference

    f, book = _generated_case("synth100", 18009, tmp_path, monkeypatch)
    ref = solve_reference(f, book.table, 24.93)
    assert ref.status == "optimal"
    res = clear(f, book, 24.93, rules=MarketRules(), options=ClearingOptions(formulation="lindistflow"))
    assert ref.import_kw == pytest.approx(res.interface["import_kw"][0], abs=1e-4)
    dlmp = dict(zip(res.prices["bus"], res.prices["dlmp"]))
    assert max(abs(ref.dlmp[b] - dlmp[b]) for b in dlmp) < 1e-4


@pytest.mark.parametrize("kind, seed, prices", [("synth100", 8502, (0.47, 15.19, 43.79)), ("synth200", 7309, (10.79,))])
def test_a_curve_past_its_clearing_budget_resolves_what_its_stated_bound_needs(kind, seed, prices, tmp_path,
                                                                              monkeypatch):
    # bench_hidden_physics --quick --cases 10 --seed 8500 / 7300 --only curve. At losses.CURVE_MAX_CLEARINGS (120)
    # synth100-s8502 left three pairs 55-62 kW wide at 4,400-4,650 kW unreached (bound 0.68 %, the curve 0.65 % off
    # `clear` at these prices) and synth200-s7309 a 112 kW step (bound 1.02 %, 0.32 % off at 10.79). Past the budget
    # the pairs that would put the bound past 0.5 % are resolved; on s8502 the steps of a cluster near 15.2435
    # per MWh, 39,000 kW per MWh where `clear`'s own import jumps 42 kW between prices 1e-4 apart, are located
    # as well as `clear` places them (counted in steep_steps) instead of two failed redrawings counting 54 and 26 kW.
    from dsomarket.engine.bids import MarketRules
    from dsomarket.engine.interface import trace_curve
    from dsomarket.engine.losses import CURVE_MAX_CLEARINGS, CURVE_SIZE_SHARE, CURVE_TOL

    rules = MarketRules()
    f, book = _generated_case(kind, seed, tmp_path, monkeypatch)
    curve = trace_curve(f, book, rules)
    check = curve.ac_check
    assert check["max_error_pct"] <= CURVE_TOL * 100, check
    assert check["clearings"] > CURVE_MAX_CLEARINGS      # past the budget (250 and 185)
    small = CURVE_SIZE_SHARE * float(curve.bands["import_kw"].abs().max())
    for p in prices:
        got = clear(f, book, p, rules=rules).ac_check["import_kw"][0]
        gap = abs(curve.import_at(0, p) - got)
        assert gap <= check["max_error_kw"] + 1e-6, (p, curve.import_at(0, p), got)
        assert gap <= CURVE_TOL * max(abs(got), small), (p, curve.import_at(0, p), got)


def test_bids_moving_along_a_rating_in_the_trust_region_are_given_room_and_converge(tmp_path, monkeypatch):
    # bench_hidden_physics --cases 12 --seed 31000, case synth1000-s31006 at -96.0045 (a curve check's price): line
    # 96 on its rating. Past BRACKET_ITERATIONS the trust region's cap (half the step before it took over, 5 kW) held
    # a bid to 5 kW a solve, step after kept step the same way; and each 5 kW step of the bids moving along the
    # rating broke it in AC by 1.16e-6 MVA (the rating's curvature), so the region was shrunk fourfold again and
    # again: 80 solves, not converged (exit 3), 402 kW (0.86 %) off the curve. It must
    # converge, hold on the AC power flow of its dispatch and price every bid consistently with its bus DLMP, within
    # the stationarity tolerance it states (sell b190 is held by the region 1.5e-4 per MWh above its DLMP).
    from dsomarket.engine.losses import MARGINAL_TOL
    from tests.test_clearing import assert_prices_consistent

    f, book = _generated_case("synth1000", 31006, tmp_path, monkeypatch)
    res = clear(f, book, -96.0045)
    assert res.ok, res.diagnosis
    assert res.convergence["converged"], res.convergence
    assert res.ac_check["ok"] and not res.ac_check["violations"]
    assert abs(res.ac_check["import_kw"][0] - res.interface["import_kw"][0]) < 0.01
    assert_prices_consistent(res, abs_tol=MARGINAL_TOL)
