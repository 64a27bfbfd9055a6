"""Hybrid participation: curtailment sharing, deliverability, the DSO's own curve, conflicts across services."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsomarket.engine.bids import validate_bids
from dsomarket.engine.errors import InputError
from dsomarket.engine.hybrid import (check_conflicts, check_deliverability, direct_withdrawals, net_out_direct,
                                     share_curtailment)
from dsomarket.engine.clearing import ClearingOptions
from dsomarket.engine.interface import trace_curve
from dsomarket.engine.network import Feeder
from dsomarket.engine.powerflow import ac_power_flow
from tests.test_registry import chain


def test_the_papers_100_kw_case_is_shared_pro_rata_to_effective_sensitivity():
    """A limit needs 100 kW less injection; DSO-aggregated DERs push it with 300 kW, direct ones with 200 kW."""
    on_a_line = share_curtailment(100.0, np.array([1.0, 1.0]), np.array([300.0, 200.0]))
    assert on_a_line == pytest.approx([60.0, 40.0])
    # Where the DSO's DERs are twice as effective (a voltage limit deeper on their lateral), they give up
    # kW in proportion to s * a: 2 * 300 : 1 * 200, i.e. 600 / 800 and 200 / 800 of the kW-weighted relief.
    x = share_curtailment(100.0, np.array([2.0, 1.0]), np.array([300.0, 200.0]))
    assert 2.0 * x[0] + 1.0 * x[1] == pytest.approx(100.0)
    assert x[0] / x[1] == pytest.approx((2.0 * 300.0) / (1.0 * 200.0))
    eq = share_curtailment(100.0, np.array([2.0, 1.0]), np.array([300.0, 200.0]), rule="pro_rata")
    assert eq[0] / 300.0 == pytest.approx(eq[1] / 200.0) and 2.0 * eq[0] + eq[1] == pytest.approx(100.0)


@given(st.lists(st.tuples(st.floats(0.0, 3.0), st.floats(0.0, 500.0)), min_size=1, max_size=12),
       st.floats(0.0, 2000.0), st.sampled_from(["sensitivity", "pro_rata"]))
def test_curtailment_meets_the_need_within_each_schedule_by_the_rule(pairs, relief, rule):
    s = np.array([p[0] for p in pairs])
    a = np.array([p[1] for p in pairs])
    x = share_curtailment(relief, s, a, rule)
    assert (x >= -1e-9).all() and (x <= a + 1e-9).all()
    on = (s > 1e-9) & (a > 0)
    assert (x[~on] == 0).all()
    possible = (s * a)[on].sum()
    assert (s * x).sum() == pytest.approx(min(relief, possible), rel=1e-9, abs=1e-6)
    # Contributors not curtailed in full share by the rule: x / a proportional to s (or equal).
    part = on & (x < a - 1e-9) & (x > 1e-9)
    if part.sum() >= 2:
        frac = x[part] / a[part]
        weight = s[part] if rule == "sensitivity" else np.ones(part.sum())
        assert frac / weight == pytest.approx(np.full(part.sum(), (frac / weight)[0]), rel=1e-6)


def test_a_direct_schedule_overloading_a_line_is_flagged_with_its_limit():
    sch = pl.DataFrame({"participant_id": ["dso-agg", "direct"], "service": ["dso_energy", "iso_direct"],
                        "bus": ["2", "2"], "p_kw": [120.0, 80.0]})
    r = check_deliverability(chain(), sch)
    assert not r.deliverable and r.ac_passed
    v = r.violations.row(0, named=True)
    assert v["constraint"] == "line a reverse flow" and v["excess"] == pytest.approx(100.0, abs=0.5)
    assert v["participants"] == "direct;dso-agg"
    lim = dict(zip(r.schedules["participant_id"], r.schedules["limit_kw"], strict=True))
    cut = dict(zip(r.schedules["participant_id"], r.schedules["curtailed_kw"], strict=True))
    assert cut["dso-agg"] / cut["direct"] == pytest.approx(120.0 / 80.0)      # the published rule
    assert cut["dso-agg"] + cut["direct"] == pytest.approx(100.0, abs=0.5)
    # Independent check: the AC power flow at the limits keeps line a within 100 kVA at both ends.
    ac = ac_power_flow(chain(), np.array([0.0, 0.0, -(lim["dso-agg"] + lim["direct"])]), np.zeros(3))
    assert np.hypot(ac.line_p_kw[0], ac.line_q_kvar[0]) <= 100.0 + 0.011
    assert abs(ac.line_p_kw[0]) - ac.losses_kw <= 100.0 + 0.011


def test_over_voltage_is_shared_by_sensitivity_computed_by_hand():
    """Equal resistances: an injection at bus 2 raises v2 twice as much as one at bus 1."""
    buses = pl.DataFrame({"bus": ["0", "1", "2"], "vmax_pu": [1.05, 1.05, 1.02]})
    lines = pl.DataFrame({"line": ["a", "b"], "from_bus": ["0", "1"], "to_bus": ["1", "2"],
                          "r_ohm": [3.0, 3.0], "x_ohm": [0.01, 0.01]})
    f = Feeder.from_tables({"name": "v", "root_bus": "0", "base_kv": 12.0}, buses, lines)
    sch = pl.DataFrame({"participant_id": ["near", "far"], "service": ["iso_direct", "dso_energy"],
                        "bus": ["1", "2"], "p_kw": [400.0, 400.0]})
    r = check_deliverability(f, sch)
    assert r.ac_passed and not r.deliverable
    cut = dict(zip(r.schedules["participant_id"], r.schedules["curtailed_kw"], strict=True))
    assert cut["far"] / cut["near"] == pytest.approx(2.0, rel=0.02)   # s_far a / s_near a = 2 (x << r)
    eq = check_deliverability(f, sch, rule="pro_rata")
    cut = dict(zip(eq.schedules["participant_id"], eq.schedules["curtailed_kw"], strict=True))
    assert cut["far"] == pytest.approx(cut["near"], rel=1e-6)
    lim = eq.schedules["limit_kw"].to_numpy()
    ac = ac_power_flow(f, np.array([0.0, -lim[0], -lim[1]]), np.zeros(3))
    assert ac.v_pu[2] <= 1.02 + 1e-6


def test_schedules_within_limits_are_deliverable_and_untouched():
    sch = pl.DataFrame({"participant_id": ["p"], "service": ["iso_direct"], "bus": ["2"], "p_kw": [30.0]})
    r = check_deliverability(chain(), sch)
    assert r.deliverable and r.violations.height == 0 and r.schedules["limit_kw"][0] == 30.0


def test_bad_schedule_names_the_field():
    sch = pl.DataFrame({"participant_id": ["p"], "service": ["wholesale"], "bus": ["2"], "p_kw": [30.0]})
    with pytest.raises(InputError) as err:
        check_deliverability(chain(), sch)
    assert err.value.field == "service"


def test_the_dsos_curve_nets_out_the_direct_schedules():
    """Uncongested: the DSO's own curve is the curve without the direct participants; physically it is shifted."""
    f = chain(1e5)
    bids = pl.DataFrame({"bid_id": ["b1", "s1"], "bus": ["2", "1"], "side": ["buy", "sell"],
                         "quantity_kw": [50.0, 30.0], "price": [80.0, 20.0]})
    book = validate_bids(bids, f)
    sch = pl.DataFrame({"participant_id": ["d"], "service": ["iso_direct"], "bus": ["2"], "p_kw": [40.0]})
    p, q, direct = direct_withdrawals(f, sch, book.intervals)
    # Netting out is exact on the lossless LP (losses do not add up linearly).
    lossless = ClearingOptions(formulation="lossless")
    physical = trace_curve(f, book, options=lossless, load_p_kw=p, load_q_kvar=q)
    own = net_out_direct(physical, book.intervals, direct)
    plain = trace_curve(f, book, options=lossless)
    assert direct.tolist() == [40.0]
    assert own.bands["import_kw"].to_list() == pytest.approx(plain.bands["import_kw"].to_list())
    assert (physical.bands["import_kw"] + 40.0).to_list() == pytest.approx(own.bands["import_kw"].to_list())


