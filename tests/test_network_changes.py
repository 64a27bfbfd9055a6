"""Network changes as versioned data: runs of one network state, each cleared on its own feeder.

The reference for every changed interval is an independent one: the same market cleared on a feeder
built by hand as the change describes it (buses and lines removed or added, limits edited in the tables).
"""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsomarket.engine.bids import Battery, MarketRules, validate_bids
from dsomarket.engine.clearing import ClearingOptions, clear
from dsomarket.engine.errors import InputError
from dsomarket.engine.feeders import ieee33
from dsomarket.engine.interface import trace_curve
from dsomarket.engine.network_changes import network_runs, validate_changes
from dsomarket.engine.runs import clear_runs, combine_clearings, disaggregate_runs, runs_for, trace_runs

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)
IVS = [T0 + timedelta(hours=h) for h in range(4)]
RULES = MarketRules(price_floor=-100, price_cap=400)
LOSSLESS = ClearingOptions(formulation="lossless")
"""For the checks that shed load leaves the import by exactly its kW: the lossless balance."""


def tied_feeder():
    """ieee33 with its 18-33 tie switch (open, rated 100 kVA)."""
    f = ieee33()
    tie = pl.DataFrame({"line": ["tie18-33"], "from_bus": ["18"], "to_bus": ["33"], "r_ohm": [0.5],
                        "x_ohm": [0.5], "s_max_kva": [100.0], "in_service": [False]})
    return f.with_changes(lines=pl.concat([f.lines, tie]))


def market_bids():
    rows = []
    for t, iv in enumerate(IVS):
        for bus, side, q, p in (("18", "sell", 300.0, 20.0), ("33", "sell", 250.0, 30.0), ("30", "buy", 200.0, 120.0),
                                ("13", "sell", 150.0, 60.0), ("25", "buy", 150.0, 90.0), ("8", "sell", 200.0, 10.0)):
            rows.append({"bid_id": f"{bus}{side}-{t}", "bus": bus, "side": side, "quantity_kw": q, "price": p,
                         "interval": iv, "aggregator_id": "agg", "resource_id": f"r{bus}"})
    return pl.DataFrame(rows)


def changes(*rows) -> pl.DataFrame:
    base = {"element": "", "end": None, "shed": False, "s_max_kva": None, "vmin_pu": None, "vmax_pu": None,
            "import_max_kw": None, "export_max_kw": None, "who": "operator", "why": "test"}
    return pl.DataFrame([base | r for r in rows], schema_overrides={"end": pl.Datetime("us", "UTC"),
                                                                     "start": pl.Datetime("us", "UTC")})


def reference(feeder, bids, t: int, price: float = 50.0, options: ClearingOptions = ClearingOptions()):
    """Clear interval t alone on ``feeder``."""
    one = bids.filter(pl.col("interval") == IVS[t]).filter(pl.col("bus").is_in(feeder.buses["bus"].to_list()))
    return clear(feeder, validate_bids(one, feeder, RULES, [IVS[t]]), price, rules=RULES, options=options)


def switched_market():
    """The tied feeder, the bids, and the runs of line 17's outage with the tie closed from the third hour."""
    f = tied_feeder()
    bids = market_bids()
    book = validate_bids(bids, f, RULES)
    ch = validate_changes(changes({"change_id": "fault", "kind": "outage", "element": "17", "start": IVS[2]},
                                  {"change_id": "restore", "kind": "close", "element": "tie18-33",
                                   "start": IVS[2]}), f)
    return f, bids, book, runs_for(f, ch, book)


def at(df: pl.DataFrame, t: int) -> pl.DataFrame:
    return df.filter(pl.col("interval") == IVS[t]).drop("interval")


