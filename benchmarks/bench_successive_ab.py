"""CPU A/B of the loss-aware iteration's modules against a base revision, in one process.

Run: ``python benchmarks/bench_successive_ab.py [--base REV] [--repeats 2] [--skip-infeasible] [--feeder DIR]``.

``engine/solver.py``, ``engine/powerflow.py``, ``engine/lindistflow.py``, ``engine/losses.py``,
``engine/successive.py``, (where the base has it) ``engine/branches.py`` and ``engine/clearing.py`` are loaded at
``--base`` (a git revision of this repository) next to this
checkout's, and every engine module's
references to them (the modules and the names imported from them) are switched between the two before
each run, so both sides run the same curve tracer (the solver's kept and re-linearised paths are the iteration's too, the
market's set-up and result the clearing's). Cases:

- the loss-aware curve of ``bench_physics.py --only curves`` (ieee33 / 80 bids; 1,000 buses / 1,000 bids);
- a sweep of 40 seeded prices of ``clear`` on that ieee33 book and the hard ieee33 case seed 5 of
  ``bench_physics.py --only hard`` (successive-LP iterations and CPU);
- ``clear`` at 1,000 buses with 1,000 and 10,000 bids (``bench_physics.py --only speed``'s book, seeds 7 and 2:
  plain successive LP, and a bid held inside its quantity by the losses);
- ten set-ups of that seed 7 market (``NodalMarket`` without a solve: the loss-aware model, its split for
  re-linearising, HiGHS's copy), and its result tables (the price components) read ten times from one solve;
- ``clear`` of the infeasible synth1000-s206 case of ``bench_hidden_physics.py`` (the diagnosis).

``--feeder DIR`` runs instead the loss-aware curve of one saved feeder (``DIR/bids.csv``, as ``dsomarket territory
synth`` writes them): a territory's feeder, whose curves at negative prices compare fixed points (``engine/branches``),
is where the solver's restored bases and re-linearisations cost most. Its bands are compared to the bit.

Each side's best CPU time of ``--repeats``, the ratio this / base, and whether the results agree (curve
imports within ``losses.CURVE_REL_TOL`` at 200 prices; the same diagnosis).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import dsomarket.engine as engine_pkg  # noqa: E402
# Imported for sys.modules: load_base swaps these entries for the base revision's.
from dsomarket.engine import branches, clearing, lindistflow, losses, powerflow, solver, successive  # noqa: E402, F401

NAMES = ("solver", "powerflow", "lindistflow", "losses", "successive", "branches", "clearing")   # in import order


def load_base(rev: str, names: tuple[str, ...] = NAMES) -> dict[str, types.ModuleType]:
    """The engine modules ``names`` (imported already, in import order) at ``rev``, each importing the other
    base ones; ``sys.modules`` keeps this checkout's."""
    saved = {n: sys.modules[f"dsomarket.engine.{n}"] for n in names}
    base = {}
    try:
        for n in names:
            text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:engine/{n}.py"], check=True,
                                  capture_output=True, text=True).stdout
            mod = types.ModuleType(f"dsomarket.engine.{n}")
            mod.__file__ = f"{rev}:engine/{n}.py"
            sys.modules[mod.__name__] = mod
            setattr(engine_pkg, n, mod)
            exec(compile(text, mod.__file__, "exec"), mod.__dict__)
            base[n] = mod
    finally:
        for n, mod in saved.items():
            sys.modules[f"dsomarket.engine.{n}"] = mod
            setattr(engine_pkg, n, mod)
    if "successive" in base:
        # engine.clearing (this checkout's, on both sides) restores a restarted market's limits; a base before
        # 73c888d kept limits widened for noise for the market's life, so there restoring is nothing.
        vars(base["successive"]).setdefault("restore_limits", lambda solver: None)
    if "solver" in base and not hasattr(base["solver"].HighsSolver, "held_basis"):
        # engine.interface and engine.runs (this checkout's) save a basis to start from again by held_basis; a base
        # before it saved HiGHS's own.
        base["solver"].HighsSolver.held_basis = lambda self: self.h.getBasis()
    if "solver" in base and not hasattr(base["solver"].HighsSolver, "solve_unless_warm"):
        # engine.clearing (this checkout's) starts a loss-aware market's first LP by solve_unless_warm; a base
        # before it (1154d07) solved that LP by solve(), cold where HiGHS held no basis.
        base["solver"].HighsSolver.solve_unless_warm = base["solver"].HighsSolver.solve
    return base