def _battery():
    return pl.DataFrame({"der_id": ["bess"], "kind": ["battery"], "feeder": ["f"], "bus": ["2"],
                         "aggregator_id": ["agg"], "export_kw": [100.0], "import_kw": [100.0],
                         "energy_kwh": [400.0]})


def test_the_4_hour_battery_sold_to_the_iso_then_to_the_dso_is_caught_through_its_state_of_charge():
    hours = [f"2026-07-01T{h:02d}:00:00Z" for h in range(12, 20)]
    com = pl.DataFrame({"resource_id": ["bess"] * 8, "service": ["iso_direct"] * 4 + ["dso_flexibility"] * 4,
                        "interval": hours, "p_kw": [100.0] * 8})
    r = check_conflicts(_battery(), com)
    assert r.conflicts.height == 1                     # no interval sells more than 100 kW: only energy fails
    c = r.conflicts.row(0, named=True)
    assert c["kind"] == "energy_empty" and c["interval"].hour == 16
    assert c["services"] == "dso_flexibility;iso_direct" and c["notify"] == "aggregator:agg;operator"
    assert c["excess"] == pytest.approx(100.0)
    # The ISO's 12:00-16:00 alone is fine: 400 kWh from a full 400 kWh battery.
    assert check_conflicts(_battery(), com.head(4)).conflicts.height == 0