def test_an_outage_with_switching_changes_prices_from_its_interval_on_and_never_flows_on_the_open_line():
    f, bids, book, runs = switched_market()
    assert [r.indices for r in runs] == [(0, 1), (2, 3)]
    res = clear_runs(runs, book, 50.0, rules=RULES)
    assert res.ok
    for t in (2, 3):
        assert at(res.lines, t).filter(pl.col("line") == "17").height == 0
        assert at(res.lines, t).filter(pl.col("line") == "tie18-33").height == 1
    for t in (0, 1):
        assert at(res.lines, t).filter(pl.col("line") == "tie18-33").height == 0
    # Independent reference: the switched feeder written out by hand.
    switched = f.with_changes(lines=f.lines.with_columns(
        pl.when(pl.col("line") == "17").then(False).when(pl.col("line") == "tie18-33").then(True)
        .otherwise(pl.col("in_service")).alias("in_service")))
    for t in range(4):
        ref = reference(f if t < 2 else switched, bids, t)
        assert ref.ok
        mine = at(res.prices, t).sort("bus")
        np.testing.assert_allclose(mine["dlmp"].to_numpy(), at(ref.prices, t).sort("bus")["dlmp"].to_numpy(),
                                   atol=1e-6)
        np.testing.assert_allclose(at(res.dispatch, t).sort("bid_id")["cleared_kw"].to_numpy(),
                                   at(ref.dispatch, t).sort("bid_id")["cleared_kw"].to_numpy(), atol=1e-6)
    # The change moves prices: bus 18 is now fed through the far end of the feeder.
    assert not np.allclose(at(res.prices, 1).sort("bus")["dlmp"].to_numpy(),
                           at(res.prices, 2).sort("bus")["dlmp"].to_numpy())


def test_an_outage_that_islands_load_is_refused_unless_the_load_is_declared_shed():
    f = tied_feeder()
    book = validate_bids(market_bids(), f, RULES)
    out = {"change_id": "fault", "kind": "outage", "element": "16", "start": IVS[1], "end": IVS[3]}
    with pytest.raises(InputError, match="'17' and its load without supply") as err:
        runs_for(f, validate_changes(changes(out), f), book)
    assert err.value.field == "shed"
    runs = runs_for(f, validate_changes(changes(out | {"shed": True}), f), book)
    assert [r.indices for r in runs] == [(0, 3), (1, 2)]
    assert runs[1].de_energised == ("17", "18")
    res = clear_runs(runs, book, 50.0, rules=RULES, options=LOSSLESS)
    assert res.ok
    for t in (1, 2):
        assert set(at(res.prices, t)["bus"]) & {"17", "18"} == set()
        assert at(res.dispatch, t).filter(pl.col("bus") == "18").height == 0
        islanded = f.with_changes(buses=f.buses.filter(~pl.col("bus").is_in(["17", "18"])),
                                  lines=f.lines.filter(~pl.col("line").is_in(["16", "17", "tie18-33"])))
        ref = reference(islanded, market_bids(), t, options=LOSSLESS)
        assert at(res.interface, t)["import_kw"][0] == pytest.approx(ref.interface["import_kw"][0], abs=1e-6)
    # The shed load is the load of the islanded buses: the import drops by it (prices unchanged at 50).
    base = reference(f, market_bids(), 0, options=LOSSLESS)
    drop = base.interface["import_kw"][0] - at(res.interface, 1)["import_kw"][0]
    lost = f.buses.filter(pl.col("bus").is_in(["17", "18"]))["load_kw"].sum()
    sold18 = at(base.dispatch, 0).filter(pl.col("bus") == "18")["cleared_kw"].sum()
    assert drop == pytest.approx(lost - sold18, abs=1e-6)


def test_a_change_that_closes_a_loop_is_refused_naming_it():
    f = tied_feeder()
    book = validate_bids(market_bids(), f, RULES)
    with pytest.raises(InputError, match="'restore' closes a loop"):
        runs_for(f, validate_changes(changes({"change_id": "restore", "kind": "close", "element": "tie18-33",
                                              "start": IVS[2]}), f), book)


