"""What the interface curves of a storage horizon cost on the loss-aware model, against the lossless LP.

Run: ``python benchmarks/bench_coupled_curve.py [--forecast P ...]``. The case is the rolling storage market of
``tests/test_server_rolling_storage.py`` (ieee33, four 5-minute intervals, a PV offer at bus 18, a load bid and a
100 kW battery at bus 25), once on the feeder as loaded (one network: ``engine.interface.trace_curve`` on one
``NodalMarket``) and once with line 17 out from the third interval (``engine.runs.trace_coupled`` on a
``CoupledMarket``). For each it traces the curves with ``engine.runs.trace_runs`` on each formulation and prints
CPU seconds (wall time on a shared machine is mostly waiting for a core), HiGHS solves, converged clearings and
bands, and the CPU ratio to the lossless curve measured in the same process.

``--dayahead HOURS`` runs the coupled day-ahead case of ``bench_curve.py --dayahead-intervals`` instead
(``--buses`` 1,000, ``--bids`` 10,000 over the hours, ``--batteries`` 100; the issue's target: all 24
curves in < 60 s): the first ``--intervals K`` curves (default all) traced in this process, then the same
intervals dealt out to ``--workers`` spawned processes (``dsomarket curve --workers``,
``clients.commands.market.trace_in_processes``), with the wall time of each, their ratio, the seconds per
interval and a check that the two curves are identical. ``--service`` runs the server's clearing
(``markets_engine.clear_market``: clearing at the forecast plus every curve) instead, with its curves traced on the
solver thread and then fanned out to a runner of ``--workers`` processes (``server.runner.CurveFanOut``, what
ClearMarket does), with both wall times, their ratio and whether the clearing digests are identical. ``--whole``
also traces them on the whole horizon, as before ``engine.horizoncurve`` (CPU ratio, identical bands). ``--formulation lossaware`` measures the default model.

``--demo HOUR ...`` runs the demo's day-ahead market instead (``dsomarket demo``: ieee33, 24 hours, 413 segments,
a battery and EVs coupling the hours; read back as the server builds it, ``bench_formulation.demo_inputs``) and
traces the curves of the given hours on each formulation at the demo's forecast, with CPU seconds, HiGHS solves,
converged clearings, bands and the CPU ratio to the lossless curves.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timedelta, timezone

import polars as pl

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from dsomarket.engine.bids import Battery, MarketRules, validate_bids  # noqa: E402
from dsomarket.engine.clearing import ClearingOptions  # noqa: E402
from dsomarket.engine.feeders import ieee33  # noqa: E402
from dsomarket.engine.network_changes import validate_changes  # noqa: E402
from dsomarket.engine.runs import runs_for, trace_runs  # noqa: E402

T0 = datetime(2026, 12, 1, 9, tzinfo=timezone.utc)
INTERVALS = [T0 + timedelta(minutes=5 * k) for k in range(4)]
RULES = MarketRules(interval_minutes=5)
BATTERY = (Battery("bat", energy_kwh=60, charge_kw=100, discharge_kw=100, eta_charge=0.9, eta_discharge=0.9),)


def market(outage: bool):
    rows = []
    for k, iv in enumerate(INTERVALS):
        for bid_id, bus, side, kw, price, rid in ((f"pv-{k}", "18", "sell", 150.0, 10.0, "pv"),
                                                   (f"load-{k}", "25", "buy", 120.0, 80.0, "load"),
                                                   (f"bat-in-{k}", "25", "buy", 100.0, 45.0, "bat"),
                                                   (f"bat-out-{k}", "25", "sell", 100.0, 40.0, "bat")):
            rows.append({"bid_id": bid_id, "bus": bus, "side": side, "quantity_kw": kw, "price": price,
                         "interval": iv, "aggregator_id": "agg-a", "resource_id": rid})
    feeder = ieee33()
    book = validate_bids(pl.DataFrame(rows), feeder, RULES)
    changes = None
    if outage:
        changes = validate_changes(pl.DataFrame(
            [{"change_id": "fault-17", "kind": "outage", "element": "17", "start": INTERVALS[2], "end": None,
              "shed": True, "s_max_kva": None, "vmin_pu": None, "vmax_pu": None, "import_max_kw": None,
              "export_max_kw": None, "who": "operator", "why": "cable fault"}],
            schema_overrides={"start": pl.Datetime("us", "UTC"), "end": pl.Datetime("us", "UTC")}), feeder)
    return book, runs_for(feeder, changes, book)


def dayahead(args) -> None:
    """Serial against fanned-out coupled day-ahead curves (see the module notes)."""
    from bench_curve import day_bids

    from dsomarket.clients.commands.market import trace_in_processes
    from dsomarket.engine.feeders import synthetic

    feeder = synthetic(args.buses, args.seed)
    rules = MarketRules()
    bids, batteries = day_bids(feeder, args.bids, args.dayahead, args.batteries, args.seed + 1)
    book = validate_bids(bids, feeder, rules)
    runs = runs_for(feeder, None, book)
    options = ClearingOptions(formulation=args.formulation)
    todo = list(range(args.intervals or args.dayahead))
    print(f"== dayahead: {args.buses} buses, {args.bids} bids + {args.batteries} batteries over {args.dayahead} "
          f"hours, {args.formulation}: {len(todo)} curves", flush=True)
    if args.service:
        service(args, feeder, rules, bids, batteries, todo)
        return
    t0, c0 = time.perf_counter(), time.process_time()
    serial = trace_runs(runs, book, rules, batteries, options, intervals=todo)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"one process  {wall:8.2f} s wall ({cpu:.2f} s CPU, {cpu / len(todo):.2f} s CPU a curve): "
          f"{serial.bands.height} bands, {serial.solves} HiGHS solves, {serial.bound_flips} bound flips, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    if args.whole:
        # The same curves on the whole horizon: no network summed away (engine.horizoncurve).
        from dsomarket.engine import interface

        class Whole:
            def __init__(self, market):
                self.summed = []

        kept, interface.HorizonCurves = interface.HorizonCurves, Whole
        t0, c0 = time.perf_counter(), time.process_time()
        whole = trace_runs(runs, book, rules, batteries, options, intervals=todo)
        w_wall, w_cpu = time.perf_counter() - t0, time.process_time() - c0
        interface.HorizonCurves = kept
        print(f"whole horizon {w_wall:8.2f} s wall ({w_cpu:.2f} s CPU, {w_cpu / len(todo):.2f} s CPU a curve): "
              f"{whole.bands.height} bands, {whole.solves} HiGHS solves; CPU whole / summed "
              f"{w_cpu / cpu:.2f}x; identical: {whole.bands.equals(serial.bands)}", flush=True)
    if args.workers < 2:
        return
    t0 = time.perf_counter()
    fanned = trace_in_processes(args.workers, runs, book, rules, batteries, options, None, intervals=todo)
    fan = time.perf_counter() - t0
    print(f"{args.workers} processes  {fan:8.2f} s wall ({fan / len(todo):.2f} s a curve), "
          f"{wall / fan:.2f}x faster, load {os.getloadavg()[0]:.1f}; identical: {fanned.bands.equals(serial.bands)}")


def service(args, feeder, rules: MarketRules, bids: pl.DataFrame, batteries, todo: list[int]) -> None:
    """``--service``: the server's clearing of the day-ahead market (``markets_engine.clear_market``: the clearing
    at the forecast and every curve, what ClearMarket runs on its solver thread) with its curves traced on the
    solver thread, then fanned out to a runner of ``--workers`` processes (``runner.CurveFanOut``, as the server
    does), in one process: wall times, their ratio and whether the recorded digests are identical."""
    from dsomarket.server.markets_engine import MarketInputs, clear_market
    from dsomarket.server.runner import CurveFanOut, LocalRunner

    if len(todo) != args.dayahead:
        raise SystemExit("--service clears the whole day: leave out --intervals")
    inputs = MarketInputs(feeder=feeder, rules=rules, intervals=sorted(bids["interval"].unique().to_list()),
                          bids=bids, resources=batteries, formulation=args.formulation)
    t0, c0 = time.perf_counter(), time.process_time()
    serial = clear_market(inputs, [])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"server, curves on the solver thread  {wall:8.2f} s wall ({cpu:.2f} s CPU): {serial.status}, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    with LocalRunner(args.workers) as pool:   # started inside the timing, as a server's first such clearing
        t0 = time.perf_counter()
        fanned = clear_market(inputs, [], trace=CurveFanOut(lambda: pool, min_segments=0))
        fan = time.perf_counter() - t0
    print(f"server, curves on {args.workers} runner processes {fan:8.2f} s wall: {fanned.status}, "
          f"{wall / fan:.2f}x faster, load {os.getloadavg()[0]:.1f}; identical digest: {fanned.digest == serial.digest}")


def demo(hours: list[int]) -> None:
    """The demo day's curves of ``hours`` on each formulation (see the module notes)."""
    import tempfile
    from pathlib import Path

    from bench_formulation import demo_inputs

    from dsomarket.clients.demo import WHOLESALE

    with tempfile.TemporaryDirectory() as tmp:
        inputs = demo_inputs(Path(tmp))
    book = inputs.book()
    runs = inputs.runs(book)
    base = None
    for formulation in ("lossless", "lossaware"):
        cpu = time.process_time()
        curve = trace_runs(runs, book, inputs.rules, inputs.resources, ClearingOptions(formulation=formulation),
                           forecast=[float(p) for p in WHOLESALE], intervals=hours)
        cpu = time.process_time() - cpu
        base = base or cpu
        clearings = curve.ac_check["clearings"] if curve.ac_check else "-"
        print(f"demo hours {','.join(map(str, hours))} {formulation:9s} CPU {cpu:7.2f} s ({cpu / base:5.1f}x), "
              f"{curve.solves} solves, {clearings} clearings, {curve.bands.height} bands, "
              f"load {os.getloadavg()[0]:.1f}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--forecast", type=float, nargs="+", default=[50.0, 55.0, 60.0, 65.0],
                   help="ISO price forecast, one or one per interval (the server test's: 50 55 60 65)")
    p.add_argument("--dayahead", type=int, default=0, help="hours of the coupled day-ahead case (0: the ieee33 case)")
    p.add_argument("--intervals", type=int, default=0, help="day-ahead: trace the first K curves (0: all)")
    p.add_argument("--workers", type=int, default=2, help="day-ahead: processes of the fanned-out run (1: none)")
    p.add_argument("--buses", type=int, default=1000)
    p.add_argument("--bids", type=int, default=10_000)
    p.add_argument("--batteries", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--formulation", default="lossless", choices=("lossless", "lossaware"))
    p.add_argument("--service", action="store_true",
                   help="day-ahead: the server's clearing (markets_engine.clear_market) with its curves on the solver "
                        "thread, then fanned out to --workers runner processes, instead of trace_runs")
    p.add_argument("--whole", action="store_true",
                   help="day-ahead, lossless: also trace on the whole horizon (no network summed away) and compare")
    p.add_argument("--demo", type=int, nargs="+", default=[], metavar="HOUR",
                   help="trace these hours of the demo's day-ahead market instead")
    args = p.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}")
    if args.dayahead:
        dayahead(args)
        return 0
    if args.demo:
        demo(args.demo)
        return 0
    forecast = args.forecast[0] if len(args.forecast) == 1 else args.forecast
    for outage in (False, True):
        book, runs = market(outage)
        base = None
        for formulation in ("lossless", "lossaware"):
            cpu = time.process_time()
            curve = trace_runs(runs, book, RULES, BATTERY, ClearingOptions(formulation=formulation),
                               forecast=forecast)
            cpu = time.process_time() - cpu
            base = base or cpu
            clearings = curve.ac_check["clearings"] if curve.ac_check else "-"
            print(f"{'line 17 out' if outage else 'one network':12s} {formulation:9s} CPU {cpu:7.2f} s "
                  f"({cpu / base:5.1f}x), {curve.solves} solves, {clearings} clearings, {curve.bands.height} bands",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
