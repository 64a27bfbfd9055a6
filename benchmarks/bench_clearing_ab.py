"""CPU A/B of one lossless ``clear`` against a base revision of its build and solve path.

Run: ``python benchmarks/bench_clearing_ab.py [--base REV] [--buses 1000] [--bids 10000] [--rounds 4]
[--interleaved N]``.

Each round runs two fresh processes, one with ``engine/{network,solver,bids,lindistflow,results,clearing}.py`` as
they are at ``--base`` (``bench_successive_ab.load_base``; the feeder is built again of the base's
``network.Feeder``, so that its validation and bus lookup are the base's too) and one with this checkout's
(every other module is this checkout's in both), and prints each
side's best and median CPU time of 10 ``clear`` calls on ``bench_clearing``'s synthetic case (AC check off),
with the status and the total cleared kW, which must agree.

``--interleaved N`` runs both sides in this one process instead (the base's modules next to this checkout's), N
rounds of base, this and ``bench_clearing``'s slack-started raw HiGHS solve in turn, and prints each one's best and
median CPU ms, each side's ratio to the raw solve's, and whether every table of the two sides' clearings is the same
to the bit (their Arrow IPC bytes).
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWAPPED = ("network", "solver", "bids", "lindistflow", "results", "clearing")   # in import order


def side(rev: str | None, n_bus: int, n_bid: int) -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_clearing import make_bids
    from bench_successive_ab import load_base

    from dsomarket.engine.clearing import ClearingOptions, clear
    from dsomarket.engine.feeders import synthetic
    feeder = synthetic(n_bus, 1)
    if rev is not None:
        base = load_base(rev, SWAPPED)
        clear = base["clearing"].clear
        feeder = base["network"].Feeder.from_tables(feeder.header(), feeder.buses, feeder.lines)
    bids = make_bids(feeder, n_bid, 2)
    opts = ClearingOptions(formulation="lossless", ac_check=False)
    res = clear(feeder, bids, 50.0, options=opts)
    times = []
    for _ in range(10):
        t0 = time.process_time()
        clear(feeder, bids, 50.0, options=opts)
        times.append(time.process_time() - t0)
    times.sort()
    return (f"{rev or 'this':>10} best {times[0] * 1e3:6.1f} ms CPU, median {times[5] * 1e3:6.1f} ms; "
            f"{res.status}, cleared {res.dispatch['cleared_kw'].sum():.6f} kW")


def table_bytes(res) -> bytes:
    """Every table of a clearing (and its welfare) as bytes: equal bytes, equal bits."""
    out = io.BytesIO()
    for table in (res.dispatch, res.prices, res.lines, res.buses, res.interface):
        table.write_ipc(out)
    return out.getvalue() + repr(res.welfare).encode()


def interleaved(rev: str, n_bus: int, n_bid: int, rounds: int) -> None:
    """Base, this and the raw slack-started solve in turn in this process (see the module's docstring)."""
    import os

    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_clearing import make_bids, raw_solve, slack_statuses
    from bench_successive_ab import load_base

    from dsomarket.engine import lindistflow
    from dsomarket.engine.bids import MarketRules, validate_bids
    from dsomarket.engine.clearing import ClearingOptions, clear
    from dsomarket.engine.feeders import synthetic
    feeder = synthetic(n_bus, 1)
    base = load_base(rev, SWAPPED)
    base_feeder = base["network"].Feeder.from_tables(feeder.header(), feeder.buses, feeder.lines)
    bids = make_bids(feeder, n_bid, 2)
    opts = ClearingOptions(formulation="lossless", ac_check=False)
    base_opts = base["results"].ClearingOptions(formulation="lossless", ac_check=False)
    book = validate_bids(bids, feeder, MarketRules())
    model = lindistflow.build(feeder, book, np.array([50.0]), MarketRules())
    arrays = model.assemble()
    basis = slack_statuses(model, arrays)
    runs = {rev: lambda: base["clearing"].clear(base_feeder, bids, 50.0, options=base_opts),
            "this": lambda: clear(feeder, bids, 50.0, options=opts), "slack": lambda: raw_solve(arrays, basis)}
    same = table_bytes(runs[rev]()) == table_bytes(runs["this"]())
    times: dict[str, list[float]] = {name: [] for name in runs}
    load = os.getloadavg()[0]
    for _ in range(rounds):
        for name, run in runs.items():
            t0 = time.process_time()
            run()
            times[name].append(time.process_time() - t0)
    slack = np.min(times["slack"]), np.median(times["slack"])
    for name, t in times.items():
        best, median = np.min(t), np.median(t)
        print(f"{name:>10} best {best * 1e3:6.2f} ms CPU, median {median * 1e3:6.2f} ms; / slack best "
              f"{best / slack[0]:.3f}, median {median / slack[1]:.3f}")
    print(f"{rounds} rounds, load {load:.1f} to {os.getloadavg()[0]:.1f}; tables identical to the bit: {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="HEAD~1")
    ap.add_argument("--buses", type=int, default=1000)
    ap.add_argument("--bids", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--interleaved", type=int, metavar="N", help="N rounds of both sides in this process")
    ap.add_argument("--side", help=argparse.SUPPRESS)   # a child process: "this" or a revision
    args = ap.parse_args()
    if args.side:
        print(side(None if args.side == "this" else args.side, args.buses, args.bids), flush=True)
        return
    if args.interleaved:
        interleaved(args.base, args.buses, args.bids, args.interleaved)
        return
    for _ in range(args.rounds):
        for which in (args.base, "this"):
            out = subprocess.run([sys.executable, __file__, "--side", which, "--buses", str(args.buses),
                                  "--bids", str(args.bids)], check=True, capture_output=True, text=True).stdout
            print(out.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
