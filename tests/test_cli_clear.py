"""`dsomarket clear` end to end on files, and its one-line errors."""

from __future__ import annotations

import json

import polars as pl
import pytest

from dsomarket.clients.cli import main

BIDS = """bid_id,bus,side,quantity_kw,price,aggregator_id,resource_id
pv18,18,sell,400,20,agg1,pv18
pv33,33,sell,300,25,agg1,pv33
ev17,17,buy,200,80,agg2,ev17
dr30,30,sell,250,90,agg2,dr30
"""


def test_clear_writes_every_table_and_a_summary(tmp_path):
    (tmp_path / "bids.csv").write_text(BIDS)
    out = tmp_path / "out"
    rc = main(["clear", "--feeder", "ieee33", "--bids", str(tmp_path / "bids.csv"), "--iso-price", "50",
               "--out", str(out)])
    assert rc == 0
    dispatch = pl.read_csv(out / "dispatch.csv", schema_overrides={"bid_id": pl.Utf8, "bus": pl.Utf8})
    assert dispatch.columns[:3] == ["bid_id", "interval", "cleared_kw"]
    assert dict(zip(dispatch["bid_id"], dispatch["cleared_kw"])) == {
        "pv18": 400.0, "pv33": 300.0, "ev17": 200.0, "dr30": 0.0}
    prices = pl.read_csv(out / "prices.csv")
    assert prices.columns[:7] == ["bus", "interval", "dlmp", "energy", "congestion", "voltage", "loss"]
    assert prices.height == 33
    assert pl.read_csv(out / "lines.csv").columns[:5] == ["line", "interval", "p_kw", "q_kvar", "loading_pct"]
    assert pl.read_csv(out / "buses.csv").columns == ["bus", "interval", "v_pu"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "optimal"
    # Fixed load 3715 kW, plus the EV, minus the two PV offers cheaper than the ISO, plus the line
    # losses of that dispatch: the default clearing is loss-aware.
    assert summary["interface_import_kw"] == pytest.approx(3715 + 200 - 400 - 300 + summary["ac_check"]["losses_kw"],
                                                           abs=0.05)
    assert summary["ac_check"]["converged"] and summary["ac_check"]["losses_kw"] > 0
    for key in ("welfare", "solver", "solve_seconds"):
        assert key in summary


def test_clear_with_the_socp_formulation(tmp_path):
    (tmp_path / "bids.csv").write_text(BIDS)
    rc = main(["clear", "--feeder", "ieee33", "--bids", str(tmp_path / "bids.csv"), "--iso-price", "50",
               "--formulation", "socp", "--out", str(tmp_path / "o")])
    assert rc == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["formulation"] == "socp" and summary["status"] == "optimal"
    assert summary["relaxation_gap"] < 1e-4


@pytest.mark.parametrize("row,field", [
    ("bad,18,sell,-5,20,a,r", "quantity_kw"),
    ("bad,99,sell,5,20,a,r", "bus"),
    ("pv18,18,sell,5,20,a,r", "bid_id"),
])
def test_bad_bids_exit_2_with_one_line_naming_the_field(tmp_path, capsys, row, field):
    (tmp_path / "bids.csv").write_text(BIDS + row + "\n")
    rc = main(["clear", "--feeder", "ieee33", "--bids", str(tmp_path / "bids.csv"), "--iso-price", "50",
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    # The bad row is line 6 of the file: the header is row 1, as in a spreadsheet.
    assert f"field {field}" in err[0] and "row 6 (the header is row 1)" in err[0]
    assert not (tmp_path / "o").exists()


def test_an_infeasible_market_exits_1_and_names_the_limit(tmp_path, capsys):
    feeder = tmp_path / "f"
    assert main(["feeder", "export", "ieee33", str(feeder)]) == 0
    buses = pl.read_csv(feeder / "buses.csv").with_columns(vmin_pu=pl.lit(0.95))
    buses.write_csv(feeder / "buses.csv")
    (tmp_path / "bids.csv").write_text(BIDS)
    rc = main(["clear", "--feeder", str(feeder), "--bids", str(tmp_path / "bids.csv"), "--iso-price", "50",
               "--out", str(tmp_path / "o")])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "market infeasible: bus_v_min at" in err[0]
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["status"] == "infeasible" and summary["diagnosis"]
