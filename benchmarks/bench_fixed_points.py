"""Which fixed point of the loss-aware clearing `clear` settles on, against the branches warm continuation follows.

Run: ``python benchmarks/bench_fixed_points.py [--case ieee33] [--seed 908] [--from -42.5 -41.5]
[--prices ...] [--cost [--repeat 3]]``. On the case ``bench_hidden_physics.make_case(case, seed)`` writes, prints at each price
the import (the AC power flow of the dispatch, kW) and welfare (per hour) of a fresh ``clear``, and of a
market converged at each ``--from`` price and then moved warm from price to price, nearest to that start
first (plain successive LP from that branch's linearisation, ``NodalMarket.converge(compare=False)``,
without :mod:`engine.branches`' second start: each follows its own branch), each with its iterations and
whether it converged; the fresh clearing also with how many fixed points it compared. Where two branches
are converged fixed points at one price, the welfare says which is the better optimum of the AC problem
(successive LP only reaches a local one: at a negative ISO price the losses are worth money, which makes
the problem non-convex), the one ``clear`` must keep.

``--cost``: what comparing fixed points costs, A/B in one process, interleaved: the loss-aware curve of the
case (under the floor and cap -45 / 300 and under the default rules) and of ``bench_physics``' two curves,
with :func:`engine.branches.best_fixed_point` switched off (as before it) and on; CPU seconds best of
``--repeat``, bands, clearings, reported error, and how many converges compared two fixed points.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_hidden_physics import make_case  # noqa: E402
from bench_physics import LOSSAWARE, ieee33, synthetic, synthetic_bids  # noqa: E402

from dsomarket.clients.files import read_feeder, read_table  # noqa: E402
from dsomarket.engine import branches as branching  # noqa: E402
from dsomarket.engine.bids import MarketRules, validate_bids  # noqa: E402
from dsomarket.engine.clearing import ClearingOptions, NodalMarket, clear  # noqa: E402
from dsomarket.engine.interface import trace_curve  # noqa: E402
from dsomarket.engine.results import ClearingResult  # noqa: E402

PRICES = (-42.3, -42.2, -42.15, -42.11, -42.104, -42.1, -42.099, -42.09, -42.05, -42.0, -41.95, -41.9, -41.8)


def follow(market: NodalMarket, price: float) -> ClearingResult:
    """``market`` moved to ``price`` and converged by plain successive LP from where it is (its own branch)."""
    market.set_iso_price(np.array([price]))
    return market.result(market.converge(compare=False))


def cost(feeder, book, name: str, repeat: int) -> None:
    """The --cost table (see the module docstring)."""
    compare = branching.best_fixed_point
    compared: list[bool] = []

    def counted(solver, parts, set_matrix, sol, convergence):
        out = compare(solver, parts, set_matrix, sol, convergence)
        compared.append(out[1] is not None and out[1]["branches"] == 2)
        return out

    cases = [(f"{name}, floor -45 / cap 300", feeder, book, MarketRules(price_floor=-45.0, price_cap=300.0)),
             (f"{name}, default rules", feeder, book, MarketRules())]
    for buses, n_bids in ((33, 80), (1000, 1000)):
        g = ieee33() if buses == 33 else synthetic(buses, 5)
        cases.append((f"bench_physics {buses} buses / {n_bids} bids", g,
                      validate_bids(synthetic_bids(g, n_bids, 5, kw=(5.0, 60.0)), g, MarketRules()), MarketRules()))
    print("curve | off: CPU s, bands, clearings, max error % | on: the same, converges comparing two fixed points")
    try:
        for label, f, b, rules in cases:
            best: dict[str, tuple] = {}
            for _ in range(repeat):
                for mode, fn in (("off", lambda solver, parts, set_matrix, sol, convergence: (sol, convergence)),
                                 ("on", counted)):
                    branching.best_fixed_point = fn
                    compared.clear()
                    t0 = time.process_time()
                    curve = trace_curve(f, b, rules, options=LOSSAWARE)
                    seconds = time.process_time() - t0
                    chk = curve.ac_check
                    best[mode] = (min(seconds, best.get(mode, (np.inf,))[0]), curve.bands.height, chk["clearings"],
                                  float(chk["max_error_pct"]), sum(compared), len(compared))
            off, on = best["off"], best["on"]
            print(f"{label} | {off[0]:.3f}, {off[1]}, {off[2]}, {off[3]:.3f} | {on[0]:.3f}, {on[1]}, {on[2]}, "
                  f"{on[3]:.3f}, {on[4]} of {on[5]}")
    finally:
        branching.best_fixed_point = compare


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", default="ieee33")
    p.add_argument("--seed", type=int, default=908)
    p.add_argument("--from", dest="starts", type=float, nargs="+", default=[-42.5, -41.5])
    p.add_argument("--prices", type=float, nargs="+", default=list(PRICES))
    p.add_argument("--cost", action="store_true", help="the A/B of the curves' time with and without the comparison")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    rules = MarketRules()
    with tempfile.TemporaryDirectory() as tmp:
        case = make_case(args.case, args.seed, Path(tmp))
        feeder = read_feeder(str(case.feeder_dir))
        book = validate_bids(read_table(str(case.bids)), feeder, rules)
    if args.cost:
        cost(feeder, book, case.name, args.repeat)
        return
    branches = []
    for start in args.starts:
        market = NodalMarket(feeder, book, start, rules, (), ClearingOptions())
        follow(market, start)
        branches.append(market)
    print(f"{case.name}: import kW / welfare per hour (iterations, converged[, fixed points compared])")
    print("price      | fresh clear                    | " + " | ".join(f"from {s:g}".ljust(27) for s in args.starts))
    # Each branch followed outward from its start, so that it stays on its branch as long as that holds.
    walked = [{p: follow(m, p) for p in sorted(args.prices, key=lambda p: abs(p - start))}
              for m, start in zip(branches, args.starts)]
    for price in args.prices:
        cells = []
        fresh = clear(feeder, book, price, rules=rules)
        for res in (fresh, *(w[price] for w in walked)):
            conv = res.convergence
            cells.append(f"{res.ac_check['import_kw'][0]:8.1f} {res.welfare:9.4f} ({conv['iterations']:3d}, "
                         f"{'y' if conv['converged'] else 'n'}{', %d' % conv['branches'] if res is fresh else ''})")
        print(f"{price:10.3f} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
