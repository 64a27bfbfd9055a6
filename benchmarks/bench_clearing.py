"""Clearing speed: the engine end to end against the raw HiGHS solve of the same LP and a naive cvxpy model.

Run: ``python benchmarks/bench_clearing.py [--quick] [--case 1000:10000 ...] [--repeat N]``. For each case it
prints

- ``engine``: validate bids + build the sparse model + solve + DLMP decomposition + result tables
  (``engine.clearing.clear`` with the AC check off, as a market operator would time a clearing);
- ``raw``: a fresh ``highspy.Highs`` given the already-assembled arrays and solved cold;
- ``slack``: the same, started from the network's slack basis as the engine starts a lossless market
  (``engine.solver.slack_basis``, Devex dual edge weights and a non-alien basis as the engine sets them; the floor, and the
  honest baseline for the engine);
- ``naive``: the textbook cvxpy model of ``tests/reference.py`` (one constraint per bus and line)
  solved by HiGHS through cvxpy, only where it finishes in reasonable time;

and the ratios engine/raw, engine/slack and naive/engine. Times are CPU seconds of this process (so that
other work on a loaded machine does not count), each the best of ``--repeat`` runs; the engine and the
slack-started solve alternate, so that both see the same load. ``--phases`` adds the median CPU of each
phase inside ``clear`` (:func:`phases`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time

import highspy
import numpy as np
import polars as pl

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dsomarket.engine import lindistflow  # noqa: E402
from dsomarket.engine.bids import MarketRules, validate_bids  # noqa: E402
from dsomarket.engine.clearing import ClearingOptions, clear  # noqa: E402
from dsomarket.engine.feeders import synthetic  # noqa: E402
from dsomarket.engine.solver import DUAL_EDGE_WEIGHTS_DEVEX, slack_basis  # noqa: E402


def make_bids(feeder, n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    buses = feeder.buses["bus"].to_numpy()[1:]
    return pl.DataFrame({"bid_id": [f"b{k}" for k in range(n)], "bus": rng.choice(buses, n),
                         "side": rng.choice(["buy", "sell"], n), "quantity_kw": rng.uniform(1, 50, n),
                         "price": np.round(rng.uniform(0, 150, n), 2)})


def best(*fns, repeat: int) -> list[float]:
    """The best CPU time of each of ``fns`` over ``repeat`` rounds, which run them in turn."""
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times):
            t0 = time.process_time()
            fn()
            out.append(time.process_time() - t0)
    return [min(out) for out in times]


@contextlib.contextmanager
def timed_phases(wrapped: list[tuple[object, str, str]]):
    """Within the block, each ``getattr(owner, name)`` of ``wrapped`` (owner, name, label) appends the CPU
    seconds (``time.process_time``) of each of its calls to the list the yielded dict holds under its label
    (nested phases count in their parents too); restored on leaving."""
    spent: dict[str, list[float]] = {}
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in wrapped]

    def timed(fn, label):
        def run(*args, **kwargs):
            t0 = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent.setdefault(label, []).append(time.process_time() - t0)
        return run
    try:
        for (owner, name, label), (_, _, fn) in zip(wrapped, saved):
            setattr(owner, name, timed(fn, label))
        yield spent
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def phases(feeder, bids, opts, rounds: int = 20) -> str:
    """Median CPU ms of each phase inside ``clear`` (:func:`timed_phases`): where the engine's time goes beside
    HiGHS's run."""
    from dsomarket.engine import clearing, solver
    wrapped = [(clearing, "validate_bids", "validate"), (clearing, "canonical", "canonical order"),
               (clearing, "merge_columns", "column merge"), (lindistflow, "build", "model build"),
               (clearing, "HighsSolver", "HighsSolver set-up (assemble, passModel)"),
               (solver.HighsSolver, "set_basis", "slack basis handed over"), (solver.HighsSolver, "run", "HiGHS run"),
               (solver.HighsSolver, "_keep", "optimum's factorisation and basis solves"),
               (clearing.NodalMarket, "result", "result tables"), (clearing, "clear", "clear")]
    with timed_phases(wrapped) as spent:
        for k in range(rounds + 3):
            if k == 3:
                spent.clear()   # the first clearings warm caches (the network's memo, imports)
            clearing.clear(feeder, bids, 50.0, options=opts)
    return "; ".join(f"{label} {np.median(t) * 1e3:.2f}" for label, t in spent.items())


