"""Where one default (loss-aware) clearing spends its time, call by call, here and at a base revision.

Run: ``python benchmarks/bench_clearing_calls.py [--seed 7] [--base 7021be0]``.

The 1,000-bus / 10,000-bid book of ``bench_physics.py --only speed`` (seed 7: 4 LP solves; seed 2: 7) is cleared
once to warm up, then once with ``engine.solver.HighsSolver``'s HiGHS-facing methods wrapped in timers; each call
is printed in order (milliseconds, and HiGHS's simplex iterations where it ran), with the clearing's total. The same
then at ``--base`` (``engine/solver.py``, ``powerflow.py``, ``losses.py`` and ``successive.py`` loaded at that
revision in this process, as ``bench_successive_ab.py`` does), so both sides run the same clearing code around them.
Wall-clock milliseconds of one clearing: read them as where the time goes, and ratios from ``bench_successive_ab.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import bench_successive_ab as ab  # noqa: E402
from bench_physics import LOSSAWARE, synthetic_bids  # noqa: E402
from dsomarket.engine.bids import MarketRules, validate_bids  # noqa: E402
from dsomarket.engine.clearing import clear  # noqa: E402
from dsomarket.engine.feeders import synthetic  # noqa: E402

CALLS = ("run", "solve_by_basis", "solve_from_slack", "set_matrix", "hold_instead", "_factorise", "_keep",
         "_kept_values")


def traced(solver_module, f, book) -> tuple[float, list[str]]:
    """One clearing with the solver's calls timed: its seconds and a line per call."""
    cls, log, saved = solver_module.HighsSolver, [], {}
    for name in CALLS:
        orig = saved[name] = getattr(cls, name, None)
        if orig is None:
            continue

        def timed(self, *args, _orig=orig, _name=name, **kwargs):
            t = time.perf_counter()
            out = _orig(self, *args, **kwargs)
            ms = (time.perf_counter() - t) * 1000.0
            its = (f", {self.h.getInfo().simplex_iteration_count} pivots" if _name == "run" else "")
            log.append(f"    {_name:<18} {ms:7.2f} ms{its}")
            return out
        setattr(cls, name, timed)
    try:
        t0 = time.perf_counter()
        clear(f, book, 50.0, options=LOSSAWARE)
        return time.perf_counter() - t0, log
    finally:
        for name, orig in saved.items():
            if orig is not None:
                setattr(cls, name, orig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--base", default="7021be0", help="git revision to compare with (default 7021be0)")
    a = p.parse_args(argv)
    f = synthetic(1000, a.seed)
    book = validate_bids(synthetic_bids(f, 10000, a.seed), f, MarketRules())
    this = {n: sys.modules[f"dsomarket.engine.{n}"] for n in ab.NAMES}
    base = ab.load_base(a.base)
    for label, side, other in (("this checkout", this, base), (a.base, base, this)):
        ab.use(side, other)
        clear(f, book, 50.0, options=LOSSAWARE)      # warm-up: imports, compiled kernels, caches
        seconds, log = traced(side["solver"], f, book)
        print(f"{label}: 1,000 buses / 10,000 bids (seed {a.seed}), one loss-aware clearing {seconds * 1000:.1f} ms")
        print("\n".join(log))
    ab.use(this, base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
