"""What the interface curves of a storage horizon cost on the loss-aware model, against the lossless LP.

Run: ``python benchmarks/bench_coupled_curve.py [--forecast P ...]``. The case is the rolling storage market of
``tests/test_server_rolling_storage.py`` (ieee33, four 5-minute intervals, a PV offer at bus 18, a load bid and a
100 kW battery at bus 25), once on the feeder as loaded (one network: ``engine.interface.trace_curve`` on one
``NodalMarket``) and once with line 17 out from the third interval (``engine.runs.trace_coupled`` on a
``CoupledMarket``). For each it traces the curves with ``engine.runs.trace_runs`` on each formulation and prints
CPU seconds (wall time on a shared machine is mostly waiting for a core), HiGHS solves, converged clearings and
bands, and the CPU ratio to the lossless curve measured in the same process.
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--forecast", type=float, nargs="+", default=[50.0, 55.0, 60.0, 65.0],
                   help="ISO price forecast, one or one per interval (the server test's: 50 55 60 65)")
    args = p.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}")
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
