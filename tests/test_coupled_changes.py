"""A network change inside the horizon of storage: one coupled model whose network rows differ per interval.

Line 17 of ieee33 fails from the third hour and the 18-33 tie (100 kVA) is closed, so bus 18 is fed through
the far end of the feeder. A battery at bus 18 charges before the outage and discharges during it: its state
of charge runs across the change. Independent checks: per interval, with the battery held at its cleared
schedule, the textbook LP of tests/reference.py on the feeder written out by hand gives the same dispatch of
every other bid and the same DLMPs where the battery does not set them; where it does, the battery's own
optimality condition links the prices on both sides of the change; the loss-aware clearing's import is
pandapower's AC power flow of its dispatch.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsomarket.engine.bids import Battery, validate_bids
from dsomarket.engine.clearing import ClearingOptions
from dsomarket.engine.network_changes import validate_changes
from dsomarket.engine.errors import InputError
from dsomarket.engine.losses import CURVE_TOL
from dsomarket.engine.runs import (clear_runs, coupled_runs, disaggregate_rolling, disaggregate_runs,
                                  redispatch_award, runs_for, trace_runs)
from tests.reference import solve_reference
from tests.test_network_changes import IVS, RULES, at, changes, tied_feeder, tied_feeder_dir

BAT = (Battery("bat", energy_kwh=200, charge_kw=100, discharge_kw=100, soc_init_kwh=0),)
LOSSLESS = ClearingOptions(formulation="lossless")
"""For the checks against the textbook LP (tests/reference.py), which has no losses."""
CHARGE_PRICE, DISCHARGE_PRICE = 60.0, 70.0


def storage_bids() -> pl.DataFrame:
    rows = []
    for t, iv in enumerate(IVS):
        for bus, side, q, p, rid in (("18", "buy", 300.0, 120.0, "r18"), ("33", "sell", 250.0, 30.0, "r33"),
                                     ("30", "buy", 200.0, 70.0, "r30"), ("13", "sell", 150.0, 60.0, "r13"),
                                     ("25", "buy", 150.0, 90.0, "r25"), ("8", "sell", 200.0, 10.0, "r8"),
                                     ("18", "buy", 100.0, CHARGE_PRICE, "bat"),
                                     ("18", "sell", 100.0, DISCHARGE_PRICE, "bat")):
            rows.append({"bid_id": f"{rid}{side}-{t}", "bus": bus, "side": side, "quantity_kw": q, "price": p,
                         "interval": iv, "aggregator_id": "agg", "resource_id": rid})
    return pl.DataFrame(rows)


def outage():
    return changes({"change_id": "fault", "kind": "outage", "element": "17", "start": IVS[2]},
                   {"change_id": "restore", "kind": "close", "element": "tie18-33", "start": IVS[2]})


def coupled_market(bids: pl.DataFrame | None = None):
    f = tied_feeder()
    bids = storage_bids() if bids is None else bids
    book = validate_bids(bids, f, RULES)
    return f, bids, book, runs_for(f, validate_changes(outage(), f), book)


def by_hand(f, t: int):
    """The feeder of interval t written out from the change's description: line 17 open, the tie closed."""
    if t < 2:
        return f
    return f.with_changes(lines=f.lines.with_columns(
        pl.when(pl.col("line") == "17").then(False).when(pl.col("line") == "tie18-33").then(True)
        .otherwise(pl.col("in_service")).alias("in_service")))


def battery_kw(dispatch: pl.DataFrame, t: int) -> tuple[float, float]:
    d = at(dispatch, t).filter(pl.col("resource_id") == "bat")
    return (d.filter(pl.col("side") == "buy")["cleared_kw"].sum(), d.filter(pl.col("side") == "sell")["cleared_kw"].sum())


