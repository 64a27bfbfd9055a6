"""Whether this checkout's loss-aware clearings equal a base revision's to the bit, in one process.

Run: ``python benchmarks/check_results_ab.py [--base REV]``.

The engine modules :mod:`bench_successive_ab` switches are loaded at ``--base`` and both sides clear: 1,000 buses
with 10,000 bids (seeds 7 and 2) and 1,000 bids (seed 7) at 50 per MWh (``bench_physics.py --only speed``'s books),
ieee33 / 80 bids at twelve seeded prices, and the hard ieee33 case seed 5 of ``bench_physics.py --only hard`` at
three. Per case: whether the DLMPs, their four components, the dispatch and the import are equal bit for bit, and
otherwise the largest relative difference (a component near zero makes it large) and the largest absolute one (per
MWh, kW). Exit status 1 where some case differs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_successive_ab as ab  # noqa: E402

COLUMNS = ("dlmp", "energy", "loss", "congestion", "voltage")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="main", help="git revision to compare with (default main)")
    args = p.parse_args(argv)

    from bench_physics import LOSSAWARE, opf_case, synthetic_bids
    from dsomarket.engine.bids import MarketRules, validate_bids
    from dsomarket.engine.feeders import ieee33, synthetic

    names = tuple(n for n in ab.NAMES if subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{args.base}:engine/{n}.py"], capture_output=True).returncode == 0)
    this = {n: sys.modules[f"dsomarket.engine.{n}"] for n in names}
    sides = {"base": ab.load_base(args.base, names), "this": this}
    rules = MarketRules()
    cases = []
    for n_bids, seed in ((10000, 7), (10000, 2), (1000, 7)):
        f = synthetic(1000, seed)
        cases.append((f"1k buses / {n_bids // 1000}k bids, seed {seed}", f,
                      validate_bids(synthetic_bids(f, n_bids, seed), f, rules), 50.0))
    f33 = ieee33()
    book33 = validate_bids(synthetic_bids(f33, 80, 5, kw=(5.0, 60.0)), f33, rules)
    for q in np.round(np.random.default_rng(7).uniform(-30, 180, 12), 3):
        cases.append((f"ieee33 / 80 bids at {q}", f33, book33, float(q)))
    hard_f, hard_bids = opf_case(ieee33(), 5, 0.95, "2", 3000.0)
    hard_book = validate_bids(hard_bids, hard_f, rules)
    for q in (20.0, 50.0, 120.0):
        cases.append((f"ieee33 hard seed 5 at {q}", hard_f, hard_book, q))

    differ = 0
    for name, f, book, price in cases:
        out = {}
        for label in ("base", "this"):
            ab.use(sides[label], sides["this" if label == "base" else "base"])
            res = sys.modules["dsomarket.engine.clearing"].clear(f, book, price, rules=rules, options=LOSSAWARE)
            out[label] = [res.prices[c].to_numpy() for c in COLUMNS] + [res.dispatch["cleared_kw"].to_numpy(),
                                                                         np.asarray(res.interface_import_kw)]
        ab.use(this, sides["base"])
        same = all(np.array_equal(a, b) for a, b in zip(out["base"], out["this"]))
        worst = max(float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-9), initial=0.0))
                    for a, b in zip(out["base"], out["this"]))
        largest = max(float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(out["base"], out["this"]))
        differ += not same
        print(f"{name:36s} " + ("bit for bit" if same else f"differs: largest relative difference {worst:.3g}, "
                                f"absolute {largest:.3g}"))
    print(f"{len(cases)} clearings, {differ} differ from {args.base}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
