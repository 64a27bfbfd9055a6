"""Local flexibility auction: hand-solved cases, an independent cvxpy model, validation and invariants."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import cvxpy as cp
import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsomarket.engine.errors import InputError
from dsomarket.engine.flexibility import BaseCase, FlexNeed, build_model, clear_flexibility, needs_table
from dsomarket.engine.network import Feeder

BASE_KV = 12.66
Z_BASE = BASE_KV ** 2  # ohm, on the 1 MVA base
T1 = datetime(2025, 1, 15, 17, tzinfo=UTC)
T2 = datetime(2025, 1, 15, 18, tzinfo=UTC)


def small_feeder(**header) -> Feeder:
    """``a`` (root) - ab - b - bc - c - cd - d, b - be - e, and f below e with line ``fe``
    written against the flow direction (from f to e)."""
    buses = pl.DataFrame({"bus": list("abcdef"), "load_kw": [0.0, 100.0, 100.0, 100.0, 50.0, 20.0]})
    lines = pl.DataFrame({"line": ["ab", "bc", "cd", "be", "fe"], "from_bus": list("abcbf"),
                          "to_bus": list("bcdee"), "r_ohm": [0.1, 0.2, 0.3, 0.4, 0.5],
                          "x_ohm": [0.1, 0.1, 0.1, 0.2, 0.2]})
    return Feeder.from_tables({"name": "six", "root_bus": "a", "base_kv": BASE_KV, **header}, buses, lines)


def offers_table(*rows, **columns) -> pl.DataFrame:
    """Offers from ``(offer_id, bus, direction, quantity_kw, price)`` tuples; one resource per offer
    unless ``resource_id`` is given; extra columns as keyword lists."""
    data = {"offer_id": [r[0] for r in rows], "aggregator_id": ["agg"] * len(rows),
            "resource_id": [f"r-{r[0]}" for r in rows], "bus": [r[1] for r in rows],
            "direction": [r[2] for r in rows], "quantity_kw": [float(r[3]) for r in rows],
            "price": [float(r[4]) for r in rows]}
    data.update(columns)
    return pl.DataFrame(data)


def award(result, offer_id: str) -> dict:
    return result.awards.filter(pl.col("offer_id") == offer_id).row(0, named=True)


def need(result, need_id: str) -> dict:
    return result.needs.filter(pl.col("need_id") == need_id).row(0, named=True)


def line_need(required_kw=100.0, max_price=100.0, element="bc", **kw) -> pl.DataFrame:
    return needs_table([FlexNeed("n1", "line", max_price, element=element, required_kw=required_kw, **kw)])


# --- hand-solved cases ------------------------------------------------------------------------------

def test_upstream_offer_is_not_bought_and_the_cheapest_effective_mix_is():
    offers = offers_table(("upstream", "b", "up", 200, 5), ("c", "c", "up", 60, 30),
                          ("d1", "d", "up", 60, 20), ("d2", "d", "up", 60, 40),
                          ("other_branch", "e", "up", 100, 1))
    r = clear_flexibility(small_feeder(), line_need(), offers)
    assert r.status == "optimal"
    got = {row["offer_id"]: (row["accepted_kw"], row["reason"]) for row in r.awards.iter_rows(named=True)}
    assert got == {"upstream": (0.0, "location"), "c": (40.0, "accepted"), "d1": (60.0, "accepted"),
                   "d2": (0.0, "price"), "other_branch": (0.0, "location")}
    assert award(r, "upstream")["need_ids"] == [] and award(r, "c")["need_ids"] == ["n1"]
    assert award(r, "d1")["price"] == 20.0 and award(r, "upstream")["price"] is None
    assert r.total_cost == pytest.approx((60 * 20 + 40 * 30) / 1000)  # 1 h at per-MWh prices
    n = need(r, "n1")
    assert n["met"] and n["shortfall"] == 0.0 and n["marginal_price"] == pytest.approx(30.0)
    assert n["cost"] == pytest.approx(r.total_cost)


def test_line_written_against_the_flow_is_relieved_by_the_right_direction():
    # "fe" runs from f to e in the input; flow f -> e is an export of bus f, relieved by more load at f.
    needs = line_need(30.0, element="fe")
    offers = offers_table(("f_up", "f", "up", 50, 1), ("f_down", "f", "down", 50, 20),
                          ("e_down", "e", "down", 50, 2))
    r = clear_flexibility(small_feeder(), needs, offers)
    assert award(r, "f_down")["accepted_kw"] == pytest.approx(30.0)
    assert award(r, "f_up")["reason"] == "location" and award(r, "e_down")["reason"] == "location"
    reverse = line_need(30.0, element="fe", direction="reverse")
    r = clear_flexibility(small_feeder(), reverse, offers)
    assert award(r, "f_up")["accepted_kw"] == pytest.approx(30.0)
    assert award(r, "f_down")["reason"] == "location"


def test_import_need_counts_every_bus_including_the_root():
    needs = needs_table([FlexNeed("cap", "import", 100.0, required_kw=150.0)])
    offers = offers_table(("root", "a", "up", 100, 50), ("d", "d", "up", 100, 10),
                          ("f_down", "f", "down", 100, 1))
    r = clear_flexibility(small_feeder(), needs, offers)
    assert award(r, "d")["accepted_kw"] == pytest.approx(100.0)
    assert award(r, "root")["accepted_kw"] == pytest.approx(50.0)
    assert award(r, "f_down")["reason"] == "location"
    assert need(r, "cap")["marginal_price"] == pytest.approx(50.0)


def test_voltage_need_uses_shared_path_resistance():
    # Raise v at c. An injection at e shares only line ab with c's path: relief r_ab / (r_ab + r_bc) = 1/3
    # of one at c itself. The requirement is 150 kW-at-c worth of squared-voltage rise.
    r_c = (0.1 + 0.2) / Z_BASE
    required_pu = 2 * r_c * 0.150
    needs = needs_table([FlexNeed("v", "voltage", 100.0, element="c", required_pu=required_pu)])
    offers = offers_table(("e", "e", "up", 300, 10), ("c", "c", "up", 100, 40), ("d", "d", "up", 100, 45))
    r = clear_flexibility(small_feeder(), needs, offers)
    assert award(r, "e")["accepted_kw"] == pytest.approx(300.0)   # 10 per MWh / (1/3) = 30 per MWh of relief
    assert award(r, "c")["accepted_kw"] == pytest.approx(50.0)    # the other 50 kW at c, 40 per MWh
    assert award(r, "d")["reason"] == "price"                     # d is below c: full relief, but dearer
    assert need(r, "v")["marginal_price"] == pytest.approx(40.0)
    uniform = clear_flexibility(small_feeder(), needs, offers, pricing="uniform")
    assert award(uniform, "e")["price"] == pytest.approx(40.0 / 3)  # marginal price x relief per kW
    assert award(uniform, "c")["price"] == pytest.approx(40.0)
    # Half the offers: a partial need reports its shortfall in pu of squared voltage.
    short = clear_flexibility(small_feeder(), needs.with_columns(partial_ok=pl.lit(True)),
                              offers.filter(pl.col("offer_id") == "e"))
    assert need(short, "v")["shortfall_kw"] == pytest.approx(50.0)
    assert need(short, "v")["shortfall"] == pytest.approx(2 * r_c * 0.050)


def test_voltage_relief_includes_reactive_power_by_tan_phi():
    r_c, x_c = 0.3 / Z_BASE, 0.2 / Z_BASE
    needs = needs_table([FlexNeed("v", "voltage", 100.0, element="c", required_pu=2 * r_c * 0.100)])
    offers = offers_table(("c", "c", "up", 200, 10), tan_phi=[0.5])
    r = clear_flexibility(small_feeder(), needs, offers)
    assert award(r, "c")["accepted_kw"] == pytest.approx(100.0 * r_c / (r_c + 0.5 * x_c))


def test_lower_voltage_need_buys_down_offers():
    needs = needs_table([FlexNeed("v", "voltage", 100.0, element="d", direction="lower",
                                  required_pu=2 * 0.6 / Z_BASE * 0.020)])
    offers = offers_table(("up", "d", "up", 50, 1), ("down", "d", "down", 50, 10))
    r = clear_flexibility(small_feeder(), needs, offers)
    assert award(r, "down")["accepted_kw"] == pytest.approx(20.0) and award(r, "up")["reason"] == "location"


def test_unmeetable_partial_need_reports_its_shortfall():
    offers = offers_table(("cheap", "d", "up", 60, 20), ("dear", "d", "up", 30, 60))
    r = clear_flexibility(small_feeder(), line_need(max_price=50.0, partial_ok=True), offers)
    assert award(r, "cheap")["accepted_kw"] == pytest.approx(60.0)
    assert award(r, "dear")["reason"] == "price"
    n = need(r, "n1")
    assert not n["met"] and n["shortfall"] == pytest.approx(40.0) and n["shortfall_kw"] == pytest.approx(40.0)
    assert n["marginal_price"] == pytest.approx(50.0)
    assert r.shortfall_cost == pytest.approx(50.0 * 40 / 1000)


def test_all_or_nothing_need_is_met_in_full_or_not_at_all():
    offers = offers_table(("cheap", "d", "up", 60, 20))
    r = clear_flexibility(small_feeder(), line_need(max_price=50.0), offers)
    assert award(r, "cheap")["accepted_kw"] == 0.0 and award(r, "cheap")["reason"] == "price"
    n = need(r, "n1")
    assert not n["met"] and n["shortfall"] == pytest.approx(100.0) and n["marginal_price"] is None
    assert r.total_cost == 0.0
    # Met when the whole costs at most max_price on average: 60 x 20 + 40 x 70 <= 100 x 50.
    offers = offers_table(("cheap", "d", "up", 60, 20), ("dear", "c", "up", 40, 70))
    r = clear_flexibility(small_feeder(), line_need(max_price=50.0), offers)
    assert need(r, "n1")["met"] and r.total_cost == pytest.approx(4.0)
    assert award(r, "dear")["accepted_kw"] == pytest.approx(40.0)


def test_a_resource_offered_twice_beyond_its_capability_is_caught():
    offers = offers_table(("o1", "d", "up", 50, 10), ("o2", "d", "up", 50, 15), ("other", "c", "up", 100, 80),
                          resource_id=["r1", "r1", "r2"])
    caps = pl.DataFrame({"resource_id": ["r1"], "capability_up_kw": [60.0], "capability_down_kw": [60.0],
                         "already_committed_kw": [20.0]})
    r = clear_flexibility(small_feeder(), line_need(), offers, caps)
    assert award(r, "o1")["accepted_kw"] == pytest.approx(40.0) and award(r, "o1")["conflict"]
    assert award(r, "o2")["accepted_kw"] == 0.0 and award(r, "o2")["reason"] == "capability"
    assert award(r, "o2")["conflict"]
    assert award(r, "other")["accepted_kw"] == pytest.approx(60.0) and not award(r, "other")["conflict"]
    conflict = r.conflicts.row(0, named=True)
    assert r.conflicts.height == 1
    assert (conflict["resource_id"], conflict["aggregator_id"], conflict["direction"]) == ("r1", "agg", "up")
    limits = (conflict["capability_kw"], conflict["committed_kw"], conflict["available_kw"])
    assert limits == (60.0, 20.0, 40.0)
    assert conflict["offered_kw"] == 100.0 and conflict["accepted_kw"] == pytest.approx(40.0)
    assert conflict["offer_ids"] == ["o1", "o2"]
    # A commitment downwards leaves the up capability alone.
    caps_down = caps.with_columns(already_committed_kw=pl.lit(-20.0))
    r = clear_flexibility(small_feeder(), line_need(), offers, caps_down)
    assert award(r, "o1")["accepted_kw"] == pytest.approx(50.0)
    assert award(r, "o2")["accepted_kw"] == pytest.approx(10.0) and award(r, "o2")["conflict"]


def test_indivisible_offers():
    # All-or-nothing 40 kW at 10 beats 30 kW of a divisible offer at 20 (400 < 600), over-delivering.
    offers = offers_table(("block", "d", "up", 40, 10), ("flex", "d", "up", 50, 20), divisible=[False, True])
    r = clear_flexibility(small_feeder(), line_need(30.0), offers)
    assert award(r, "block")["accepted_kw"] == 40.0 and award(r, "flex")["accepted_kw"] == 0.0
    # Uniform pricing pays an indivisible offer at least its own price (the need's dual is 0 here).
    u = clear_flexibility(small_feeder(), line_need(30.0), offers, pricing="uniform")
    assert award(u, "block")["price"] == pytest.approx(10.0)
    # A 100 kW block at 10 (1000) loses to 30 kW at 20 (600): cheaper per kW but too big.
    offers = offers_table(("block", "d", "up", 100, 10), ("flex", "d", "up", 50, 20), divisible=[False, True])
    r = clear_flexibility(small_feeder(), line_need(30.0), offers)
    assert award(r, "block")["reason"] == "min_kw" and award(r, "flex")["accepted_kw"] == pytest.approx(30.0)
    # A divisible offer with a minimum: 45 kW at 15 (675) loses to 30 kW at 21 (630); 40 kW (600) would win.
    for min_kw, winner in ((45.0, "flex"), (40.0, "floor")):
        offers = offers_table(("floor", "d", "up", 50, 15), ("flex", "d", "up", 50, 21), min_kw=[min_kw, 0.0])
        r = clear_flexibility(small_feeder(), line_need(30.0), offers)
        assert award(r, winner)["accepted_kw"] > 0
        if winner == "flex":
            assert award(r, "floor")["reason"] == "min_kw"
        else:
            assert award(r, "floor")["accepted_kw"] == pytest.approx(40.0)


def test_uniform_pricing_pays_the_needs_marginal_price():
    offers = offers_table(("c", "c", "up", 60, 30), ("d1", "d", "up", 60, 20), ("d2", "d", "up", 60, 40),
                          availability_price=[0.0, 5.0, 0.0])
    r = clear_flexibility(small_feeder(), line_need(), offers, pricing="uniform", interval_minutes=30)
    assert award(r, "d1")["accepted_kw"] == pytest.approx(60.0)  # 20 + 5 availability < 30
    assert award(r, "c")["accepted_kw"] == pytest.approx(40.0)
    assert award(r, "d1")["price"] == pytest.approx(30.0) and award(r, "c")["price"] == pytest.approx(30.0)
    assert need(r, "n1")["marginal_price"] == pytest.approx(30.0)
    assert r.total_cost == pytest.approx(30.0 * 100 / 1000 * 0.5)
    assert need(r, "n1")["cost"] == pytest.approx(r.total_cost)
    pab = clear_flexibility(small_feeder(), line_need(), offers, interval_minutes=30)
    assert award(pab, "d1")["price"] == pytest.approx(25.0)  # activation + availability
    assert pab.total_cost == pytest.approx((60 * 25 + 40 * 30) / 1000 * 0.5)


def test_ties_beyond_the_need_are_not_needed():
    offers = offers_table(("x", "d", "up", 100, 30), ("y", "d", "up", 100, 30))
    r = clear_flexibility(small_feeder(), line_need(), offers)
    assert sorted(r.awards["reason"].to_list()) == ["accepted", "not_needed"]
    assert r.awards["accepted_kw"].sum() == pytest.approx(100.0)


# --- no new violation ----------------------------------------------------------------------------------

def test_monitored_line_limits_an_offer_that_relieves_the_need():
    # Cutting the import with 100 kW injected at e would push line be to -50 kW (limit -20).
    needs = needs_table([FlexNeed("cap", "import", 100.0, required_kw=100.0)])
    offers = offers_table(("e", "e", "up", 100, 10), ("d", "d", "up", 100, 50))
    base = BaseCase(lines=pl.DataFrame({"line": ["be", "cd"], "p_kw": [50.0, 150.0],
                                        "p_min_kw": [-20.0, -100.0], "p_max_kw": [500.0, 100.0]}))
    r = clear_flexibility(small_feeder(), needs, offers, base=base)
    assert award(r, "e")["accepted_kw"] == pytest.approx(70.0)
    assert award(r, "d")["accepted_kw"] == pytest.approx(30.0)  # cd is already over its limit: d relieves it
    u = clear_flexibility(small_feeder(), needs, offers, base=base, pricing="uniform")
    assert award(u, "d")["price"] == pytest.approx(50.0)
    assert award(u, "e")["price"] == pytest.approx(10.0)  # worth less: its kW also loads the limited line
    # At its limit already: e cannot help at all, and says why.
    base = BaseCase(lines=pl.DataFrame({"line": ["be"], "p_kw": [-20.0], "p_min_kw": [-20.0]}))
    r = clear_flexibility(small_feeder(), needs, offers, base=base)
    assert award(r, "e")["accepted_kw"] == pytest.approx(0.0, abs=1e-6)
    assert award(r, "e")["reason"] == "location"


def test_monitored_voltage_limits_an_offer():
    needs = needs_table([FlexNeed("cap", "import", 100.0, required_kw=2000.0)])
    offers = offers_table(("d", "d", "up", 2000, 10), ("root", "a", "up", 2000, 50))
    base = BaseCase(buses=pl.DataFrame({"bus": ["d"], "v_pu": [1.04], "vmax_pu": [1.045]}))
    r = clear_flexibility(small_feeder(), needs, offers, base=base)
    r_d = 0.6 / Z_BASE
    expected = (1.045 ** 2 - 1.04 ** 2) / (2 * r_d) * 1000
    assert award(r, "d")["accepted_kw"] == pytest.approx(expected, rel=1e-6)
    assert award(r, "root")["accepted_kw"] == pytest.approx(2000 - expected, rel=1e-6)


def test_monitored_interface_limit():
    # Relieving flow c -> b takes more load below bc, which raises the import: 950 kW of 1000 leaves 50.
    needs = line_need(100.0, direction="reverse", partial_ok=True)
    offers = offers_table(("d", "d", "down", 100, 10), ("c_down", "c", "down", 100, 1))
    base = BaseCase(interface=pl.DataFrame({"import_kw": [950.0]}))
    r = clear_flexibility(small_feeder(import_max_kw=1000.0), needs, offers, base=base)
    assert award(r, "c_down")["accepted_kw"] == pytest.approx(50.0)
    assert award(r, "d")["accepted_kw"] == pytest.approx(0.0, abs=1e-6)
    assert need(r, "n1")["shortfall_kw"] == pytest.approx(50.0)


def test_base_case_from_feeder_matches_lossless_flows():
    f = small_feeder()
    base = BaseCase.from_feeder(f)
    flows = dict(zip(base.lines["line"], base.lines["p_kw"]))
    assert flows == pytest.approx({"ab": 370.0, "bc": 200.0, "cd": 100.0, "be": 70.0, "fe": -20.0})
    assert base.interface["import_kw"].to_list() == pytest.approx([370.0])
    v = dict(zip(base.buses["bus"], base.buses["v_pu"]))
    assert v["b"] == pytest.approx(math.sqrt(1.0 - 2 * 0.1 / Z_BASE * 0.370))  # no kvar loads
    assert v["d"] == pytest.approx(math.sqrt(1.0 - 2 * (0.1 * 0.370 + 0.2 * 0.200 + 0.3 * 0.100) / Z_BASE))


# --- intervals ----------------------------------------------------------------------------------------

def test_offers_only_serve_needs_of_their_interval_and_activation_by_bus():
    needs = needs_table([
        FlexNeed("n1", "line", 100.0, element="bc", required_kw=50.0, interval=T1.isoformat()),
        FlexNeed("n2", "line", 100.0, element="ab", required_kw=30.0, interval="2025-01-15T18:00Z")])
    offers = offers_table(("d1", "d", "up", 80, 10), ("d2", "d", "up", 80, 10), ("f2", "f", "down", 80, 10),
                          ("e2", "e", "up", 80, 5), ("late", "d", "up", 80, 1),
                          interval=[T1.isoformat(), "2025-01-15 18:00", "2025-01-15T19:00:00+01:00",
                                    "2025-01-15T18:00:00Z", "2025-01-15T20:00:00Z"],
                          tan_phi=[0.0, 0.0, 0.0, 0.5, 0.0])
    r = clear_flexibility(small_feeder(), needs, offers)
    got = dict(zip(r.awards["offer_id"], r.awards["accepted_kw"]))
    assert got == pytest.approx({"d1": 50.0, "d2": 0.0, "f2": 0.0, "e2": 30.0, "late": 0.0})
    assert award(r, "late")["reason"] == "location" and award(r, "f2")["reason"] == "location"
    assert award(r, "f2")["interval"] == T2
    p, q = r.activation_by_bus([T1, T2])
    bus = {b: k for k, b in enumerate(small_feeder().topology.bus_ids)}
    expected = np.zeros((6, 2))
    expected[bus["d"], 0] = 50.0
    expected[bus["e"], 1] = 30.0
    assert np.allclose(p, expected)
    assert q[bus["e"], 1] == pytest.approx(15.0) and np.count_nonzero(q) == 1
    p_none, _ = r.activation_by_bus()
    assert p_none.shape == (6, 1) and not p_none.any()


def test_down_activation_is_negative_injection_and_lowers_the_net_load_for_the_curve():
    feeder = small_feeder()
    needs = line_need(30.0, element="fe")
    r = clear_flexibility(feeder, needs, offers_table(("f", "f", "down", 50, 20)))
    p, q = r.activation_by_bus([None])  # a single-interval BidBook's intervals
    assert p[feeder.topology.bus_ids.tolist().index("f"), 0] == pytest.approx(-30.0)
    assert np.array_equal(p, r.activation_by_bus()[0]) and not q.any()
    load_p, _ = feeder.loads()
    assert (load_p - p).sum() == pytest.approx(load_p.sum() + 30.0)  # 30 kW more withdrawn


def test_no_needs_and_no_offers():
    offers = offers_table(("d", "d", "up", 50, 20))
    r = clear_flexibility(small_feeder(), needs_table([]), offers)
    assert r.status == "optimal" and award(r, "d")["reason"] == "location" and r.total_cost == 0.0
    r = clear_flexibility(small_feeder(), line_need(partial_ok=True), offers.clear())
    assert r.awards.height == 0 and need(r, "n1")["shortfall_kw"] == pytest.approx(100.0)


# --- validation -------------------------------------------------------------------------------------------

VALID_OFFERS = offers_table(("o1", "d", "up", 50, 20), ("o2", "c", "down", 50, 20))


@pytest.mark.parametrize("column, value, row, field", [
    ("bus", ["d", "nowhere"], 1, "bus"),
    ("quantity_kw", [50.0, -5.0], 1, "quantity_kw"),
    ("direction", ["sideways", "down"], 0, "direction"),
    ("offer_id", ["o1", "o1"], 1, "offer_id"),
    ("price", [float("nan"), 20.0], 0, "price"),
    ("price", [20.0, -1.0], 1, "price"),
    ("min_kw", [60.0, 0.0], 0, "min_kw"),
    ("resource_id", ["r", "r"], 1, "bus"),
    ("interval", ["2025-01-15T17:00Z", "tomorrow"], 1, "interval"),
    ("availability_price", [0.0, float("nan")], 1, "availability_price"),
])
def test_bad_offers_name_row_and_field(column, value, row, field):
    bad = VALID_OFFERS.with_columns(pl.Series(column, value))
    with pytest.raises(InputError) as exc:
        clear_flexibility(small_feeder(), line_need(), bad)
    assert (exc.value.table, exc.value.field, exc.value.row) == ("offers", field, row)


def test_missing_offer_column():
    with pytest.raises(InputError) as exc:
        clear_flexibility(small_feeder(), line_need(), VALID_OFFERS.drop("price"))
    assert (exc.value.table, exc.value.field) == ("offers", "price")


@pytest.mark.parametrize("need_obj, field", [
    (FlexNeed("n", "line", 10.0, element="zz", required_kw=5.0), "element"),
    (FlexNeed("n", "voltage", 10.0, element="a", required_pu=0.01), "element"),
    (FlexNeed("n", "voltage", 10.0, element="nowhere", required_pu=0.01), "element"),
    (FlexNeed("n", "line", 10.0, element="bc"), "required_kw"),
    (FlexNeed("n", "voltage", 10.0, element="c", required_kw=5.0), "required_pu"),
    (FlexNeed("n", "line", 10.0, element="bc", required_kw=-5.0), "required_kw"),
    (FlexNeed("n", "line", 10.0, element="bc", direction="raise", required_kw=5.0), "direction"),
    (FlexNeed("n", "congestion", 10.0, element="bc", required_kw=5.0), "kind"),
    (FlexNeed("n", "line", float("nan"), element="bc", required_kw=5.0), "max_price"),
    (FlexNeed("n", "line", float("inf"), element="bc", required_kw=5.0), "max_price"),
])
def test_bad_needs_name_row_and_field(need_obj, field):
    needs = needs_table([FlexNeed("ok", "import", 10.0, required_kw=5.0), need_obj])
    with pytest.raises(InputError) as exc:
        clear_flexibility(small_feeder(), needs, VALID_OFFERS)
    assert (exc.value.table, exc.value.field, exc.value.row) == ("needs", field, 1)


def test_duplicate_need_and_capability_rows():
    needs = needs_table([FlexNeed("n", "import", 10.0, required_kw=5.0)] * 2)
    with pytest.raises(InputError, match="duplicate") as exc:
        clear_flexibility(small_feeder(), needs, VALID_OFFERS)
    assert (exc.value.field, exc.value.row) == ("need_id", 1)
    caps = pl.DataFrame({"resource_id": ["r", "r"], "capability_up_kw": [1.0, 2.0],
                         "capability_down_kw": [1.0, 2.0]})
    with pytest.raises(InputError) as exc:
        clear_flexibility(small_feeder(), line_need(), VALID_OFFERS, caps)
    assert (exc.value.table, exc.value.row) == ("capabilities", 1)
    caps = pl.DataFrame({"resource_id": ["r"], "capability_up_kw": [-1.0], "capability_down_kw": [1.0]})
    with pytest.raises(InputError) as exc:
        clear_flexibility(small_feeder(), line_need(), VALID_OFFERS, caps)
    assert (exc.value.table, exc.value.field, exc.value.row) == ("capabilities", "capability_up_kw", 0)


def test_bad_base_case_and_options():
    base = BaseCase(lines=pl.DataFrame({"line": ["bc", "xx"], "p_kw": [1.0, 2.0]}))
    with pytest.raises(InputError) as exc:
        clear_flexibility(small_feeder(), line_need(), VALID_OFFERS, base=base)
    assert (exc.value.table, exc.value.field, exc.value.row) == ("base_lines", "line", 1)
    base = BaseCase(buses=pl.DataFrame({"bus": ["c"], "v_pu": [float("nan")]}))
    with pytest.raises(InputError) as exc:
        clear_flexibility(small_feeder(), line_need(), VALID_OFFERS, base=base)
    assert (exc.value.table, exc.value.field) == ("base_buses", "v_pu")
    with pytest.raises(InputError) as exc:
        clear_flexibility(small_feeder(), line_need(), VALID_OFFERS, pricing="vickrey")
    assert exc.value.field == "pricing"


# --- an independent reference ------------------------------------------------------------------------------

def reference_relief(feeder: Feeder, needs: pl.DataFrame, offers: pl.DataFrame
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Relief per kW (need x offer) and requirement in kW, from the line table by explicit path sets."""
    lines = feeder.lines.filter(pl.col("in_service"))
    adj: dict = {}
    for row in lines.iter_rows(named=True):
        adj.setdefault(row["from_bus"], []).append((row["to_bus"], row["line"]))
        adj.setdefault(row["to_bus"], []).append((row["from_bus"], row["line"]))
    path = {feeder.root_bus: []}
    child_of_line = {}
    stack = [feeder.root_bus]
    while stack:
        b = stack.pop()
        for nb, lid in adj.get(b, []):
            if nb not in path:
                path[nb] = path[b] + [lid]
                child_of_line[lid] = nb
                stack.append(nb)
    info = {row["line"]: row for row in lines.iter_rows(named=True)}
    z = feeder.base_kv ** 2
    r = {lid: info[lid]["r_ohm"] / z for lid in info}
    x = {lid: info[lid]["x_ohm"] / z for lid in info}

    def key(iv):
        if iv is None or iv == "":
            return None
        return datetime.fromisoformat(str(iv)).astimezone(UTC)

    sens = np.zeros((needs.height, offers.height))
    req = np.zeros(needs.height)
    o_rows = list(offers.iter_rows(named=True))
    for i, n in enumerate(needs.iter_rows(named=True)):
        kind, direction = n["kind"], n["direction"] or ("raise" if n["kind"] == "voltage" else "forward")
        sign = 1.0 if direction in ("forward", "raise") else -1.0
        if kind == "voltage":
            own = sum(r[lid] for lid in path[n["element"]])
            req[i] = n["required_pu"] / (2 * own) * 1000
        else:
            req[i] = n["required_kw"]
        for j, o in enumerate(o_rows):
            if key(o.get("interval")) != key(n.get("interval")):
                continue
            d = 1.0 if o["direction"] == "up" else -1.0
            if kind == "import":
                s = 1.0
            elif kind == "line":
                lid = n["element"]
                below = 1.0 if lid in path[o["bus"]] else 0.0
                s = below * (1.0 if child_of_line[lid] == info[lid]["to_bus"] else -1.0)
            else:
                shared = set(path[n["element"]]) & set(path[o["bus"]])
                shared_x = sum(x[lid] for lid in shared)
                s = (sum(r[lid] for lid in shared) + o.get("tan_phi", 0.0) * shared_x) / own
            sens[i, j] = sign * d * s
    return sens, req


