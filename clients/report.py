"""The short summary each offline command prints on stdout after it has written its files.

The lines say, in this order: the status; the welfare and what its sign means;
the interface import; the lowest and highest DLMP and where; where a limit
bound (congestion on a line, a voltage limit at a bus); the AC power flow
check's warnings; shed load; and the files written. Figures are rounded as in
the files (kW to 0.1 in the text, prices to 0.01 per MWh). Errors never appear
here: they go to stderr, one line each.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import polars as pl

AC_V_ERROR_PU = 0.005
"""The linear model's voltages off by more than this (pu) against the AC power flow draw a warning."""

WELFARE_SIGN = ("= buyers' value - sellers' cost - the ISO energy bill, in currency over the run;\n"
                "             higher is better; negative when the feeder buys more from the ISO than its bids are worth")


def stamp(interval) -> str:
    """`` (2026-07-01T13:00Z)`` for an interval start; empty for a single-interval run, which has none."""
    return "" if interval is None else f" ({interval:%Y-%m-%dT%H:%MZ})"


def binding_pct(polygon_sides: int) -> float:
    """Loading (%) from which a line is at its limit: the LP's polygon inscribed in the rating circle
    binds at cos(pi / sides) of the rating midway between its corners (98.1 % for 16 sides)."""
    return 100.0 * math.cos(math.pi / polygon_sides) - 0.05


def clearing_lines(res, polygon_sides: int = 16, vmin_pu: dict | None = None,
                   ac_limit_pu: float = AC_V_ERROR_PU) -> list[str]:
    """Status, welfare, import, DLMP extremes, binding limits, AC check and shed load of a clearing.

    ``vmin_pu``: the feeder's lower voltage limit per bus, to warn when the AC power flow of the
    dispatch falls below it."""
    n = len(res.intervals)
    lines = [f"status       {res.status} ({res.formulation}, {n} interval{'s' if n != 1 else ''}, "
             f"{res.solve_seconds:.2f} s in {res.solver})"]
    if not res.ok:
        lines += [f"  cannot meet {d['limit']} at {d['element']}" + (f" ({d['interval']})" if d.get("interval") else "")
                  for d in res.diagnosis[:5]]
        return lines
    lines.append(f"welfare      {res.welfare:,.2f} {WELFARE_SIGN}")
    imp = res.interface["import_kw"]
    lines.append(f"import       {kw_range(imp)} from the ISO (positive = the feeder buys, negative = it sells)")
    lines += dlmp_lines(res.prices)
    lines += binding_lines(res.lines, res.prices, binding_pct(polygon_sides))
    lines += ac_lines(res.ac_check, vmin_pu, ac_limit_pu, res.formulation)
    if res.shed is not None and res.shed.height:
        worst = res.shed.sort("shed_kw", descending=True).row(0, named=True)
        lines.append(f"shed         {res.shed['shed_kw'].sum():,.1f} kW of fixed load in all, most at bus {worst['bus']}"
                     f"{stamp(worst['interval'])}: {worst['shed_kw']:,.1f} kW; see shed.csv")
    return lines


def dlmp_lines(prices: pl.DataFrame) -> list[str]:
    """The lowest and highest DLMP, with bus and interval."""
    if not prices.height:
        return []
    lo = prices.sort("dlmp", maintain_order=True).row(0, named=True)
    hi = prices.sort("dlmp", descending=True, maintain_order=True).row(0, named=True)
    if hi["dlmp"] - lo["dlmp"] < 0.005:
        return [f"DLMP         {lo['dlmp']:,.2f} per MWh at every bus and interval"]
    return [f"DLMP         {lo['dlmp']:,.2f} per MWh at bus {lo['bus']}{stamp(lo['interval'])} .. "
            f"{hi['dlmp']:,.2f} at bus {hi['bus']}{stamp(hi['interval'])}"]


def binding_lines(lines: pl.DataFrame, prices: pl.DataFrame, at_limit_pct: float) -> list[str]:
    """Where congestion or a voltage limit bound: lines loaded to ``at_limit_pct`` or more, buses whose
    DLMP has a voltage part."""
    out = []
    full = lines.filter(pl.col("loading_pct") >= at_limit_pct)
    if full.height:
        counts = full.group_by("line", maintain_order=True).len()
        out.append("congestion   " + ", ".join(f"line {r['line']} ({r['len']} interval{'s' if r['len'] != 1 else ''})"
                                               for r in counts.head(6).iter_rows(named=True))
                   + (" and more" if counts.height > 6 else "") + " at the thermal limit")
    volt = prices.filter(pl.col("voltage").abs() > 1e-6) if "voltage" in prices.columns else prices.clear()
    if volt.height:
        top = volt.sort(pl.col("voltage").abs(), descending=True, maintain_order=True).row(0, named=True)
        n = volt["interval"].n_unique()
        out.append(f"voltage      a voltage limit binds in {n} interval{'s' if n != 1 else ''}; its price part is "
                   f"largest at bus {top['bus']}{stamp(top['interval'])}: {top['voltage']:,.2f} per MWh")
    if not out:
        out.append("limits       no line at its rating and no voltage limit binding")
    return out


def ac_lines(ac: dict | None, vmin_pu: dict | None = None, limit_pu: float = AC_V_ERROR_PU,
             formulation: str = "lossaware") -> list[str]:
    """The AC power flow check of the dispatch, with a warning where the linear model is off.

    Only the lossless LinDistFlow leaves the losses out of its balance; the hints then point
    to the loss-aware default, which models them."""
    if not ac:
        return ["AC check     skipped"]
    if not ac.get("converged", True):
        return ["AC check     WARNING: the AC power flow of the dispatch did not converge"]
    lossless = formulation in ("lossless", "lindistflow")
    where = "not in the lossless balance" if lossless else f"in the {formulation} balance"
    out = [f"AC check     lowest voltage {ac['min_v_pu']:.4f} pu at bus {ac['min_v_bus']}, "
           f"losses {ac['losses_kw']:,.1f} kW ({where})"]
    hint = "; the default --formulation lossaware models losses" if lossless else ""
    floor = (vmin_pu or {}).get(str(ac["min_v_bus"]))
    if floor is not None and ac["min_v_pu"] < floor - 1e-4:
        out.append(f"  WARNING: in the AC power flow bus {ac['min_v_bus']} falls below its limit of {floor:.4f} pu"
                   + hint)
    if ac.get("max_v_error_pu", 0.0) > limit_pu:
        out.append(f"  WARNING: the linear voltages are off by up to {ac['max_v_error_pu']:.4f} pu against the "
                   "AC power flow" + hint)
    return out


def files_line(out: Path, names: Iterable[str]) -> str:
    """``wrote DIR/: a.csv, b.csv`` for the files present in ``out``."""
    present = [n for n in names if (out / n).is_file()]
    return f"wrote        {out}/: {', '.join(present)}"


def kw_range(values: pl.Series, unit: str = "kW") -> str:
    """``lo .. hi unit`` of a column, or one figure when they agree to 0.1."""
    lo, hi = float(values.min()), float(values.max())
    return f"{lo:,.1f} {unit}" if abs(hi - lo) < 0.05 else f"{lo:,.1f} .. {hi:,.1f} {unit}"


def emit(lines: list[str]) -> None:
    """Print the summary on stdout."""
    print("\n".join(lines), flush=True)
