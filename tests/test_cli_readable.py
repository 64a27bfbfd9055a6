"""Readable results of the offline commands: a summary on stdout, rounded numbers, feeder order, kW,
shed.csv when load is shed, and the power flow's tables."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import polars as pl
import pytest

from dsomarket.clients.files import decimals, json_text, read_feeder
from dsomarket.engine.powerflow import ac_power_flow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DAY = ("--feeder", EXAMPLES / "ieee33_rated", "--bids", EXAMPLES / "ieee33_day_bids.csv")


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    """A day of hourly bids on the rated 33-bus feeder, cleared: (stdout, output folder)."""
    from dsomarket.clients.cli import main

    out = tmp_path_factory.mktemp("day") / "clear"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["clear", *map(str, DAY), "--iso-price", str(EXAMPLES / "ieee33_day_iso_price.csv"),
                     "--out", str(out)]) == 0
    return buf.getvalue(), out


def test_clear_prints_a_summary_naming_status_welfare_import_prices_limits_and_files(day):
    text, out = day
    heads = [line.split()[0] for line in text.splitlines() if line and not line.startswith(" ")]
    assert heads == ["dsomarket", "status", "welfare", "import", "DLMP", "congestion", "voltage", "AC", "wrote"]
    assert "optimal (lossaware, 24 intervals" in text
    assert "buyers' value - sellers' cost - the ISO energy bill" in text   # the sign explained
    summary = json.loads((out / "summary.json").read_text())
    assert f"{summary['welfare']:,.2f}" in text
    prices = pl.read_csv(out / "prices.csv", schema_overrides={"bus": pl.Utf8})
    low = prices.sort("dlmp", maintain_order=True).row(0, named=True)
    assert f"DLMP         {low['dlmp']:,.2f} per MWh at bus {low['bus']}" in text
    # The congested lines are those the engine loaded to the polygon's limit.
    assert "line 17" in text and "line 32" in text
    assert f"wrote        {out}/: dispatch.csv, prices.csv, lines.csv, buses.csv, summary.json" in text


def test_numbers_are_rounded_without_negative_zero_or_noise(day):
    _, out = day
    for name in ("dispatch.csv", "prices.csv", "lines.csv", "buses.csv"):
        text = (out / name).read_text()
        assert "-0.0," not in text and not re.search(r"-0\.0$", text, re.M), name
        assert not re.search(r"\de-\d", text), name   # no 1e-16 noise
        table = pl.read_csv(out / name, infer_schema_length=None)
        for col, dtype in table.schema.items():
            if dtype.is_float():
                places = decimals(col)
                values = table[col].drop_nulls().to_list()
                assert all(abs(v * 10 ** places - round(v * 10 ** places)) < 1e-6 for v in values), (name, col)
    summary = (out / "summary.json").read_text()
    assert "-0.0" not in summary and not re.search(r"\de-\d", summary)


def test_json_rounding_follows_the_key():
    data = json.loads(json_text({"losses_kw": 1.23456789, "min_v_pu": 0.912345678, "welfare": -1e-17,
                                 "dlmp": [-0.0, 12.3456789]}))
    assert data == {"losses_kw": 1.235, "min_v_pu": 0.912346, "welfare": 0.0, "dlmp": [0.0, 12.3457]}
    assert math.copysign(1.0, data["dlmp"][0]) == 1.0


def test_tables_list_buses_and_lines_in_feeder_order_within_each_interval(day):
    _, out = day
    for name, column in (("prices.csv", "bus"), ("buses.csv", "bus"), ("lines.csv", "line")):
        table = pl.read_csv(out / name)
        assert table.height == 24 * (33 if column == "bus" else 32)
        for _, grp in table.group_by("interval", maintain_order=True):
            assert grp[column].to_list() == sorted(grp[column].to_list()), name
        assert table["interval"].to_list() == sorted(table["interval"].to_list())


def test_shed_load_is_written_to_shed_csv_and_summarised(run, tmp_path):
    feeder = tmp_path / "f"
    assert run("feeder", "export", "ieee33", feeder)[0] == 0
    pl.read_csv(feeder / "buses.csv").with_columns(vmin_pu=pl.lit(0.95)).write_csv(feeder / "buses.csv")
    bids = EXAMPLES / "ieee33_bids.csv"
    code, out, err = run("clear", "--feeder", feeder, "--bids", bids, "--iso-price", 50, "--voll", 1000,
                         "--out", tmp_path / "o")
    assert code == 0, err
    shed = pl.read_csv(tmp_path / "o" / "shed.csv", schema_overrides={"bus": pl.Utf8})
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert shed.height > 0 and shed["shed_kw"].sum() == pytest.approx(summary["shed_kw"], abs=1e-3)
    assert "shed.csv" in out and "shed " in out
    # A run of the same folder that sheds nothing removes the stale shed.csv.
    code, _, err = run("clear", "--feeder", "ieee33", "--bids", bids, "--iso-price", 50, "--out", tmp_path / "o")
    assert code == 0, err
    assert not (tmp_path / "o" / "shed.csv").exists()


def test_the_iso_offer_is_in_kw_like_every_other_file(run, tmp_path):
    code, out, err = run("curve", *DAY, "--max-segments", 3, "--out", tmp_path / "c")
    assert code == 0, err
    offer = pl.read_csv(tmp_path / "c" / "iso_offer.csv")
    curve = pl.read_csv(tmp_path / "c" / "curve.csv")
    assert "quantity_kw" in offer.columns and "mw" not in offer.columns
    # At the cap the curve imports the fixed demand minus any fixed supply, in kW.
    first = curve["interval"][0]
    fixed = offer.filter((pl.col("interval") == first) & (pl.col("kind") == "fixed_demand"))["quantity_kw"].sum()
    at_cap = curve.filter(pl.col("interval") == first).sort("price_high")["import_kw"][-1]
    assert fixed == pytest.approx(max(at_cap, 0.0), abs=1e-3)
    assert out.splitlines()[1].startswith("status       traced:") and "iso_offer.csv (kW, per MWh)" in out


def test_powerflow_out_writes_voltages_and_line_loading(run, tmp_path):
    code, out, err = run("powerflow", "--feeder", EXAMPLES / "ieee33_rated", "--out", tmp_path / "pf")
    assert code == 0, err
    buses = pl.read_csv(tmp_path / "pf" / "buses.csv", schema_overrides={"bus": pl.Utf8})
    lines = pl.read_csv(tmp_path / "pf" / "lines.csv", schema_overrides={"line": pl.Utf8})
    r = ac_power_flow(read_feeder(EXAMPLES / "ieee33_rated"))
    assert buses["bus"].to_list() == [str(k) for k in range(1, 34)]
    assert dict(zip(buses["bus"], buses["v_pu"]))[r.min_v_bus] == pytest.approx(r.min_v_pu, abs=1e-6)
    rated = lines.filter(pl.col("loading_pct").is_not_null())
    assert sorted(rated["line"].to_list()) == ["17", "32"]   # the two rated lateral ends
    # Loading is the apparent power over the 200 kVA rating of those lines.
    s = (rated["p_kw"] ** 2 + rated["q_kvar"] ** 2).sqrt() / 200.0 * 100.0
    assert rated["loading_pct"].to_list() == pytest.approx(s.to_list(), abs=0.01)
    assert "wrote" in out and "buses.csv, lines.csv" in out


def test_disaggregate_and_settle_print_their_summaries(run, tmp_path):
    bids = EXAMPLES / "ieee33_bids.csv"
    code, out, err = run("disaggregate", "--feeder", "ieee33", "--bids", bids, "--award",
                         EXAMPLES / "ieee33_award.csv", "--out", tmp_path / "d")
    assert code == 0, err
    assert "award        3,500.0 kW re-cleared" in out and "instructions.csv" in out
    code, out, err = run("settle", "--day-ahead", tmp_path / "d", "--out", tmp_path / "s")
    assert code == 0, err
    assert "balanced to the cent" in out and "merchandising surplus" in out