def test_an_outage_in_a_storage_horizon_clears_as_one_model_checked_per_interval_by_the_textbook_lp():
    f, bids, book, runs = coupled_market()
    assert len(runs) == 2 and coupled_runs(runs, book, BAT)
    res = clear_runs(runs, book, 50.0, rules=RULES, resources=BAT, options=LOSSLESS)
    assert res.ok
    # Nothing flows on the open line in its intervals: it has no row (no flow column) there.
    for t in range(4):
        lines = at(res.lines, t)["line"].to_list()
        assert ("17" in lines) == (t < 2) and ("tie18-33" in lines) == (t >= 2)
    for t in range(4):
        charge, discharge = battery_kw(res.dispatch, t)
        feeder = by_hand(f, t).with_changes(buses=by_hand(f, t).buses.with_columns(
            pl.when(pl.col("bus") == "18").then(pl.col("load_kw") + charge - discharge)
            .otherwise(pl.col("load_kw")).alias("load_kw")))
        others = at(res.dispatch, t).filter(pl.col("resource_id") != "bat")
        ref = solve_reference(feeder, others.drop("cleared_kw"), 50.0)
        assert ref.status == "optimal"
        for bid_id, kw in zip(others["bid_id"], others["cleared_kw"]):
            assert kw == pytest.approx(ref.cleared_kw[bid_id], abs=1e-3)
        mine = dict(at(res.prices, t).select("bus", "dlmp").iter_rows())
        assert set(mine) == set(ref.dlmp)
        if t >= 2:   # during the outage the buyer at 18 is marginal: prices are unique, and equal
            assert max(abs(mine[b] - ref.dlmp[b]) for b in mine) < 1e-4
    # The battery charges before the outage and discharges into it, within its limits.
    soc, trace = 0.0, []
    for t in range(4):
        charge, discharge = battery_kw(res.dispatch, t)
        soc += 0.95 * charge - discharge / 0.95
        trace.append(soc)
    assert trace[1] > 50.0 and min(trace) > -1e-6 and max(trace) <= 200.0 + 1e-6
    assert sum(battery_kw(res.dispatch, t)[1] for t in (2, 3)) > 50.0
    # KKT of the battery across the change: where it charges part-way (before) and discharges
    # part-way (during), stored energy has one value, (dlmp - 60) / eta_c = (dlmp - 70) * eta_d.
    dlmp18 = res.prices.filter(pl.col("bus") == "18").sort("interval")["dlmp"].to_numpy()
    part_way = [t for t in range(4) if 1e-3 < sum(battery_kw(res.dispatch, t)) < 100.0 - 1e-3]
    charging = [t for t in part_way if battery_kw(res.dispatch, t)[0] > 0]
    discharging = [t for t in part_way if battery_kw(res.dispatch, t)[1] > 0]
    assert charging and discharging and max(charging) < 2 <= min(discharging)
    for tc in charging:
        for td in discharging:
            assert (dlmp18[tc] - CHARGE_PRICE) / 0.95 == pytest.approx((dlmp18[td] - DISCHARGE_PRICE) * 0.95,
                                                                       abs=1e-6)


def test_prices_change_from_the_outage_on_and_the_clearing_replays_identically():
    f, bids, book, runs = coupled_market()
    res = clear_runs(runs, book, 50.0, rules=RULES, resources=BAT)
    intact = clear_runs(runs_for(f, None, book), book, 50.0, rules=RULES, resources=BAT)
    for t in (2, 3):
        assert not np.allclose(at(res.prices, t).sort("bus")["dlmp"].to_numpy(),
                               at(intact.prices, t).sort("bus")["dlmp"].to_numpy(), atol=1e-3)
    shuffled = bids.sample(fraction=1.0, shuffle=True, seed=7)
    _, _, book2, runs2 = coupled_market(shuffled)
    again = clear_runs(runs2, book2, 50.0, rules=RULES, resources=BAT)
    for name in ("dispatch", "prices", "lines", "buses", "interface"):
        assert getattr(again, name).equals(getattr(res, name)), name
    assert again.welfare == res.welfare


CURVE_TIMEOUT = pytest.mark.timeout(900)
"""For the test that traces :func:`coupled_curve` first: some 35 s of CPU, several minutes on a loaded machine."""


@pytest.fixture(scope="module")
def coupled_curve():
    """The loss-aware (default) curves of the outage horizon at a forecast of 50, traced once for the tests
    that read them (every point of each is a converged clearing of the horizon)."""
    f, bids, book, runs = coupled_market()
    return trace_runs(runs, book, RULES, BAT, forecast=50.0)


