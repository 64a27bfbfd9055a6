"""Where one clearing spends its CPU: inside HiGHS (its calls through highspy, by method) and outside it, for the
default loss-aware model and the lossless LP on the same book.

Run: ``python benchmarks/profile_clearing.py [--buses 1000] [--bids 10000] [--seeds 7 2] [--repeats 3]``
(the defaults are ``bench_physics.py --only speed``'s books: clearing at 50 per MWh). Every method of
``highspy.Highs`` is wrapped with a CPU clock (``time.process_time``; only the outermost call of a nested one
counts), so the time inside HiGHS is measured without cProfile's per-call overhead on the Python around it. Per
formulation it prints, for the fastest of ``--repeats`` clearings after one warm-up: the clearing's CPU, the part
spent in HiGHS calls and the rest, the HiGHS methods that cost most (calls and ms), and the loss-aware / lossless
ratio of each part, and each HiGHS run's CPU and simplex iterations. What the loss-aware clearing's HiGHS part is
made of (how many runs, factorisations of a carried basis through ``getBasicVariables``, the first solve's simplex
iterations) says whether Python around HiGHS or HiGHS itself stands between it and ``bench_physics``' target
(<= 3x the lossless LP).

``--relin-option NAME=VALUE`` (repeatable) also clears the loss-aware book with that HiGHS option set from the first
re-linearisation on (at ``HighsSolver.set_matrix``, so the first LP is solved as always), and prints its CPU and its
largest DLMP and dispatch differences from the default clearing: what an option would save in the successive LP,
and what it changes. A measurement only: the engine sets no such option.

``--factor`` instead compares, on loss-aware models of several sizes (``examples/ieee33_rated``, synthetic feeders of 69
to 1,000 buses with ten bids a bus), what factorising the optimal basis of a clearing's first LP costs on a matrix
HiGHS has not factorised yet, as after a re-linearisation (``HighsSolver.set_matrix``): HiGHS's (the matrix passed,
the basis set, ``getBasicVariables``, one basis solve and one transposed; less the passing and setting alone) against
the solver's own (``engine.solver._Factor``: the factorisation and the same two solves), CPU microseconds, the mean
of a few hundred to thousands of rounds: what ``solver.OWN_FACTOR_ROWS`` is set from.

``--modules`` also profiles one loss-aware clearing with cProfile (process clock) and prints its own time
(``tottime``) summed per source file, HiGHS's calls as one line: where the part outside HiGHS goes. cProfile adds
its overhead to every Python call, so compare shares, not seconds, with the unprofiled figures above.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import os
import sys
import time

import highspy
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep

from bench_physics import LOSSAWARE, LOSSLESS, synthetic_bids  # noqa: E402
from dsomarket.engine.bids import MarketRules, validate_bids  # noqa: E402
from dsomarket.engine.clearing import NodalMarket, clear  # noqa: E402
from dsomarket.engine.feeders import synthetic  # noqa: E402
from dsomarket.engine.solver import HighsSolver  # noqa: E402

SPENT: collections.Counter = collections.Counter()   # CPU seconds per highspy method
CALLS: collections.Counter = collections.Counter()
RUNS: list = []                                      # (CPU seconds, simplex iterations) per HiGHS run
_depth = [0]
_PLAIN: dict = {}                                    # the methods instrument() wrapped, as they were


def _timed(name: str, method):
    def wrapper(*args, **kwargs):
        if _depth[0]:
            return method(*args, **kwargs)
        _depth[0] += 1
        t0 = time.process_time()
        try:
            return method(*args, **kwargs)
        finally:
            spent = time.process_time() - t0
            SPENT[name] += spent
            CALLS[name] += 1
            _depth[0] -= 1
            if name == "run":
                RUNS.append((spent, int(args[0].getInfo().simplex_iteration_count)))
    return wrapper


def instrument(on: bool = True) -> None:
    """Wrap every public method ``highspy.Highs`` has (its own and its pybind base's) on the class itself; ``on=False``:
    put them back."""
    if not on:
        for name, method in _PLAIN.items():
            setattr(highspy.Highs, name, method)
        return
    for name in dir(highspy.Highs):
        if not name.startswith("_") and callable(getattr(highspy.Highs, name)):
            _PLAIN[name] = getattr(highspy.Highs, name)
            setattr(highspy.Highs, name, _timed(name, _PLAIN[name]))


def relin_options(options: dict) -> None:
    """Set HiGHS ``options`` on every solver from its first new matrix on (``HighsSolver.set_matrix``); {}: none."""
    if not hasattr(HighsSolver, "_profile_set_matrix"):
        HighsSolver._profile_set_matrix = HighsSolver.set_matrix
    plain = HighsSolver._profile_set_matrix

    def set_matrix(self, model):
        for key, value in options.items():
            self.h.setOptionValue(key, value)
        return plain(self, model)

    HighsSolver.set_matrix = set_matrix if options else plain


def profile(f, book, options, repeats: int) -> tuple:
    """The fastest of ``repeats`` clearings (after one warm-up): CPU seconds, its HiGHS seconds and calls per method,
    its HiGHS runs (CPU, iterations) and its result."""
    clear(f, book, 50.0, options=options)
    best = None
    for _ in range(repeats):
        SPENT.clear()
        CALLS.clear()
        RUNS.clear()
        t0 = time.process_time()
        res = clear(f, book, 50.0, options=options)
        total = time.process_time() - t0
        if best is None or total < best[0]:
            best = (total, SPENT.copy(), CALLS.copy(), list(RUNS), res)
    return best


def modules(f, book, top: int) -> None:
    """One profiled loss-aware clearing's own time per source file, HiGHS's calls (highspy's builtins) as one."""
    instrument(False)
    profile = cProfile.Profile(time.process_time)
    profile.enable()
    clear(f, book, 50.0, options=LOSSAWARE)
    profile.disable()
    instrument()
    profile.create_stats()
    per: collections.Counter = collections.Counter()
    for (path, _, name), (_, _, tottime, _, _) in profile.stats.items():
        if "highspy" in name or "highspy" in path:
            key = "HiGHS (highspy)"
        elif "site-packages" in path:
            key = path.split("site-packages" + os.sep)[1].split(os.sep)[0]    # the package
        else:
            key = path[len(ROOT):] if path.startswith(ROOT) else name
        per[key] += tottime
    total = sum(per.values())
    print(f"  one loss-aware clearing under cProfile: {total * 1e3:.1f} ms CPU; own time per file:")
    for key, sec in per.most_common(top):
        print(f"    {key:<40} {sec * 1e3:7.2f} ms ({sec / total:.0%})")


def _option(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            pass
    return key, value


def factor_sizes() -> int:
    """``--factor``: HiGHS's factorisation of a basis on a newly passed matrix against the solver's own, by size."""
    from dsomarket.clients.files import read_feeder
    from dsomarket.engine.solver import _Factor, _pass_model

    def cpu_us(f, n: int) -> float:
        t0 = time.process_time()
        for _ in range(n):
            f()
        return (time.process_time() - t0) / n * 1e6

    rules = MarketRules()
    print("loss-aware model: rows | HiGHS: factorisation and two basis solves on a new matrix | the solver's own (us)")
    for name, feeder in [("ieee33_rated", read_feeder(os.path.join(ROOT, "examples", "ieee33_rated")))] + [
            (f"synthetic {n}", synthetic(n, 3)) for n in (69, 200, 500, 1000)]:
        book = validate_bids(synthetic_bids(feeder, 10 * (feeder.buses.height - 1), 5), feeder, rules)
        s = NodalMarket(feeder, book, 50.0, rules, options=LOSSAWARE).solver
        assert s.solve().ok
        h, basis, a = s.h, s.h.getBasis(), s._a
        basic = np.asarray(h.getBasicVariables()[1])
        r = np.ones(len(basic))

        def passed() -> None:
            _pass_model(h, s.cost, s.col_lower, s.col_upper, a, s.row_lower, s.row_upper)
            h.setBasis(basis)

        def highs() -> None:
            passed()
            h.getBasicVariables()
            h.getBasisSolve(r)
            h.getBasisTransposeSolve(r)

        def own() -> None:
            f = _Factor.of(a, basic)
            f.solve(r)
            f.tsolve(r)

        n = max(20, 200000 // a.shape[0])
        theirs = cpu_us(highs, n) - cpu_us(passed, n)
        print(f"  {name:<14} {a.shape[0]:>6} rows | {theirs:>8.0f} | {cpu_us(own, n):>8.0f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--buses", type=int, default=1000)
    p.add_argument("--bids", type=int, default=10000)
    p.add_argument("--seeds", type=int, nargs="+", default=[7, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--top", type=int, default=6, help="HiGHS methods to list per formulation")
    p.add_argument("--relin-option", action="append", default=[], metavar="NAME=VALUE",
                   help="a HiGHS option to try from the first re-linearisation on (repeatable)")
    p.add_argument("--modules", action="store_true", help="also one loss-aware clearing's own time per source file")
    p.add_argument("--factor", action="store_true",
                   help="instead: HiGHS's factorisation of a basis on a new matrix against the solver's own, by size")
    args = p.parse_args(argv)
    if args.factor:
        return factor_sizes()
    tried = dict(_option(o) for o in args.relin_option)
    instrument()
    rules = MarketRules()
    for seed in args.seeds:
        f = synthetic(args.buses, seed)
        book = validate_bids(synthetic_bids(f, args.bids, seed), f, rules)
        parts = {}
        for label, options in (("lossless", LOSSLESS), ("loss-aware", LOSSAWARE)):
            total, spent, calls, runs, res = profile(f, book, options, args.repeats)
            highs = sum(spent.values())
            parts[label] = (total, highs, res)
            solves = f", {res.convergence['iterations']} LP solves" if res.convergence else ""
            print(f"{args.buses} buses / {args.bids} bids (seed {seed}) {label}{solves}: {total * 1e3:.1f} ms CPU, "
                  f"HiGHS {highs * 1e3:.1f} ms ({highs / total:.0%}), rest {(total - highs) * 1e3:.1f} ms")
            print("    HiGHS runs (ms / simplex iterations): "
                  + ", ".join(f"{sec * 1e3:.1f} / {it}" for sec, it in runs))
            for name, sec in spent.most_common(args.top):
                print(f"    {name:<24} {calls[name]:>3} calls {sec * 1e3:7.2f} ms")
        (ta, ha, base), (tl, hl, _) = parts["loss-aware"], parts["lossless"]
        print(f"  loss-aware / lossless: clearing {ta / tl:.2f}x, HiGHS {ha / hl:.2f}x, rest "
              f"{(ta - ha) / (tl - hl):.2f}x; the loss-aware clearing's HiGHS calls alone take {ha / tl:.2f}x the "
              f"lossless clearing; with the rest at the lossless LP's, the clearing would be {(ha + tl - hl) / tl:.2f}x")
        if tried:
            relin_options(tried)
            try:
                total, spent, _, runs, res = profile(f, book, LOSSAWARE, args.repeats)
            finally:
                relin_options({})
            highs = sum(spent.values())
            dlmp = float(np.max(np.abs(res.prices["dlmp"].to_numpy() - base.prices["dlmp"].to_numpy())))
            kw = float(np.max(np.abs(res.dispatch["cleared_kw"].to_numpy() - base.dispatch["cleared_kw"].to_numpy())))
            print(f"  loss-aware with {tried} after the first LP ({res.convergence['iterations']} LP solves): "
                  f"{total * 1e3:.1f} ms CPU, HiGHS {highs * 1e3:.1f} ms, runs "
                  + ", ".join(f"{sec * 1e3:.1f} / {it}" for sec, it in runs)
                  + f"; ratio to lossless {total / tl:.2f}x; largest difference from the default: DLMP {dlmp:.2e} "
                  f"per MWh, dispatch {kw:.2e} kW")
        if args.modules:
            modules(f, book, 2 * args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