def test_a_derate_congests_its_line_only_in_its_intervals_and_a_later_version_overrides_it():
    f = tied_feeder()
    bids = market_bids()
    book = validate_bids(bids, f, RULES)
    ch = validate_changes(changes(
        {"change_id": "hot", "kind": "rating", "element": "2", "start": IVS[1], "end": IVS[3], "s_max_kva": 3450.0},
        {"change_id": "hotter", "kind": "rating", "element": "2", "start": IVS[2], "end": IVS[3],
         "s_max_kva": 3350.0}), f)
    runs = runs_for(f, ch, book)
    res = clear_runs(runs, book, 50.0, rules=RULES)
    assert res.ok
    rating = {0: math.inf, 1: 3450.0, 2: 3350.0, 3: math.inf}
    for t in range(4):
        line2 = at(res.lines, t).filter(pl.col("line") == "2")
        assert math.hypot(line2["p_kw"][0], line2["q_kvar"][0]) <= rating[t] + 1e-6
        derated = f.with_changes(lines=f.lines.with_columns(
            pl.when(pl.col("line") == "2").then(rating[t]).otherwise(pl.col("s_max_kva")).alias("s_max_kva")))
        ref = reference(derated, bids, t)
        np.testing.assert_allclose(at(res.prices, t).sort("bus")["dlmp"].to_numpy(),
                                   at(ref.prices, t).sort("bus")["dlmp"].to_numpy(), atol=1e-6)
    assert at(res.prices, 2).filter(pl.col("bus") == "30")["congestion"][0] != 0.0
    assert at(res.prices, 0).filter(pl.col("bus") == "30")["congestion"][0] == 0.0


def test_interface_and_voltage_limits_per_interval_bind_where_they_are_in_effect():
    f = tied_feeder()
    book = validate_bids(market_bids(), f, RULES)
    ch = validate_changes(changes(
        {"change_id": "cap", "kind": "interface", "start": IVS[3], "import_max_kw": 3000.0},
        {"change_id": "v", "kind": "voltage", "element": "18", "start": IVS[0], "end": IVS[1], "vmin_pu": 0.945}), f)
    res = clear_runs(runs_for(f, ch, book), book, 50.0, rules=RULES)
    assert res.ok
    assert at(res.interface, 3)["import_kw"][0] <= 3000.0 + 1e-6
    assert at(res.interface, 2)["import_kw"][0] > 3000.0
    assert at(res.buses, 0).filter(pl.col("bus") == "18")["v_pu"][0] >= 0.945 - 1e-9
    assert at(res.buses, 1).filter(pl.col("bus") == "18")["v_pu"][0] < 0.945


def test_curves_and_disaggregation_follow_the_runs():
    f, bids, book, runs = switched_market()
    curve = trace_runs(runs, book, RULES)
    switched = runs[1].feeder
    for t in range(4):
        one = bids.filter(pl.col("interval") == IVS[t])
        ref = trace_curve(f if t < 2 else switched, validate_bids(one, f, RULES, [IVS[t]]), RULES)
        assert at(curve.bands, t).equals(ref.bands.drop("interval"))
    award = pl.DataFrame({"interval": IVS, "import_kw": [curve.import_at(t, 60.0) for t in range(4)],
                          "price": [60.0] * 4})
    dis = disaggregate_runs(runs, book, award, RULES)
    assert dis.clearing.ok
    assert dis.balance_kw()["error_kw"].abs().max() < 1e-6
    assert dis.clearing.lines.filter((pl.col("line") == "17") & (pl.col("interval") >= IVS[2])).height == 0


