"""Built-in feeders: published data, the synthetic generator, and feeder validation."""

from __future__ import annotations

import math
import time

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsomarket.engine.errors import InputError
from dsomarket.engine.feeders import builtin, ieee33, ieee69, synthetic
from dsomarket.engine.network import Feeder
from dsomarket.engine.powerflow import ac_power_flow


def _line(feeder: Feeder, line_id: str) -> dict:
    return feeder.lines.filter(pl.col("line") == line_id).row(0, named=True)


def _bus(feeder: Feeder, bus_id: str) -> dict:
    return feeder.buses.filter(pl.col("bus") == bus_id).row(0, named=True)


# --- IEEE 33 / 69 against the published tables --------------------------------------------------

def test_ieee33_totals_and_shape():
    f = ieee33()
    assert (f.name, f.root_bus, f.base_kv, f.v0_pu) == ("ieee33", "1", 12.66, 1.0)
    assert f.buses["bus"].to_list() == [str(k) for k in range(1, 34)]
    assert f.lines["line"].to_list() == [str(k) for k in range(1, 33)]
    assert f.buses["load_kw"].sum() == pytest.approx(3715.0)
    assert f.buses["load_kvar"].sum() == pytest.approx(2300.0)
    assert f.buses["vmin_pu"].unique().to_list() == [0.90]
    assert f.buses["vmax_pu"].unique().to_list() == [1.05]
    assert np.isinf(f.lines["s_max_kva"].to_numpy()).all()
    assert f.topology.n_bus == 33 and f.topology.depth.max() == 17  # 1 -> 18 is the main trunk


@pytest.mark.parametrize("line, from_bus, to_bus, r, x", [
    ("1", "1", "2", 0.0922, 0.0470),
    ("5", "5", "6", 0.8190, 0.7070),
    ("18", "2", "19", 0.1640, 0.1565),
    ("22", "3", "23", 0.4512, 0.3083),
    ("25", "6", "26", 0.2030, 0.1034),
    ("32", "32", "33", 0.3410, 0.5302),
])
def test_ieee33_published_lines(line, from_bus, to_bus, r, x):
    row = _line(ieee33(), line)
    assert (row["from_bus"], row["to_bus"]) == (from_bus, to_bus)
    assert (row["r_ohm"], row["x_ohm"]) == (r, x)


@pytest.mark.parametrize("bus, p, q", [("1", 0, 0), ("2", 100, 60), ("24", 420, 200), ("30", 200, 600),
                                       ("33", 60, 40)])
def test_ieee33_published_loads(bus, p, q):
    row = _bus(ieee33(), bus)
    assert (row["load_kw"], row["load_kvar"]) == (p, q)


def test_ieee69_totals_and_published_values():
    f = ieee69()
    assert f.topology.n_bus == 69 and f.topology.n_line == 68 and f.root_bus == "1"
    assert f.buses["load_kw"].sum() == pytest.approx(3802.1)
    assert f.buses["load_kvar"].sum() == pytest.approx(2694.7)
    assert (_bus(f, "61")["load_kw"], _bus(f, "61")["load_kvar"]) == (1244.0, 888.0)
    row = _line(f, "68")
    assert (row["from_bus"], row["to_bus"], row["r_ohm"], row["x_ohm"]) == ("68", "69", 0.0047, 0.0016)
    row = _line(f, "64")
    assert (row["from_bus"], row["to_bus"], row["r_ohm"], row["x_ohm"]) == ("64", "65", 1.041, 0.5302)


def test_builtin_names():
    assert builtin("ieee33").name == "ieee33"
    assert builtin(" IEEE69 ").name == "ieee69"
    assert builtin("synth:40:7").lines.equals(synthetic(40, 7).lines)
    with pytest.raises(InputError) as exc:
        builtin("ieee123")
    assert (exc.value.table, exc.value.field) == ("feeder", "name")
    with pytest.raises(InputError) as exc:
        builtin("synth:x:1")
    assert exc.value.field == "name"


# --- synthetic ----------------------------------------------------------------------------------

def test_synthetic_same_seed_same_feeder():
    a, b, c = synthetic(300, 11), synthetic(300, 11), synthetic(300, 12)
    assert a.buses.equals(b.buses) and a.lines.equals(b.lines) and a.header() == b.header()
    assert not a.lines.equals(c.lines)


def _check_well_posed(f: Feeder, n: int) -> None:
    topo = f.topology  # building it proved radial and connected
    assert topo.n_bus == n and topo.n_line == n - 1
    assert f.root_bus == "0" and topo.bus_ids[0] == "0"
    assert sorted(f.buses["bus"].to_list(), key=int) == [str(k) for k in range(n)]
    # Line "k" feeds bus "k" from a lower-numbered parent.
    lines = f.lines
    assert lines["line"].to_list() == lines["to_bus"].to_list()
    assert (lines["from_bus"].cast(pl.Int64) < lines["to_bus"].cast(pl.Int64)).all()
    assert (topo.r_ohm > 0).all() and (topo.x_ohm > 0).all()
    pf = ac_power_flow(f)
    assert pf.converged
    assert 0.955 <= pf.min_v_pu <= 0.965
    assert (pf.v_pu >= topo.vmin_pu).all() and (pf.v_pu <= topo.vmax_pu).all()
    s_kva = np.hypot(pf.line_p_kw, pf.line_q_kvar)
    loading = s_kva / topo.s_max_kva
    assert loading.max() <= 1 / 1.2 + 1e-9
    flowing = s_kva >= 5.0
    assert (loading[flowing] >= 1 / 2.0 - 1e-9).all()
    assert topo.depth.max() <= 10 * n ** (1 / 3) + 5