@CURVE_TIMEOUT
def test_coupled_curves_are_deliverable_and_an_award_on_them_disaggregates_on_each_intervals_network(coupled_curve):
    f, bids, book, runs = coupled_market()
    curve = coupled_curve
    assert curve.conditional
    for t in range(4):
        q = at(curve.bands, t)["import_kw"].to_numpy()
        assert np.all(np.diff(q) <= 1e-9)
    award = pl.DataFrame({"interval": IVS, "import_kw": [curve.import_at(t, 50.0) for t in range(4)],
                          "price": [50.0] * 4})
    dis = disaggregate_runs(runs, book, award, RULES, BAT)
    assert dis.clearing.ok
    np.testing.assert_allclose(dis.clearing.interface["import_kw"].to_numpy(), award["import_kw"].to_numpy(),
                               atol=1e-6)
    assert all(dis.award["on_curve"].to_list())
    assert dis.balance_kw()["error_kw"].abs().max() < 1e-6
    assert dis.clearing.lines.filter((pl.col("line") == "17") & (pl.col("interval") >= IVS[2])).height == 0
    # The award at the forecast is the clearing at the forecast: same dispatch.
    res = clear_runs(runs, book, 50.0, rules=RULES, resources=BAT)
    np.testing.assert_allclose(dis.clearing.dispatch.sort("interval", "bid_id")["cleared_kw"].to_numpy(),
                               res.dispatch.sort("interval", "bid_id")["cleared_kw"].to_numpy(), atol=1e-6)


def _pandapower_import(feeder, withdrawal_kw: dict, withdrawal_kvar: dict) -> float:
    """pandapower's AC power flow import (kW) of a feeder with the given net withdrawal per bus."""
    import pandapower as pp

    net = pp.create_empty_network(sn_mva=100.0)
    idx = {b: pp.create_bus(net, vn_kv=feeder.base_kv, name=b) for b in feeder.buses["bus"].to_list()}
    pp.create_ext_grid(net, idx[feeder.root_bus], vm_pu=feeder.v0_pu)
    for b, kw in withdrawal_kw.items():
        pp.create_load(net, idx[b], p_mw=kw / 1000.0, q_mvar=withdrawal_kvar.get(b, 0.0) / 1000.0)
    for row in feeder.lines.filter(pl.col("in_service")).iter_rows(named=True):
        pp.create_line_from_parameters(net, idx[row["from_bus"]], idx[row["to_bus"]], length_km=1.0,
                                       r_ohm_per_km=row["r_ohm"], x_ohm_per_km=row["x_ohm"], c_nf_per_km=0.0,
                                       max_i_ka=1.0)
    pp.runpp(net, numba=False)
    return float(net.res_ext_grid["p_mw"].sum()) * 1000.0


@CURVE_TIMEOUT
def test_the_loss_aware_coupled_clearing_imports_what_pandapower_draws_for_its_dispatch(coupled_curve):
    f, bids, book, runs = coupled_market()
    res = clear_runs(runs, book, 50.0, rules=RULES, resources=BAT, options=ClearingOptions(formulation="lossaware"))
    assert res.ok and res.convergence["converged"]
    for t in range(4):
        feeder = by_hand(f, t)
        d = at(res.dispatch, t)
        sign = np.where(d["side"].to_numpy() == "buy", 1.0, -1.0)
        w = dict(feeder.buses.select("bus", "load_kw").iter_rows())
        wq = dict(feeder.buses.select("bus", "load_kvar").iter_rows())
        for bus, kw in zip(d["bus"], sign * d["cleared_kw"].to_numpy()):
            w[bus] += kw
        got = at(res.interface, t)["import_kw"].item()
        assert got == pytest.approx(_pandapower_import(feeder, w, wq), abs=0.05)
        assert math.isfinite(got)
    assert res.lines.filter((pl.col("line") == "17") & (pl.col("interval") >= IVS[2])).height == 0
    # Its curves are made of converged clearings of the horizon: at the forecast they import what the
    # clearing imports, within the curve's stated accuracy.
    curve = coupled_curve
    assert curve.ac_check is not None and curve.ac_check["max_error_pct"] <= CURVE_TOL * 100
    for t in range(4):
        got = at(res.interface, t)["import_kw"].item()
        assert curve.import_at(t, 50.0) == pytest.approx(got, rel=CURVE_TOL)


def _soc(dispatch: pl.DataFrame) -> list[float]:
    soc, out = 0.0, []
    for t in range(4):
        charge, discharge = battery_kw(dispatch, t)
        soc += 0.95 * charge - discharge / 0.95
        out.append(soc)
    return out


