"""Where a command's HiGHS runs end other than optimal, and what they and their re-solves cost (CPU).

Run: ``python benchmarks/bench_highs_failures.py [--root DIR] curve --feeder DIR --bids FILE --out DIR`` (any
``dsomarket`` arguments after the options). ``--root``: the checkout whose ``engine/`` and ``clients/`` run (another
revision's ``git worktree``; default this one's), in this checkout's environment.

The command runs in this process, in the main thread (the CLI's worker thread only makes Ctrl-C prompt), with
every ``highspy.Highs.run`` timed. A run that ends other than optimal is printed as it ends, with the engine
function that asked for it (the first caller outside ``engine/solver.py``), its stage (warm: from a basis; cold;
no presolve), status, simplex iterations, largest primal and dual infeasibility and CPU seconds, and so is each
run that follows it on the same HiGHS instance within one ``HighsSolver.run`` (its re-solves). Then the command's
exit status and CPU seconds (``time.process_time``), the HiGHS runs, and the CPU of those that failed and of
their re-solves.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import traceback
from pathlib import Path

import highspy

_run = highspy.Highs.run
state = {"runs": 0, "failed": 0, "cpu": 0.0, "last": None}   # last: the HiGHS instance whose run just failed


def _site() -> str:
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "/engine/" in frame.filename and not frame.filename.endswith("solver.py"):
            return f"{os.path.basename(frame.filename)}:{frame.lineno} {frame.name}"
    return "?"


def timed_run(h: highspy.Highs):
    presolve = h.getOptionValue("presolve")
    presolve = presolve[1] if isinstance(presolve, tuple) else presolve   # (status, value) in highspy 1.16
    stage = "no presolve" if presolve == "off" else "warm" if h.getBasis().valid else "cold"
    t0 = time.process_time()
    out = _run(h)
    cpu = time.process_time() - t0
    state["runs"] += 1
    ok = h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    again = state["last"] is h
    if not ok or again:
        info = h.getInfo()
        state["failed"] += not again
        state["cpu"] += cpu
        print(f"{'  re-solve' if again else _site():<58} {stage:<12} {h.modelStatusToString(h.getModelStatus()):<11} "
              f"{info.simplex_iteration_count:>6} {info.max_primal_infeasibility:>10.2g} "
              f"{info.max_dual_infeasibility:>9.2g} {cpu:>7.2f}", file=sys.stderr, flush=True)
    state["last"] = None if ok else h
    return out


def _load(root: Path) -> None:
    """``dsomarket.engine`` and ``dsomarket.clients`` from ``root``'s folders, as the installed package maps them."""
    for name, folder in (("dsomarket.engine", "engine"), ("dsomarket.clients", "clients")):
        spec = importlib.util.spec_from_file_location(name, root / folder / "__init__.py",
                                                      submodule_search_locations=[str(root / folder)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--root"]:
        _load(Path(argv[1]).resolve())
        argv = argv[2:]
    from dsomarket.clients import cli
    from dsomarket.engine import solver
    solver_run = solver.HighsSolver.run

    def fresh_run(self) -> str:
        state["last"] = None      # a new solve: its first run is no re-solve, whatever the last one ended
        return solver_run(self)

    highspy.Highs.run, solver.HighsSolver.run = timed_run, fresh_run
    cli._interruptible = lambda args: int(args.func(args) or 0)
    print(f"engine {Path(solver.__file__).parent}\n{'site':<58} {'stage':<12} {'status':<11} {'iter':>6} "
          f"{'primal inf':>10} {'dual inf':>9} {'CPU s':>7}", file=sys.stderr, flush=True)
    t0 = time.process_time()
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    print(f"exit {code}; CPU {time.process_time() - t0:.1f} s; {state['runs']} HiGHS runs, {state['failed']} ended "
          f"other than optimal: {state['cpu']:.1f} s CPU with their re-solves; load {os.getloadavg()[0]:.1f}",
          file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
