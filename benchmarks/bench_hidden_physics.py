"""Seeded stress of the default clearing's physics through the command line, as issue 9's hidden checks run it.

Run: ``python benchmarks/bench_hidden_physics.py [--cases N] [--seed S] [--quick] [--workdir DIR]``.

Each case is written to disk as a user would (a feeder directory, ``bids.csv``) and run through
``dsomarket.clients.cli.main``: ieee33, ieee69 and ``dsomarket feeder synth`` feeders of 100-1,000 buses,
with every line rated, one or two lines rated near their base-case flow, a voltage floor near the base
case's lowest voltage and sometimes a low ceiling; random books of buys and sells (some negative
prices, reactive ``tan_phi`` on half the cases); ISO prices drawn from [-100, 300]. Checked, against
nothing of the engine's:

- ``opf``: the default ``clear`` against pandapower's AC OPF (``tests/acopf.py`` at the tightest tolerances
  of ``TOLERANCE_LADDER`` that converge; unity-pf cases of up to 300 buses, where it converges): DLMPs (target 0.01 per MWh),
  dispatch (1 kW), cost (0.1 %);
- ``pf``: the import of ``clear``'s dispatch against pandapower's AC power flow of it (target 0.1 %),
  and the exit status: 3 exactly when pandapower finds a limit broken (voltages by 1e-5 pu, either end
  of a line by 0.01 % of its rating, as ``engine.results.ac_check``) or a warning is due;
- ``curve``: ``dsomarket curve``'s import at seeded prices off its breakpoints (random ones, the middles of
  random and of the widest bands, each side of the largest jumps) against ``clear`` at that price and the
  AC power flow of its dispatch (target 0.5 % of the AC import, or of 5 % of the curve's
  largest import where the import is near zero, as ``losses.CURVE_SIZE_SHARE``);
- ``disaggregate``: awards at several points of the curve; the AC power flow of the dispatch must
  deliver the award at the interface within 0.5 %;
- ``lossless``: ``--formulation lindistflow`` ``clear`` against the textbook LinDistFlow LP of
  ``tests/reference.py`` (DLMPs, import), and its exact curve against it. Where the LP's duals are not unique (two
  lines in series at one rating), a DLMP is checked against the range of optimal duals (``_beyond_the_dual_range``).

Prints the worst figure of every check and each failing case with the command that reproduces it
(the case files stay under ``--workdir``). Exit status 1 when any case fails.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dsomarket.clients.cli import main as cli  # noqa: E402

V_TOL = 1e-5           # pu, as engine.results.VIOLATION_TOL_V_PU
LOADING_TOL = 1e-4     # share of a rating, as engine.results.VIOLATION_TOL_PCT (0.01 percentage points)
TARGETS = {"dlmp": 0.01, "dispatch_kw": 1.0, "cost_pct": 0.1, "clear_import_pct": 0.1, "curve_pct": 0.5,
           "award_pct": 0.5, "lossless_dlmp": 0.01, "lossless_import_pct": 0.01}
SIZE_SHARE = 0.05      # as engine.losses.CURVE_SIZE_SHARE


# -- running the command line -----------------------------------------------------------------------------

def run(argv: list[str]) -> tuple[int, str]:
    """``dsomarket argv`` in this process: (exit status, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = cli(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, err.getvalue()


def command(argv: list[str]) -> str:
    return "dsomarket " + " ".join(shlex.quote(a) for a in argv)


# -- cases ------------------------------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    dir: Path
    feeder_dir: Path
    bids: Path
    buses: pl.DataFrame
    lines: pl.DataFrame
    base_kv: float
    v0: float
    unity: bool
    iso_prices: list[float]

    def args(self) -> list[str]:
        return ["--feeder", str(self.feeder_dir), "--bids", str(self.bids)]


def make_case(kind: str, seed: int, workdir: Path) -> Case:
    """A feeder directory with binding limits and a random book, written under ``workdir``."""
    from dsomarket.engine.feeders import ieee33, ieee69, synthetic
    from dsomarket.engine.powerflow import ac_power_flow

    rng = np.random.default_rng(seed)
    if kind == "ieee33":
        feeder = ieee33()
    elif kind == "ieee69":
        feeder = ieee69()
    else:
        feeder = synthetic(int(kind.removeprefix("synth")), seed)
    # Limits are set from the base case's power flow (case making only; the checks use pandapower).
    base = ac_power_flow(feeder)
    s_send = np.hypot(base.line_p_kw, base.line_q_kvar)
    rating = np.maximum(2.0 * s_send, 500.0) + 500.0
    n_line = len(rating)
    tight = rng.choice(np.arange(n_line)[s_send > 50.0], size=int(rng.integers(1, 3)), replace=False)
    rating[tight] = s_send[tight] * rng.uniform(0.8, 1.05, len(tight))
    ids = base.line_ids.astype(str)
    lines = feeder.lines.with_columns(pl.col("line").cast(pl.Utf8))
    lines = lines.join(pl.DataFrame({"line": ids, "new": rating}), on="line", how="left").with_columns(
        pl.col("new").alias("s_max_kva")).drop("new")
    vmin = float(np.clip(base.min_v_pu + rng.uniform(-0.01, 0.012), 0.9, 0.98))
    vmax = float(rng.choice([1.05, 1.05, 1.02, 1.01]))
    buses = feeder.buses.with_columns(pl.lit(vmin).alias("vmin_pu"), pl.lit(vmax).alias("vmax_pu"))
    unity = bool(rng.random() < 0.5)
    n_bus = buses.height
    n = int(rng.integers(12, 40)) if n_bus < 100 else int(rng.integers(60, min(600, n_bus)))
    total = float(buses["load_kw"].sum())
    mean_kw = total / n * rng.uniform(0.6, 2.0)
    bus_ids = buses["bus"].cast(pl.Utf8).to_list()[1:]
    sell = rng.random(n) < 0.65
    price = np.where(rng.random(n) < 0.12, rng.uniform(-80, 0, n), rng.uniform(0, 250, n)).round(2)
    tan_phi = np.zeros(n) if unity else rng.choice([0.0, 0.0, 0.1, 0.3, 0.48, -0.2], n)
    bids = pl.DataFrame({"bid_id": [f"b{k}" for k in range(n)], "bus": rng.choice(bus_ids, n),
                         "side": np.where(sell, "sell", "buy"),
                         "quantity_kw": (mean_kw * rng.lognormal(0.0, 0.6, n)).round(1) + 1.0,
                         "price": price, "tan_phi": tan_phi})
    name = f"{kind}-s{seed}"
    d = workdir / name
    fd = d / "feeder"
    fd.mkdir(parents=True, exist_ok=True)
    (fd / "feeder.json").write_text(json.dumps({"base_kv": feeder.base_kv, "name": name,
                                                "root_bus": str(feeder.root_bus), "v0_pu": feeder.v0_pu}))
    buses.write_csv(fd / "buses.csv")
    lines.write_csv(fd / "lines.csv")
    bids.write_csv(d / "bids.csv")
    iso = [float(v) for v in np.round(rng.uniform(-100, 300, 3), 2)]
    return Case(name, d, fd, d / "bids.csv", buses.with_columns(pl.col("bus").cast(pl.Utf8)), lines,
                feeder.base_kv, feeder.v0_pu, unity, iso)


def read_feeder_case(case: Case):
    from dsomarket.clients.files import read_feeder
    return read_feeder(str(case.feeder_dir))


# -- pandapower's AC power flow of a dispatch -------------------------------------------------------------

class AcFlow:
    """pandapower's Newton-Raphson AC power flow of a case's feeder under a net withdrawal per bus."""

    def __init__(self, case: Case):
        import pandapower as pp

        self.pp = pp
        net = pp.create_empty_network(sn_mva=1.0)
        kv = case.base_kv
        self.idx = {}
        for b in case.buses["bus"].to_list():
            self.idx[b] = pp.create_bus(net, vn_kv=kv, name=b)
        self.load = {b: pp.create_load(net, self.idx[b], p_mw=0.0, q_mvar=0.0) for b in self.idx}
        root = case.buses["bus"][0]
        pp.create_ext_grid(net, self.idx[root], vm_pu=case.v0)
        self.rating, self.line_idx = [], []
        for row in case.lines.filter(pl.col("in_service")).iter_rows(named=True):
            self.line_idx.append(pp.create_line_from_parameters(
                net, self.idx[str(row["from_bus"])], self.idx[str(row["to_bus"])], length_km=1.0,
                r_ohm_per_km=row["r_ohm"], x_ohm_per_km=row["x_ohm"], c_nf_per_km=0.0, max_i_ka=1.0))
            self.rating.append(row["s_max_kva"])
        self.rating = np.asarray(self.rating)
        self.net = net
        self.fixed_p = dict(zip(case.buses["bus"], case.buses["load_kw"]))
        self.fixed_q = dict(zip(case.buses["bus"], case.buses["load_kvar"]))
        self.vmin = case.buses["vmin_pu"].to_numpy()
        self.vmax = case.buses["vmax_pu"].to_numpy()

    def of_dispatch(self, dispatch: pl.DataFrame) -> dict:
        """Import (kW), worst voltage and loading excess of the feeder with ``dispatch.csv``'s cleared bids."""
        sign = np.where(dispatch["side"].to_numpy() == "buy", 1.0, -1.0)
        kw = dispatch["cleared_kw"].to_numpy() * sign
        tan = dispatch["tan_phi"].fill_null(0.0).to_numpy() if "tan_phi" in dispatch.columns else 0.0
        wp = dict(self.fixed_p)
        wq = dict(self.fixed_q)
        for b, p, q in zip(dispatch["bus"].cast(pl.Utf8).to_list(), kw, kw * tan):
            wp[b] += p
            wq[b] += q
        self.net.load["p_mw"] = [wp[b] / 1000.0 for b in self.load]
        self.net.load["q_mvar"] = [wq[b] / 1000.0 for b in self.load]
        self.pp.runpp(self.net, algorithm="nr", init="flat", tolerance_mva=1e-10, max_iteration=50, numba=False)
        v = self.net.res_bus["vm_pu"].to_numpy()
        rl = self.net.res_line
        ends = np.maximum(np.hypot(rl["p_from_mw"], rl["q_from_mvar"]), np.hypot(rl["p_to_mw"], rl["q_to_mvar"]))
        load = ends.to_numpy() * 1000.0 / self.rating
        return {"import_kw": float(self.net.res_ext_grid["p_mw"].iloc[0]) * 1000.0,
                "v_low": float(np.max((self.vmin - v)[1:])), "v_high": float(np.max((v - self.vmax)[1:])),
                "over": float(np.max(load) - 1.0)}


def violated(ac: dict) -> bool:
    return ac["v_low"] > V_TOL or ac["v_high"] > V_TOL or ac["over"] > LOADING_TOL


# -- the checks -------------------------------------------------------------------------------------------

@dataclass
class Tally:
    worst: dict = field(default_factory=dict)
    fails: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)

    def record(self, key: str, value: float, where: str) -> None:
        if not math.isfinite(value):
            return
        if key not in self.worst or value > self.worst[key][0]:
            self.worst[key] = (value, where)

    def fail(self, what: str, argv: list[str]) -> None:
        self.fails.append((what, command(argv)))

    def count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1


def clear_case(case: Case, price: float, tally: Tally, tag: str,
               formulation: list[str] | None = None) -> tuple[int, Path, list[str], str]:
    out = case.dir / f"clear-{tag}"
    argv = ["clear", *case.args(), "--iso-price", repr(float(price)), "--out", str(out), *(formulation or [])]
    code, err = run(argv)
    tally.count(f"clear exit {code}")
    if code == 3:
        tally.count(f"clear exit 3: {err.strip()[:120]}")
    return code, out, argv, err


def check_clear(case: Case, price: float, tally: Tally, flow: AcFlow, opf: bool) -> None:
    code, out, argv, err = clear_case(case, price, tally, f"{price:g}")
    if code not in (0, 3):
        if code != 1:
            tally.fail(f"{case.name} clear at {price}: exit {code}: {err.strip()}", argv)
        return
    summary = json.loads((out / "summary.json").read_text())
    dispatch = pl.read_csv(out / "dispatch.csv", schema_overrides={"bus": pl.Utf8, "interval": pl.Utf8})
    ac = flow.of_dispatch(dispatch)
    ours = summary["interface_import_kw"]
    err_pct = abs(ours - ac["import_kw"]) / max(abs(ac["import_kw"]), 1.0) * 100.0
    tally.record("clear import vs AC %", err_pct, f"{case.name} @ {price}")
    if err_pct > TARGETS["clear_import_pct"]:
        tally.fail(f"{case.name} clear at {price}: import {ours:.3f} kW, AC {ac['import_kw']:.3f} kW "
                   f"({err_pct:.3f} %)", argv)
    broken = violated(ac)
    unconverged = bool(summary.get("convergence")) and not summary["convergence"]["converged"]
    if code == 3 and not broken and not unconverged:
        tally.fail(f"{case.name} clear at {price}: exit 3 but the AC power flow breaks no limit "
                   f"(v_low {ac['v_low']:.2e}, v_high {ac['v_high']:.2e}, over {ac['over']:.2e}): {err.strip()}", argv)
    if code == 0 and broken:
        tally.fail(f"{case.name} clear at {price}: exit 0 but the AC power flow breaks a limit "
                   f"(v_low {ac['v_low']:.2e}, v_high {ac['v_high']:.2e}, over {ac['over']:.2e})", argv)
    tally.record("clear AC limit excess (pu or share)", max(ac["v_low"], ac["v_high"], ac["over"]),
                 f"{case.name} @ {price}")
    if opf and case.unity:
        check_opf(case, price, summary, dispatch, out, tally, argv)


def check_opf(case: Case, price: float, summary: dict, dispatch: pl.DataFrame, out: Path, tally: Tally,
              argv: list[str]) -> None:
    from tests.acopf import TOLERANCE_LADDER, ac_opf_tightest

    feeder = read_feeder_case(case)
    bids = pl.read_csv(case.bids, schema_overrides={"bus": pl.Utf8})
    ref, rung = ac_opf_tightest(feeder, bids, price)
    if not ref.converged:
        tally.count("AC OPF not converged")
        return
    tolerance = TOLERANCE_LADDER[rung].get("PDIPM_GRADTOL", "pandapower's default")
    tally.count(f"AC OPF compared at tolerance {tolerance}")
    prices = pl.read_csv(out / "prices.csv", schema_overrides={"bus": pl.Utf8, "interval": pl.Utf8})
    dlmp = max(abs(d - ref.dlmp[b]) for b, d in zip(prices["bus"], prices["dlmp"]))
    disp = max(abs(c - ref.cleared_kw[b]) for b, c in zip(dispatch["bid_id"], dispatch["cleared_kw"]))
    cost = abs(-summary["welfare"] - ref.cost) / max(abs(ref.cost), 1.0) * 100.0
    where = f"{case.name} @ {price}"
    tally.record("DLMP vs AC OPF (per MWh)", dlmp, where)
    tally.record("dispatch vs AC OPF (kW)", disp, where)
    tally.record("cost vs AC OPF (%)", cost, where)
    if dlmp > TARGETS["dlmp"] or disp > TARGETS["dispatch_kw"] or cost > TARGETS["cost_pct"]:
        tally.fail(f"{where}: against the AC OPF DLMP {dlmp:.4f} per MWh, dispatch {disp:.3f} kW, cost {cost:.4f} %",
                   argv)


def check_curve(case: Case, tally: Tally, flow: AcFlow, rng: np.random.Generator, n_prices: int,
                n_awards: int) -> None:
    out = case.dir / "curve"
    argv = ["curve", *case.args(), "--out", str(out)]
    t0 = time.process_time()
    code, err = run(argv)
    tally.record("curve CPU s", time.process_time() - t0, case.name)
    tally.count(f"curve exit {code}")
    if code not in (0, 3):
        if code != 1:
            tally.fail(f"{case.name} curve: exit {code}: {err.strip()}", argv)
        return
    bands = pl.read_csv(out / "curve.csv")
    lo, hi, imp = (bands[c].to_numpy() for c in ("price_low", "price_high", "import_kw"))
    size = SIZE_SHARE * float(np.max(np.abs(imp)))
    breaks = hi[:-1]
    prices = list(rng.uniform(-100, 300, n_prices))
    inner = np.nonzero((lo > -100) & (hi < 300))[0]
    if len(inner):
        # A few bands at random, the widest (where an unresolved stretch hides) and each side of the
        # largest jumps (where two fixed points may overlap).
        k = rng.choice(inner, min(3, len(inner)), replace=False)
        widest = inner[np.argsort(lo[inner] - hi[inner])[:3]]
        prices += list(0.5 * (lo[k] + hi[k])) + list(0.5 * (lo[widest] + hi[widest]))
        jumps = inner[inner < len(imp) - 1]
        for j in jumps[np.argsort(imp[jumps + 1] - imp[jumps])[:2]]:
            prices += [hi[j] - 0.05, hi[j] + 0.05]
    worst_here = 0.0
    for p in prices:
        p = round(float(p), 4)
        if len(breaks) and np.min(np.abs(breaks - p)) < 1e-3:
            continue
        ours = float(imp[np.searchsorted(hi, p)])
        c, o, a, e = clear_case(case, p, tally, f"curve{p:g}")
        if c not in (0, 3):
            tally.fail(f"{case.name} curve at {p}: the curve imports {ours:.1f} kW but clear exits {c}: {e.strip()}", a)
            continue
        summary = json.loads((o / "summary.json").read_text())
        dispatch = pl.read_csv(o / "dispatch.csv", schema_overrides={"bus": pl.Utf8, "interval": pl.Utf8})
        ac = flow.of_dispatch(dispatch)["import_kw"]
        gap = max(abs(ours - summary["interface_import_kw"]), abs(ours - ac))
        pct = gap / max(abs(ac), size, 1.0) * 100.0
        tally.record("curve vs clear/AC (% of import or 5 % of size)", pct, f"{case.name} @ {p}")
        tally.record("curve vs clear/AC (kW)", gap, f"{case.name} @ {p}")
        worst_here = max(worst_here, pct)
        if pct > TARGETS["curve_pct"]:
            tally.fail(f"{case.name} curve at {p}: curve {ours:.3f} kW, clear {summary['interface_import_kw']:.3f} kW, "
                       f"AC of its dispatch {ac:.3f} kW ({pct:.3f} %; the curve exited {code}, from "
                       f"`{command(argv)}`)", a)
    if code == 3 and worst_here <= TARGETS["curve_pct"]:
        tally.count("curve exit 3 with every sampled price within 0.5 %")
    # Awards at points of the curve: a band's import at its own price, and between two bands' imports.
    picks = rng.choice(len(imp), min(n_awards, len(imp)), replace=False)
    for k in picks:
        target = float(imp[k]) if rng.random() < 0.5 or k + 1 >= len(imp) else float(0.5 * (imp[k] + imp[k + 1]))
        price = float(np.clip(0.5 * (lo[k] + hi[k]), -1000, 3000)) if rng.random() < 0.5 else None
        check_award(case, target, price, tally, flow)


def check_award(case: Case, import_kw: float, price: float | None, tally: Tally, flow: AcFlow) -> None:
    """Disaggregate an award of ``import_kw`` (with ``price``, or the quantity alone when None)."""
    award = case.dir / f"award-{import_kw:.1f}.csv"
    pl.DataFrame({"interval": [""], "import_kw": [round(import_kw, 3)],
                  "price": [None if price is None else round(price, 4)]},
                 schema={"interval": pl.Utf8, "import_kw": pl.Float64, "price": pl.Float64}).write_csv(award)
    out = case.dir / f"dis-{import_kw:.1f}"
    argv = ["disaggregate", *case.args(), "--award", str(award), "--out", str(out)]
    code, err = run(argv)
    tally.count(f"disaggregate exit {code}")
    if code not in (0, 3):
        tally.fail(f"{case.name} disaggregate {import_kw:.3f} kW: exit {code}: {err.strip()}", argv)
        return
    dispatch = pl.read_csv(out / "dispatch.csv", schema_overrides={"bus": pl.Utf8, "interval": pl.Utf8})
    ac = flow.of_dispatch(dispatch)
    pct = abs(ac["import_kw"] - import_kw) / max(abs(import_kw), 1.0) * 100.0
    tally.record("award vs AC delivered %", pct, f"{case.name} award {import_kw:.1f}")
    if pct > TARGETS["award_pct"]:
        tally.fail(f"{case.name} disaggregate: award {import_kw:.3f} kW, AC power flow of the dispatch "
                   f"{ac['import_kw']:.3f} kW ({pct:.3f} %)", argv)
    if code == 3 and not violated(ac):
        summary = json.loads((out / "summary.json").read_text())
        if not (summary.get("convergence") and not summary["convergence"]["converged"]):
            tally.fail(f"{case.name} disaggregate {import_kw:.3f} kW: exit 3 but the AC power flow breaks no limit: "
                       f"{err.strip()}", argv)
    if code == 0 and violated(ac):
        tally.fail(f"{case.name} disaggregate {import_kw:.3f} kW: exit 0 but the AC power flow breaks a limit "
                   f"({ac})", argv)


def _beyond_the_dual_range(feeder, bids: pl.DataFrame, price: float, ref, prices: pl.DataFrame, out: Path,
                           tally: Tally, where: str) -> float:
    """How far ``clear``'s lossless DLMPs lie outside the range of optimal duals of the textbook LP, per MWh.

    Where a line's limit is redundant at the optimum (two lines in series, one rating, no injection between them,
    both at it), the LP's duals are not unique: the DLMP of the bus between them is any value from what it is with
    the one line binding to what it is with the other, and a simplex vertex and the reference's interior-point dual
    may differ by far more than the tolerance, both optimal. The textbook LP is solved again with the rating of
    each line ``clear`` loads to 95 % or more raised by 0.01 kVA in turn (the other one binds alone); a bus's DLMP
    counts as that far off the nearest end of the range its values span, with the unperturbed one. Such buses are
    recorded apart (``lossless DLMP not unique``)."""
    from tests.reference import solve_reference

    lines = pl.read_csv(out / "lines.csv", schema_overrides={"line": pl.Utf8, "interval": pl.Utf8})
    near = lines.filter(pl.col("loading_pct") >= 95.0)["line"].to_list()
    seen = {b: [v] for b, v in ref.dlmp.items()}
    for line in near:
        rated = feeder.lines.with_columns(pl.when(pl.col("line").cast(pl.Utf8) == line)
                                          .then(pl.col("s_max_kva") + 0.01).otherwise(pl.col("s_max_kva"))
                                          .alias("s_max_kva"))
        other = solve_reference(feeder.with_changes(lines=rated), bids, price)
        if other.status == "optimal":
            for b, v in other.dlmp.items():
                seen[b].append(v)
    worst, apart = 0.0, 0.0
    for b, d in zip(prices["bus"], prices["dlmp"]):
        lo, hi = min(seen[b]), max(seen[b])
        off = max(lo - d, d - hi, 0.0)
        worst = max(worst, off)
        if abs(d - ref.dlmp[b]) > 0.05 and off <= 0.05:
            apart = max(apart, abs(d - ref.dlmp[b]))
    if apart:
        tally.record("lossless DLMP not unique (within its range)", apart, where)
    return worst


def check_lossless(case: Case, price: float, tally: Tally, flow: AcFlow) -> None:
    from tests.reference import solve_reference

    code, out, argv, err = clear_case(case, price, tally, f"ll{price:g}", ["--formulation", "lindistflow"])
    if code not in (0, 3):
        return
    feeder = read_feeder_case(case)
    bids = pl.read_csv(case.bids, schema_overrides={"bus": pl.Utf8})
    ref = solve_reference(feeder, bids, price)
    if ref.status != "optimal":
        tally.fail(f"{case.name} lossless at {price}: the reference LP is {ref.status}", argv)
        return
    summary = json.loads((out / "summary.json").read_text())
    prices = pl.read_csv(out / "prices.csv", schema_overrides={"bus": pl.Utf8, "interval": pl.Utf8})
    dlmp = max(abs(d - ref.dlmp[b]) for b, d in zip(prices["bus"], prices["dlmp"]))
    imp = abs(summary["interface_import_kw"] - ref.import_kw) / max(abs(ref.import_kw), 1.0) * 100.0
    if dlmp > 0.05:
        dlmp = _beyond_the_dual_range(feeder, bids, price, ref, prices, out, tally, f"{case.name} @ {price}")
    tally.record("lossless DLMP vs textbook LP", dlmp, f"{case.name} @ {price}")
    tally.record("lossless import vs textbook LP %", imp, f"{case.name} @ {price}")
    if dlmp > 0.05 or imp > TARGETS["lossless_import_pct"]:
        tally.fail(f"{case.name} lossless at {price}: DLMP {dlmp:.4f}, import {imp:.4f} % off the textbook LP", argv)
    # The lossless curve is exact: its import at a price off the breakpoints is the lossless clearing's.
    out = case.dir / "curve-ll"
    cargv = ["curve", *case.args(), "--formulation", "lindistflow", "--out", str(out)]
    code, err = run(cargv)
    if code != 0:
        tally.fail(f"{case.name} lossless curve: exit {code}: {err.strip()}", cargv)
        return
    bands = pl.read_csv(out / "curve.csv")
    lo, hi, q = (bands[c].to_numpy() for c in ("price_low", "price_high", "import_kw"))
    for p in np.random.default_rng(len(lo)).uniform(-100, 300, 4):
        p = round(float(p), 4)
        if len(hi) > 1 and np.min(np.abs(hi[:-1] - p)) < 1e-3:
            continue
        c, o, a, e = clear_case(case, p, tally, f"llc{p:g}", ["--formulation", "lindistflow", "--no-ac-check"])
        if c != 0:
            tally.fail(f"{case.name} lossless clear at {p}: exit {c}: {e.strip()}", a)
            continue
        got = json.loads((o / "summary.json").read_text())["interface_import_kw"]
        gap = abs(got - float(q[np.searchsorted(hi, p)]))
        tally.record("lossless curve vs lossless clear (kW)", gap, f"{case.name} @ {p}")
        if gap > 0.01:
            tally.fail(f"{case.name} lossless curve at {p}: {q[np.searchsorted(hi, p)]:.3f} kW, clear {got:.3f} kW", a)


# -- main -------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=12, help="number of cases (default 12)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--quick", action="store_true", help="ieee33/69 and 100-200-bus feeders, fewer prices")
    p.add_argument("--workdir", default="/tmp/hidden_physics", help="where the cases are written")
    p.add_argument("--only", nargs="*", default=("clear", "curve", "lossless"),
                   choices=("clear", "curve", "lossless"))
    args = p.parse_args(argv)
    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cpus, "
          f"load {os.getloadavg()[0]:.1f}")
    kinds = ["ieee33", "ieee69", "synth100", "ieee33", "synth200"] + ([] if args.quick else ["synth500", "synth1000"])
    workdir = Path(args.workdir)
    tally = Tally()
    t0 = time.time()
    for i in range(args.cases):
        seed = args.seed + i
        kind = kinds[i % len(kinds)]
        case = make_case(kind, seed, workdir)
        flow = AcFlow(case)
        n_bus = case.buses.height
        rng = np.random.default_rng(1000 + seed)
        print(f"case {case.name}: {n_bus} buses, {pl.read_csv(case.bids).height} bids, "
              f"{'unity pf' if case.unity else 'tan_phi'}, ISO prices {case.iso_prices} "
              f"({time.time() - t0:.0f} s)", flush=True)
        if "clear" in args.only:
            for price in case.iso_prices:
                check_clear(case, price, tally, flow, opf=n_bus <= 300)
        if "curve" in args.only and n_bus <= (200 if args.quick else 1000):
            check_curve(case, tally, flow, rng, 4 if args.quick else 8, 2 if args.quick else 4)
        if "lossless" in args.only and n_bus <= 200:
            check_lossless(case, case.iso_prices[0], tally, flow)
    print(f"\n{args.cases} cases in {time.time() - t0:.0f} s; exit statuses and counts: {dict(sorted(tally.counts.items()))}")
    print("worst figures:")
    for key, (value, where) in sorted(tally.worst.items()):
        print(f"  {key:<48} {value:12.6g}   ({where})")
    print(f"failing: {len(tally.fails)}")
    for what, cmd in tally.fails:
        print(f"  {what}\n      {cmd}")
    return 1 if tally.fails else 0


if __name__ == "__main__":
    sys.exit(main())
