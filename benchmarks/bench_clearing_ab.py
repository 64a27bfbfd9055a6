"""CPU A/B of one lossless ``clear`` against a base revision of its build and solve path.

Run: ``python benchmarks/bench_clearing_ab.py [--base REV] [--buses 1000] [--bids 10000] [--rounds 4]``.

Each round runs two fresh processes, one with ``engine/{network,solver,bids,lindistflow,results,clearing}.py`` as
they are at ``--base`` (``bench_successive_ab.load_base``; the feeder is built again of the base's
``network.Feeder``, so that its validation and bus lookup are the base's too) and one with this checkout's
(every other module is this checkout's in both), and prints each
side's best and median CPU time of 10 ``clear`` calls on ``bench_clearing``'s synthetic case (AC check off),
with the status and the total cleared kW, which must agree.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="HEAD~1")
    ap.add_argument("--buses", type=int, default=1000)
    ap.add_argument("--bids", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--side", help=argparse.SUPPRESS)   # a child process: "this" or a revision
    args = ap.parse_args()
    if args.side:
        print(side(None if args.side == "this" else args.side, args.buses, args.bids), flush=True)
        return
    for _ in range(args.rounds):
        for which in (args.base, "this"):
            out = subprocess.run([sys.executable, __file__, "--side", which, "--buses", str(args.buses),
                                  "--bids", str(args.bids)], check=True, capture_output=True, text=True).stdout
            print(out.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
