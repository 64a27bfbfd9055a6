"""A rolling real-time hour through the command line alone: the ISO awards it interval by interval.

The same hour awarded whole (``award submit``) on a twin market is the reference: interval by interval
must give the same instructions, and each interval's instructions must exist as soon as it is awarded.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import polars as pl

from dsomarket.clients.demo import delivery_day
from tests.test_cli_market_day import STAMP, csv, day, ok  # noqa: F401  (day is a fixture)


def open_real_time_hour(as_, d, market_id: str, start) -> pl.DataFrame:
    """A cleared and published 12-interval real-time market with agg-a's bids; its interface flows."""
    t0 = start.strftime(STAMP)
    ok(as_("dso", "markets", "create", market_id, "--feeder", "ieee33", "--kind", "real_time", "--start", t0))
    rows = [("pv", "sell", 150, "10"), ("load", "buy", 120, "80")]
    pl.DataFrame([{"bid_id": f"{r}-{k}", "resource_id": r, "side": s, "quantity_kw": q, "price": p,
                   "interval": (start + timedelta(minutes=5 * k)).strftime(STAMP)}
                  for k in range(12) for r, s, q, p in rows]).write_csv(d / f"{market_id}-bids.csv")
    ok(as_("agg-a", "bids", "submit", "--market", market_id, "--file", d / f"{market_id}-bids.csv"))
    ok(as_("dso", "markets", "gate", market_id))
    flows = csv(ok(as_("dso", "markets", "clear", market_id, "--iso-price", "45", "--format", "csv")),
                text=("iso_price",))
    ok(as_("dso", "markets", "publish", market_id))
    return flows


def instructions(as_, market_id: str) -> list[tuple]:
    out = csv(ok(as_("agg-a", "instructions", "list", "--market", market_id, "--format", "csv")))
    return sorted((r, t, round(kw, 6)) for r, t, kw in out.select("resource_id", "interval_start", "kw").iter_rows())


def test_a_rolling_real_time_hour_awarded_interval_by_interval_through_the_cli(day):  # noqa: F811
    as_, d = day.as_, day.dir
    start = delivery_day() + timedelta(hours=9)
    ok(as_("dso", "feeders", "create", "ieee33", "--builtin", "ieee33"))
    (d / "a.csv").write_text("resource_id,feeder_id,bus,kind,capacity_kw\npv,ieee33,18,pv,300\n"
                             "load,ieee33,25,flexible_load,200\n")
    ok(as_("agg-a", "resources", "register", "--file", d / "a.csv"))
    flows = open_real_time_hour(as_, d, "rt", start)
    assert flows.height == 12
    # The ISO's 5-minute signal moves: the import cleared at 45, one kW less every interval.
    signal = [(t, q - k, "45") for k, (t, q) in enumerate(flows.select("interval_start", "import_kw").iter_rows())]

    code, _, err = as_("iso", "award", "interval", "--market", "rt", "--interval", signal[0][0])
    assert code == 2 and err.count("\n") == 1 and "import_kw" in err
    for k, (t, q, p) in enumerate(signal):
        out = ok(as_("iso", "award", "interval", "--market", "rt", "--interval", t, "--import-kw", q,
                     "--price", p))
        state = "awarded" if k == 11 else "published"
        assert out == f"interval award optimal; market rt is {state}; {11 - k} intervals without an award\n"
        # Dispatch of the interval exists at once, and of no later interval.
        assert {row[1] for row in instructions(as_, "rt")} == {s for s, _, _ in signal[:k + 1]}
        if k == 0:
            code, _, err = as_("iso", "award", "interval", "--market", "rt", "--interval", t, "--import-kw", q)
            assert code == 1 and "FAILED_PRECONDITION" in err and "already awarded" in err
    rolling = instructions(as_, "rt")
    # Prices in force are the award's; --include-superseded adds the clearing's behind them, flagged.
    now = csv(ok(as_("dso", "markets", "prices", "rt", "--bus", "18", "--format", "csv")))
    assert now.height == 12 and set(now["source"]) == {"award"} and set(now["superseded"]) == {False}
    every = csv(ok(as_("dso", "markets", "prices", "rt", "--bus", "18", "--include-superseded", "--format", "csv")))
    assert every.filter(~pl.col("superseded")).equals(now)
    assert every.filter(pl.col("superseded")).select("source", "revision").unique().rows() == [("clearing", 0)]
    assert every.height == 24

    # Reference: the twin market awarded whole in one call, from a file of the same signal.
    open_real_time_hour(as_, d, "rt-whole", start)
    pl.DataFrame(signal, schema=["interval", "import_kw", "price"], orient="row").write_csv(d / "award.csv")
    assert "award optimal; market rt-whole is awarded" in ok(as_("iso", "award", "submit", "--market", "rt-whole",
                                                                 "--file", d / "award.csv"))
    assert rolling == instructions(as_, "rt-whole")
    assert "market rt is settled" in ok(as_("dso", "markets", "settle", "rt"))

    # Meters through the CLI: the PV delivers 2.5 kW less than instructed, the interface shows it.
    mine = csv(ok(as_("agg-a", "instructions", "list", "--market", "rt", "--format", "csv")))
    pl.DataFrame([{"resource_id": r, "interval": t, "kw": kw - 2.5 if r == "pv" else kw}
                  for r, t, kw in mine.select("resource_id", "interval_start", "kw").iter_rows()]
                 ).write_csv(d / "meters.csv")
    assert ok(as_("agg-a", "meters", "submit", "--market", "rt", "--file", d / "meters.csv")) == \
        f"{mine.height} readings stored\n"
    pl.DataFrame([{"resource_id": "", "interval": t, "kw": q + 2.5} for t, q, _ in signal]).write_csv(d / "iface.csv")
    ok(as_("dso", "meters", "submit", "--market", "rt", "--file", d / "iface.csv"))
    code, out, err = as_("dso", "meters", "imbalance", "rt", "--format", "csv")
    assert code == 0 and csv(out).height == 0  # no demand-response resource here
    totals = dict(part.rsplit(" ", 1) for part in err.split("; ", 1)[1].strip().split(", "))
    assert sum(Decimal(totals[k]) for k in ("resources", "interface", "residual")) == 0
    st = csv(ok(as_("agg-a", "statements", "list", "--market", "rt", "--format", "csv")), text=("amount",))
    lines = st.filter(pl.col("kind") == "imbalance")
    assert lines.height == mine.height and sum(Decimal(a) for a in lines["amount"]) == Decimal(totals["resources"])
    assert set(lines.filter(pl.col("resource_id") == "pv")["kw"].round(6)) == {-2.5}
