"""Built-in feeders: the Baran & Wu test feeders and a seeded synthetic generator.

Every function returns a validated :class:`~engine.network.Feeder` (built with
``Feeder.from_tables``), in kW, kvar and ohms like any user-supplied feeder.

Sources
-------
- IEEE 33-bus: M. E. Baran and F. F. Wu, "Network reconfiguration in
  distribution systems for loss reduction and load balancing", IEEE Trans.
  Power Delivery 4(2), 1989, pp. 1401-1407 (as tabulated in MATPOWER's
  ``case33bw``). The five normally-open tie switches are left out.
- IEEE 69-bus: M. E. Baran and F. F. Wu, "Optimal capacitor placement on radial
  distribution systems", IEEE Trans. Power Delivery 4(1), 1989, pp. 725-734
  (as tabulated in MATPOWER's ``case69``).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from dsomarket.engine.errors import InputError
from dsomarket.engine.network import S_BASE_KVA, Feeder
from dsomarket.engine.powerflow import backward_forward_sweep

BASE_KV_BW = 12.66
"""Line-to-line voltage of both Baran & Wu feeders, kV."""

# Published data, one row per line: from bus, to bus, r (ohm), x (ohm),
# P (kW) and Q (kvar) of the load at the to-bus (every bus but the root is the
# to-bus of exactly one line, so the load table rides along).
_IEEE33 = """
1 2 0.0922 0.0470 100 60
2 3 0.4930 0.2511 90 40
3 4 0.3660 0.1864 120 80
4 5 0.3811 0.1941 60 30
5 6 0.8190 0.7070 60 20
6 7 0.1872 0.6188 200 100
7 8 0.7114 0.2351 200 100
8 9 1.0300 0.7400 60 20
9 10 1.0440 0.7400 60 20
10 11 0.1966 0.0650 45 30
11 12 0.3744 0.1238 60 35
12 13 1.4680 1.1550 60 35
13 14 0.5416 0.7129 120 80
14 15 0.5910 0.5260 60 10
15 16 0.7463 0.5450 60 20
16 17 1.2890 1.7210 60 20
17 18 0.7320 0.5740 90 40
2 19 0.1640 0.1565 90 40
19 20 1.5042 1.3554 90 40
20 21 0.4095 0.4784 90 40
21 22 0.7089 0.9373 90 40
3 23 0.4512 0.3083 90 50
23 24 0.8980 0.7091 420 200
24 25 0.8960 0.7011 420 200
6 26 0.2030 0.1034 60 25
26 27 0.2842 0.1447 60 25
27 28 1.0590 0.9337 60 20
28 29 0.8042 0.7006 120 70
29 30 0.5075 0.2585 200 600
30 31 0.9744 0.9630 150 70
31 32 0.3105 0.3619 210 100
32 33 0.3410 0.5302 60 40
"""

_IEEE69 = """
1 2 0.0005 0.0012 0 0
2 3 0.0005 0.0012 0 0
3 4 0.0015 0.0036 0 0
4 5 0.0251 0.0294 0 0
5 6 0.366 0.1864 2.6 2.2
6 7 0.381 0.1941 40.4 30
7 8 0.0922 0.047 75 54
8 9 0.0493 0.0251 30 22
9 10 0.819 0.2707 28 19
10 11 0.1872 0.0619 145 104
11 12 0.7114 0.2351 145 104
12 13 1.03 0.34 8 5.5
13 14 1.044 0.34 8 5.5
14 15 1.058 0.3496 0 0
15 16 0.1966 0.065 45.5 30
16 17 0.3744 0.1238 60 35
17 18 0.0047 0.0016 60 35
18 19 0.3276 0.1083 0 0
19 20 0.2106 0.069 1 0.6
20 21 0.3416 0.1129 114 81
21 22 0.014 0.0046 5.3 3.5
22 23 0.1591 0.0526 0 0
23 24 0.3463 0.1145 28 20
24 25 0.7488 0.2475 0 0
25 26 0.3089 0.1021 14 10
26 27 0.1732 0.0572 14 10
3 28 0.0044 0.0108 26 18.6
28 29 0.064 0.1565 26 18.6
29 30 0.3978 0.1315 0 0
30 31 0.0702 0.0232 0 0
31 32 0.351 0.116 0 0
32 33 0.839 0.2816 14 10
33 34 1.708 0.5646 19.5 14
34 35 1.474 0.4873 6 4
3 36 0.0044 0.0108 26 18.6
36 37 0.064 0.1565 26 18.6
37 38 0.1053 0.123 0 0
38 39 0.0304 0.0355 24 17
39 40 0.0018 0.0021 24 17
40 41 0.7283 0.8509 1.2 1
41 42 0.31 0.3623 0 0
42 43 0.041 0.0478 6 4.3
43 44 0.0092 0.0116 0 0
44 45 0.1089 0.1373 39.2 26.3
45 46 0.0009 0.0012 39.2 26.3
4 47 0.0034 0.0084 0 0
47 48 0.0851 0.2083 79 56.4
48 49 0.2898 0.7091 384.7 274.5
49 50 0.0822 0.2011 384.7 274.5
8 51 0.0928 0.0473 40.5 28.3
51 52 0.3319 0.114 3.6 2.7
9 53 0.174 0.0886 4.3 3.5
53 54 0.203 0.1034 26.4 19
54 55 0.2842 0.1447 24 17.2
55 56 0.2813 0.1433 0 0
56 57 1.59 0.5337 0 0
57 58 0.7837 0.263 0 0
58 59 0.3042 0.1006 100 72
59 60 0.3861 0.1172 0 0
60 61 0.5075 0.2585 1244 888
61 62 0.0974 0.0496 32 23
62 63 0.145 0.0738 0 0
63 64 0.7105 0.3619 227 162
64 65 1.041 0.5302 59 42
11 66 0.2012 0.0611 18 13
66 67 0.0047 0.0014 18 13
12 68 0.7394 0.2444 28 20
68 69 0.0047 0.0016 28 20
"""


BARAN_WU_VMIN_PU = 0.90


def ieee33() -> Feeder:
    """Baran & Wu (1989) 33-bus, 12.66 kV feeder.

    Bus ids ``"1"`` .. ``"33"`` in the paper's numbering (root ``"1"``), line
    ids ``"1"`` .. ``"32"``; total load 3715 kW / 2300 kvar; no thermal limits
    (``s_max_kva = inf``), since the paper gives none. Voltage limits are
    0.90-1.05 pu: the paper gives none either, and its own base case sits at
    0.913 pu, so the common 0.95 floor would make the published feeder
    infeasible before any bid is placed.
    """
    return _baran_wu("ieee33", _IEEE33)


def ieee69() -> Feeder:
    """Baran & Wu (1989) 69-bus, 12.66 kV feeder.

    Bus ids ``"1"`` .. ``"69"`` (root ``"1"``), line ids ``"1"`` .. ``"68"``;
    total load 3802.1 kW / 2694.7 kvar; voltage limits 0.90-1.05 pu (the
    published base case reaches 0.909 pu); no thermal limits.
    """
    return _baran_wu("ieee69", _IEEE69)


def _baran_wu(name: str, table: str) -> Feeder:
    rows = np.array(table.split(), dtype=float).reshape(-1, 6)
    to_bus = rows[:, 1].astype(np.int64)
    n = len(rows) + 1
    load_kw = np.zeros(n)
    load_kvar = np.zeros(n)
    load_kw[to_bus - 1] = rows[:, 4]
    load_kvar[to_bus - 1] = rows[:, 5]
    buses = pl.DataFrame({
        "bus": [str(k) for k in range(1, n + 1)],
        "vmin_pu": np.full(n, BARAN_WU_VMIN_PU), "vmax_pu": np.full(n, 1.05),
        "load_kw": load_kw, "load_kvar": load_kvar,
    })
    lines = pl.DataFrame({
        "line": [str(k) for k in range(1, n)],
        "from_bus": [str(int(b)) for b in rows[:, 0]],
        "to_bus": [str(b) for b in to_bus],
        "r_ohm": rows[:, 2], "x_ohm": rows[:, 3],
        "s_max_kva": np.full(n - 1, math.inf),
    })
    header = {"name": name, "root_bus": "1", "base_kv": BASE_KV_BW, "v0_pu": 1.0}
    return Feeder.from_tables(header, buses, lines)


# Typical overhead conductors, (r, x) in ohm/km, two choices per level: trunk
# (477 / 336 kcmil ACSR), lateral (1/0 / #2 ACSR), sub-lateral (#4 ACSR / #6 Cu).
_CONDUCTOR_R = np.array([[0.14, 0.19], [0.54, 0.86], [1.36, 1.60]])
_CONDUCTOR_X = np.array([[0.37, 0.38], [0.43, 0.45], [0.47, 0.49]])
_MEDIAN_SECTION_KM = np.array([0.30, 0.20, 0.10])
_SYNTH_TARGET_VMIN_PU = 0.96
_SYNTH_MAX_BUSES = 1_000_000


def synthetic(n_buses: int, seed: int) -> Feeder:
    """A seeded, well-posed synthetic radial feeder for benchmarks and property tests.

    Parameters
    ----------
    n_buses
        Number of buses including the root; meant for 30 to 50,000 (at least 2).
    seed
        Non-negative seed of the random generator: the same ``(n_buses, seed)`` gives an
        identical feeder.

    Returns
    -------
    Feeder
        Bus ids ``"0"`` .. ``"n-1"`` (root ``"0"``); line ``"k"`` feeds bus ``"k"``
        from its parent. 12.66 kV, ``v0 = 1.0`` pu, voltage limits 0.95-1.05 pu.

    Notes
    -----
    Topology: a main trunk of about ``3 n^(1/3)`` sections; laterals tapped off
    random trunk buses take about 55 % of the remaining buses, sub-laterals
    tapped off random lateral buses the rest. Chain lengths are capped, so the
    depth stays below about ``10 n^(1/3)``.

    Lines get the impedance per km of a typical conductor for their level times
    a log-normal length. Loads are log-normal (median 40 kW; about 10 % of the buses
    that are not leaves carry none) at a power factor between 0.85 and 0.98 lagging.

    All impedances are then scaled by one factor so that the AC power flow of
    the base case has its minimum voltage at 0.96 pu, and each line's thermal
    limit is its base-case sending-end apparent flow (at least 5 kVA) times a
    random factor in [1.2, 2.0], so that added withdrawals can congest lines.
    """
    try:
        n = int(n_buses)
    except (TypeError, ValueError):
        raise InputError("feeder", "n_buses", f"must be an integer (got {n_buses!r})") from None
    if not 2 <= n <= _SYNTH_MAX_BUSES:
        raise InputError("feeder", "n_buses", f"must be between 2 and {_SYNTH_MAX_BUSES} (got {n})")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError("feeder", "seed", f"must be a non-negative integer (got {seed!r})")
    rng = np.random.default_rng(seed)
    parent, level = _radial_tree(n, rng)
    child_level = level[1:]
    conductor = rng.integers(0, 2, n - 1)
    length_km = _MEDIAN_SECTION_KM[child_level] * rng.lognormal(0.0, 0.5, n - 1)
    r_ohm = _CONDUCTOR_R[child_level, conductor] * length_km
    x_ohm = _CONDUCTOR_X[child_level, conductor] * length_km
    load_kw = np.maximum(np.round(40.0 * rng.lognormal(0.0, 0.7, n), 1), 0.1)
    # Junctions carry no load, but a line never ends at an unloaded bus: every line then carries
    # some base flow, and its rating is more than a floor.
    is_leaf = np.bincount(parent[1:], minlength=n) == 0
    load_kw[(rng.random(n) < 0.1) & ~is_leaf] = 0.0
    load_kw[0] = 0.0
    pf = rng.uniform(0.85, 0.98, n)
    load_kvar = np.round(load_kw * np.tan(np.arccos(pf)), 1)
    rating_factor = rng.uniform(1.2, 2.0, n - 1)

    bus_ids = np.arange(n).astype(str)
    header = {"name": f"synth-{n}-{seed}", "root_bus": "0", "base_kv": BASE_KV_BW, "v0_pu": 1.0}
    buses = pl.DataFrame({"bus": bus_ids, "vmin_pu": np.full(n, 0.95), "vmax_pu": np.full(n, 1.05),
                          "load_kw": load_kw, "load_kvar": load_kvar})
    lines = pl.DataFrame({"line": bus_ids[1:], "from_bus": bus_ids[parent[1:]], "to_bus": bus_ids[1:],
                          "r_ohm": r_ohm, "x_ohm": x_ohm, "s_max_kva": np.full(n - 1, math.inf)})
    draft = Feeder.from_tables(header, buses, lines)

    topo = draft.topology
    row_of_line = topo.line_ids.astype(np.int64) - 1  # line "k" is row k-1
    scale, s_send = _scale_to_vmin(draft, _SYNTH_TARGET_VMIN_PU)
    s_max = np.empty(n - 1)
    s_max[row_of_line] = np.maximum(np.abs(s_send) * S_BASE_KVA, 5.0) * rating_factor[row_of_line]
    lines = lines.with_columns(pl.Series("r_ohm", r_ohm * scale), pl.Series("x_ohm", x_ohm * scale),
                               pl.Series("s_max_kva", s_max))
    return Feeder.from_tables(header, buses, lines)


def _radial_tree(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Parent index (-1 at the root) and level (0 trunk, 1 lateral, 2 sub-lateral) of each bus.

    Buses are numbered block by block (trunk, laterals, sub-laterals) and each
    block chain by chain, so a bus's parent always has a smaller number.
    """
    m = n - 1
    cube = n ** (1.0 / 3.0)
    trunk = min(m, max(2, round(3.0 * cube)))
    rest = m - trunk
    n_lat = round(0.55 * rest)
    n_sub = rest - n_lat
    parent = np.empty(n, dtype=np.int64)
    parent[0] = -1
    parent[1:trunk + 1] = np.arange(trunk)
    level = np.zeros(n, dtype=np.int64)
    lat_start = trunk + 1
    sub_start = lat_start + n_lat
    parent[lat_start:sub_start] = _chains(n_lat, lat_start, max(2.0, 1.5 * cube),
                                          np.arange(1, trunk + 1), rng)
    level[lat_start:sub_start] = 1
    # Sub-laterals hang off laterals; a tiny feeder may have none, then off the trunk.
    hosts = np.arange(lat_start, sub_start) if n_lat else np.arange(1, trunk + 1)
    parent[sub_start:] = _chains(n_sub, sub_start, max(2.0, cube), hosts, rng)
    level[sub_start:] = 2
    return parent, level


