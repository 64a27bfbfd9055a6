"""What a command-line ``clear`` spends starting, importing and on first use, in fresh processes.

Run: ``python benchmarks/bench_startup.py [--runs 7] [--base REV] [--uncached] [--importtime] [-- clear options]``
(default: ``examples/ieee33_rated`` with its bids at an ISO price of 50, the default loss-aware formulation).

Each run is a fresh ``python`` process that builds the ``clear`` parser (``clients.cli.build_parser``, which
imports the command's module), runs ``dsomarket clear`` once (paying every first use) and then three times
more (everything loaded). It reports, in CPU seconds of the whole process (all threads, ``getrusage``; a
loaded machine inflates CPU time far less than wall time): the interpreter's own start-up, the imports, the
first clear, and the best warm one. Each figure is the least over ``--runs`` processes (the run the other
engineers' jobs disturbed least; the fresh total is the least of the processes' totals). A first process of
each side, not counted, writes the bytecode of every module into a cache of its own
(``PYTHONPYCACHEPREFIX``), as an installed package has it, whatever ``PYTHONDONTWRITEBYTECODE`` says.

``--base REV`` runs the same processes on the package at another git revision of this repository (an export of
it put first on ``PYTHONPATH``), alternating with this checkout, and prints the ratio of each figure: the
before/after of a change in one run on one machine under one load. ``--uncached`` adds this checkout with
``PYTHONDONTWRITEBYTECODE=1`` and no cache, where every process compiles dsomarket's sources again (an editable
install in an environment that sets it). ``--importtime`` runs three more processes of each under
``python -X importtime`` and prints, of the one with the least imports, the top-level imports' total as a
share of that process's wall time (the issue's measure) and the packages whose modules took longest.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ["--feeder", str(ROOT / "examples" / "ieee33_rated"), "--bids", str(ROOT / "examples" / "ieee33_bids.csv"),
           "--iso-price", "50"]

CHILD = """
import resource, time
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
c0, w0 = cpu(), time.perf_counter()
import contextlib, io, json, sys
argv, out = json.loads(sys.argv[1]), sys.argv[2]
from dsomarket.clients.cli import build_parser, main
build_parser(["clear"])
c1, w1 = cpu(), time.perf_counter()
runs = []
for k in range(4):
    a, b = cpu(), time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        if main(["clear", *argv, "--out", f"{out}/{k}"]) != 0:
            raise SystemExit("the clear failed")
    runs.append((cpu() - a, time.perf_counter() - b))
print(json.dumps({"start": c0, "import": c1 - c0, "first": runs[0][0], "warm": min(r[0] for r in runs[1:]),
                  "import_wall": w1 - w0, "first_wall": runs[0][1]}))
"""
"""The measuring process: CPU from its start (the interpreter and ``site``), of the imports, the first clear."""


def _package(rev: str, tmp: Path) -> Path:
    """A directory that, first on ``PYTHONPATH``, makes ``import dsomarket`` load the package at ``rev``
    (the package-dir mapping of pyproject.toml, rebuilt with symbolic links into an export of ``rev``)."""
    tree = tmp / "base"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    pkg = tmp / "site" / "dsomarket"
    pkg.mkdir(parents=True)
    for name in ("__init__.py", "py.typed", "v1"):
        (pkg / name).symlink_to(tree / "dsomarket" / name)
    for name in ("engine", "clients", "server"):
        (pkg / name).symlink_to(tree / name)
    return tmp / "site"


def _env(cache: Path | None, path: Path | None = None) -> dict:
    """The environment of a side: its own bytecode cache, or (``cache`` None) no writing of bytecode at all."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX",
                                                            "PYTHONPATH")}
    if cache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env["PYTHONPYCACHEPREFIX"] = str(cache)
    if path is not None:
        env["PYTHONPATH"] = str(path)
    return env