def test_a_kw_sold_twice_in_one_interval_and_aggregations_add_their_members():
    com = pl.DataFrame({"resource_id": ["bess", "bess"], "service": ["iso_direct", "dso_energy"],
                        "interval": ["2026-07-01T12:00:00Z"] * 2, "p_kw": [70.0, 50.0]})
    c = check_conflicts(_battery(), com).conflicts.row(0, named=True)
    assert c["kind"] == "export" and c["excess"] == pytest.approx(20.0)
    assert c["services"] == "dso_energy;iso_direct"
    two = pl.concat([_battery(), _battery().with_columns(pl.lit("bess2").alias("der_id"))]).with_columns(
        pl.lit("A").alias("aggregation_id"))
    agg = com.with_columns(pl.lit("A").alias("resource_id"))
    assert check_conflicts(two, agg).conflicts.height == 0          # 120 kW of a 200 kW aggregation


def test_cli_hybrid_check_and_conflicts(run, tmp_path):
    code, out, err = run("registry", "prequalify", "--feeder", "examples/ieee33_rated", "--ders",
                         "examples/hybrid/ders.csv", "--out", tmp_path / "pq")
    assert code == 0, err
    code, out, err = run("hybrid", "check", "--feeder", "examples/ieee33_rated", "--schedules",
                         "examples/hybrid/schedules.csv", "--out", tmp_path / "hc")
    assert code == 0, err
    sch = pl.read_csv(tmp_path / "hc" / "schedules.csv")
    lateral = sch.filter((pl.col("bus") == 18) & pl.col("interval").str.starts_with("2026-07-01T12"))
    cut = lateral["curtailed_kw"].to_numpy()
    assert cut[0] / cut[1] == pytest.approx(lateral["p_kw"][0] / lateral["p_kw"][1], rel=1e-4)  # CSV rounding
    # Direct bids at 13:00 around the schedules (200 kW at bus 18, whose 90 kW load takes some): line 17's
    # 200 kVA leaves the direct PV less than its 120 kW offer; the load at bus 25 fits whole.
    code, out, err = run("hybrid", "check", "--feeder", "examples/ieee33_rated", "--schedules",
                         "examples/hybrid/schedules.csv", "--bids", "examples/hybrid/bids.csv", "--out", tmp_path / "hb")
    assert code == 0 and "1 cut" in out, err
    bl = {r["participant_id"]: r for r in pl.read_csv(tmp_path / "hb" / "bid_limits.csv").iter_rows(named=True)}
    pv = bl["direct-pv-18"]
    assert pv["offered_export_kw"] == 120.0 and 0 < pv["export_limit_kw"] < 120.0
    assert pv["export_binding"].endswith("reverse flow")
    assert bl["big-load-25"]["import_limit_kw"] == 200.0 and bl["big-load-25"]["import_binding"] == "offer"
    code, out, err = run("hybrid", "conflicts", "--ders", tmp_path / "pq" / "ders.csv", "--commitments",
                         "examples/hybrid/commitments.csv", "--out", tmp_path / "cf")
    assert code == 1 and "bess-25 energy_empty" in out
    conflicts = pl.read_csv(tmp_path / "cf" / "conflicts.csv")
    assert set(conflicts["kind"]) == {"energy_empty", "export"}


