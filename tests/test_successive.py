"""Phase one of the successive LP (engine/successive.py) on a market infeasible on the feeder itself."""

from __future__ import annotations

import numpy as np
import polars as pl

from dsomarket.engine import solver as solver_module
from dsomarket.engine.bids import MarketRules, validate_bids
from dsomarket.engine.clearing import clear
from dsomarket.engine.feeders import ieee33
from dsomarket.engine.powerflow import ac_power_flow


def test_a_market_over_a_rating_on_the_feeder_is_diagnosed_without_solving_a_linearisation_known_infeasible(
        monkeypatch):
    # Line 32 rated below what the fixed load alone draws through it, the only bid upstream: infeasible on the
    # feeder at any price. Phase one used to re-linearise and solve three times, each solve infeasible (on a
    # 1,000-bus market one warm re-solve took 6 s, and one without presolve at the price floor minutes);
    # the relaxation of the re-linearised model already says it: it still breaks the rating by as much.
    f = ieee33()
    f = f.with_changes(lines=f.lines.with_columns(
        pl.when(pl.col("line") == "32").then(pl.lit(50.0)).otherwise(pl.col("s_max_kva")).alias("s_max_kva")))
    book = validate_bids(pl.DataFrame({"bid_id": ["pv"], "bus": ["18"], "side": ["sell"], "quantity_kw": [100.0],
                                       "price": [20.0]}), f, MarketRules())
    calls = {"solve": 0, "relax": 0}
    solve, relax = solver_module.HighsSolver.solve, solver_module.HighsSolver.relax_feasibility

    def counted_solve(self):
        calls["solve"] += 1
        return solve(self)

    def counted_relax(self, *args):
        calls["relax"] += 1
        return relax(self, *args)

    monkeypatch.setattr(solver_module.HighsSolver, "solve", counted_solve)
    monkeypatch.setattr(solver_module.HighsSolver, "relax_feasibility", counted_relax)
    res = clear(f, book, 40.0)
    assert res.status == "infeasible"
    (diag,) = res.diagnosis
    # Independent of the LP: the AC power flow of the fixed load alone (the bid upstream of the line cannot
    # relieve it) puts the line's sending end this far over its 50 kVA.
    ac = ac_power_flow(f)
    k = list(ac.line_ids.astype(str)).index("32")
    assert diag["limit"] == "line_thermal" and diag["element"] == "32"
    assert abs(diag["violation"] - (np.hypot(ac.line_p_kw[k], ac.line_q_kvar[k]) - 50.0)) < 0.5
    # The first solve, then phase one's relaxation at it and at its re-linearisation (no solve: it breaks the
    # rating by as much as before), then the diagnosis's.
    assert calls == {"solve": 1, "relax": 3}
