"""``dsomarket curve | disaggregate | settle``: files in, files out, end to end."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from dsomarket.engine.feeders import ieee33
from tests.test_interface import random_bids

T0 = datetime(2026, 7, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def bids():
    return random_bids(ieee33(), 40, 17, lo=-80, hi=380).with_columns(resource_id=pl.lit(""))


def read(path) -> pl.DataFrame:
    return pl.read_csv(path, infer_schema_length=None)


def test_curve_writes_bands_from_floor_to_cap_and_the_iso_offer(run, tmp_path, bids):
    bids.write_csv(tmp_path / "bids.csv")
    code, out, err = run("curve", "--feeder", "ieee33", "--bids", tmp_path / "bids.csv", "--floor", -100,
                         "--cap", 400, "--max-segments", 4, "--out", tmp_path / "c")
    assert code == 0, err
    curve = read(tmp_path / "c" / "curve.csv")
    assert curve.columns == ["interval", "price_low", "price_high", "import_kw"]
    lo, hi, q = (curve[c].to_numpy() for c in ("price_low", "price_high", "import_kw"))
    assert lo[0] == -100 and hi[-1] == 400
    np.testing.assert_array_equal(lo[1:], hi[:-1])
    assert np.all(np.diff(q) < 0)
    offer = read(tmp_path / "c" / "iso_offer.csv")
    assert offer.columns == ["interval", "kind", "segment", "price", "quantity_kw"]   # kW, like every file
    assert set(offer["kind"]) <= {"fixed_demand", "demand", "supply", "fixed_supply"}
    assert offer.filter(pl.col("kind") == "demand").height <= 4
    total = offer.filter(pl.col("kind").is_in(["fixed_demand", "demand"]))["quantity_kw"].sum() / 1000
    assert total == pytest.approx(max(q[0], 0) / 1000, abs=1e-5)   # sums of rounded steps
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["bands"] == curve.height and summary["conditional_on_forecast"] is False
    assert summary["price_floor"] == -100 and summary["price_cap"] == 400
    # The loss-aware curve's stated bound against clear, as summary.json has it, on the operator's screen.
    check = summary["ac_check"]
    (accuracy,) = [line for line in out.splitlines() if line.startswith("accuracy")]
    assert f"within {check['max_error_pct']:.3g} % ({check['max_error_kw']:,.1f} kW)" in accuracy
    assert f"from {check['clearings']} clearings and {check['anchored']} re-linearisations" in accuracy
    # The same bids in another order give the same files, byte for byte.
    bids.sample(fraction=1.0, shuffle=True, seed=5).write_csv(tmp_path / "shuffled.csv")
    code, _, err = run("curve", "--feeder", "ieee33", "--bids", tmp_path / "shuffled.csv", "--floor", -100,
                       "--cap", 400, "--max-segments", 4, "--out", tmp_path / "c2")
    assert code == 0, err
    for name in ("curve.csv", "iso_offer.csv", "fixed_load.csv"):
        assert (tmp_path / "c2" / name).read_bytes() == (tmp_path / "c" / name).read_bytes()


def test_curve_of_a_storage_horizon_says_it_is_conditional(run, tmp_path, bids):
    ivs = [T0 + timedelta(hours=h) for h in range(2)]
    timed = pl.concat([bids.head(10).with_columns(bid_id=pl.col("bid_id") + f"-{h}",
                                                  interval=pl.lit(iv.strftime("%Y-%m-%dT%H:%M:%SZ")))
                       for h, iv in enumerate(ivs)])
    bat = pl.DataFrame({"bid_id": ["c0", "d0", "c1", "d1"], "bus": ["18"] * 4, "side": ["buy", "sell"] * 2,
                        "quantity_kw": [200.0] * 4, "price": [-10.0, 5.0] * 2,
                        "aggregator_id": ["s"] * 4, "resource_id": ["bat"] * 4,
                        "interval": [iv.strftime("%Y-%m-%dT%H:%M:%SZ") for iv in ivs for _ in range(2)]})
    pl.concat([timed, bat], how="diagonal_relaxed").write_csv(tmp_path / "bids.csv")
    pl.DataFrame({"resource_id": ["bat"], "kind": ["battery"], "energy_kwh": [400.0], "charge_kw": [200.0],
                  "discharge_kw": [200.0], "soc_init_kwh": [200.0], "soc_end_kwh": [200.0]}).write_csv(
        tmp_path / "res.csv")
    code, _, err = run("curve", "--feeder", "ieee33", "--bids", tmp_path / "bids.csv", "--resources",
                       tmp_path / "res.csv", "--forecast-price", 55, "--out", tmp_path / "c")
    assert code == 0, err
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["conditional_on_forecast"] is True and summary["forecast_price"] == [55.0, 55.0]
    assert "forecast" in summary["note"]
    curve = read(tmp_path / "c" / "curve.csv")
    assert curve["interval"].n_unique() == 2
    # Intervals traced in two processes: the same files.
    for workers in (1, 2):
        code, _, err = run("curve", "--feeder", "ieee33", "--bids", tmp_path / "bids.csv", "--resources",
                           tmp_path / "res.csv", "--forecast-price", 55, "--formulation", "lossless",
                           "--workers", workers, "--out", tmp_path / f"w{workers}")
        assert code == 0, err
    for name in ("curve.csv", "iso_offer.csv", "fixed_load.csv"):
        assert (tmp_path / "w2" / name).read_bytes() == (tmp_path / "w1" / name).read_bytes()


def _da(run, tmp_path, bids, award_rows):
    bids.write_csv(tmp_path / "bids.csv")
    pl.DataFrame(award_rows, schema={"interval": pl.Utf8, "import_kw": pl.Float64, "price": pl.Float64},
                 orient="row").write_csv(tmp_path / "award.csv")
    return run("disaggregate", "--feeder", "ieee33", "--bids", tmp_path / "bids.csv", "--award",
               tmp_path / "award.csv", "--out", tmp_path / "da")


def test_disaggregate_writes_dispatch_prices_instructions_and_a_summary(run, tmp_path, bids):
    code, _, err = run("curve", "--feeder", "ieee33", "--bids", _write(bids, tmp_path / "b.csv"), "--out",
                       tmp_path / "c")
    assert code == 0, err
    curve = read(tmp_path / "c" / "curve.csv")
    k = curve.height // 2
    q, price = curve["import_kw"][k], (curve["price_low"][k] + curve["price_high"][k]) / 2
    code, _, err = _da(run, tmp_path, bids, [(None, q, price)])
    assert code == 0, err
    d = tmp_path / "da"
    for name in ("dispatch.csv", "prices.csv", "instructions.csv", "summary.json", "award.csv",
                 "fixed_load.csv"):
        assert (d / name).is_file()
    ins = read(d / "instructions.csv")
    assert ins.columns == ["aggregator_id", "resource_id", "interval", "kw"]
    summary = json.loads((d / "summary.json").read_text())
    assert summary["status"] == "optimal" and summary["award_import_kw"] == [pytest.approx(q)]
    dispatch = read(d / "dispatch.csv")
    fixed = read(d / "fixed_load.csv")["load_kw"].sum()
    net = dispatch.select(pl.when(pl.col("side") == "buy").then(pl.col("cleared_kw"))
                          .otherwise(-pl.col("cleared_kw"))).to_series().sum()
    # The award is delivered at the interface after losses: by the model and by the AC power flow.
    assert net + fixed + summary["losses_kw"][0] == pytest.approx(q, abs=0.05)   # files hold kW to 0.001
    assert summary["max_ac_import_error_kw"] < 0.05
    prices = read(d / "prices.csv")
    if read(d / "award.csv")["on_curve"][0]:
        # On the curve (within its accuracy) the interface is priced at the ISO's price.
        assert prices["dlmp"][0] == pytest.approx(price, abs=1e-4)   # prices are written to 0.0001
    # Same bids in another order: byte-identical files.
    first = {n: (d / n).read_bytes() for n in ("dispatch.csv", "prices.csv", "instructions.csv", "award.csv")}
    code, _, err = _da(run, tmp_path, bids.sample(fraction=1.0, shuffle=True, seed=3), [(None, q, price)])
    assert code == 0, err
    assert {n: (d / n).read_bytes() for n in first} == first


def _write(df: pl.DataFrame, path):
    df.write_csv(path)
    return path


def test_an_award_beyond_the_feeder_fails_with_a_diagnosis(run, tmp_path, bids):
    code, out, err = _da(run, tmp_path, bids, [(None, 60_000.0, 50.0)])
    assert code == 1 and "infeasible" in out + err
    assert json.loads((tmp_path / "da" / "summary.json").read_text())["status"] == "infeasible"


def test_settle_day_ahead_and_real_time_runs(run, tmp_path, bids):
    timed = bids.with_columns(interval=pl.lit(T0.strftime("%Y-%m-%dT%H:%M:%SZ")),
                              resource_id=pl.Series([f"r{k % 10}" for k in range(bids.height)]))
    code, _, err = _da(run, tmp_path, timed, [(T0.strftime("%Y-%m-%dT%H:%M:%SZ"), None, 70.0)])
    assert code == 0, err
    rt_ivs = [(T0 + timedelta(minutes=5 * j)).strftime("%Y-%m-%dT%H:%M:%SZ") for j in range(2)]
    again = timed.filter(pl.col("resource_id").is_in(["r1", "r2"]))
    rt = pl.concat([again.with_columns(bid_id=pl.col("bid_id") + f"-{j}", interval=pl.lit(iv),
                                       price=pl.col("price") - 30) for j, iv in enumerate(rt_ivs)])
    rt.write_csv(tmp_path / "rt_bids.csv")
    pl.DataFrame({"interval": rt_ivs, "price": [95.0, 40.0]}).write_csv(tmp_path / "rt_award.csv")
    code, _, err = run("disaggregate", "--feeder", "ieee33", "--bids", tmp_path / "rt_bids.csv", "--award",
                       tmp_path / "rt_award.csv", "--day-ahead", tmp_path / "da", "--out", tmp_path / "rt")
    assert code == 0, err
    rt_summary = json.loads((tmp_path / "rt" / "summary.json").read_text())
    assert rt_summary["interval_minutes"] == 5
    held = read(tmp_path / "rt" / "dispatch.csv").filter(pl.col("held"))
    assert held.height == 2 * timed.filter(~pl.col("resource_id").is_in(["r1", "r2"])).height
    code, _, err = run("settle", "--day-ahead", tmp_path / "da", "--real-time", tmp_path / "rt", "--out",
                       tmp_path / "st")
    assert code == 0, err
    st = read(tmp_path / "st" / "statements.csv")
    assert set(st["market"]) == {"day_ahead", "real_time"}
    summary = json.loads((tmp_path / "st" / "summary.json").read_text())
    assert summary["balanced"] is True and summary["merchandising_surplus"] >= 0
    cents = np.round(st["amount"].to_numpy() * 100).astype(np.int64)
    assert int(cents.sum()) + round(summary["merchandising_surplus"] * 100) == 0
    rt_lines = st.filter(pl.col("market") == "real_time")
    assert set(rt_lines.filter(pl.col("party") == "position")["resource_id"]) <= {"r1", "r2"}
    agg = read(tmp_path / "st" / "aggregators.csv")
    assert set(agg["aggregator_id"]) <= {"agg-a", "agg-b", "agg-c"}