def test_a_change_inside_a_storage_horizon_that_binds_nothing_clears_as_the_unchanged_market():
    f = tied_feeder()
    bids = market_bids().with_columns(resource_id=pl.when(pl.col("bus") == "8").then(pl.lit("bat"))
                                      .otherwise(pl.col("resource_id")))
    book = validate_bids(bids, f, RULES)
    bat = (Battery("bat", energy_kwh=1000, charge_kw=500, discharge_kw=500, soc_init_kwh=500),)
    ch = validate_changes(changes({"change_id": "hot", "kind": "rating", "element": "2", "start": IVS[2],
                                   "s_max_kva": 30000.0}), f)
    runs = runs_for(f, ch, book)
    assert len(runs) == 2   # one coupled model (engine.runs.CoupledMarket), no longer refused
    # Lossless: one LP against another to 1e-6 (the loss-aware iteration stops within its own tolerance).
    res = clear_runs(runs, book, 50.0, rules=RULES, resources=bat, options=LOSSLESS)
    plain = clear(f, book, 50.0, rules=RULES, resources=bat, options=LOSSLESS)
    assert res.ok and plain.ok
    assert res.welfare == pytest.approx(plain.welfare, abs=1e-6)
    for name in ("dispatch", "prices"):
        mine, ref = getattr(res, name), getattr(plain, name)
        col = "cleared_kw" if name == "dispatch" else "dlmp"
        np.testing.assert_allclose(mine[col].to_numpy(), ref[col].to_numpy(), atol=1e-6)


@pytest.mark.parametrize("row, field", [
    ({"kind": "trip"}, "kind"), ({"element": "99"}, "element"), ({"kind": "rating", "s_max_kva": 0.0}, "s_max_kva"),
    ({"end": IVS[0]}, "end"), ({"kind": "voltage", "element": "5"}, "vmin_pu"),
    ({"kind": "interface", "import_max_kw": -1.0}, "import_max_kw"),
])
def test_bad_changes_name_the_field(row, field):
    base = {"change_id": "c", "kind": "outage", "element": "5", "start": IVS[1]}
    with pytest.raises(InputError) as err:
        validate_changes(changes(base | row), tied_feeder())
    assert err.value.field == field and err.value.row == 0


@settings(max_examples=15, deadline=None)
@given(line=st.integers(2, 32), start=st.integers(0, 3))
def test_any_shed_outage_balances_and_carries_nothing_below_the_open_line(line, start):
    f = tied_feeder()
    book = validate_bids(market_bids(), f, RULES)
    ch = validate_changes(changes({"change_id": "x", "kind": "outage", "element": str(line), "start": IVS[start],
                                   "shed": True}), f)
    runs = network_runs(f, ch, IVS)
    res = clear_runs(runs_for(f, ch, book), book, 50.0, rules=RULES, options=LOSSLESS)
    assert res.ok
    dead = set(runs[-1].de_energised)
    assert str(line + 1) in dead
    for t in range(start, 4):
        assert not dead & set(at(res.buses, t)["bus"])
        # Lossless balance: import = served fixed load + bought - sold, over the energised buses only.
        load = f.buses.filter(~pl.col("bus").is_in(list(dead)))["load_kw"].sum()
        d = at(res.dispatch, t)
        net = (d.filter(pl.col("side") == "buy")["cleared_kw"].sum() - d.filter(pl.col("side") == "sell")["cleared_kw"].sum())
        assert at(res.interface, t)["import_kw"][0] == pytest.approx(load + net, abs=1e-5)


def tied_feeder_dir(tmp_path):
    """The tied feeder written as a feeder folder (feeder.json, buses.csv, lines.csv) for the CLI."""
    f = tied_feeder()
    fdir = tmp_path / "feeder"
    fdir.mkdir()
    (fdir / "feeder.json").write_text(json.dumps(f.header()))
    f.buses.write_csv(fdir / "buses.csv")
    f.lines.write_csv(fdir / "lines.csv")
    return fdir


