"""Bit-for-bit A/B of the loss-aware iteration's polish past MAX_ITERATIONS against a base revision, in one process.

Run: ``python benchmarks/bench_polish_ab.py [--base main] [--prices 121]``.

The engine's solver, losses and successive modules are loaded at ``--base`` next to this checkout's and switched
between the two as ``bench_successive_ab.py`` does, so both sides run the same clearing and curve code. Each
clearing's primal and dual vectors and convergence summary, and each curve's bands, are compared to the bit;
every clearing that differs must be one the base left unconverged (the only ones ``successive._polish`` may
change). Cases:

- ``clear`` at 40 seeded prices on ``bench_successive_ab``'s ieee33 / 80-bid book and on ``bench_physics``'s hard
  ieee33 case seed 5;
- ``clear`` at ``--prices`` prices from -100 to 300 (and 193.7, 194.5, -28.2826) on ``bench_hidden_physics``'s
  ieee33-s9100;
- the curves of ``tests/test_cli_market.py``'s book (ieee33, 40 bids, -100 to 400) and of ieee33-s9100.

Also counts the polishes this side ran, and how many converged.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from bench_successive_ab import NAMES, load_base, use  # noqa: E402

import dsomarket.engine.successive  # noqa: E402, F401  (imported for sys.modules)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="main")
    p.add_argument("--prices", type=int, default=121)
    args = p.parse_args(argv)

    from bench_hidden_physics import make_case
    from bench_physics import opf_case, synthetic_bids
    from dsomarket.clients.files import read_feeder, read_table
    from dsomarket.engine.bids import MarketRules, validate_bids
    from dsomarket.engine.clearing import NodalMarket
    from dsomarket.engine.feeders import ieee33
    from dsomarket.engine.interface import trace_curve
    from tests.test_interface import random_bids

    this = {n: sys.modules[f"dsomarket.engine.{n}"] for n in NAMES}
    base = load_base(args.base)
    sides = {"base": (base, this), "this": (this, base)}
    polished = []
    polish = this["successive"]._polish

    def counted(*a):
        out = polish(*a)
        polished.append(out is not None)
        return out

    this["successive"]._polish = counted
    rules = MarketRules()

    def sweep(f, book, prices):
        def run():
            out = []
            for q in prices:
                m = NodalMarket(f, book, float(q), rules)
                sol = m.converge()
                out.append((float(q), sol.x, sol.row_dual, sol.col_dual, m.convergence))
            return out
        return run

    def curve(f, book, curve_rules):
        def run():
            c = trace_curve(f, book, curve_rules)
            return c.bands, c.ac_check
        return run

    f33 = ieee33()
    book33 = validate_bids(synthetic_bids(f33, 80, 5, kw=(5.0, 60.0)), f33, rules)
    hard_f, hard_bids = opf_case(ieee33(), 5, 0.95, "2", 3000.0)
    seeded = np.round(np.random.default_rng(7).uniform(-30, 180, 40), 3)
    case = make_case("ieee33", 9100, Path(tempfile.mkdtemp(prefix="polish_ab_")))
    f9100 = read_feeder(str(case.feeder_dir))
    book9100 = validate_bids(read_table(str(case.bids), "bids"), f9100, rules)
    prices9100 = np.concatenate([np.linspace(-100.0, 300.0, args.prices), [193.7, 194.5, -28.2826]])
    cli_rules = MarketRules(price_floor=-100.0, price_cap=400.0)
    cli_bids = random_bids(f33, 40, 17, lo=-80, hi=380).with_columns(resource_id=pl.lit(""))
    cases = {"clear at 40 prices, ieee33 / 80 bids": sweep(f33, book33, seeded),
             "clear at 40 prices, ieee33 hard seed 5": sweep(hard_f, validate_bids(hard_bids, hard_f, rules), seeded),
             f"clear at {len(prices9100)} prices, ieee33-s9100": sweep(f9100, book9100, prices9100),
             "curve, tests/test_cli_market.py's book": curve(f33, validate_bids(cli_bids, f33, cli_rules), cli_rules),
             "curve, ieee33-s9100": curve(f9100, book9100, rules)}
    failing = 0
    for name, fn in cases.items():
        out = {}
        before = len(polished)
        for label in ("base", "this"):
            use(*sides[label])
            out[label] = fn()
        use(this, base)
        ran, converged = len(polished) - before, sum(polished[before:])
        a, b = out["base"], out["this"]
        if name.startswith("curve"):
            same = a[0].equals(b[0])
            print(f"{name:42s} bands identical: {same} ({a[0].height} / {b[0].height}); clearings "
                  f"{a[1]['clearings']} / {b[1]['clearings']}, error {a[1]['max_error_pct']:.4f} / "
                  f"{b[1]['max_error_pct']:.4f} %; polishes {ran}, converged {converged}")
            failing += not same and converged == 0
            continue
        differ = [k for k, (u, v) in enumerate(zip(a, b))
                  if not all(np.array_equal(x, y, equal_nan=True) for x, y in zip(u[1:4], v[1:4])) or u[4] != v[4]]
        unconverged = [k for k, u in enumerate(a) if u[4] is not None and not u[4]["converged"]]
        now = [k for k in unconverged if b[k][4]["converged"]]
        bad = sorted(set(differ) - set(unconverged))
        failing += len(bad)
        print(f"{name:42s} {len(a)} clearings: {len(differ)} differ, all unconverged on base: {not bad}; "
              f"base unconverged {len(unconverged)}, converged here {len(now)}; polishes {ran}, converged {converged}")
        for k in unconverged:
            print(f"    base unconverged at {a[k][0]}: here converged {b[k][4]['converged']} in "
                  f"{b[k][4]['iterations']} solves")
    print("FAIL" if failing else "OK: every clearing the base converged is the same to the bit")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