@CURVE_TIMEOUT
@pytest.mark.parametrize("changed", [False, True])
def test_a_storage_market_awarded_interval_by_interval_meets_each_award_within_the_energy_limits(changed,
                                                                                              coupled_curve):
    f, bids, book, runs = coupled_market()
    if not changed:
        runs = runs_for(f, None, book)
    curve = coupled_curve if changed else trace_runs(runs, book, RULES, BAT, forecast=50.0)
    # The ISO moves each interval off the forecast: interval 0 takes 40 kW more than at the forecast,
    # so the battery is charged harder and has more to give later.
    imports = [curve.import_at(t, 50.0) + (40.0 if t == 0 else 0.0) for t in range(4)]
    steps = [pl.DataFrame({"interval": [IVS[t]], "import_kw": [imports[t]], "price": [None]},
                          schema_overrides={"price": pl.Float64}) for t in range(4)]
    seen = []
    for k in range(1, 5):
        dis = disaggregate_rolling(runs, book, steps[:k], RULES, BAT, forecast=50.0)
        assert dis.clearing.ok
        assert dis.clearing.intervals == IVS[:k]
        np.testing.assert_allclose(dis.clearing.interface["import_kw"].to_numpy(), imports[:k], atol=1e-6)
        # What was dispatched before stays dispatched: a later award never moves an earlier interval.
        if seen:
            before = seen[-1].filter(pl.col("interval") < IVS[k - 1])
            now = dis.clearing.dispatch.filter(pl.col("interval") < IVS[k - 1])
            assert now.select("bid_id", "cleared_kw").equals(before.select("bid_id", "cleared_kw"))
        seen.append(dis.clearing.dispatch)
    final = seen[-1]
    soc = _soc(final)
    assert min(soc) >= -1e-6 and max(soc) <= 200.0 + 1e-6
    for t in range(4):
        charge, discharge = battery_kw(final, t)
        assert charge <= 100.0 + 1e-6 and discharge <= 100.0 + 1e-6
    if changed:
        assert final.filter(pl.col("interval") >= IVS[2]).height and dis.clearing.lines.filter(
            (pl.col("line") == "17") & (pl.col("interval") >= IVS[2])).height == 0
    # Replay: the same steps give the same dispatch (the settlement replays the stream).
    assert disaggregate_rolling(runs, book, steps, RULES, BAT, forecast=50.0).clearing.dispatch.equals(final)
    with pytest.raises(InputError, match="again"):
        disaggregate_rolling(runs, book, [steps[0], steps[0]], RULES, BAT, forecast=50.0)


def _awarded_then_changed():
    """The storage market awarded whole on the intact feeder at the forecast curve's imports, and the runs of
    the outage that comes after the award."""
    f, bids, book, runs = coupled_market()
    intact = runs_for(f, None, book)
    curve = trace_runs(intact, book, RULES, BAT, LOSSLESS, forecast=50.0)
    award = pl.DataFrame({"interval": IVS, "import_kw": [curve.import_at(t, 50.0) for t in range(4)],
                          "price": [50.0] * 4})
    standing = disaggregate_runs(intact, book, award, RULES, BAT, LOSSLESS)
    assert standing.clearing.ok
    return f, bids, book, runs, award, standing