def measure(argv: list[str], env: dict, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    run = subprocess.run([sys.executable, "-c", CHILD, json.dumps(argv), str(out)], env=env, capture_output=True,
                         text=True, cwd=ROOT)
    if run.returncode != 0:
        raise SystemExit(run.stderr)
    return json.loads(run.stdout.strip().splitlines()[-1])


def importtime(argv: list[str], env: dict, out: Path, runs: int = 3) -> str:
    """``-X importtime`` of a clear, the least disturbed of ``runs`` processes (least imports' total): the
    top-level imports' total against the process's wall time to the end of the first clear, and the shares
    of the packages whose modules took longest (their own time, children excluded)."""
    best = None
    for _ in range(runs):
        shutil.rmtree(out, ignore_errors=True)
        run = subprocess.run([sys.executable, "-X", "importtime", "-c", CHILD, json.dumps(argv), str(out)],
                             env=env, capture_output=True, text=True, cwd=ROOT)
        total, own = 0, Counter()
        for line in run.stderr.splitlines():
            if line.startswith("import time:") and "self [us]" not in line:
                alone, cumulative, name = line[len("import time:"):].split("|")
                if not name.startswith("  "):   # a top-level import: its cumulative time holds its children's
                    total += int(cumulative)
                own[name.strip().split(".")[0]] += int(alone)
        if best is None or total < best[0]:
            best = total, own, json.loads(run.stdout.strip().splitlines()[-1])
    total, own, figures = best
    wall = figures["import_wall"] + figures["first_wall"]
    shares = ", ".join(f"{name} {t / total:.0%}" for name, t in own.most_common(6))
    return (f"imports {total / 1e6:.3f} s of {wall:.3f} s wall to the end of the first clear ({total / 1e6 / wall:.0%};"
            f" target < 33 %); of the imports: {shares}")


FIGURES = (("start", "interpreter"), ("import", "imports"), ("first", "first clear"), ("warm", "warm clear"))


def summary(results: list[dict]) -> dict:
    best = {key: min(r[key] for r in results) for key, _ in FIGURES}
    best["fresh"] = min(r["start"] + r["import"] + r["first"] for r in results)
    return best


def line(label: str, med: dict) -> str:
    return (f"{label}: fresh process to the end of the first clear CPU {med['fresh']:.3f} s = interpreter "
            f"{med['start']:.3f} + imports {med['import']:.3f} + first clear {med['first']:.3f}; warm clear "
            f"{med['warm']:.3f} s; start-up and first use {1 - med['warm'] / med['fresh']:.0%} of the fresh CPU")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes measured (each side)")
    parser.add_argument("--base", help="git revision to compare with, alternating runs")
    parser.add_argument("--uncached", action="store_true", help="also this checkout compiling its sources each run")
    parser.add_argument("--importtime", action="store_true", help="also three runs under python -X importtime")
    parser.add_argument("clear", nargs="*", help="clear options (after --); default the ieee33_rated example")
    args = parser.parse_args()
    argv = args.clear or DEFAULT
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        sides = {"this checkout": _env(tmp / "cache-here")}
        if args.base:
            sides[f"base {args.base}"] = _env(tmp / "cache-base", _package(args.base, tmp))
        if args.uncached:
            cached = sorted(str(p) for d in ("dsomarket", "engine", "clients") for p in (ROOT / d).rglob("__pycache__"))
            if cached:
                print(f"warning: --uncached reads the bytecode already in {', '.join(cached)}")
            sides["this checkout, no bytecode cache"] = _env(None)
        results: dict[str, list[dict]] = {label: [] for label in sides}
        for k in range(args.runs + 1):
            for label, env in sides.items():
                figures = measure(argv, env, tmp / "out")
                if k:   # the first run of each side fills its bytecode cache
                    results[label].append(figures)
        meds = {label: summary(r) for label, r in results.items()}
        for label, med in meds.items():
            print(line(label, med))
        if args.base:
            here, base = meds["this checkout"], meds[f"base {args.base}"]
            print("this checkout / base, CPU: " + ", ".join(
                f"{label} {here[key] / base[key]:.2f}" for key, label in (("fresh", "fresh"), *FIGURES)))
        if args.importtime:
            for label, env in list(sides.items())[:2]:
                print(f"{label}, -X importtime: {importtime(argv, env, tmp / 'out')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
