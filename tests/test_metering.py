"""Meters: validation, metered deviations and interface imbalance to the cent, balanced books, baselines."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsomarket.engine.errors import InputError
from dsomarket.engine.metering import (baseline_10_of_10, performance, settle_imbalance, validate_interface_meters,
                                       validate_resource_meters)

T0 = datetime(2026, 12, 2, 9, tzinfo=timezone.utc)
IVS = [T0 + timedelta(minutes=5 * k) for k in range(3)]
H = 5 / 60


def meters(rows):
    return pl.DataFrame(rows, schema=["aggregator_id", "resource_id", "interval", "kw"], orient="row")


def test_validation_names_duplicates_gaps_and_impossible_signs():
    ok = meters([("a", "pv", IVS[0], 10.0), ("a", "pv", IVS[1], 12.0)])
    with pytest.raises(InputError, match="second reading") as err:
        validate_resource_meters(pl.concat([ok, ok.head(1)]), IVS)
    assert err.value.row == 2
    with pytest.raises(InputError, match="only inject") as err:
        validate_resource_meters(meters([("a", "pv", IVS[0], -5.0)]), IVS, {"pv": "injection"})
    assert err.value.field == "kw"
    required = meters([("a", "pv", iv, 0.0) for iv in IVS])
    with pytest.raises(InputError, match="gap: no reading of 'pv'"):
        validate_resource_meters(ok, IVS, required=required)
    with pytest.raises(InputError, match="not an interval"):
        validate_resource_meters(meters([("a", "pv", IVS[0] + timedelta(minutes=1), 1.0)]), IVS)
    with pytest.raises(InputError, match="gap: no reading in"):
        validate_interface_meters(pl.DataFrame({"interval": IVS[:2], "import_kw": [1.0, 2.0]}), IVS)


def test_deviations_and_the_interface_imbalance_settle_to_the_cent_and_balance():
    instructed = meters([("a", "pv", IVS[0], 100.0), ("a", "ev", IVS[0], -50.0), ("b", "bat", IVS[0], 20.0)])
    metered = validate_resource_meters(meters([("a", "pv", IVS[0], 93.3), ("a", "ev", IVS[0], -50.0),
                                               ("b", "bat", IVS[0], 31.0)]), IVS)
    dlmp = meters([("a", "pv", IVS[0], 0.0), ("a", "ev", IVS[0], 0.0), ("b", "bat", IVS[0], 0.0)]).rename(
        {"kw": "dlmp"}).with_columns(pl.Series("dlmp", [41.37, 44.0, 47.5]))
    scheduled = pl.DataFrame({"interval": [IVS[0]], "import_kw": [1000.0], "price": [40.0]})
    iface = validate_interface_meters(pl.DataFrame({"interval": IVS[:1], "import_kw": [1003.25]}), IVS[:1])
    out = settle_imbalance(instructed, metered, dlmp, scheduled, iface, H)
    r = {row["resource_id"]: Decimal(row["amount"]) for row in out["resources"].iter_rows(named=True)}
    # By hand: -6.7 kW x 41.37 x 5/60 h / 1000 = -0.0230982... -> -0.02; 11 x 47.5 / 12000 = 0.04354 -> 0.04.
    assert r == {"pv": Decimal("-0.02"), "ev": Decimal("0.00"), "bat": Decimal("0.04")}
    # The DSO imported 3.25 kW more than scheduled: -3.25 x 40 / 12000 = -0.01083 -> -0.01.
    assert Decimal(out["interface"]["amount"][0]) == Decimal("-0.01")
    t = out["totals"]
    assert t["resources"] + t["interface"] + t["residual"] == 0 and t["residual"] == Decimal("-0.01")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(-500, 500), st.floats(-500, 500), st.floats(-100, 300)), min_size=1, max_size=8),
       st.floats(-1000, 5000), st.floats(-100, 300))
def test_the_books_always_balance_exactly(rows, metered_import, price):
    instructed = meters([("a", f"r{k}", IVS[0], i) for k, (i, _, _) in enumerate(rows)])
    metered = meters([("a", f"r{k}", IVS[0], m) for k, (_, m, _) in enumerate(rows)])
    dlmp = meters([("a", f"r{k}", IVS[0], p) for k, (_, _, p) in enumerate(rows)]).rename({"kw": "dlmp"})
    out = settle_imbalance(instructed, metered, dlmp, pl.DataFrame({"interval": [IVS[0]], "import_kw": [800.0],
                                                                     "price": [price]}),
                           pl.DataFrame({"interval": [IVS[0]], "import_kw": [metered_import]}), H)
    t = out["totals"]
    assert t["resources"] + t["interface"] + t["residual"] == 0
    assert all(Decimal(a).as_tuple().exponent == -2 for a in out["resources"]["amount"])


def test_the_10_of_10_baseline_with_a_same_day_adjustment_by_hand():
    event_day = datetime(2026, 12, 15, tzinfo=timezone.utc)
    rows = []
    for d in range(1, 13):  # twelve prior days; day 3 back was an event day and is skipped
        day = event_day - timedelta(days=d)
        for h in (14, 15, 17, 18):
            rows.append((day + timedelta(hours=h), 100.0 + d))  # kW rises the further back
    for h in (14, 15):  # the event day's morning: 10 kW above the unadjusted baseline
        rows.append((event_day + timedelta(hours=h), 0.0))
    hist = pl.DataFrame(rows, schema=["interval", "kw"], orient="row")
    hist = hist.with_columns(pl.when(pl.col("interval") >= event_day).then(None).otherwise(pl.col("kw")).alias("kw"))
    # Baseline days: 1, 2, 4..11 back (10 days, day 3 is an event day): mean of 100 + d = (203 + 860) / 10.
    hist = hist.with_columns(pl.when(pl.col("interval") >= event_day).then(106.3 + 10.0).otherwise(pl.col("kw"))
                             .alias("kw"))
    event = [event_day + timedelta(hours=17), event_day + timedelta(hours=18)]
    out = baseline_10_of_10(hist, event, {(event_day - timedelta(days=3)).date()})
    assert out["days_used"].to_list() == [10, 10]
    assert out["unadjusted_kw"].to_list() == pytest.approx([106.3, 106.3])
    assert out["adjustment_kw"].to_list() == pytest.approx([10.0, 10.0])  # within the 20 % cap
    assert out["baseline_kw"].to_list() == pytest.approx([116.3, 116.3])


def test_performance_compares_delivered_with_instructed_per_aggregator():
    instructed = meters([("a", "pv", IVS[0], 100.0), ("a", "ev", IVS[0], -50.0)])
    metered = meters([("a", "pv", IVS[0], 80.0), ("a", "ev", IVS[0], -50.0)])
    row = performance(instructed, metered).row(0, named=True)
    assert (row["instructed_kw"], row["metered_kw"], row["error_kw"]) == (50.0, 30.0, -20.0)
    assert row["delivery"] == pytest.approx(0.6)


def test_cli_meters_settle_on_a_disaggregate_output(run, tmp_path):
    stamp = "2026-12-02T09:00:00Z"
    pl.read_csv("examples/ieee33_bids.csv").with_columns(interval=pl.lit(stamp)).write_csv(tmp_path / "bids.csv")
    pl.DataFrame({"interval": [stamp], "import_kw": [3500.0], "price": [35.0]}).write_csv(tmp_path / "award.csv")
    code, _, err = run("disaggregate", "--feeder", "ieee33", "--bids", tmp_path / "bids.csv",
                       "--award", tmp_path / "award.csv", "--out", tmp_path / "d")
    assert code == 0, err
    instr = pl.read_csv(tmp_path / "d" / "instructions.csv", schema_overrides={"interval": pl.Utf8})
    instr.with_columns(kw=pl.col("kw") - 5.0).write_csv(tmp_path / "meters.csv")
    code, _, err = run("meters", "settle", "--run", tmp_path / "d", "--meters", tmp_path / "meters.csv",
                       "--out", tmp_path / "m")
    assert code == 0, err
    dev = pl.read_csv(tmp_path / "m" / "deviations.csv")
    assert dev["deviation_kw"].to_list() == pytest.approx([-5.0] * instr.height)
    # A duplicate reading: exit 2, one line naming the field.
    pl.concat([instr, instr.head(1)]).write_csv(tmp_path / "dup.csv")
    code, _, err = run("meters", "settle", "--run", tmp_path / "d", "--meters", tmp_path / "dup.csv",
                       "--out", tmp_path / "x")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "interval" in err


def test_a_resource_on_a_bus_without_a_price_owes_nothing_if_it_metered_what_it_was_told_and_is_refused_otherwise():
    """A network change that cuts a bus off leaves it unpriced in the re-dispatch: its PV, told 0 and metering 0,
    gets no line (the others settle as usual); metering 2 kW there has no price to settle at."""
    instructed = meters([("a", "pv", IVS[0], 0.0), ("a", "load", IVS[0], -10.0)])
    dlmp = pl.DataFrame([("a", "load", IVS[0], 40.0)], schema=["aggregator_id", "resource_id", "interval", "dlmp"],
                        orient="row")
    scheduled = pl.DataFrame({"interval": [IVS[0]], "import_kw": [10.0], "price": [40.0]})
    out = settle_imbalance(instructed, meters([("a", "pv", IVS[0], 0.0), ("a", "load", IVS[0], -13.0)]), dlmp,
                           scheduled, None, H)
    assert out["resources"].select("resource_id", "deviation_kw", "amount").rows() == [("load", -3.0, "-0.01")]
    with pytest.raises(InputError, match="no real-time price for 'pv'.*deviates 2.000 kW"):
        settle_imbalance(instructed, meters([("a", "pv", IVS[0], 2.0), ("a", "load", IVS[0], -13.0)]), dlmp,
                         scheduled, None, H)