def test_an_outage_after_the_award_re_dispatches_the_standing_award_at_least_cost_on_the_new_network():
    f, bids, book, runs, award, standing = _awarded_then_changed()
    later = award.filter(pl.col("interval") >= IVS[2])
    before = standing.clearing.dispatch.filter(pl.col("interval") < IVS[2])
    dis, report = redispatch_award(runs, book, later, before, RULES, BAT, LOSSLESS)
    assert report["mode"].to_list() == ["redispatched"] * 2
    np.testing.assert_allclose(report["import_kw"].to_numpy(), later["import_kw"].to_numpy(), atol=1e-6)
    assert dis.clearing.lines.filter((pl.col("line") == "17") & (pl.col("interval") >= IVS[2])).height == 0
    # What was dispatched before the change stays as it was.
    kept = dis.clearing.dispatch.filter(pl.col("interval") < IVS[2]).select("bid_id", "cleared_kw")
    assert kept.equals(before.select("bid_id", "cleared_kw"))
    assert min(_soc(dis.clearing.dispatch)) >= -1e-6 and max(_soc(dis.clearing.dispatch)) <= 200.0 + 1e-6
    # Independent check: the textbook LP of each re-dispatched interval, battery held, import held at the
    # award, finds the same least-cost dispatch.
    for t in (2, 3):
        charge, discharge = battery_kw(dis.clearing.dispatch, t)
        feeder = by_hand(f, t).with_changes(buses=by_hand(f, t).buses.with_columns(
            pl.when(pl.col("bus") == "18").then(pl.col("load_kw") + charge - discharge)
            .otherwise(pl.col("load_kw")).alias("load_kw")))
        others = at(dis.clearing.dispatch, t).filter(pl.col("resource_id") != "bat")
        ref = solve_reference(feeder, others.drop("cleared_kw", "held"), 50.0,
                              import_kw=at(later, t)["import_kw"].item())
        assert ref.status == "optimal"
        value = float((others["cleared_kw"] * others["price"] * pl.Series(
            np.where(others["side"].to_numpy() == "buy", 1.0, -1.0))).sum()) / 1000.0
        assert value - 50.0 * at(later, t)["import_kw"].item() / 1000.0 == pytest.approx(ref.welfare, abs=1e-5)
        for bid_id, kw in zip(others["bid_id"], others["cleared_kw"]):
            assert kw == pytest.approx(ref.cleared_kw[bid_id], abs=1e-3)


def test_an_award_the_new_network_cannot_carry_is_met_in_its_largest_deliverable_part_and_said_so():
    f, bids, book, runs, award, standing = _awarded_then_changed()
    # The ISO had awarded interval 2 the most the intact feeder imports: through the 100 kVA tie it cannot.
    most = clear_runs(runs_for(f, None, book), book, RULES.price_floor, rules=RULES, resources=BAT)
    big = at(most.interface, 2)["import_kw"].item()
    later = award.filter(pl.col("interval") >= IVS[2]).with_columns(
        import_kw=pl.when(pl.col("interval") == IVS[2]).then(big).otherwise(pl.col("import_kw")))
    before = standing.clearing.dispatch.filter(pl.col("interval") < IVS[2])
    dis, report = redispatch_award(runs, book, later, before, RULES, BAT, LOSSLESS)
    assert dis.clearing.ok
    row, other = report.iter_rows(named=True)
    assert row["mode"] == "partial" and row["shortfall_kw"] > 1.0
    assert row["import_kw"] == pytest.approx(big - row["shortfall_kw"], abs=1e-6)
    assert other["mode"] == "redispatched" and other["shortfall_kw"] == pytest.approx(0.0, abs=1e-6)
    # The part delivered is the most the changed network imports then: a watt more is not deliverable.
    nudge = later.with_columns(import_kw=pl.when(pl.col("interval") == IVS[2]).then(row["import_kw"] + 0.01)
                               .otherwise(pl.col("import_kw")))
    assert redispatch_award(runs, book, nudge, before, RULES, BAT, LOSSLESS)[1]["mode"].to_list()[0] == "partial"
    assert dis.clearing.lines.filter((pl.col("line") == "17") & (pl.col("interval") >= IVS[2])).height == 0


