"""A lossless clearing started from the network's slack basis against the same clearing solved cold, in one process.

Run: ``python benchmarks/bench_slack_start.py [--cases 33x1000 1000x1000 1000x10000] [--repeat 5]``.

For each ``BUSESxBIDS`` case (``engine.feeders.synthetic`` feeder, ``bench_clearing.make_bids`` bids, ISO price
50 per MWh, lossless LinDistFlow, AC check off) it times :func:`engine.clearing.clear` end to end (validation,
model build, solve, DLMPs, tables) and :meth:`engine.solver.HighsSolver.solve` alone, with the slack start
(:meth:`engine.solver.HighsSolver.start_from_slack`, what every clearing does now) and with it switched off
(a cold HiGHS solve, as before), alternating the two ``--repeat`` times. It prints the best CPU seconds of each,
their ratio, HiGHS's simplex iterations, and the largest difference between the two clearings' dispatch (kW)
and DLMPs (per MWh): they are the same optimum, equal to floating-point rounding where the LP's optimum is
unique.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import highspy
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from bench_clearing import make_bids  # noqa: E402

from dsomarket.engine.bids import MarketRules, canonical, validate_bids  # noqa: E402
from dsomarket.engine.clearing import ClearingOptions, NodalMarket, clear  # noqa: E402
from dsomarket.engine.feeders import synthetic  # noqa: E402
from dsomarket.engine.solver import HighsSolver  # noqa: E402

OPTS = ClearingOptions(formulation="lossless", ac_check=False)
_SLACK = HighsSolver.start_from_slack


def _cold(self) -> bool:
    return False


def _use(slack: bool) -> None:
    HighsSolver.start_from_slack = _SLACK if slack else _cold


def _cpu(fn) -> tuple[float, object]:
    c0 = time.process_time()
    out = fn()
    return time.process_time() - c0, out


def case(n_bus: int, n_bid: int, repeat: int) -> None:
    feeder = synthetic(n_bus, 1)
    rules = MarketRules()
    bids = make_bids(feeder, n_bid, 2)
    book = canonical(validate_bids(bids, feeder, rules), feeder, rules)
    best = {True: [np.inf, np.inf], False: [np.inf, np.inf]}
    iters, results = {}, {}
    for _ in range(repeat):
        for slack in (False, True):
            _use(slack)
            t_clear, res = _cpu(lambda: clear(feeder, bids, 50.0, options=OPTS))
            market = NodalMarket(feeder, book, 50.0, rules, options=OPTS)
            t_solve, sol = _cpu(market.converge)
            assert res.ok and sol.ok, (res.status, sol.status)
            best[slack][0] = min(best[slack][0], t_clear)
            best[slack][1] = min(best[slack][1], t_solve)
            iters[slack], results[slack] = sol.iterations, res
    _use(True)
    a, b = results[False], results[True]
    d_kw = float(np.abs(a.dispatch["cleared_kw"].to_numpy() - b.dispatch["cleared_kw"].to_numpy()).max())
    d_lmp = float(np.abs(a.prices["dlmp"].to_numpy() - b.prices["dlmp"].to_numpy()).max())
    print(f"{n_bus:>6} {n_bid:>6} {best[False][0]:9.4f} {best[True][0]:9.4f} {best[True][0] / best[False][0]:7.2f}"
          f" {best[False][1]:9.4f} {best[True][1]:9.4f} {best[True][1] / best[False][1]:7.2f}"
          f" {iters[False]:>6} {iters[True]:>6} {d_kw:9.1e} {d_lmp:9.1e}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["33x1000", "1000x1000", "1000x10000"])
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args(argv)
    print(f"machine: {platform.platform()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}, "
          f"python {platform.python_version()}, highspy {highspy.Highs().version()}; best CPU s of {a.repeat}")
    print(f"{'buses':>6} {'bids':>6} {'clear':>9} {'clear':>9} {'ratio':>7} {'solve':>9} {'solve':>9} {'ratio':>7}"
          f" {'iters':>6} {'iters':>6} {'max dkW':>9} {'max dDLMP':>9}")
    print(f"{'':>6} {'':>6} {'cold':>9} {'slack':>9} {'':>7} {'cold':>9} {'slack':>9} {'':>7} {'cold':>6} {'slack':>6}")
    for spec in a.cases:
        n_bus, n_bid = (int(v) for v in spec.split("x"))
        case(n_bus, n_bid, a.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