def reference_objective(feeder, needs, offers, caps=None, base=None) -> float:
    """The same auction written independently in cvxpy (dense sensitivities), solved by HiGHS.

    ``base`` is a :class:`BaseCase` from :meth:`BaseCase.from_feeder` (no interval), with
    ``p_max_kw`` on its lines and the feeder's voltage limits.
    """
    sens, req = reference_relief(feeder, needs, offers)
    n_off = offers.height
    q = offers["quantity_kw"].to_numpy()
    cost = offers["price"].to_numpy() + offers["availability_price"].to_numpy()
    min_kw = np.where(offers["divisible"].to_numpy(), offers["min_kw"].to_numpy(), q)
    usable = (sens > 1e-12).any(axis=0)
    x = cp.Variable(n_off)
    on = cp.Variable(n_off, boolean=True)
    unmet = cp.Variable(needs.height, boolean=True)
    short = cp.Variable(needs.height)
    partial = needs["partial_ok"].to_numpy()
    price = needs["max_price"].to_numpy()
    cons = [x >= 0, x <= cp.multiply(q * usable, on), x >= cp.multiply(min_kw, on), short >= 0, short <= req,
            sens @ x + cp.multiply(partial, short) + cp.multiply(~partial * req, unmet) >= req]
    if caps is not None:
        for c in caps.iter_rows(named=True):
            committed = c["already_committed_kw"]
            for direction, cap, com in (("up", c["capability_up_kw"], max(committed, 0.0)),
                                        ("down", c["capability_down_kw"], max(-committed, 0.0))):
                mask = ((offers["resource_id"] == c["resource_id"])
                        & (offers["direction"] == direction)).to_numpy()
                if mask.any():
                    cons.append(cp.sum(x[np.nonzero(mask)[0]]) <= max(cap - com, 0.0))
    if base is not None:
        cons += reference_monitors(feeder, offers, base, x)
    objective = cost @ x + cp.multiply(price, partial) @ short + cp.multiply(price * req, ~partial) @ unmet
    prob = cp.Problem(cp.Minimize(objective / 1000), cons)
    prob.solve(solver=cp.HIGHS)
    assert prob.status == "optimal"
    return float(prob.value)


