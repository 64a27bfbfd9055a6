"""What a command-line `clear` spends importing, measured in CPU time (which a loaded machine does not inflate).

Run: ``python benchmarks/bench_startup.py [clear options]`` (default: ``examples/ieee33_rated`` with its bids at
an ISO price of 50, the default loss-aware formulation). In one fresh process it runs ``dsomarket clear`` once
(paying every import and first use) and then three times more (everything loaded), and prints the CPU of the
first, the best warm run and the share of the first that is importing and first use. Wall time is given too;
on a shared machine it is mostly waiting for a core.
"""

from __future__ import annotations

import time

_CPU0, _WALL0 = time.process_time(), time.perf_counter()

import contextlib  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dsomarket.clients.cli import main  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..")
DEFAULT = ["--feeder", os.path.join(ROOT, "examples", "ieee33_rated"), "--bids",
           os.path.join(ROOT, "examples", "ieee33_bids.csv"), "--iso-price", "50"]


def run(argv: list[str], out: str) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    cpu, wall = time.process_time(), time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        if main(["clear", *argv, "--out", out]) != 0:
            raise SystemExit("the clear failed")
    return time.process_time() - cpu, time.perf_counter() - wall


def main_() -> int:
    argv = sys.argv[1:] or DEFAULT
    with tempfile.TemporaryDirectory() as tmp:
        run(argv, os.path.join(tmp, "first"))
        first_cpu, first_wall = time.process_time() - _CPU0, time.perf_counter() - _WALL0
        warm = [run(argv, os.path.join(tmp, f"warm{k}")) for k in range(3)]
    best_cpu, best_wall = min(w[0] for w in warm), min(w[1] for w in warm)
    print(f"first clear in a fresh process: CPU {first_cpu:.3f} s (wall {first_wall:.2f} s); warm clear: CPU "
          f"{best_cpu:.3f} s (wall {best_wall:.2f} s); importing and first use: {1 - best_cpu / first_cpu:.0%} "
          f"of the first's CPU (target < 33 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main_())
