"""The command line starts fast: a command imports only its own module, and a clear none it does not use
(gRPC, cvxpy, pyarrow, pandas, matplotlib, scipy.optimize, the server, the curve tracers, ...)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

from dsomarket.clients.cli import COMMAND_MODULES, COMMANDS, _Parser

ROOT = Path(__file__).resolve().parents[1]


def test_the_command_table_names_every_command_of_every_module():
    registered = {}
    for name in COMMAND_MODULES:
        sub = _Parser(prog="x").add_subparsers()
        importlib.import_module(f"dsomarket.clients.commands.{name}").register(sub)
        registered.update({command: name for command in sub.choices})
    assert registered == COMMANDS


HEAVY = ("grpc", "cvxpy", "pyarrow", "pandas", "matplotlib", "scipy.optimize", "psycopg", "ray",
         "dsomarket.clients.api", "dsomarket.server", "dsomarket.v1", "dsomarket.engine.socp",
         "dsomarket.engine.flexibility", "dsomarket.engine.settlement",
         "dsomarket.engine.interface", "dsomarket.engine.tracer", "dsomarket.engine.losscurve",
         "dsomarket.engine.horizoncurve", "dsomarket.engine.tracerjit", "numba", "threadpoolctl")
"""Modules a default (loss-aware) `clear` never uses: none of them may be imported by it. (It does use
scipy.sparse.linalg, and so scipy.linalg: the price decomposition solves with SuperLU.)"""


def _without_blas_setting() -> dict:
    return {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}


def test_clear_imports_no_module_it_does_not_use_and_keeps_the_highs_banner_off_stdout(tmp_path):
    script = f"""
import json, sys
from dsomarket.clients.cli import main
rc = main(["clear", "--feeder", {str(ROOT / 'examples' / 'ieee33_rated')!r}, "--bids",
           {str(ROOT / 'examples' / 'ieee33_bids.csv')!r}, "--iso-price", "50", "--out", {str(tmp_path / 'out')!r}])
heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
import threadpoolctl
blas = sorted({{pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"}})
print(json.dumps({{"rc": rc, "heavy": heavy, "blas_threads": blas}}))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env=_without_blas_setting())
    assert run.returncode == 0, run.stderr
    assert "HiGHS" not in run.stdout
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report == {"rc": 0, "heavy": [], "blas_threads": [1]}
    assert (tmp_path / "out" / "dispatch.csv").exists()


def test_the_command_line_keeps_a_blas_thread_count_the_user_chose():
    script = """
import os
from dsomarket.clients.cli import build_parser
build_parser(["clear"])
print(os.environ["OPENBLAS_NUM_THREADS"])
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**_without_blas_setting(), "OPENBLAS_NUM_THREADS": "2"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["2"]


OFFLINE = ("clear", "curve", "feeder", "flex", "meters", "config", "plot")
"""Commands that run without a server, some in a group with server commands (``flex clear`` beside ``flex
submit``, ``meters settle`` beside ``meters submit``, ``config show`` beside ``whoami``)."""


def test_offline_commands_start_without_grpc_or_the_client_library():
    script = f"""
import json, sys
from dsomarket.clients.cli import build_parser
for command in {OFFLINE!r}:
    build_parser([command])
print(json.dumps(sorted(m for m in ("grpc", "dsomarket.clients.api", "dsomarket.v1", "dsomarket.server")
                        if m in sys.modules)))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1]) == []


def test_the_version_loads_no_command():
    script = """
import contextlib, io, json, sys
from dsomarket.clients.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
    main(["--version"])
loaded = sorted(m for m in sys.modules if m.startswith("dsomarket.clients.commands.") or m == "numpy")
print(json.dumps({"out": out.getvalue(), "loaded": loaded}))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["out"].split() == ["dsomarket", importlib.import_module("dsomarket").__version__]
    assert report["loaded"] == []


def test_a_parser_without_a_command_still_knows_them_all():
    parser = importlib.import_module("dsomarket.clients.cli").build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS)
