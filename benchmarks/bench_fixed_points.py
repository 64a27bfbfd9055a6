"""Which fixed point of the loss-aware clearing `clear` settles on, against the branches warm continuation follows.

Run: ``python benchmarks/bench_fixed_points.py [--case ieee33] [--seed 908] [--from -42.5 -41.5]
[--prices ...]``. On the case ``bench_hidden_physics.make_case(case, seed)`` writes, prints at each price
the import (the AC power flow of the dispatch, kW) and welfare (per hour) of a fresh ``clear``, and of a
market converged at each ``--from`` price and then moved warm from price to price, nearest to that start
first (plain successive LP from that branch's linearisation, ``NodalMarket.converge(compare=False)``,
without :mod:`engine.branches`' second start: each follows its own branch), each with its iterations and
whether it converged; the fresh clearing also with how many fixed points it compared. Where two branches
are converged fixed points at one price, the welfare says which is the better optimum of the AC problem
(successive LP only reaches a local one: at a negative ISO price the losses are worth money, which makes
the problem non-convex), the one ``clear`` must keep.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_hidden_physics import make_case  # noqa: E402

from dsomarket.clients.files import read_feeder, read_table  # noqa: E402
from dsomarket.engine.bids import MarketRules, validate_bids  # noqa: E402
from dsomarket.engine.clearing import ClearingOptions, NodalMarket, clear  # noqa: E402
from dsomarket.engine.results import ClearingResult  # noqa: E402

PRICES = (-42.3, -42.2, -42.15, -42.11, -42.104, -42.1, -42.099, -42.09, -42.05, -42.0, -41.95, -41.9, -41.8)


def follow(market: NodalMarket, price: float) -> ClearingResult:
    """``market`` moved to ``price`` and converged by plain successive LP from where it is (its own branch)."""
    market.set_iso_price(np.array([price]))
    return market.result(market.converge(compare=False))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", default="ieee33")
    p.add_argument("--seed", type=int, default=908)
    p.add_argument("--from", dest="starts", type=float, nargs="+", default=[-42.5, -41.5])
    p.add_argument("--prices", type=float, nargs="+", default=list(PRICES))
    args = p.parse_args()
    rules = MarketRules()
    with tempfile.TemporaryDirectory() as tmp:
        case = make_case(args.case, args.seed, Path(tmp))
        feeder = read_feeder(str(case.feeder_dir))
        book = validate_bids(read_table(str(case.bids)), feeder, rules)
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
