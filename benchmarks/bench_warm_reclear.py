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

    python benchmarks/bench_warm_reclear.py [--buses 1000] [--bids 1000] [--rounds 10] [--prices P ...] [--base REV]

``--prices`` re-clears at these ISO prices in turn instead of 40, 43, ..., 97 per MWh: ``--prices 60 45 52 55``
steps as ``bench_territory.py``'s cycles do (5-15 per MWh), where most re-clears pivot.

``--base REV`` times instead the whole ``clear`` of two sessions in one process, one whose solver is
``engine/solver.py``'s ``HighsSolver`` at ``REV`` (``bench_successive_ab.load_base``), the other this checkout's,
in alternate rounds (CPU ms per re-clear, best and median of ``--rounds``), and counts the re-clears whose
solutions (values, duals, objective) differ in any bit between the two.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from unittest import mock

import numpy as np

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


def recorded(solver) -> list:
    """The solutions ``solver``'s re-clears (``solve_kept``) return from now on, in order."""
    out, solve_kept = [], solver.solve_kept

    def keep(*args, **kwargs):
        out.append(solve_kept(*args, **kwargs))
        return out[-1]

    solver.solve_kept = keep
    return out


def ab(a: argparse.Namespace, session_of) -> None:
    """``--base``: the two solvers' re-clears in alternate rounds, timed and compared bit for bit."""
    sys.path.insert(0, os.path.dirname(__file__))
    from bench_successive_ab import load_base

    from dsomarket.engine.solver import HighsSolver
    sides = {a.base: load_base(a.base, ("solver",))["solver"].HighsSolver, "this": HighsSolver}
    sessions, solved, times = {}, {}, {name: [] for name in sides}
    for name, cls in sides.items():
        session = sessions[name] = session_of()
        session._market.solver.__class__ = cls     # the instance's state is the same in both revisions
        solved[name] = recorded(session._market.solver)
    for r in range(a.rounds):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            t0 = time.process_time()
            for p in a.prices:
                sessions[name].clear(p)
            times[name].append((time.process_time() - t0) / len(a.prices) * 1e3)
    one, other = solved.values()
    differ = sum(x.objective != y.objective or not all(np.array_equal(getattr(x, f), getattr(y, f))
                                                      for f in ("x", "row_value", "row_dual", "col_dual"))
                 for x, y in zip(one, other))
    print(f"{a.buses} buses, {a.bids} bids, lossless; CPU ms per warm re-clear, {a.rounds} alternate rounds of "
          f"{len(a.prices)} (load {os.getloadavg()[0]:.1f})")
    for name, t in times.items():
        print(f"{name}: best {min(t):.2f}  median {float(np.median(t)):.2f}")
    print(f"{differ} of {len(one)} re-clears differ in any bit")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--buses", type=int, default=1000)
    ap.add_argument("--bids", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=10, help="passes over the prices")
    ap.add_argument("--prices", type=float, nargs="+", default=PRICES, help="ISO prices re-cleared in turn (per MWh)")
    ap.add_argument("--base", help="A/B against engine/solver.py at this revision instead (see above)")
    a = ap.parse_args()
    prices = a.prices
    f = synthetic(a.buses, 1)
    bids = synthetic_bids(f, a.bids, 1)

    def session_of() -> InterfaceSession:
        out = InterfaceSession(Interface("x", f, bids, ("x",)), MarketRules(),
                               ClearingOptions(formulation="lossless", ac_check=False))
        out.clear(50.0)
        return out

    if a.base:
        return ab(a, session_of)
    session = session_of()
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