def reference_monitors(feeder: Feeder, offers: pl.DataFrame, base: BaseCase, x) -> list:
    """Each monitored line and bus within ``[min(limit, base), max(limit, base)]`` after the activations."""
    line_ids = [str(lid) for lid in feeder.lines["line"]]
    buses = [str(b) for b in feeder.buses["bus"] if b != feeder.root_bus]
    cons = []
    # Flow change on line l (input direction) = -(relief of a forward need on l); voltage change likewise.
    line_rows = pl.DataFrame({"kind": "line", "element": line_ids, "direction": "forward",
                              "required_kw": 1.0, "required_pu": None, "interval": None},
                             schema_overrides={"required_pu": pl.Float64, "interval": pl.Utf8})
    flow_sens, _ = reference_relief(feeder, line_rows, offers)
    lines = base.lines
    p = dict(zip(lines["line"], lines["p_kw"]))
    hi = dict(zip(lines["line"], lines["p_max_kw"]))
    for i, lid in enumerate(line_ids):
        change = -(flow_sens[i] @ x)
        cons += [p[lid] + change <= max(hi[lid], p[lid]), p[lid] + change >= min(-hi[lid], p[lid])]
    v_rows = pl.DataFrame({"kind": "voltage", "element": buses, "direction": "raise", "required_kw": None,
                           "required_pu": 1.0, "interval": None},
                          schema_overrides={"required_kw": pl.Float64, "interval": pl.Utf8})
    v_sens, v_req = reference_relief(feeder, v_rows, offers)  # MW-at-bus per kW, and 1 pu in kW-at-bus
    v = dict(zip(base.buses["bus"], base.buses["v_pu"]))
    limits = {row["bus"]: (row["vmin_pu"], row["vmax_pu"]) for row in feeder.buses.iter_rows(named=True)}
    for i, b in enumerate(buses):
        dv = (v_sens[i] @ x) / v_req[i]  # pu of squared voltage
        lo, hi_v = limits[b]
        # In 1e-4 pu^2, so that the solver's absolute tolerance is small against the band.
        cons += [1e4 * dv <= 1e4 * (max(hi_v ** 2, v[b] ** 2) - v[b] ** 2),
                 1e4 * dv >= 1e4 * (min(lo ** 2, v[b] ** 2) - v[b] ** 2)]
    return cons