def test_a_real_time_check_without_intervals_takes_a_one_interval_forecast():
    """Alternative 1: the ISO's dispatch of one interval, checked on the forecast of that interval."""
    sch = pl.DataFrame({"participant_id": ["p"], "service": ["iso_direct"], "bus": ["2"], "p_kw": [90.0]})
    forecast = pl.DataFrame({"bus": ["2"], "interval": ["2026-07-01T12:05:00Z"], "p_kw": [-20.0]})
    r = check_deliverability(chain(), sch, forecast)        # 20 kW of local generation + 90 kW: 110 on 100 kVA
    assert not r.deliverable and r.schedules["curtailed_kw"][0] == pytest.approx(10.0, abs=0.1)
    two = pl.concat([forecast, forecast.with_columns(pl.lit("2026-07-01T12:10:00Z").alias("interval"))])
    with pytest.raises(InputError) as err:
        check_deliverability(chain(), sch, two)
    assert err.value.table == "forecast"


def test_a_direct_bid_is_limited_to_what_the_line_carries_beside_the_schedules():
    """Line a (100 kVA) carries a 60 kW DSO award at bus 2; a direct bid offers 80 kW there and 30 kW of
    withdrawal. Independent check: the AC power flow at the limits passes, 2 % more export breaks line a."""
    from dsomarket.engine.hybrid import bid_limits
    from dsomarket.engine.powerflow import ac_power_flow
    from tests.test_registry import chain

    feeder = chain()
    iv = "2026-07-01T12:00:00Z"
    bids = pl.DataFrame({"participant_id": ["direct", "direct", "direct"], "bus": ["2", "2", "2"],
                         "interval": [iv] * 3, "side": ["sell", "sell", "buy"], "quantity_kw": [50.0, 30.0, 30.0],
                         "price": ["10", "20", "5"]})
    schedules = pl.DataFrame({"participant_id": ["dso-pv"], "service": ["dso_energy"], "bus": ["2"],
                              "interval": [iv], "p_kw": [60.0]})
    (row,) = bid_limits(feeder, bids, schedules).iter_rows(named=True)
    assert (row["offered_export_kw"], row["offered_import_kw"]) == (80.0, 30.0)
    assert 39.0 < row["export_limit_kw"] <= 40.0 + 1e-6 and row["export_binding"] == "line a reverse flow"
    assert row["import_limit_kw"] == 30.0 and row["import_binding"] == "offer"

    def worst(export_kw: float) -> float:
        ac = ac_power_flow(feeder, np.array([0.0, 0.0, -60.0 - export_kw]), np.zeros(3))
        return float(np.max(np.hypot(ac.line_p_kw, ac.line_q_kvar) - feeder.topology.s_max_kva))

    assert worst(row["export_limit_kw"]) <= 0.011 and worst(1.02 * row["export_limit_kw"]) > 0
    # Without the DSO's award the whole offer fits under the rating but for the losses.
    (alone,) = bid_limits(feeder, bids).iter_rows(named=True)
    assert alone["export_limit_kw"] == 80.0 and alone["export_binding"] == "offer"
