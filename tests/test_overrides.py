"""Overrides after an award: held when the feeder can carry them, else a least-cost re-dispatch, else refused."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest

from dsomarket.engine.bids import MarketRules, validate_bids
from dsomarket.engine.clearing import ClearingOptions, clear
from dsomarket.engine.disaggregation import disaggregate
from dsomarket.engine.feeders import ieee33
from dsomarket.engine.overrides import curtailment_payments, redispatch
from dsomarket.engine.powerflow import ac_power_flow

IV = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
RULES = MarketRules(price_floor=-100, price_cap=400, interval_minutes=60)
LOSSLESS = ClearingOptions(formulation="lossless")
"""The hand-solved cases: on the lossless model a held override moves the import by exactly the kW it moves.
The loss-aware model (the default) is checked against AC power flows of the dispatch."""
LOSSAWARE = ClearingOptions()


def feeder(rating_17: float = float("inf")):
    f = ieee33()
    return f.with_changes(lines=f.lines.with_columns(
        pl.when(pl.col("line") == "17").then(rating_17).otherwise(pl.col("s_max_kva")).alias("s_max_kva")))


def bids() -> pl.DataFrame:
    rows = [("pv18", "18", "sell", 300.0, 20.0, "a", "pv18"), ("pv33", "33", "sell", 300.0, 20.0, "b", "pv33"),
            ("gas", "10", "sell", 400.0, 60.0, "b", "gas"), ("ev30", "30", "buy", 200.0, 90.0, "a", "ev30")]
    return pl.DataFrame(rows, schema=["bid_id", "bus", "side", "quantity_kw", "price", "aggregator_id",
                                      "resource_id"], orient="row").with_columns(interval=pl.lit(IV))


def positions(dis, f) -> pl.DataFrame:
    buses = dict(zip(bids()["resource_id"], bids()["bus"]))
    return dis.instructions.select("aggregator_id", "resource_id",
                                   pl.col("resource_id").replace_strict(buses).alias("bus"), "kw",
                                   pl.lit(0.0).alias("tan_phi"))


def awarded(f, price=50.0, options=LOSSLESS):
    book = validate_bids(bids(), f, RULES, [IV])
    dis = disaggregate(f, book, pl.DataFrame({"interval": [IV], "price": [price]}), RULES,
                      options=options)
    assert dis.clearing.ok
    return book, dis


def fix(resource: str, agg: str, bus: str, kw: float) -> pl.DataFrame:
    return pl.DataFrame({"aggregator_id": [agg], "resource_id": [resource], "bus": [bus], "kw": [kw],
                         "tan_phi": [0.0]})


def test_an_override_the_feeder_can_carry_moves_only_the_interface():
    f = feeder()
    book, dis = awarded(f)
    out = redispatch(f, book, 50.0, positions(dis, f), fix("pv18", "a", "18", 100.0), RULES, options=LOSSLESS)
    assert out.mode == "held"
    before = dict(zip(dis.instructions["resource_id"], dis.instructions["kw"]))
    after = dict(zip(out.disaggregation.instructions["resource_id"], out.disaggregation.instructions["kw"]))
    assert after["pv18"] == 100.0 and all(after[r] == before[r] for r in before if r != "pv18")
    assert out.import_kw == pytest.approx(dis.clearing.interface["import_kw"][0] + before["pv18"] - 100.0, abs=1e-6)


def test_an_override_that_breaks_a_limit_is_redispatched_at_least_cost_or_refused():
    # Line 17 (bus 17 to 18) carries at most 250 kVA; the award has pv18 selling 300 kW less bus 18's 90 kW load.
    f = feeder(250.0)
    book, dis = awarded(f)
    current = positions(dis, f)
    # The operator forces the EV at bus 30 off; held, that is fine (less load): no re-dispatch.
    assert redispatch(f, book, 50.0, current, fix("ev30", "a", "30", 0.0), RULES, options=LOSSLESS).mode == "held"
    # Forcing pv33 to 0 and asking the interface to take nothing more needs the ISO price re-clear at a cap:
    # an emergency instruction capping the import at the award less 100 kW re-dispatches the gas unit up.
    imp = dis.clearing.interface["import_kw"][0]
    out = redispatch(f, book, 50.0, current, current.clear(), RULES, import_max_kw=imp - 100.0, options=LOSSLESS)
    assert out.mode == "redispatched" and out.import_kw <= imp - 100.0 + 1e-6
    # Independent check: the same market cleared from scratch with that import cap.
    capped = f.with_changes(import_max_kw=imp - 100.0)
    ref = clear(capped, validate_bids(bids(), capped, RULES, [IV]), 50.0, rules=RULES, options=LOSSLESS)
    assert out.import_kw == pytest.approx(ref.interface["import_kw"][0], abs=1e-6)
    # pv18 forced to 400 kW (more than line 17 can carry out of bus 18): refused whatever the others do.
    refused = redispatch(f, book, 50.0, current, fix("pv18", "a", "18", 400.0), RULES, options=LOSSLESS)
    assert refused.mode == "refused" and refused.disaggregation is None
    assert any("line_thermal" in str(d) for d in refused.diagnosis)


def ac_of(f, instructions: pl.DataFrame):
    """AC power flow of the feeder's fixed loads less the instructed injections (unity power factor)."""
    topo = f.topology
    buses = dict(zip(bids()["resource_id"], bids()["bus"]))
    p = topo.load_kw.astype(float).copy()
    np.add.at(p, topo.bus_index_of([buses[r] for r in instructions["resource_id"]]), -instructions["kw"].to_numpy())
    return ac_power_flow(f, p, topo.load_kvar.astype(float))