def random_feeder(rng: np.random.Generator, n: int) -> Feeder:
    parent = [int(rng.integers(0, k)) for k in range(1, n)]
    flip = rng.random(n - 1) < 0.3
    buses = pl.DataFrame({"bus": [f"b{k}" for k in range(n)], "load_kw": rng.uniform(0, 200, n)})
    lines = pl.DataFrame({
        "line": [f"l{k}" for k in range(1, n)],
        "from_bus": [f"b{k}" if f else f"b{p}" for k, p, f in zip(range(1, n), parent, flip)],
        "to_bus": [f"b{p}" if f else f"b{k}" for k, p, f in zip(range(1, n), parent, flip)],
        "r_ohm": rng.uniform(0.05, 1.0, n - 1), "x_ohm": rng.uniform(0.05, 1.0, n - 1)})
    return Feeder.from_tables({"name": "rnd", "root_bus": "b0", "base_kv": BASE_KV}, buses, lines)


def random_market(rng: np.random.Generator, feeder: Feeder, n_needs: int, n_offers: int,
                  intervals=(None,), integral: bool = True, kinds=("line", "voltage", "import")):
    topo = feeder.topology
    ivs = [None if iv is None else iv.isoformat() for iv in intervals]
    rows = []
    for k in range(n_needs):
        kind = kinds[int(rng.integers(0, len(kinds)))]
        iv = ivs[int(rng.integers(0, len(ivs)))]
        partial = bool(rng.random() < 0.5) or not integral
        price = float(rng.uniform(20, 200))
        if kind == "line":
            rows.append(FlexNeed(f"n{k}", kind, price, element=str(rng.choice(topo.line_ids)),
                                 direction=str(rng.choice(["forward", "reverse"])),
                                 required_kw=float(rng.uniform(5, 150)), interval=iv, partial_ok=partial))
        elif kind == "voltage":
            bus = str(rng.choice(topo.bus_ids[1:]))
            rows.append(FlexNeed(f"n{k}", kind, price, element=bus,
                                 direction=str(rng.choice(["raise", "lower"])),
                                 required_pu=float(rng.uniform(1e-4, 2e-3)), interval=iv, partial_ok=partial))
        else:
            rows.append(FlexNeed(f"n{k}", kind, price, direction=str(rng.choice(["forward", "reverse"])),
                                 required_kw=float(rng.uniform(5, 150)), interval=iv, partial_ok=partial))
    n_res = max(1, n_offers - n_offers // 3)
    owner = np.concatenate([np.arange(n_res), rng.integers(0, n_res, n_offers - n_res)])
    res_bus = rng.choice(topo.bus_ids, n_res).astype(str)
    res_dir = rng.choice(["up", "down"], n_res)
    res_iv = [ivs[int(rng.integers(0, len(ivs)))] for _ in range(n_res)]
    q = np.round(rng.uniform(5, 100, n_offers), 1)
    divisible = (rng.random(n_offers) < 0.7) | (not integral)
    offers = pl.DataFrame({
        "offer_id": [f"o{k}" for k in range(n_offers)], "aggregator_id": [f"a{k % 3}" for k in owner],
        "resource_id": [f"r{k}" for k in owner], "bus": res_bus[owner], "direction": res_dir[owner],
        "interval": pl.Series([res_iv[k] for k in owner], dtype=pl.Utf8),
        "quantity_kw": q, "price": np.round(rng.uniform(5, 150, n_offers), 1),
        "availability_price": np.where(rng.random(n_offers) < 0.3, 2.0, 0.0),
        "divisible": divisible,
        "min_kw": np.where(divisible & (rng.random(n_offers) < 0.2 * integral), np.round(q / 2, 1), 0.0),
        "tan_phi": np.where(rng.random(n_offers) < 0.3, 0.4, 0.0),
    })
    used = np.unique(owner)
    caps = pl.DataFrame({
        "resource_id": [f"r{k}" for k in used],
        "interval": pl.Series([res_iv[k] for k in used], dtype=pl.Utf8),
        "capability_up_kw": np.round(rng.uniform(10, 120, len(used)), 1),
        "capability_down_kw": np.round(rng.uniform(10, 120, len(used)), 1),
        "already_committed_kw": np.round(rng.uniform(-20, 20, len(used)), 1),
    })
    return needs_table(rows), offers, caps


@pytest.mark.parametrize("seed", range(12))
def test_objective_matches_an_independent_cvxpy_model(seed):
    rng = np.random.default_rng(seed)
    feeder = random_feeder(rng, int(rng.integers(3, 10)))
    needs, offers, caps = random_market(rng, feeder, int(rng.integers(1, 4)), int(rng.integers(1, 12)),
                                        intervals=(T1, T2) if seed % 2 else (None,), integral=seed % 3 != 0)
    r = clear_flexibility(feeder, needs, offers, caps)
    assert r.status == "optimal"
    expected = reference_objective(feeder, needs, offers, caps)
    assert r.total_cost + r.shortfall_cost == pytest.approx(expected, rel=2e-4, abs=1e-6)


@pytest.mark.parametrize("seed", range(8))
def test_monitored_objective_matches_an_independent_cvxpy_model(seed):
    rng = np.random.default_rng(100 + seed)
    feeder = random_feeder(rng, int(rng.integers(3, 9)))
    # Tight limits: lines at 0.8-1.3 times their base flow, voltages within 1.5e-4 pu of the base.
    base = BaseCase.from_feeder(feeder)
    factor = pl.Series(rng.uniform(0.8, 1.3, base.lines.height))
    lines = base.lines.with_columns(p_max_kw=pl.col("p_kw").abs() * factor).with_columns(
        p_min_kw=-pl.col("p_max_kw"))
    v = dict(zip(base.buses["bus"], base.buses["v_pu"]))
    v_base = np.array([v.get(b, 1.0) for b in feeder.buses["bus"]])
    feeder = feeder.with_changes(buses=feeder.buses.with_columns(vmin_pu=pl.Series(v_base - 1.5e-4),
                                                                 vmax_pu=pl.Series(v_base + 1.5e-4)))
    base = BaseCase(lines=lines, buses=base.buses)
    needs, offers, caps = random_market(rng, feeder, int(rng.integers(2, 4)), int(rng.integers(10, 25)),
                                        integral=seed % 2 == 0, kinds=("import", "import", "voltage", "line"))
    r = clear_flexibility(feeder, needs, offers, caps, base=base)
    assert r.status == "optimal"
    expected = reference_objective(feeder, needs, offers, caps, base=base)
    assert r.total_cost + r.shortfall_cost == pytest.approx(expected, rel=2e-4, abs=1e-6)


def test_sensitivities_match_the_reference():
    rng = np.random.default_rng(7)
    feeder = random_feeder(rng, 12)
    needs, offers, _ = random_market(rng, feeder, 6, 30)
    fm = build_model(feeder, needs, offers)
    sens, req = reference_relief(feeder, needs, offers)
    assert np.allclose(fm.relief.toarray(), sens, atol=1e-12)
    assert np.allclose(fm.need_required_mw * 1000, req)


# --- invariants ---------------------------------------------------------------------------------------------

@st.composite
def markets(draw, integral=True):
    seed = draw(st.integers(0, 2 ** 31 - 1))
    rng = np.random.default_rng(seed)
    feeder = random_feeder(rng, draw(st.integers(2, 8)))
    needs, offers, caps = random_market(rng, feeder, draw(st.integers(1, 3)), draw(st.integers(1, 10)),
                                        integral=integral)
    return feeder, needs, offers, caps if draw(st.booleans()) else None


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(markets(), st.data())
def test_adding_an_offer_never_raises_the_dsos_cost(market, data):
    feeder, needs, offers, caps = market
    keep = data.draw(st.integers(0, offers.height - 1))
    fewer = offers.filter(pl.int_range(pl.len()) != keep)
    with_all = clear_flexibility(feeder, needs, offers, caps)
    without = clear_flexibility(feeder, needs, fewer, caps)
    before = without.total_cost + without.shortfall_cost
    after = with_all.total_cost + with_all.shortfall_cost
    assert after <= before * (1 + 2e-4) + 1e-9  # HiGHS stops within a 1e-4 relative MIP gap


@SETTINGS
@given(markets())
def test_every_accepted_offer_relieves_a_need_and_met_needs_are_met(market):
    feeder, needs, offers, caps = market
    r = clear_flexibility(feeder, needs, offers, caps)
    sens, req = reference_relief(feeder, needs, offers)
    accepted = r.awards["accepted_kw"].to_numpy()
    need_pos = {nid: i for i, nid in enumerate(needs["need_id"])}
    for j, row in enumerate(r.awards.iter_rows(named=True)):
        if row["accepted_kw"] > 0:
            assert row["reason"] == "accepted" and row["need_ids"]
            assert all(sens[need_pos[nid], j] > 0 for nid in row["need_ids"])
        assert row["accepted_kw"] <= row["quantity_kw"] + 1e-9
    relief = sens @ accepted
    met = r.needs["met"].to_numpy()
    assert np.all(relief[met] >= req[met] * (1 - 1e-6) - 1e-6)
    shortfall = r.needs["shortfall_kw"].to_numpy()
    assert np.all(relief + shortfall >= req * (1 - 1e-6) - 1e-6)


@SETTINGS
@given(markets())
def test_uniform_prices_are_never_below_an_accepted_offers_price(market):
    feeder, needs, offers, caps = market
    r = clear_flexibility(feeder, needs, offers, caps, pricing="uniform")
    a = r.awards.join(offers.select("offer_id", "price", "availability_price"), on="offer_id", suffix="_bid")
    a = a.filter(pl.col("accepted_kw") > 0)
    bid = (a["price_bid"] + a["availability_price"]).to_numpy()
    assert np.all(a["price"].to_numpy() >= bid - 1e-6 * np.maximum(1.0, bid))


@SETTINGS
@given(markets(integral=False))
def test_lp_uniform_price_of_a_line_need_is_its_marginal_price(market):
    feeder, needs, offers, caps = market
    only_lines = needs.filter(pl.col("kind") == "line")
    if not only_lines.height:
        return
    first = only_lines.head(1)
    r = clear_flexibility(feeder, first, offers, caps, pricing="uniform")
    lam = r.needs["marginal_price"][0]
    for row in r.awards.filter(pl.col("accepted_kw") > 0).iter_rows(named=True):
        assert row["price"] == pytest.approx(lam, rel=1e-6, abs=1e-6)


# --- command line ------------------------------------------------------------------------------------------

def test_cli_flex_clear_writes_awards_needs_and_summary(run, tmp_path):
    import json

    from dsomarket.clients.files import write_feeder
    write_feeder(small_feeder(), tmp_path / "feeder")
    needs = line_need().with_columns(interval=pl.lit("2025-01-15T17:00:00Z"))
    needs.write_csv(tmp_path / "needs.csv")
    offers = offers_table(("upstream", "b", "up", 200, 5), ("c", "c", "up", 60, 30),
                          ("d1", "d", "up", 60, 20), ("d2", "d", "up", 60, 40),
                          interval=["2025-01-15T17:00:00Z"] * 4)
    offers.write_csv(tmp_path / "offers.csv")
    code, out, err = run("flex", "clear", "--feeder", tmp_path / "feeder", "--needs", tmp_path / "needs.csv",
                         "--offers", tmp_path / "offers.csv", "--pricing", "uniform",
                         "--out", tmp_path / "out")
    assert code == 0, err
    assert "2 of 4 offers accepted" in out
    awards = pl.read_csv(tmp_path / "out" / "awards.csv")
    assert awards.columns[:5] == ["offer_id", "interval", "accepted_kw", "price", "reason"]
    got = {r["offer_id"]: (r["accepted_kw"], r["price"], r["reason"]) for r in awards.iter_rows(named=True)}
    assert got == {"upstream": (0.0, None, "location"), "c": (40.0, 30.0, "accepted"),
                   "d1": (60.0, 30.0, "accepted"), "d2": (0.0, None, "price")}
    assert awards["interval"][0] == "2025-01-15T17:00:00Z"
    needs_out = pl.read_csv(tmp_path / "out" / "needs.csv")
    assert needs_out.columns[:5] == ["need_id", "met", "cost", "marginal_price", "shortfall_kw"]
    assert needs_out.row(0)[:5] == ("n1", True, pytest.approx(3.0), pytest.approx(30.0), 0.0)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "optimal" and summary["total_cost"] == pytest.approx(3.0)
    assert summary["needs_met"] == 1 and summary["offers_accepted"] == 2


def test_cli_flex_clear_bad_offer_names_the_field(run, tmp_path):
    from dsomarket.clients.files import write_feeder
    write_feeder(small_feeder(), tmp_path / "feeder")
    line_need().write_csv(tmp_path / "needs.csv")
    offers_table(("o", "nowhere", "up", 10, 1)).write_csv(tmp_path / "offers.csv")
    code, _, err = run("flex", "clear", "--feeder", tmp_path / "feeder", "--needs", tmp_path / "needs.csv",
                       "--offers", tmp_path / "offers.csv", "--out", tmp_path / "out")
    assert code == 2
    assert "offers row 2 (the header is row 1), field bus: unknown bus" in err
    assert not (tmp_path / "out").exists()


def test_accepted_activations_change_the_net_load_of_the_interface_curve():
    from dsomarket.engine.bids import MarketRules, validate_bids
    from dsomarket.engine.flexibility import apply_activations
    from dsomarket.engine.interface import trace_curve
    from dsomarket.engine.clearing import ClearingOptions

    buses = pl.DataFrame({"bus": ["0", "1", "2"], "load_kw": [0.0, 100.0, 50.0], "load_kvar": [0.0, 10.0, 5.0]})
    lines = pl.DataFrame({"line": ["a", "b"], "from_bus": ["0", "1"], "to_bus": ["1", "2"], "r_ohm": [0.1, 0.1],
                          "x_ohm": [0.1, 0.1]})
    feeder = Feeder.from_tables({"name": "f", "root_bus": "0", "base_kv": 12.66}, buses, lines)
    awards = pl.DataFrame({"bus": ["2", "1"], "interval": [None, None], "direction": ["up", "down"],
                           "accepted_kw": [30.0, 0.0], "tan_phi": [0.1, 0.0]})
    moved = apply_activations(feeder, awards)
    assert moved.buses["load_kw"].to_list() == [0.0, 100.0, 20.0]
    assert moved.buses["load_kvar"].to_list() == pytest.approx([0.0, 10.0, 2.0])
    assert feeder.buses["load_kw"].to_list() == [0.0, 100.0, 50.0]  # the input is untouched
    bids = pl.DataFrame({"bid_id": ["s"], "bus": ["1"], "side": ["sell"], "quantity_kw": [10.0], "price": [40.0]})
    rules = MarketRules(price_floor=0, price_cap=100)
    lossless = ClearingOptions(formulation="lossless")   # hand-solved without losses
    before = trace_curve(feeder, validate_bids(bids, feeder, rules), rules, options=lossless).bands["import_kw"].to_list()
    after = trace_curve(moved, validate_bids(bids, moved, rules), rules, options=lossless).bands["import_kw"].to_list()
    assert before == [150.0, 140.0] and after == [120.0, 110.0]


def test_timed_activations_become_load_profile_entries():
    from datetime import datetime, timezone

    from dsomarket.engine.flexibility import apply_activations

    t0, t1 = datetime(2026, 1, 1, 0, tzinfo=timezone.utc), datetime(2026, 1, 1, 1, tzinfo=timezone.utc)
    buses = pl.DataFrame({"bus": ["0", "1"], "load_kw": [0.0, 100.0], "load_kvar": [0.0, 0.0]})
    lines = pl.DataFrame({"line": ["a"], "from_bus": ["0"], "to_bus": ["1"], "r_ohm": [0.1], "x_ohm": [0.1]})
    feeder = Feeder.from_tables({"name": "f", "root_bus": "0", "base_kv": 12.66}, buses, lines)
    moved = apply_activations(feeder, pl.DataFrame({"bus": ["1"], "interval": [t1], "direction": ["down"],
                                                    "accepted_kw": [25.0]}))
    p, _ = moved.loads([t0, t1])
    assert p[1].tolist() == [100.0, 125.0]