def slack_statuses(model, arrays) -> highspy.HighsBasis:
    """The slack basis the engine starts a lossless market from, as a HiGHS basis of the assembled LP."""
    c, lo, up, _, rlo, rup, _ = arrays
    structural, inactive, _ = slack_basis(model, lo < up, rlo < rup)
    cols = np.full(len(c), highspy.HighsBasisStatus.kLower)
    cols[structural] = highspy.HighsBasisStatus.kBasic
    rows = np.full(len(rlo), highspy.HighsBasisStatus.kLower)
    rows[inactive] = highspy.HighsBasisStatus.kBasic
    basis = highspy.HighsBasis()
    basis.col_status, basis.row_status, basis.valid = cols.tolist(), rows.tolist(), True
    basis.alien = False   # square, as the engine hands it (HighsSolver.set_basis): factorised once, by the run
    return basis


def raw_solve(arrays, basis: highspy.HighsBasis | None = None) -> None:
    c, lo, up, a, rlo, rup, _ = arrays
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = len(c), len(rlo)
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = c, lo, up
    lp.row_lower_, lp.row_upper_ = rlo, rup
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = a.indptr, a.indices, a.data
    h.passModel(lp)
    if basis is not None:   # as the engine runs it: Devex weights, not exact ones computed for the whole start
        h.setOptionValue("simplex_dual_edge_weight_strategy", DUAL_EDGE_WEIGHTS_DEVEX)
        h.setBasis(basis)
    h.run()
    assert h.getModelStatus() == highspy.HighsModelStatus.kOptimal


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small cases only (a smoke run)")
    ap.add_argument("--case", nargs="+", metavar="BUSES:BIDS", help="these cases instead (e.g. 1000:10000)")
    ap.add_argument("--repeat", type=int, help="runs per time (default 7 up to 10,000 bids, else 3)")
    ap.add_argument("--phases", action="store_true", help="also the median CPU ms of each phase inside clear")
    args = ap.parse_args()
    cases = [(33, 1_000), (1_000, 1_000), (1_000, 10_000), (10_000, 10_000), (10_000, 100_000)]
    if args.quick:
        cases = cases[:2]
    if args.case:
        cases = [tuple(int(v) for v in c.split(":")) for c in args.case]
    print(f"machine: {platform.platform()}, {os.cpu_count()} cpus, python {platform.python_version()}, "
          f"highspy {highspy.Highs().version()}; CPU seconds, load {os.getloadavg()[0]:.1f}")
    print(f"{'buses':>7} {'bids':>7} {'engine s':>9} {'raw s':>8} {'eng/raw':>8} {'slack s':>8} {'eng/slack':>9} "
          f"{'naive s':>8} {'naive/eng':>9}")
    opts = ClearingOptions(formulation="lossless", ac_check=False)   # the raw baseline solves this same LP
    for n_bus, n_bid in cases:
        feeder = synthetic(n_bus, 1)
        bids = make_bids(feeder, n_bid, 2)
        rules = MarketRules()
        repeat = args.repeat or (7 if n_bid <= 10_000 else 3)
        res = clear(feeder, bids, 50.0, options=opts)
        assert res.ok, res.status
        book = validate_bids(bids, feeder, rules)
        model = lindistflow.build(feeder, book, np.array([50.0]), rules)
        arrays = model.assemble()
        basis = slack_statuses(model, arrays)
        t_engine, t_slack = best(lambda: clear(feeder, bids, 50.0, options=opts), lambda: raw_solve(arrays, basis),
                                 repeat=repeat)
        (t_raw,) = best(lambda: raw_solve(arrays), repeat=repeat)
        naive = "-"
        ratio_naive = "-"
        if n_bus <= 1_000 and n_bid <= 1_000:
            from tests.reference import solve_reference
            (t_naive,) = best(lambda: solve_reference(feeder, bids, 50.0, solver="HIGHS"), repeat=1)
            naive, ratio_naive = f"{t_naive:8.3f}", f"{t_naive / t_engine:9.1f}"
        print(f"{n_bus:>7} {n_bid:>7} {t_engine:9.4f} {t_raw:8.4f} {t_engine / t_raw:8.2f} {t_slack:8.4f} "
              f"{t_engine / t_slack:9.2f} {naive:>8} {ratio_naive:>9}")
        if args.phases:
            print(f"        phases, CPU ms: {phases(feeder, bids, opts)}")


if __name__ == "__main__":
    main()
