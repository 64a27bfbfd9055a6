"""How many warm re-clears of a kept interface differ from a fresh clearing at the same price, and where.

A territory worker's :class:`engine.territory.InterfaceSession` re-clears warm (``HighsSolver.solve_by_basis``);
a fresh clearing starts from the slack basis. Both are optima; they are the same bits only where one basis is
optimal. Bids tied at their DLMP (equal prices on buses of one DLMP, or a buy and a sell at one price on one bus)
make several optimal, and the two paths can end at different ones. This counts, along the prices of
``bench_warm_reclear.py`` then a few larger moves, the re-clears whose tables differ from a fresh clearing's, and
how (bids moved, largest move in kW, DLMPs equal or not, welfare difference). A re-clear that ends at one of several
optima is cleared cold from the slack basis (``HighsSolver.solve_kept``): none should differ; it says how many.

    python benchmarks/bench_warm_ties.py [--buses 1000] [--bids 10000]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dsomarket.engine.bids import MarketRules  # noqa: E402
from dsomarket.engine.clearing import ClearingOptions  # noqa: E402
from dsomarket.engine.feeders import synthetic  # noqa: E402
from dsomarket.engine.territory import Interface, InterfaceSession, synthetic_bids  # noqa: E402

PRICES = [40.0 + 3.0 * k for k in range(20)] + [20.0, 90.0, 35.0, 120.0, -10.0, 55.0]
TABLES = ("dispatch", "prices", "lines", "buses", "interface")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--buses", type=int, default=1000)
    ap.add_argument("--bids", type=int, default=10000)
    a = ap.parse_args()
    f = synthetic(a.buses, 1)
    bids = synthetic_bids(f, a.bids, 1)
    options = ClearingOptions(formulation="lossless", ac_check=False)

    def session() -> InterfaceSession:
        return InterfaceSession(Interface("x", f, bids, ("x",)), MarketRules(), options)

    print(f"{a.buses} buses, {a.bids} bids ({a.bids - bids['price'].n_unique()} share a price with another)")
    warm = session()
    warm.clear(50.0)
    differ = 0
    for price in PRICES:
        again, fresh = warm.clear(price), session().clear(price)
        tables = [name for name in TABLES if not getattr(again, name).equals(getattr(fresh, name))]
        if tables:
            differ += 1
            moved = again.dispatch["cleared_kw"].to_numpy() - fresh.dispatch["cleared_kw"].to_numpy()
            dlmps = "equal" if again.prices.equals(fresh.prices) else "DIFFER"
            print(f"  {price:7.2f}: {','.join(tables)}; {int(np.sum(moved != 0.0))} bids moved, largest "
                  f"{np.max(np.abs(moved)):.3f} kW; DLMPs {dlmps}; welfare {again.welfare - fresh.welfare:+.1e}")
    print(f"{differ} of {len(PRICES)} warm re-clears differ from a fresh clearing "
          f"({warm._market.solver.tie_restarts} cleared cold for ties at their DLMPs)")


if __name__ == "__main__":
    main()
