"""Where a feeder's interface curve spends its time: cProfile of one ``trace_curve``, the heaviest functions first.

Run: ``python benchmarks/profile_curve.py --feeder DIR [--bids FILE] [--formulation lossaware] [--top 30]
[--branches]`` (``--bids`` defaults to ``DIR/bids.csv``, as ``dsomarket territory synth`` writes it). Prints the
curve's bands, solves and CPU seconds, then the functions by cumulative time. cProfile adds its own overhead to every
Python call, so compare the shares, not the seconds, with an unprofiled run; its clock is the process's CPU time.

``--branches`` also prints what each comparison of fixed points (:func:`engine.branches.best_fixed_point`, at the
clearings where some DLMP is negative: the curve's floor) found: for every other start, whether its fixed point was
kept, and how far its objective with the AC import (relative) and its import (kW) are from the best one's so far.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time

from dsomarket.clients.files import read_feeder, read_table
from dsomarket.engine.bids import MarketRules, validate_bids
from dsomarket.engine.clearing import ClearingOptions
from dsomarket.engine import branches
from dsomarket.engine.interface import trace_curve


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--feeder", required=True, help="a feeder directory")
    p.add_argument("--bids", help="the bids file (default FEEDER/bids.csv)")
    p.add_argument("--formulation", default="lossaware", choices=["lossaware", "lossless"])
    p.add_argument("--top", type=int, default=30, help="functions to list")
    p.add_argument("--branches", action="store_true", help="also what each comparison of fixed points found")
    args = p.parse_args(argv)
    compared = []
    if args.branches:
        better_than = branches._FixedPoint.better_than

        def recorded(self, other):
            kept = better_than(self, other)
            compared.append((kept, (self.merit[0] - other.merit[0]) / max(1.0, abs(other.merit[0])),
                             (self.import_mw - other.import_mw) * 1e3))
            return kept

        branches._FixedPoint.better_than = recorded
    feeder, rules = read_feeder(args.feeder), MarketRules()
    book = validate_bids(read_table(args.bids or f"{args.feeder}/bids.csv", "bids"), feeder, rules)
    profile = cProfile.Profile(time.process_time)   # CPU: a loaded machine does not inflate it
    t0 = time.process_time()
    profile.enable()
    curve = trace_curve(feeder, book, rules, options=ClearingOptions(formulation=args.formulation))
    profile.disable()
    print(f"{curve.bands.height} bands, {curve.solves} solves, {time.process_time() - t0:.2f} s CPU (profiled)")
    pstats.Stats(profile, stream=sys.stdout).sort_stats("cumulative").print_stats(args.top)
    if args.branches:
        print(f"{len(compared)} other fixed points compared; kept, objective difference (relative), import "
              f"difference (kW):")
        for kept, objective, import_kw in compared:
            print(f"  {'kept' if kept else 'not kept':8} {objective:+.2e} {import_kw:+.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