def test_cli_clear_curve_and_disaggregate_take_network_changes(run, tmp_path):
    fdir = tied_feeder_dir(tmp_path)
    market_bids().write_csv(tmp_path / "bids.csv")
    changes({"change_id": "fault", "kind": "outage", "element": "17", "start": IVS[2], "who": "control room",
             "why": "cable fault"},
            {"change_id": "restore", "kind": "close", "element": "tie18-33", "start": IVS[2]}
            ).write_csv(tmp_path / "changes.csv")
    common = ["--formulation", "lossless", "--feeder", fdir, "--bids", tmp_path / "bids.csv", "--floor", -100, "--cap", 400,
              "--network-changes", tmp_path / "changes.csv"]
    code, _, err = run("clear", *common, "--iso-price", 50, "--out", tmp_path / "c")
    assert code == 0, err
    lines = pl.read_csv(tmp_path / "c" / "lines.csv", try_parse_dates=True, schema_overrides={"line": pl.Utf8})
    assert lines.filter((pl.col("line") == "17") & (pl.col("interval") >= IVS[2])).height == 0
    net = pl.read_csv(tmp_path / "c" / "network.csv")
    assert net["changes"].fill_null("").to_list() == ["", "", "fault restore", "fault restore"]
    code, _, err = run("curve", *common, "--out", tmp_path / "k")
    assert code == 0, err
    pl.DataFrame({"interval": IVS, "import_kw": [3000.0] * 4}).write_csv(tmp_path / "award.csv")
    code, _, err = run("disaggregate", *common, "--award", tmp_path / "award.csv", "--out", tmp_path / "d")
    assert code == 0, err
    # A change that islands load without declaring it shed: exit 2, one line naming the field.
    changes({"change_id": "fault", "kind": "outage", "element": "17", "start": IVS[2]}).write_csv(tmp_path / "bad.csv")
    code, _, err = run("clear", *common[:-1], tmp_path / "bad.csv", "--iso-price", 50, "--out", tmp_path / "x")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "field shed" in err
    assert not (tmp_path / "x").exists()


def test_a_horizon_of_runs_has_one_ac_check_of_every_interval_naming_where_each_worst_figure_is():
    """The AC check of a horizon cleared run by run covers every run's intervals: the interface import of each
    (its run's AC power flow, as a clearing of that interval alone gives it) and each worst figure with the element
    of the run it is worst in; a violation in a later run makes the whole check not ok."""
    f, bids, book, runs = switched_market()
    res = clear_runs(runs, book, 50.0, rules=RULES)
    assert res.ok and res.ac_check is not None
    switched = runs[1].feeder
    refs = [reference(f if t < 2 else switched, bids, t) for t in range(4)]
    np.testing.assert_allclose(res.ac_check["import_kw"], [r.ac_check["import_kw"][0] for r in refs], atol=1e-3)
    # Only the tie line (closed in the second run) is rated: the first run has no loading to report.
    loading = [-np.inf if r.ac_check["max_loading_pct"] is None else r.ac_check["max_loading_pct"] for r in refs]
    assert np.isinf(loading[:2]).all() and np.isfinite(loading[2:]).all()
    worst = refs[int(np.argmax(loading))].ac_check
    assert res.ac_check["max_loading_pct"] == pytest.approx(worst["max_loading_pct"], abs=1e-6)
    assert (res.ac_check["max_loading_line"], res.ac_check["max_loading_end"]) == \
        (worst["max_loading_line"], worst["max_loading_end"])
    low = refs[int(np.argmin([r.ac_check["min_v_pu"] for r in refs]))].ac_check
    assert (res.ac_check["min_v_pu"], res.ac_check["min_v_bus"]) == (pytest.approx(low["min_v_pu"], abs=1e-9),
                                                                      low["min_v_bus"])
    # A violation found in the second run only: the horizon's check is not ok and lists it.
    bad = {"limit": "bus_v_min", "element": "18", "interval": IVS[3].isoformat(), "value": 0.89, "bound": 0.9}
    second = [clear_runs((run,), book, 50.0, rules=RULES) for run in runs]
    second[1] = dataclasses.replace(second[1], ac_check=second[1].ac_check | {"violations": [bad], "ok": False})
    combined = combine_clearings(second, book.intervals)
    assert combined.ac_check["ok"] is False and combined.ac_check["violations"] == [bad]
    assert len(combined.ac_check["import_kw"]) == 4