@pytest.mark.parametrize("n, seconds", [(30, 1.0), (1000, 2.0), (10000, 5.0)])
def test_synthetic_sizes_build_quickly(n, seconds):
    t0 = time.perf_counter()
    f = synthetic(n, 2024)
    assert time.perf_counter() - t0 < seconds
    _check_well_posed(f, n)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(2, 400), seed=st.integers(0, 2 ** 32 - 1))
def test_synthetic_is_well_posed_for_any_size_and_seed(n, seed):
    _check_well_posed(synthetic(n, seed), n)


def test_synthetic_has_laterals_and_sub_laterals():
    topo = synthetic(1000, 5).topology
    n_children = np.bincount(topo.parent[1:], minlength=topo.n_bus)
    assert (n_children >= 2).sum() > 10  # branching points, not a chain
    assert topo.depth.max() < 100


@pytest.mark.parametrize("n, seed, field", [(0, 0, "n_buses"), (1, 0, "n_buses"), (-5, 0, "n_buses"),
                                            ("many", 0, "n_buses"), (30, -1, "seed"), (30, 1.5, "seed")])
def test_synthetic_rejects_bad_arguments(n, seed, field):
    with pytest.raises(InputError) as exc:
        synthetic(n, seed)
    assert exc.value.field == field


# --- validation of feeders (engine.network, exercised on the built-in data) ---------------------

def _tables():
    f = ieee33()
    return f.header(), f.buses, f.lines


def _error(header, buses, lines) -> InputError:
    with pytest.raises(InputError) as exc:
        Feeder.from_tables(header, buses, lines)
    return exc.value


def test_validation_loop():
    header, buses, lines = _tables()
    tie = pl.DataFrame({"line": ["33"], "from_bus": ["18"], "to_bus": ["33"], "r_ohm": [0.5], "x_ohm": [0.5],
                        "s_max_kva": [math.inf]})
    err = _error(header, buses, pl.concat([lines.drop("in_service"), tie]))
    assert (err.table, err.field) == ("lines", "in_service")
    assert "loop" in err.reason
    # The same tie switch open is fine: radial again.
    tie = tie.with_columns(pl.lit(False).alias("in_service"))
    assert Feeder.from_tables(header, buses, pl.concat([lines, tie])).topology.n_line == 32


def test_validation_disconnected():
    header, buses, lines = _tables()
    err = _error(header, buses, lines.filter(pl.col("line") != "18"))
    assert (err.table, err.field) == ("lines", "to_bus")
    assert "disconnected" in err.reason


def test_validation_unknown_bus():
    header, buses, lines = _tables()
    lines = lines.with_columns(pl.when(pl.col("line") == "7").then(pl.lit("99")).otherwise(pl.col("to_bus"))
                               .alias("to_bus"))
    err = _error(header, buses, lines)
    assert (err.table, err.field, err.row) == ("lines", "to_bus", 6)
    assert "99" in err.reason


def test_validation_reports_the_first_bad_line_and_its_from_bus_first():
    # Line 7 (row 6) joins bus 7 to itself and line 12 (row 11) names two unknown buses: row 6 is reported;
    # with line 7 mended, row 11's from_bus is (the lines are checked in one pass, the first bad row wins).
    header, buses, lines = _tables()

    def change(frame, line, column, value):
        return frame.with_columns(pl.when(pl.col("line") == line).then(pl.lit(value)).otherwise(pl.col(column))
                                  .alias(column))

    bad = change(change(change(lines, "7", "to_bus", "7"), "12", "from_bus", "98"), "12", "to_bus", "99")
    err = _error(header, buses, bad)
    assert (err.table, err.field, err.row) == ("lines", "to_bus", 6) and "different buses" in err.reason
    err = _error(header, buses, change(bad, "7", "to_bus", "8"))
    assert (err.table, err.field, err.row) == ("lines", "from_bus", 11) and "98" in err.reason


@pytest.mark.parametrize("column, value", [("r_ohm", 0.0), ("x_ohm", -0.1), ("r_ohm", float("nan")),
                                           ("x_ohm", float("nan"))])
def test_validation_impedance(column, value):
    header, buses, lines = _tables()
    lines = lines.with_columns(pl.when(pl.col("line") == "3").then(pl.lit(value)).otherwise(pl.col(column))
                               .alias(column))
    err = _error(header, buses, lines)
    assert (err.table, err.field, err.row) == ("lines", column, 2)


def test_validation_nan_load():
    header, buses, lines = _tables()
    buses = buses.with_columns(pl.when(pl.col("bus") == "5").then(float("nan")).otherwise(pl.col("load_kw"))
                               .alias("load_kw"))
    err = _error(header, buses, lines)
    assert (err.table, err.field, err.row) == ("buses", "load_kw", 4)