def _chains(m: int, start: int, mean_len: float, hosts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Parents of ``m`` buses numbered from ``start``, cut into chains tapped off random ``hosts``."""
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    # m draws of length >= 1 always cover m buses; the surplus is cut off.
    lengths = np.minimum(1 + rng.poisson(mean_len - 1.0, m), int(2 * mean_len))
    ends = np.cumsum(lengths)
    n_chain = int(np.searchsorted(ends, m)) + 1
    firsts = np.concatenate([[0], ends[:n_chain - 1]])
    parent = np.arange(start - 1, start - 1 + m)
    parent[firsts] = rng.choice(hosts, n_chain)
    return parent


def _scale_to_vmin(feeder: Feeder, target: float) -> tuple[float, np.ndarray]:
    """Impedance factor that puts the base-case AC minimum voltage at ``target`` pu.

    Returns the factor and the sending-end complex line flows (pu, topology
    order) at that factor.
    """
    topo = feeder.topology
    s_pu = (topo.load_kw + 1j * topo.load_kvar) / S_BASE_KVA
    v0 = feeder.v0_pu
    # LinDistFlow is linear in the impedances: it gives the first factor.
    p = topo.downstream_sum(s_pu.real)
    q = topo.downstream_sum(s_pu.imag)
    drop = 2.0 * topo.path_sum(topo.r_pu * p + topo.x_pu * q)
    scale = (v0 ** 2 - target ** 2) / max(drop.max(), 1e-12)
    # Losses deepen the AC drop; rescaling by the ratio of drops converges in a few steps.
    for _ in range(20):
        sweep = backward_forward_sweep(topo, scale * topo.r_pu, scale * topo.x_pu, v0, s_pu)
        vmin = float(np.abs(sweep.v).min())
        if abs(vmin - target) < 1e-6:
            break
        scale *= (v0 - target) / (v0 - vmin)
    return scale, sweep.s_send


def builtin(name: str) -> Feeder:
    """A built-in feeder by name.

    Parameters
    ----------
    name
        ``"ieee33"``, ``"ieee69"`` or ``"synth:N:SEED"`` (:func:`synthetic` with
        ``N`` buses and seed ``SEED``).

    Raises
    ------
    InputError
        ``("feeder", "name", ...)`` for an unknown name.
    """
    key = str(name).strip().lower()
    if key == "ieee33":
        return ieee33()
    if key == "ieee69":
        return ieee69()
    parts = key.split(":")
    if len(parts) == 3 and parts[0] == "synth":
        try:
            n, seed = int(parts[1]), int(parts[2])
        except ValueError:
            raise InputError("feeder", "name",
                             f"{name!r}: N and SEED of synth:N:SEED must be integers") from None
        return synthetic(n, seed)
    raise InputError("feeder", "name",
                     f"unknown built-in feeder {name!r} (known: ieee33, ieee69, synth:N:SEED)")