@CURVE_TIMEOUT
def test_the_cli_clears_traces_and_disaggregates_a_storage_horizon_with_an_outage(run, tmp_path, coupled_curve):
    fdir = tied_feeder_dir(tmp_path)
    storage_bids().write_csv(tmp_path / "bids.csv")
    pl.DataFrame({"resource_id": ["bat"], "kind": ["battery"], "energy_kwh": [200.0], "charge_kw": [100.0],
                  "discharge_kw": [100.0], "soc_init_kwh": [0.0]}).write_csv(tmp_path / "resources.csv")
    outage().write_csv(tmp_path / "changes.csv")
    common = ["--formulation", "lossaware", "--feeder", fdir, "--bids", tmp_path / "bids.csv", "--floor", -100,
              "--cap", 400, "--resources", tmp_path / "resources.csv", "--network-changes", tmp_path / "changes.csv"]
    lossaware = ClearingOptions(formulation="lossaware")
    code, _, err = run("clear", *common, "--iso-price", 50, "--out", tmp_path / "c")
    assert code == 0, err
    f2, bids, book, runs = coupled_market()
    ref = clear_runs(runs, book, 50.0, rules=RULES, resources=BAT, options=lossaware)
    got = pl.read_csv(tmp_path / "c" / "dispatch.csv", try_parse_dates=True).sort("interval", "bid_id")
    np.testing.assert_allclose(got["cleared_kw"].to_numpy(), ref.dispatch.sort("interval", "bid_id")["cleared_kw"]
                               .to_numpy(), atol=1e-3)
    # The CLI's curve on the lossless LP: the loss-aware one of this horizon (some 500 converged clearings)
    # is the library's, checked in the tests above; here the command's plumbing of the changes is what counts.
    code, _, err = run("curve", *common, "--formulation", "lossless", "--forecast-price", 50, "--out",
                       tmp_path / "k")
    assert code == 0, err
    curve = coupled_curve   # the library's loss-aware curve of the same horizon at the same forecast
    pl.DataFrame({"interval": IVS, "import_kw": [curve.import_at(t, 50.0) for t in range(4)]}).write_csv(
        tmp_path / "award.csv")
    code, _, err = run("disaggregate", *common, "--award", tmp_path / "award.csv", "--out", tmp_path / "d")
    assert code == 0, err


@settings(max_examples=12, deadline=None)
@given(line=st.integers(2, 32), start=st.integers(1, 3), end=st.integers(2, 4))
def test_any_shed_outage_in_a_storage_horizon_balances_every_interval_and_keeps_the_battery_in_its_limits(
        line, start, end):
    f = tied_feeder()
    book = validate_bids(storage_bids(), f, RULES)
    row = {"change_id": "x", "kind": "outage", "element": str(line), "start": IVS[start], "shed": True}
    if end > start:
        row["end"] = IVS[end] if end < 4 else None
    ch = validate_changes(changes(row), f)
    runs = runs_for(f, ch, book)
    res = clear_runs(runs, book, 50.0, rules=RULES, resources=BAT, options=LOSSLESS)   # the balance below
    assert res.ok
    soc = _soc(res.dispatch)
    assert min(soc) >= -1e-6 and max(soc) <= 200.0 + 1e-6
    for run in runs:
        dead = set(run.de_energised)
        for t in run.indices:
            assert not dead & set(at(res.buses, t)["bus"])
            assert at(res.dispatch, t).filter(pl.col("bus").is_in(list(dead)))["cleared_kw"].abs().sum() == 0.0
            # Lossless balance: import = served fixed load + bought - sold, over the energised buses only.
            load = f.buses.filter(~pl.col("bus").is_in(list(dead)))["load_kw"].sum()
            d = at(res.dispatch, t)
            net = d.filter(pl.col("side") == "buy")["cleared_kw"].sum() - d.filter(pl.col("side") == "sell")["cleared_kw"].sum()
            assert at(res.interface, t)["import_kw"][0] == pytest.approx(load + net, abs=1e-5)


def test_an_infeasible_coupled_horizon_names_the_limit_and_the_interval_or_the_storage():
    f, bids, book, runs = coupled_market()
    # An award of interval 2 the changed network cannot import: the interface limit of its run is named.
    award = pl.DataFrame({"interval": IVS, "import_kw": [None, None, 1e5, None], "price": [50.0] * 4},
                         schema_overrides={"import_kw": pl.Float64})
    dis = disaggregate_runs(runs, book, award, RULES, BAT)
    assert not dis.clearing.ok
    assert any(d["limit"] != "storage_ev_ramp" and d["interval"] == IVS[2].isoformat() for d in dis.clearing.diagnosis)
    # Each interval alone can be dispatched, but the battery cannot end full having started empty
    # and been made to discharge: the storage limits are named.
    full_end = (Battery("bat", energy_kwh=200, charge_kw=100, discharge_kw=100, soc_init_kwh=0, soc_end_kwh=200),)
    forced = bids.with_columns(quantity_kw=pl.when(pl.col("bid_id").str.starts_with("batsell")).then(100.0)
                               .otherwise(pl.col("quantity_kw")))
    book2 = validate_bids(forced.filter(~pl.col("bid_id").str.starts_with("batbuy")), f, RULES)
    res = clear_runs(runs, book2, 50.0, rules=RULES, resources=full_end)
    assert res.status == "infeasible" and [d["limit"] for d in res.diagnosis] == ["storage_ev_ramp"]
