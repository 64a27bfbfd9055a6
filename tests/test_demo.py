"""The README's main job, `dsomarket demo`, runs end to end and says that everything checked out."""

from __future__ import annotations

import asyncio

import polars as pl

from dsomarket.clients.demo import run_demo


def test_demo_runs_a_whole_market_day_and_replays_it(tmp_path):
    """On the lossless model: the demo's own, loss-aware day costs minutes of CPU (its clearing and replay each
    trace 24 coupled loss-aware curves), which `bash scripts/setup.sh` spends and the suite does not; the
    day's steps, checks and tables are the same on either model."""
    lines: list[str] = []
    assert asyncio.run(run_demo(tmp_path, out=lines.append, keep=True, formulation="lossless")) == 0
    text = "\n".join(lines)
    assert "clearing at the forecast price: optimal" in text
    assert "award optimal" in text
    assert "FAILED_PRECONDITION" in text and "PERMISSION_DENIED" in text
    assert "chain intact" in text and "all identical" in text
    # It ends with the DLMP of every bus and hour, and where a limit bound each hour.
    start = lines.index(next(x for x in lines if x.startswith("day-ahead DLMP per bus and hour")))
    table = lines[start:]
    assert table[1].split() == ["hour", *[f"{h:02d}" for h in range(24)]]
    rows = {r.split()[0]: [float(v) for v in r.split()[1:]] for r in table[4:4 + 33]}
    assert list(rows) == [str(b) for b in range(1, 34)] and all(len(v) == 24 for v in rows.values())
    assert rows["1"] == [float(p) for p in table[2].split()[1:]]   # the root pays the ISO's price
    bound = table[4 + 33].split()
    assert bound[0] == "bound" and len(bound) == 25 and any(c != "-" for c in bound[1:])
    assert table[-1].startswith("  bound: V = a voltage limit")
    # --keep: the database and the CSVs stay, and the bus x hour table agrees with prices.csv.
    assert (tmp_path / "dsomarket.sqlite").is_file()
    prices = pl.read_csv(tmp_path / "prices.csv", schema_overrides={"bus": pl.Utf8})
    matrix = pl.read_csv(tmp_path / "dlmp_by_hour.csv", schema_overrides={"bus": pl.Utf8})
    assert matrix.height == 33 and matrix.width == 25 and matrix["bus"].to_list()[:3] == ["1", "2", "3"]
    da = prices.filter(pl.col("market_id").str.starts_with("da-"))
    assert da.height == 33 * 24
    assert set(da["dlmp"].round(4).to_list()) == set(matrix.drop("bus").unpivot()["value"].round(4).to_list())
    for name in ("awards.csv", "curves.csv", "statements.csv"):
        assert pl.read_csv(tmp_path / name).height > 0
