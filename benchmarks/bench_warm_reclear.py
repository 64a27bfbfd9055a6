"""Where a warm real-time re-clear of one kept interface spends its CPU time.

A territory worker keeps each interface's market (:class:`engine.territory.InterfaceSession`) and re-clears it
at each cycle's ISO price. This times, in one process and in CPU seconds (steady on a loaded machine):

- ``clear``: a whole warm ``InterfaceSession.clear`` at a new price (``HighsSolver.solve_by_basis``: the kept
  basis where it stays optimal after bound flips, else a few simplex pivots of the solver's own from it, else
  HiGHS's warm re-solve; where that optimum is one of several, bids tied at their DLMP, a cold clearing from the
  slack basis: ``HighsSolver.solve_kept``; and the tables), with how many of the re-clears pivoted on their own,
  how many ran HiGHS and how many were tied and cleared cold;
- ``solve``: HiGHS's warm re-solve alone (``HighsSolver.solve`` after ``set_iso_price``), the same prices;
- ``tables``: ``NodalMarket.result`` of one solution with the market's kept table layout
  (:class:`engine.results.TableLayout`), against ``tables, layout per call``: the same with the fixed id,
  interval and bid columns rebuilt every call (what every re-clear did before the layout was kept).

    python benchmarks/bench_warm_reclear.py [--buses 1000] [--bids 1000] [--rounds 10] [--prices P ...]

``--prices`` re-clears at these ISO prices in turn instead of 40, 43, ..., 97 per MWh: ``--prices 60 45 52 55``
steps as ``bench_territory.py``'s cycles do (5-15 per MWh), where most re-clears pivot.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from unittest import mock

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dsomarket.engine import results  # noqa: E402
from dsomarket.engine.bids import MarketRules  # noqa: E402
from dsomarket.engine.clearing import ClearingOptions  # noqa: E402
from dsomarket.engine.feeders import synthetic  # noqa: E402
from dsomarket.engine.territory import Interface, InterfaceSession, synthetic_bids  # noqa: E402

PRICES = [40.0 + 3.0 * k for k in range(20)]


def cpu_ms(fn, n: int) -> float:
    fn()
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--buses", type=int, default=1000)
    ap.add_argument("--bids", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=10, help="passes over the prices")
    ap.add_argument("--prices", type=float, nargs="+", default=PRICES, help="ISO prices re-cleared in turn (per MWh)")
    a = ap.parse_args()
    prices = a.prices
    f = synthetic(a.buses, 1)
    session = InterfaceSession(Interface("x", f, synthetic_bids(f, a.bids, 1), ("x",)), MarketRules(),
                               ClearingOptions(formulation="lossless", ac_check=False))
    session.clear(50.0)
    market = session._market
    n = a.rounds * len(prices)

    def clears():
        for p in prices:
            session.clear(p)

    def solves():
        for p in prices:
            market.set_iso_price(p)
            market.solver.solve()

    runs, rebases = [], []
    run, rebase = market.solver.run, market.solver._rebase
    market.solver.run = lambda: runs.append(1) or run()
    market.solver._rebase = lambda *b: rebases.append(1) or rebase(*b)
    clear_ms = cpu_ms(clears, a.rounds) / len(prices)
    market.solver.run, market.solver._rebase = run, rebase
    ran = (f"of {(a.rounds + 1) * len(prices)}, {len(rebases)} pivoted on their own (bases factorised), "
           f"{len(runs)} ran HiGHS, {market.solver.tie_restarts} tied and cleared cold")
    solve_ms = cpu_ms(solves, a.rounds) / len(prices)
    sol = market.converge()
    kept_ms = cpu_ms(lambda: market.result(sol), n)
    # The same tables with the layout built per call (MarketContext without a kept layout).
    with mock.patch.object(type(market), "context", property(lambda m: results.MarketContext(
            m.feeder, m.book, m.iso_price, m.options.formulation, m.build_seconds))):
        per_call_ms = cpu_ms(lambda: market.result(sol), n)
    print(f"{a.buses} buses, {a.bids} bids, lossless, AC check off; CPU ms per warm re-clear "
          f"(mean of {n}, load {os.getloadavg()[0]:.1f})")
    print(f"clear {clear_ms:.2f} ({ran})  solve {solve_ms:.2f}  tables {kept_ms:.2f}  "
          f"tables, layout per call {per_call_ms:.2f} ({per_call_ms / kept_ms:.1f}x)")


if __name__ == "__main__":
    main()