def test_on_the_loss_aware_model_overrides_hold_on_the_ac_feeder_and_a_refusal_names_the_line():
    f = feeder(250.0)
    book, dis = awarded(f, options=LOSSAWARE)
    current = positions(dis, f)
    # Held: the EV off; the revised import is what the AC power flow of the new dispatch draws.
    held = redispatch(f, book, 50.0, current, fix("ev30", "a", "30", 0.0), RULES, options=LOSSAWARE)
    assert held.mode == "held"
    assert held.import_kw == pytest.approx(ac_of(f, held.disaggregation.instructions).p0_kw, abs=0.05)
    # Re-dispatched under an import cap: the market cleared from scratch on the capped feeder (same model),
    # and delivered after losses.
    imp = dis.clearing.interface["import_kw"][0]
    out = redispatch(f, book, 50.0, current, current.clear(), RULES, import_max_kw=imp - 100.0, options=LOSSAWARE)
    assert out.mode == "redispatched" and out.import_kw <= imp - 100.0 + 1e-6
    capped = f.with_changes(import_max_kw=imp - 100.0)
    ref = clear(capped, validate_bids(bids(), capped, RULES, [IV]), 50.0, rules=RULES, options=LOSSAWARE)
    assert out.import_kw == pytest.approx(ref.interface["import_kw"][0], abs=0.05)
    assert out.import_kw == pytest.approx(ac_of(f, out.disaggregation.instructions).p0_kw, abs=0.05)
    # pv18 forced to 400 kW. Bus 18 is a leaf: line 17's bus-18 end carries its net injection whatever the
    # others do, hypot(400 - 90, 40) = 312.6 kVA > 250 (the AC power flow with the others at their award
    # agrees, and has more at the bus-17 end), while every voltage stays within its limits there. So the
    # binding cause is line 17's rating, and the refusal names it alone.
    forced = current.with_columns(kw=pl.when(pl.col("resource_id") == "pv18").then(400.0).otherwise(pl.col("kw")))
    ac = ac_of(f, forced)
    k = list(ac.line_ids).index("17")
    recv = float(np.hypot(ac.line_p_recv_kw[k], ac.line_q_recv_kvar[k]))
    assert recv == pytest.approx(np.hypot(310.0, 40.0), abs=1e-6) and np.hypot(ac.line_p_kw[k], ac.line_q_kvar[k]) > 250
    topo = f.topology
    assert np.all(ac.v_pu >= topo.vmin_pu) and np.all(ac.v_pu <= topo.vmax_pu)
    refused = redispatch(f, book, 50.0, current, fix("pv18", "a", "18", 400.0), RULES, options=LOSSAWARE)
    assert refused.mode == "refused"
    (diag,) = refused.diagnosis
    assert (diag["limit"], diag["element"], diag["unit"]) == ("line_thermal", "17", "kVA")
    # The loss-aware polygon circumscribes the circle: a face bends by between R cos(pi / N) - S and R - S.
    sides = LOSSAWARE.polygon_sides
    assert recv * np.cos(np.pi / sides) - 250.0 - 1e-6 <= diag["violation"] <= recv - 250.0 + 1e-6


def test_curtailment_pays_the_lost_margin_so_following_the_dso_costs_nothing():
    awarded_rows = pl.DataFrame({"aggregator_id": ["a"], "resource_id": ["pv"], "interval": [IV], "kw": [300.0],
                                 "dlmp": [50.0]})
    bid_rows = pl.DataFrame({"aggregator_id": ["a", "a"], "resource_id": ["pv", "pv"], "interval": [IV, IV],
                             "side": ["sell", "sell"], "price": [20.0, 70.0], "cleared_kw": [300.0, 0.0]})
    out = curtailment_payments(awarded_rows, bid_rows, awarded_rows.select("aggregator_id", "resource_id",
                                                                           "interval", pl.lit(100.0).alias("kw")), 0.5)
    row = out.row(0, named=True)
    assert row["delta_kw"] == -200.0 and row["margin_price"] == 30.0
    assert row["energy_amount"] == pytest.approx(-200 * 50 * 0.5 / 1000)
    assert row["curtailment_amount"] == pytest.approx(200 * 30 * 0.5 / 1000)
    # Profit check: award revenue + settlement - cost of what it delivered == award profit.
    award_profit = 300 * (50 - 20) * 0.5 / 1000
    paid = 300 * 50 * 0.5 / 1000 + row["energy_amount"] + row["curtailment_amount"]
    assert paid - 100 * 20 * 0.5 / 1000 == pytest.approx(award_profit)