def use(side: dict[str, types.ModuleType], other: dict[str, types.ModuleType]) -> None:
    """Rebind every engine module's references to ``other``'s modules and their names to ``side``'s."""
    swap = {}
    for n in side:
        swap[id(other[n])] = side[n]
        for key, value in vars(other[n]).items():
            if getattr(value, "__module__", None) == f"dsomarket.engine.{n}" and hasattr(side[n], key):
                swap[id(value)] = getattr(side[n], key)
    for name, mod in list(sys.modules.items()):
        if not name.startswith("dsomarket.engine") or any(mod is s for s in (*side.values(), *other.values())):
            continue
        for key, value in list(vars(mod).items()):
            if id(value) in swap:
                setattr(mod, key, swap[id(value)])
    for n in side:
        sys.modules[f"dsomarket.engine.{n}"] = side[n]
        setattr(engine_pkg, n, side[n])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="main", help="git revision to compare with (default main)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--skip-infeasible", action="store_true", help="leave out the infeasible 1,000-bus case")
    p.add_argument("--feeder", help="instead: the loss-aware curve of this feeder directory (its bids.csv)")
    args = p.parse_args(argv)

    from bench_hidden_physics import make_case
    from bench_physics import LOSSAWARE, best, opf_case, synthetic_bids
    from dsomarket.clients.files import read_feeder, read_table
    from dsomarket.engine.bids import MarketRules, canonical, validate_bids
    from dsomarket.engine.feeders import ieee33, synthetic
    from dsomarket.engine.interface import trace_curve

    # engine/branches.py is newer than some bases (fbbb866): there both sides run this checkout's.
    names = tuple(n for n in NAMES if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{args.base}:engine/{n}.py"],
                                                      capture_output=True).returncode == 0)
    this = {n: sys.modules[f"dsomarket.engine.{n}"] for n in names}
    base = load_base(args.base, names)
    sides = {"base": base, "this": this}

    def side_clearing() -> types.ModuleType:   # the side's engine.clearing, as use() left it
        return sys.modules["dsomarket.engine.clearing"]
    rules = MarketRules()

    def curve_case(buses: int, n_bids: int):
        f = ieee33() if buses == 33 else synthetic(buses, 5)
        book = validate_bids(synthetic_bids(f, n_bids, 5, kw=(5.0, 60.0)), f, rules)

        def run():
            c = trace_curve(f, book, rules, options=LOSSAWARE)
            prices = np.linspace(-20.0, 170.0, 200) + 0.0123
            return [c.import_at(0, q) for q in prices], c.ac_check["clearings"]
        return run

    def sweep_case(f, book):
        prices = np.round(np.random.default_rng(7).uniform(-30, 180, 40), 3)

        def run():
            iters, imports = 0, []
            for q in prices:
                m = side_clearing().NodalMarket(f, book, float(q), rules)
                sol = m.converge()
                iters += m.convergence["iterations"] if m.convergence else 0
                imports.append(m.block(sol.x, "import_p")[0] * 1000.0 if sol.ok else np.nan)
            return imports, iters
        return run

    def clear_case(n_bids: int, seed: int):
        f = synthetic(1000, seed)
        book = validate_bids(synthetic_bids(f, n_bids, seed), f, rules)

        def run():
            res = side_clearing().clear(f, book, 50.0, rules=rules, options=LOSSAWARE)
            return [float(res.interface_import_kw[0])], res.convergence["iterations"]
        return run

    def setup_case(n_bids: int, seed: int):
        f = synthetic(1000, seed)
        book = canonical(validate_bids(synthetic_bids(f, n_bids, seed), f, rules), f, rules, indexed=True)

        def run():
            for _ in range(10):
                m = side_clearing().NodalMarket(f, book, 50.0, rules, options=LOSSAWARE)
            return [float(m.model.n_row), float(m.model.n_col)], "-"
        return run

    def result_case(n_bids: int, seed: int):
        f = synthetic(1000, seed)
        book = canonical(validate_bids(synthetic_bids(f, n_bids, seed), f, rules), f, rules, indexed=True)
        solved = {}   # each side's market and its converged solve, untimed
        for label in ("base", "this"):
            use(sides[label], sides["this" if label == "base" else "base"])
            m = side_clearing().NodalMarket(f, book, 50.0, rules, options=LOSSAWARE)
            solved[side_clearing()] = (m, m.converge())
        use(this, base)

        def run():
            m, sol = solved[side_clearing()]
            for _ in range(10):
                res = m.result(sol)
            return [float(v) for v in res.prices["dlmp"].to_numpy()[:50]], "-"
        return run

    f33 = ieee33()
    book33 = validate_bids(synthetic_bids(f33, 80, 5, kw=(5.0, 60.0)), f33, rules)
    hard_f, hard_bids = opf_case(ieee33(), 5, 0.95, "2", 3000.0)
    cases = {"curve ieee33 / 80 bids": curve_case(33, 80), "curve 1k buses / 1k bids": curve_case(1000, 1000),
             "clear at 40 prices, ieee33 / 80 bids": sweep_case(f33, book33),
             "clear at 40 prices, ieee33 hard seed 5": sweep_case(hard_f, validate_bids(hard_bids, hard_f, rules)),
             "clear 1k buses / 1k bids, seed 7": clear_case(1000, 7),
             "clear 1k buses / 10k bids, seed 7": clear_case(10000, 7),
             "clear 1k buses / 10k bids, seed 2": clear_case(10000, 2),
             "10 set-ups 1k buses / 10k bids, seed 7": setup_case(10000, 7),
             "10 results 1k buses / 10k bids, seed 7": result_case(10000, 7)}
    if args.feeder:
        feeder = read_feeder(args.feeder)
        book = validate_bids(read_table(str(Path(args.feeder) / "bids.csv"), "bids"), feeder, rules)

        def saved_curve():
            c = trace_curve(feeder, book, rules, options=LOSSAWARE)
            return c.bands, c.solves
        cases = {f"curve {args.feeder}": saved_curve}
    elif not args.skip_infeasible:
        work = Path(tempfile.mkdtemp(prefix="successive_ab_"))
        case = make_case("synth1000", 206, work)
        feeder = read_feeder(str(case.feeder_dir))
        book = validate_bids(read_table(str(case.bids), "bids"), feeder, rules)

        def infeasible():
            res = side_clearing().clear(feeder, book, case.iso_prices[0], rules=rules, options=LOSSAWARE)
            return [(d["limit"], d["element"], round(d.get("violation", 0.0), 1)) for d in res.diagnosis], res.status
        cases["clear infeasible synth1000-s206"] = infeasible

    print(f"CPU seconds, best of {args.repeats}; base = {args.base}")
    for name, fn in cases.items():
        t, out = {}, {}
        for label in ("base", "this", "base", "this")[:2 * max(1, min(args.repeats, 2))]:
            use(sides[label], sides["this" if label == "base" else "base"])
            try:
                dt, res = best(fn, 1)
            except (TypeError, AttributeError, ImportError) as exc:
                if label == "this":
                    raise
                # The base's modules run under this checkout's callers (interface, losscurve, clearing): a base
                # from before an interface between them changed cannot, and says so instead of a traceback.
                use(this, base)
                print(f"bench_successive_ab: --base {args.base}: its {', '.join(names)} do not fit this checkout's "
                      f"callers ({type(exc).__name__}: {exc}); choose a later base", file=sys.stderr)
                return 2
            t[label] = min(t.get(label, np.inf), dt)
            out[label] = res
        use(this, base)
        (a, a_extra), (b, b_extra) = out["base"], out["this"]
        if hasattr(a, "equals"):
            agree = f"the same bands to the bit: {a.equals(b)} ({b.height})"
        elif isinstance(a, list) and a and isinstance(a[0], float):
            a, b = np.asarray(a), np.asarray(b)
            rel = np.nanmax(np.abs(a - b) / np.maximum(np.abs(a), 50.0)) * 100.0
            agree = f"largest import difference {rel:.4f} % (curve tolerance {losses.CURVE_REL_TOL * 100:g} %)"
        else:
            agree = f"same diagnosis: {a == b} ({b})"
        print(f"{name:40s} base {t['base']:7.3f}  this {t['this']:7.3f}  this/base {t['this'] / t['base']:5.2f}  "
              f"[{a_extra} -> {b_extra}]  {agree}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
