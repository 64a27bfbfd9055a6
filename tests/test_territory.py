"""A territory of interfaces: substations of several feeders, the runners, and `dsomarket territory`.

Independent checks: a substation of feeders whose transformer is not binding
clears exactly as its feeders do standalone (LinDistFlow feeders on one
busbar held at v0 are separate problems); with a binding transformer the
interface curve is the members' summed curves cut at the rating. Every
interface's files equal those of a standalone `dsomarket clear` / `curve`,
and are byte-identical with one worker, two workers and Ray.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dsomarket.engine import solver
from dsomarket.engine.bids import MarketRules, validate_bids
from dsomarket.engine.clearing import ClearingOptions, clear
from dsomarket.engine.errors import InputError
from dsomarket.engine.feeders import ieee33, synthetic
from dsomarket.engine.interface import trace_curve
from dsomarket.engine.territory import (IntervalCurves, InterfaceSession, substation, synthetic_bids,
                                        synthetic_member, synthetic_territory)
from dsomarket.engine.runs import KeptMarket, clear_runs, runs_for, trace_runs
from dsomarket.server.runner import Cycle, InterfaceOutcome, Job, LocalRunner, Shard, Task, assign

NO_AC = ClearingOptions(ac_check=False)
TIMING_KEYS = ("build_seconds", "solve_seconds", "seconds")


def _members():
    a = ieee33()
    b = synthetic(40, 2).with_changes(name="lateral")
    bids_a = synthetic_bids(a, 60, 1)
    bids_b = synthetic_bids(b, 50, 2).with_columns((pl.lit("L-") + pl.col("bid_id")).alias("bid_id"))
    return [a, b], [bids_a, bids_b]


def test_an_unbinding_substation_clears_as_its_feeders_do_standalone():
    feeders, bids = _members()
    merged = substation("sub", feeders, bids)
    assert merged.members == ("ieee33", "lateral")
    res = clear(merged.feeder, merged.bids, 50.0, options=NO_AC)
    alone = [clear(f, b, 50.0, options=NO_AC) for f, b in zip(feeders, bids)]
    assert res.ok and all(r.ok for r in alone)
    assert res.interface_import_kw[0] == pytest.approx(sum(r.interface_import_kw[0] for r in alone), abs=1e-4)
    cleared = dict(zip(res.dispatch["bid_id"], res.dispatch["cleared_kw"]))
    for f, r in zip(feeders, alone):
        for bid, kw in zip(r.dispatch["bid_id"], r.dispatch["cleared_kw"]):
            assert cleared[bid] == pytest.approx(kw, abs=1e-4)
        dlmp = dict(zip(res.prices["bus"], res.prices["dlmp"]))
        for bus, price in zip(r.prices["bus"], r.prices["dlmp"]):
            key = "substation" if bus == f.root_bus else f"{f.name}/{bus}"
            assert dlmp[key] == pytest.approx(price, abs=1e-6)


def test_a_binding_transformer_cuts_the_summed_member_curves_at_its_rating():
    feeders, bids = _members()
    rules = MarketRules()
    # Lossless: member curves add up exactly (with losses the transformer's own would not be in their sum).
    lossless = ClearingOptions(formulation="lossless", ac_check=False)
    curves = [trace_curve(f, validate_bids(b, f, rules), rules, options=lossless) for f, b in zip(feeders, bids)]
    total = lambda p: sum(c.import_at(0, p) for c in curves)  # noqa: E731
    rating = (total(0.0) + total(200.0)) / 2
    merged = substation("sub", feeders, bids, import_max_kw=rating)
    curve = InterfaceSession(merged, rules, lossless).curve()
    steps = np.concatenate([c.bands["price_high"].to_numpy() for c in curves + [curve]])
    checked = 0
    for p in np.linspace(-60.0, 260.0, 97) + 0.0137:
        if np.min(np.abs(steps - p)) < 1e-6:
            continue
        assert curve.import_at(0, p) == pytest.approx(min(total(p), rating), abs=1e-3)
        checked += 1
    assert checked > 80
    assert curve.import_at(0, 0.0) == pytest.approx(rating, abs=1e-3)


def test_members_on_other_base_voltages_are_referred_to_the_first():
    feeders, bids = _members()
    a, b = feeders
    b_kv = b.with_changes(base_kv=2 * b.base_kv, lines=b.lines.with_columns(pl.col("r_ohm") * 4,
                                                                               pl.col("x_ohm") * 4))
    same = substation("s", [a, b], bids)
    one = clear(same.feeder, same.bids, 50.0, options=NO_AC)
    two = substation("s", [a, b_kv], bids)
    other = clear(two.feeder, two.bids, 50.0, options=NO_AC)
    assert other.prices["dlmp"].to_list() == pytest.approx(one.prices["dlmp"].to_list(), abs=1e-9)


@pytest.mark.parametrize("change,field", [
    ({"v0_pu": 1.02}, "v0_pu"),
    ({"import_max_kw": 100.0}, "import_max_kw"),
])
def test_members_that_cannot_share_a_busbar_are_refused(change, field):
    feeders, bids = _members()
    with pytest.raises(InputError) as err:
        substation("s", [feeders[0], feeders[1].with_changes(**change)], bids)
    assert err.value.field == field


def test_a_warm_real_time_re_clear_matches_a_cold_clear():
    feeders, bids = _members()
    session = InterfaceSession(substation("s", feeders[:1], bids[:1]), MarketRules(), NO_AC)
    first = session.clear(50.0)
    assert session.warm
    again = session.clear(120.0)
    cold = clear(feeders[0], bids[0], 120.0, options=NO_AC)
    assert first.ok and again.ok
    assert again.welfare == pytest.approx(cold.welfare, rel=1e-9, abs=1e-6)
    assert again.interface_import_kw[0] == pytest.approx(cold.interface_import_kw[0], abs=1e-4)


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_warm_loss_aware_re_clear_starts_without_a_highs_run_and_ends_at_the_cold_clearing(seed, monkeypatch):
    # A territory's real-time re-clear of the default model starts from the basis the last cycle converged at, on
    # that linearisation's matrix, where a HiGHS run would first set the LP up again: the kept basis factorised by
    # the solver and its own pivots take the new price instead. The successive LP then ends where a cold clearing
    # does (within its own tolerances: another path to the same fixed point).
    feeder, bids = synthetic_member(0, 8, 100, 100, seed)
    options = ClearingOptions(formulation="lossaware", ac_check=False)
    session = InterfaceSession(substation(feeder.name, [feeder], [bids]), MarketRules(), options)
    assert session.clear(50.0).ok
    runs, first = [], [False]
    plain_run, plain_start = solver.HighsSolver.run, solver.HighsSolver.solve_unless_warm

    def run(self, *args):
        runs.append(first[0])
        return plain_run(self, *args)

    def start(self):
        first[0] = self.h.getBasis().valid
        try:
            return plain_start(self)
        finally:
            first[0] = False

    monkeypatch.setattr(solver.HighsSolver, "run", run)
    monkeypatch.setattr(solver.HighsSolver, "solve_unless_warm", start)
    for price in (52.0, 55.0, 45.0, 60.0):
        runs.clear()
        warm = session.clear(price)
        assert not any(runs) and warm.ok, price
        cold = clear(feeder, bids, price, options=options)
        assert warm.welfare == pytest.approx(cold.welfare, rel=1e-9)
        assert warm.interface_import_kw[0] == pytest.approx(cold.interface_import_kw[0], abs=1e-4)
        assert warm.prices["dlmp"].to_numpy() == pytest.approx(cold.prices["dlmp"].to_numpy(), abs=1e-4)


def _shifted(book_table: pl.DataFrame, start: datetime, feeder, rules: MarketRules):
    """The same standing bids in two 5-minute intervals from ``start``."""
    ivs = [start + timedelta(minutes=5 * k) for k in range(2)]
    table = pl.concat([book_table.with_columns(pl.lit(iv).alias("interval"), (pl.col("bid_id") + f"-{k}").alias("bid_id"))
                       for k, iv in enumerate(ivs)])
    return validate_bids(table, feeder, rules, ivs)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_curve_traced_on_the_clearing_s_model_equals_a_fresh_trace_and_the_market_re_clears_as_before(seed):
    # The territory traces each interface's curve on the model its clearing just solved, from that basis
    # (trace_curve's market=); the curve must be the one a fresh model gives, solve for solve, and the
    # market's next (warm) re-clear must still be a cold clearing's.
    rules, options = MarketRules(), ClearingOptions(formulation="lossless")
    feeder = synthetic(120, seed)
    bids = synthetic_bids(feeder, 150, seed)
    session = InterfaceSession(substation(feeder.name, [feeder], [bids]), rules, options)
    assert session.clear(50.0).ok
    kept = session.curve()
    fresh = trace_curve(feeder, validate_bids(bids, feeder, rules), rules, options=options)
    assert kept.bands.equals(fresh.bands) and kept.fixed_net_load_kw.equals(fresh.fixed_net_load_kw)
    assert (kept.solves, kept.bound_flips) == (fresh.solves, fresh.bound_flips)
    assert kept.bands.height > 20
    again, cold = session.clear(80.0), clear(feeder, bids, 80.0, options=options)
    for name in ("dispatch", "prices", "lines", "buses", "interface"):
        assert getattr(again, name).equals(getattr(cold, name)), name


@pytest.mark.parametrize("own_factors", [False, True])
@pytest.mark.parametrize("formulation, n_bids, prices", [
    ("lossless", 24, ([80.0, 20.0], [35.0, 35.0])),
    ("lossaware", 4, ([80.0, 20.0],)),   # its curves are converged clearings: few bids keep it cheap
])
def test_a_kept_market_re_clears_byte_identical_to_a_cold_clearing(formulation, n_bids, prices, own_factors,
                                                                   monkeypatch):
    # What a territory worker keeps between real-time sessions: the next session's standing bids at a new ISO
    # price must clear and trace exactly as a fresh clear_runs / trace_runs of that session does; with the bases the
    # loss-aware iteration carries to re-linearised matrices factorised by HiGHS and, as on a model of
    # solver.OWN_FACTOR_ROWS rows or more, by the solver.
    if own_factors:
        monkeypatch.setattr(solver, "OWN_FACTOR_ROWS", 0)
    rules, options = MarketRules(interval_minutes=5.0), ClearingOptions(formulation=formulation)
    feeder = synthetic(30, 4)
    bids = synthetic_bids(feeder, n_bids, 5)
    start = datetime(2031, 1, 2, 12, tzinfo=timezone.utc)
    first = _shifted(bids, start, feeder, rules)
    kept = KeptMarket(runs_for(feeder, None, first), first, rules, (), options)
    assert kept.clear([50.0, 50.0]).ok and not kept.reused
    kept.curve([50.0, 50.0])
    first_offer = kept.iso_offer(10)[0]
    assert first_offer.equals(kept.curve([60.0, 60.0]).iso_offer(10)[0])
    later = _shifted(bids, start + timedelta(minutes=10), feeder, rules)
    runs = runs_for(feeder, None, later)
    kept.relabel(runs, later)
    for price in prices:
        warm, warm_curve = kept.clear(price), kept.curve(price)
        assert kept.reused
        cold = clear_runs(runs, later, price, rules=rules, options=options)
        cold_curve = trace_runs(runs, later, rules, (), options, forecast=price)
        for name in ("dispatch", "prices", "lines", "buses", "interface"):
            assert getattr(warm, name).equals(getattr(cold, name)), name
        assert (warm.welfare, warm.intervals, warm.ac_check) == (cold.welfare, cold.intervals, cold.ac_check)
        assert warm_curve.bands.equals(cold_curve.bands)
        assert warm_curve.fixed_net_load_kw.equals(cold_curve.fixed_net_load_kw)
        assert warm_curve.iso_offer(10)[0].equals(cold_curve.iso_offer(10)[0])
        # The offer a kept curve makes, reduced once and relabelled with the curve (its interval starts moved).
        offer, area = kept.iso_offer(10)
        assert offer.equals(cold_curve.iso_offer(10)[0]) and area == cold_curve.iso_offer(10)[1]
        assert not offer["interval"].equals(first_offer["interval"])
        # The new prices were used: at 80 and 20 per MWh the two intervals' root DLMPs differ.
        assert warm.prices.filter(pl.col("bus") == feeder.root_bus)["dlmp"].to_list() == price


@pytest.mark.parametrize("formulation, n_bids", [("lossless", 24), ("lossaware", 4)])
def test_a_day_ahead_interval_s_curve_serves_a_real_time_session_of_the_same_model(formulation, n_bids):
    # A territory worker keeps the day-ahead market's single-interval curves: a real-time session whose
    # interval has the same bids and fixed load on the same network takes that curve, and gets exactly what a
    # fresh trace_curve of the real-time market gives.
    options = ClearingOptions(formulation=formulation)
    feeder = synthetic(30, 4)
    bids = synthetic_bids(feeder, n_bids, 5)
    start = datetime(2031, 1, 2, 12, tzinfo=timezone.utc)
    hours, hourly = [start, start + timedelta(hours=1)], MarketRules(interval_minutes=60.0)
    changed = bids.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.col("price") + 7.0)
                                .otherwise(pl.col("price")).alias("price"))
    day_ahead = validate_bids(pl.concat([b.with_columns(pl.lit(h).alias("interval"),
                                                        (pl.col("bid_id") + f"-h{k}").alias("bid_id"))
                                         for k, (h, b) in enumerate(zip(hours, (bids, changed)))]),
                              feeder, hourly, hours)
    curves = IntervalCurves()
    da_curve = curves.trace(feeder, day_ahead, hourly, (), options, 50.0)
    fresh = trace_curve(feeder, day_ahead, hourly, (), options, forecast=50.0)
    assert curves.reused == 0 and da_curve.bands.equals(fresh.bands)
    assert da_curve.fixed_net_load_kw.equals(fresh.fixed_net_load_kw)
    assert (da_curve.solves, da_curve.ac_check) == (fresh.solves, fresh.ac_check)

    five = MarketRules(interval_minutes=5.0)
    real_time = _shifted(bids, start + timedelta(minutes=10), feeder, five)   # hour 0's bids, other ids
    rt_curve = curves.trace(feeder, real_time, five, (), options, 80.0)
    cold = trace_curve(feeder, real_time, five, (), options, forecast=80.0)
    assert curves.reused == 2
    assert rt_curve.bands.equals(cold.bands) and rt_curve.fixed_net_load_kw.equals(cold.fixed_net_load_kw)
    assert rt_curve.iso_offer(10)[0].equals(cold.iso_offer(10)[0])
    # Hour 1 (one price changed) is another model, kept too: a real-time session of its bids takes it.
    other = _shifted(changed, start + timedelta(hours=1), feeder, five)
    assert curves.trace(feeder, other, five, (), options, 80.0).bands.equals(
        trace_curve(feeder, other, five, (), options, forecast=80.0).bands)
    assert curves.reused == 2
    assert not da_curve.interval_bands(0).drop("interval").equals(da_curve.interval_bands(1).drop("interval"))
    # Halved quantities are a model never traced: its first interval is traced, its second (the same model)
    # takes the first's.
    lower = _shifted(bids.with_columns(pl.col("quantity_kw") * 0.5), start, feeder, five)
    assert curves.trace(feeder, lower, five, (), options, 80.0).bands.equals(
        trace_curve(feeder, lower, five, (), options, forecast=80.0).bands)
    assert curves.reused == 1


def _count(kept, step):
    return (step, (kept or 0) + 1), (kept or 0) + 1


def test_a_worker_keeps_state_per_interface_and_drops_the_least_recently_used():
    shard = Shard(MarketRules(), NO_AC, keep=2)
    for step, ids in enumerate((["a", "b"], ["a", "c"], ["a", "b"])):
        out = shard.call([Task(i, _count, (step,), keep=True) for i in ids])
        assert not any(r.error for r in out)
        counts = {r.interface_id: r.value[1] for r in out}
        if step == 2:   # c pushed b out (a was used later): b starts again; a keeps counting
            assert counts == {"a": 3, "b": 1}
    assert shard.kept_ids() == ["a", "b"]   # and b pushed c out
    assert Shard(MarketRules(), NO_AC, keep=0).call([Task("a", _count, (0,), keep=True)])[0].value == (0, 1)


def test_kept_tasks_go_to_their_interface_s_shard_every_time():
    r = LocalRunner(2, options=NO_AC)   # no task runs: its workers are never started
    try:
        first = r._place([Task(i, _count, weight=w, keep=True) for i, w in (("a", 5), ("b", 1), ("c", 4))])
        again = r._place([Task(i, _count, weight=w, keep=True) for i, w in (("c", 9), ("d", 1), ("a", 1))])
    finally:
        r.close()
    home = {t.interface_id: k for k, part in enumerate(first) for t in part}
    assert home == {"a": 0, "c": 1, "b": 1}
    assert {t.interface_id: k for k, part in enumerate(again) for t in part} == {"a": 0, "c": 1, "d": 0}


def test_shards_are_balanced_by_weight_and_deterministic():
    jobs = [Job(f"i{k}", substation, (), weight=w) for k, w in enumerate([5, 1, 4, 2, 3, 3])]
    parts = assign(jobs, 2)
    assert [sum(j.weight for j in p) for p in parts] == [9, 9]
    assert [[j.interface_id for j in p] for p in parts] == [[j.interface_id for j in p] for p in assign(jobs[::-1], 2)]


def test_synthetic_territory_is_seeded_per_feeder():
    small = synthetic_territory(2, 30, 10, 7)
    large = synthetic_territory(3, 30, 10, 7)
    assert small[1][1].equals(large[1][1])
    assert small[1][0].lines.equals(large[1][0].lines)
    assert not small[0][1].equals(small[1][1])


# -- the command line ---------------------------------------------------------------------

def _tree(d: Path) -> dict[str, object]:
    """Every file under d: bytes, except summaries whose timings are dropped."""
    out: dict[str, object] = {}
    for p in sorted(d.rglob("*")):
        if p.is_file():
            rel = str(p.relative_to(d))
            if p.name == "summary.json":
                out[rel] = {k: v for k, v in json.loads(p.read_text()).items() if k not in TIMING_KEYS}
            else:
                out[rel] = p.read_bytes()
    return out


@pytest.fixture(scope="module")
def territory(tmp_path_factory) -> Path:
    from dsomarket.clients.cli import main

    d = tmp_path_factory.mktemp("territory") / "t"
    assert main(["territory", "synth", "--feeders", "5", "--buses", "40", "--bids", "50", "--seed", "4",
                 str(d)]) == 0
    return d


@pytest.fixture(scope="module")
def cleared(territory, tmp_path_factory) -> dict[int, Path]:
    from dsomarket.clients.cli import main

    outs = {}
    for workers in (1, 2):
        out = tmp_path_factory.mktemp(f"w{workers}")
        assert main(["territory", "clear", "--territory", str(territory), "--iso-price", "50", "--curves",
                     "--workers", str(workers), "--out", str(out)]) == 0
        outs[workers] = out
    return outs


def test_territory_clear_is_identical_with_one_and_two_workers(cleared):
    one, two = _tree(cleared[1]), _tree(cleared[2])
    assert len(one) == 5 * 9 + 1   # per interface: 5 clearing and 4 curve files; the territory summary
    assert one == two


def test_every_interface_equals_a_standalone_clear_and_curve(run, territory, cleared, tmp_path):
    summary = json.loads((cleared[2] / "territory.json").read_text())
    assert summary["status_counts"] == {"optimal": 5}
    for name in ("feeder-0000", "feeder-0003"):
        d = territory / name
        assert run("clear", "--feeder", d, "--bids", d / "bids.csv", "--iso-price", "50",
                   "--out", tmp_path / name / "clear")[0] == 0
        assert run("curve", "--feeder", d, "--bids", d / "bids.csv", "--out", tmp_path / name / "curve")[0] == 0
        assert _tree(tmp_path / name) == _tree(cleared[2] / name)


def test_an_infeasible_and_a_malformed_interface_do_not_stop_the_others(run, territory, tmp_path):
    import shutil

    t = tmp_path / "t"
    shutil.copytree(territory, t)
    header = json.loads((t / "feeder-0001" / "feeder.json").read_text())
    (t / "feeder-0001" / "feeder.json").write_text(json.dumps(header | {"import_max_kw": 1.0}))
    bids = pl.read_csv(t / "feeder-0002" / "bids.csv", schema_overrides={"bus": pl.Utf8})
    bids.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("no-such-bus")).otherwise("bus")
                      .alias("bus")).write_csv(t / "feeder-0002" / "bids.csv")
    code, out, err = run("territory", "clear", "--territory", t, "--iso-price", "50", "--workers", "2",
                         "--out", tmp_path / "o")
    assert code == 1 and "2 of 5 interfaces did not clear" in err
    reports = {r["interface_id"]: r for r in json.loads((tmp_path / "o" / "territory.json").read_text())["interfaces"]}
    assert reports["feeder-0001"]["status"] == "infeasible"
    assert any(d["limit"] == "interface_import_max" for d in reports["feeder-0001"]["diagnosis"])
    assert reports["feeder-0002"]["status"] == "input_error" and "field bus" in reports["feeder-0002"]["error"]
    assert [r["status"] for k, r in sorted(reports.items()) if k not in ("feeder-0001", "feeder-0002")] == \
        ["optimal"] * 3
    assert (tmp_path / "o" / "feeder-0000" / "clear" / "dispatch.csv").is_file()


def test_a_worker_flushes_its_interfaces_files_once_per_call(tmp_path, monkeypatch):
    import dsomarket.clients.files as files
    from dsomarket.clients.commands.territory import OutcomeWriter

    calls: list[str] = []
    monkeypatch.setattr(files.os, "fsync", lambda fd: calls.append("fsync"))
    monkeypatch.setattr(files.os, "sync", lambda: calls.append("sync"))
    shard = Shard(MarketRules(), NO_AC)
    assert shard.load(_jobs(3)) == 3
    writer = OutcomeWriter(tmp_path, MarketRules(), "lossaware", 10)
    reports = shard.run(Cycle(50.0, curves=True), writer)
    assert [r["status"] for r in reports] == ["optimal"] * 3
    assert calls == ["sync"]          # one flush for the call's 27 files, none file by file
    assert writer.written == []       # flushed, so the next call starts afresh
    assert len([p for p in tmp_path.rglob("*") if p.is_file()]) == 3 * 9
    assert not list(tmp_path.rglob(".*.tmp"))


def test_a_run_that_stops_half_way_leaves_no_territory_summary(run, territory, cleared, tmp_path, monkeypatch):
    import shutil

    import dsomarket.clients.commands.territory as command

    out = tmp_path / "o"
    shutil.copytree(cleared[1], out)
    assert (out / "territory.json").is_file()

    def lost(*args, **kwargs):
        raise RuntimeError("the machine went down")

    monkeypatch.setattr(command, "runner", lost)
    with pytest.raises(RuntimeError, match="went down"):
        run("territory", "clear", "--territory", territory, "--iso-price", "60", "--out", out)
    # An earlier run's summary must not vouch for files this run may have half replaced.
    assert not (out / "territory.json").exists()
    assert (out / "feeder-0000" / "clear" / "dispatch.csv").is_file()


def test_substations_group_feeders_under_their_transformer_limit(run, tmp_path):
    t = tmp_path / "t"
    assert run("territory", "synth", "--feeders", "4", "--buses", "30", "--bids", "30", "--seed", "1",
               "--per-substation", "2", t)[0] == 0
    spec = json.loads((t / "territory.json").read_text())
    assert [i["feeders"] for i in spec["interfaces"]] == [["feeder-0000", "feeder-0001"],
                                                          ["feeder-0002", "feeder-0003"]]
    code, _, err = run("territory", "clear", "--territory", t, "--iso-price", "-500", "--workers", "1",
                       "--out", tmp_path / "o")
    assert code == 0, err
    reports = json.loads((tmp_path / "o" / "territory.json").read_text())["interfaces"]
    for rep, it in zip(reports, spec["interfaces"]):
        assert rep["interface_id"] == it["interface_id"]
        assert rep["import_kw"] <= it["import_max_kw"] + 1e-6
    prices = pl.read_csv(tmp_path / "o" / "substation-0000" / "clear" / "prices.csv")
    assert "feeder-0001/7" in prices["bus"].to_list()


@pytest.mark.parametrize("argv,field", [
    (["--workers", "0"], "workers"),
    (["--max-segments", "0"], "max_segments"),
])
def test_bad_territory_options_exit_2_naming_the_field(run, territory, tmp_path, argv, field):
    code, _, err = run("territory", "clear", "--territory", territory, "--iso-price", "50", "--out", tmp_path,
                       *argv)
    assert code == 2 and f"field {field}" in err and len(err.strip().splitlines()) == 1


def test_a_missing_territory_exits_2(run, tmp_path):
    code, _, err = run("territory", "clear", "--territory", tmp_path / "none", "--iso-price", "50",
                       "--out", tmp_path / "o")
    assert code == 2 and "no such directory" in err


# -- warm cycles in worker processes, and Ray ---------------------------------------------

def _jobs(n: int = 4) -> list[Job]:
    return [Job(f.name, substation, (f.name, [f], [b]), weight=1.0) for f, b in synthetic_territory(n, 40, 40, 9)]


def test_local_workers_keep_models_warm_between_cycles():
    with LocalRunner(2, options=NO_AC) as r:
        r.load(_jobs())
        day_ahead = r.run(Cycle(50.0))
        real_time = r.run(Cycle(95.0))
        rss = r.peak_rss_kb()
    assert len(rss) == 2 and all(kb > 0 for kb in rss)
    assert [o.warm for o in day_ahead] == [False] * 4 and [o.warm for o in real_time] == [True] * 4
    for o, (f, b) in zip(real_time, synthetic_territory(4, 40, 40, 9)):
        cold = clear(f, b, 95.0, options=NO_AC)
        assert o.clearing.welfare == pytest.approx(cold.welfare, rel=1e-9, abs=1e-6)


def _worker_dies(*_):
    os._exit(3)   # a worker process killed under its shard (out of memory, a solver crash)


def test_an_interface_that_kills_every_worker_fails_alone_and_its_shard_recovers():
    jobs = _jobs() + [Job("zz-crash", _worker_dies, (), weight=10.0)]
    with LocalRunner(2, options=NO_AC) as r:
        r.load(jobs)
        out = {o.interface_id: o for o in r.run(Cycle(50.0))}
        again = {o.interface_id: o for o in r.run(Cycle(55.0))}
    for cycle in (out, again):
        assert cycle["zz-crash"].status == "error" and "worker lost" in cycle["zz-crash"].error
        assert {k for k, o in cycle.items() if o.status == "optimal"} == set(cycle) - {"zz-crash"}


def _wait_dead(pid: int) -> None:
    import signal
    import time

    os.kill(pid, signal.SIGKILL)
    # On a loaded machine the kill can take seconds to land; a worker still running would make the next cycle
    # find nothing lost, so wait for it (gone once /proc no longer lists it as running: a zombie is dead).
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return
        except (FileNotFoundError, ProcessLookupError):   # reaped between the open and the read
            return
        time.sleep(0.01)
    raise AssertionError(f"worker {pid} still running 60 s after SIGKILL")


def _same_as_clean(outcomes, price: float) -> None:
    """Each outcome's clearing equals a cold clearing of its interface at ``price`` (DLMPs and dispatch byte for
    byte where it was cleared cold on a fresh worker)."""
    for o, (f, b) in zip(outcomes, synthetic_territory(len(outcomes), 40, 40, 9)):
        cold = clear(f, b, price, options=NO_AC)
        assert o.status == "optimal" and o.interface_id == f.name
        if o.recovered:
            assert not o.warm and o.clearing.prices.equals(cold.prices) and o.clearing.dispatch.equals(cold.dispatch)
        assert o.clearing.welfare == pytest.approx(cold.welfare, rel=1e-9, abs=1e-6)


def test_a_worker_killed_between_cycles_is_replaced_and_its_interfaces_clear_again_cold():
    with LocalRunner(2, options=NO_AC) as r:
        r.load(_jobs())
        r.run(Cycle(50.0))
        pids = r.pids()
        _wait_dead(pids[0])
        out = r.run(Cycle(95.0))
        assert r.pids()[0] not in (0, pids[0]) and r.pids()[1] == pids[1]
        later = r.run(Cycle(60.0))
        _wait_dead(pids[1])
        reports = r.run(Cycle(60.0), InterfaceOutcome.report)   # what the command line writes to territory.json
    lost = {o.interface_id for o in out if o.recovered}
    assert lost and lost != {o.interface_id for o in out}
    assert all("worker lost" in o.recovered for o in out if o.recovered)
    assert {o.interface_id for o in out if o.warm} == {o.interface_id for o in out} - lost
    _same_as_clean(out, 95.0)
    assert all(o.warm and not o.recovered for o in later)   # the fresh worker holds them again
    _same_as_clean(later, 60.0)
    assert [rep["interface_id"] for rep in reports] == [o.interface_id for o in later]
    assert {rep["interface_id"] for rep in reports if "worker lost" in rep.get("recovered", "")} == \
        {o.interface_id for o in out} - lost
    assert [rep["status"] for rep in reports] == ["optimal"] * len(later)
    assert [rep["welfare"] for rep in reports] == pytest.approx([o.clearing.welfare for o in later], rel=1e-9)


def _count_or_die(kept, marker: str, always: bool = False):
    """A kept task that kills its worker process when ``marker`` exists (once, or ``always``). Once: the task that
    removes the marker dies; removing it is the claim, so two tasks running at once on two workers cannot both see
    it and one then fail to remove it (a CI run under load: one task's value None, its error FileNotFoundError)."""
    if always and os.path.exists(marker):
        os._exit(9)
    if not always:
        try:
            os.remove(marker)
        except FileNotFoundError:
            pass
        else:
            os._exit(9)
    return (kept or 0) + 1, (kept or 0) + 1


def test_a_worker_killed_under_a_task_is_replaced_and_the_task_runs_again_cold(tmp_path):
    die, poison = tmp_path / "die", tmp_path / "poison"
    ids = ["a", "b", "c", "d"]

    def tasks(extra=()):
        out = [Task(i, _count_or_die, (str(die if i == "b" else tmp_path / "never"),), keep=True) for i in ids]
        return out + [Task(i, _count_or_die, (str(poison), True), keep=True) for i in extra]

    with LocalRunner(2, options=NO_AC) as r:
        assert [x.value for x in r.map(tasks())] == [1] * 4
        home = r._home
        die.touch()   # b's task kills its worker, once
        second = {x.interface_id: x for x in r.map(tasks())}
        poison.touch()   # p's task kills every worker it runs on
        third = {x.interface_id: x for x in r.map(tasks(["p"]))}
    lost = {i for i in ids if home[i] == home["b"]}
    assert {i for i, x in second.items() if x.recovered} == lost
    assert {i: x.value for i, x in second.items()} == {i: 1 if i in lost else 2 for i in ids}
    assert not any(x.error for x in second.values())
    assert third["p"].error.startswith("worker lost") and third["p"].value is None
    shared = {i for i in ids if home[i] == home["p"]}
    assert {i for i, x in third.items() if x.recovered} == shared   # p failed alone
    assert all(not third[i].error and third[i].value >= 1 for i in ids)


class _Counted:
    """A value that counts the times this process pickles it: each is one crossing to a worker."""

    pickled = 0

    def __init__(self, text: str):
        self.text = text

    def __reduce__(self):
        _Counted.pickled += 1
        return _Counted, (self.text,)


def _read(kept, value):
    return value.text, None


def test_a_shared_value_crosses_to_a_worker_once_and_again_only_when_the_worker_lost_it():
    from dsomarket.server.runner import Shared

    values = {k: _Counted(k) for k in ("k1", "k2", "k3")}

    def tasks(*keys):
        return [Task(f"i{n}", _read, (Shared(k, values[k]),), keep=True) for n, k in enumerate(keys)]

    with LocalRunner(1, options=NO_AC, keep=2) as r:
        assert [t.value for t in r.map(tasks("k1", "k1"))] == ["k1", "k1"]
        assert _Counted.pickled == 1                                    # once, for two tasks
        assert [t.value for t in r.map(tasks("k1", "k1"))] == ["k1", "k1"]
        assert _Counted.pickled == 1                                    # the next session sends the key
        assert [t.value for t in r.map(tasks("k2", "k3"))] == ["k2", "k3"]   # the worker drops k1 (keep=2)
        assert _Counted.pickled == 3
        assert [t.value for t in r.map(tasks("k1"))] == ["k1"]          # asked for again, sent again
        assert _Counted.pickled == 4 and r._gather("shared_keys", [()])[0] == ["k3", "k1"]
        _wait_dead(r.pids()[0])
        out = r.map(tasks("k3"))                                        # a fresh worker holds nothing
        assert [t.value for t in out] == ["k3"] and out[0].recovered and not out[0].error
        assert [t.value for t in r.map(tasks("k3", "k2"))] == ["k3", "k2"]
    with LocalRunner(1, options=NO_AC, keep=0) as r:                    # keeps nothing: sends every time
        before = _Counted.pickled
        assert [t.value for t in r.map(tasks("k1"))] == [t.value for t in r.map(tasks("k1"))] == ["k1"]
        assert _Counted.pickled == before + 2


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.xdist_group("ray")
def test_ray_actors_give_byte_identical_files_and_keep_models_warm(local_ray, run, territory, cleared, tmp_path):
    from dsomarket.server.runner import RayRunner

    code, out, err = run("territory", "clear", "--territory", territory, "--iso-price", "50", "--curves",
                         "--ray", "auto", "--out", tmp_path / "ray")
    assert code == 0, err
    assert "2 Ray actors" in out
    assert _tree(tmp_path / "ray") == _tree(cleared[1])
    with RayRunner(options=NO_AC) as r:
        r.load(_jobs())
        r.run(Cycle(50.0))
        again = r.run(Cycle(95.0))
    assert [o.warm for o in again] == [True] * 4
    assert math.isfinite(sum(o.clearing.welfare for o in again))


@pytest.mark.xdist_group("ray")
def test_a_lost_ray_actor_is_replaced_and_its_interfaces_clear_again_cold(local_ray, tmp_path):
    from dsomarket.server.runner import RayRunner

    with RayRunner(shards=2, options=NO_AC) as r:
        r.load(_jobs())
        r.run(Cycle(50.0))
        local_ray.kill(r._actors[0], no_restart=False)   # as Ray reports a lost node: the actor is gone
        out = r.run(Cycle(95.0))
        die = tmp_path / "die"
        die.touch()
        tasks = r.map([Task(i, _count_or_die, (str(die),), keep=True) for i in ("a", "b")])
    assert {o.interface_id for o in out if o.recovered} == {j.interface_id for j in r._parts[0]}
    assert all("worker lost" in o.recovered and "Actor" in o.recovered for o in out if o.recovered)
    _same_as_clean(out, 95.0)
    assert [t.value for t in tasks] == [1, 1] and not any(t.error for t in tasks)
    assert sum(bool(t.recovered) for t in tasks) >= 1
