"""``dsomarket plot`` and :mod:`clients.plots`: pictures of real runs, rendered to files of the size asked."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dsomarket.clients import plots
from dsomarket.clients.files import read_feeder
from dsomarket.engine.feeders import builtin

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DAY = ("--feeder", EXAMPLES / "ieee33_rated", "--bids", EXAMPLES / "ieee33_day_bids.csv")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Output folders of `clear` and `curve` for a day of bids on the rated 33-bus feeder."""
    from dsomarket.clients.cli import main

    d = tmp_path_factory.mktemp("runs")
    assert main(["clear", *map(str, DAY), "--iso-price", str(EXAMPLES / "ieee33_day_iso_price.csv"),
                 "--out", str(d / "clear")]) == 0
    assert main(["curve", *map(str, DAY), "--max-segments", "4", "--out", str(d / "curve")]) == 0
    return d


def png_pixels(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(path)


def assert_drawn(path: Path, width: int, height: int) -> None:
    """A PNG of ``width x height`` pixels with a picture in it (many colours, not a blank canvas)."""
    pixels = png_pixels(path)
    assert pixels.shape[:2] == (height, width)
    colours = np.unique(pixels.reshape(-1, pixels.shape[2]).round(2), axis=0)
    assert len(colours) > 20


@pytest.mark.parametrize("argv", [
    ["feeder", "clear", "--feeder", EXAMPLES / "ieee33_rated"],
    ["feeder", "clear", "--feeder", EXAMPLES / "ieee33_rated", "--color", "voltage"],
    ["feeder", "clear", "--feeder", EXAMPLES / "ieee33_rated", "--color", "loading"],
    ["heatmap", "clear"],
    ["dispatch", "clear"],
    ["curve", "curve", "--interval", "2030-06-03T18:00:00Z"],
])
def test_every_plot_renders_a_png_of_the_size_asked(run, runs, tmp_path, argv):
    kind, folder, *rest = argv
    out = tmp_path / f"{kind}.png"
    code, stdout, err = run("plot", kind, runs / folder, *rest, "--out", out, "--size", 6, 4, "--dpi", 50)
    assert code == 0, err
    assert_drawn(out, 300, 200)
    assert f"wrote {out}" in stdout


def test_svg_output_has_the_size_in_points(run, runs, tmp_path):
    out = tmp_path / "heat.svg"
    code, _, err = run("plot", "heatmap", runs / "clear", "--out", out)
    assert code == 0, err
    head = out.read_text()[:2000]
    assert re.search(r'width="576pt" height="360pt"', head)   # 8 x 5 in at 72 pt per inch
    assert "<image" in out.read_text()   # the heat map is embedded as an image, its axes as paths


def test_plot_errors_are_one_line(run, runs, tmp_path):
    code, _, err = run("plot", "heatmap", runs / "curve", "--out", tmp_path / "x.png")
    assert code == 2 and "has no prices.csv" in err and len(err.strip().splitlines()) == 1
    code, _, err = run("plot", "heatmap", runs / "clear", "--out", tmp_path / "x.jpg")
    assert code == 2 and ".png or .svg" in err
    code, _, err = run("plot", "curve", runs / "curve", "--interval", "2031-01-01T00:00Z", "--out", tmp_path / "c.png")
    assert code == 2 and "is not an interval of this run" in err


def test_the_tree_layout_puts_children_one_step_right_and_never_two_leaves_together():
    feeder = builtin("synth:200:3")
    x, y = plots.tree_layout(feeder)
    topo = feeder.topology
    assert x[0] == 0 and np.all(x[1:] == x[topo.parent[1:]] + 1)
    leaves = np.setdiff1d(np.arange(topo.n_bus), topo.parent[1:])
    assert len(np.unique(y[leaves])) == len(leaves)


def test_the_reduced_curve_drawn_is_the_exact_curve_when_no_step_is_merged(runs, tmp_path):
    # With as many segments as the curve has steps, the ISO offer is the exact curve: the polyline drawn
    # for the offer, rebuilt from iso_offer.csv alone, must meet the exact bands of curve.csv.
    from dsomarket.clients.cli import main

    # On the lossless staircase 50 segments are more than its steps; a loss-aware curve draws each stretch
    # where a bid clears part-way in many small steps, and 50 would merge them.
    assert main(["curve", *map(str, DAY), "--formulation", "lossless", "--max-segments", "50",
                 "--out", str(tmp_path / "c")]) == 0
    curve = pl.read_csv(tmp_path / "c" / "curve.csv", try_parse_dates=True)
    offer = pl.read_csv(tmp_path / "c" / "iso_offer.csv", try_parse_dates=True)
    for (iv,), bands in curve.group_by("interval"):
        mine = offer.filter(pl.col("interval") == iv)
        q, p = plots.reduced_curve(mine, float(bands["price_low"].min()), float(bands["price_high"].max()))
        mids = (p[0::2] + p[1::2]) / 2
        for price, quantity in zip(mids, q[0::2]):
            band = bands.filter((pl.col("price_low") <= price) & (pl.col("price_high") >= price))
            assert quantity == pytest.approx(band["import_kw"][0], abs=0.01)


def test_library_figures_save_as_png_of_figsize_times_dpi(runs, tmp_path):
    feeder = read_feeder(EXAMPLES / "ieee33_rated")
    prices = pl.read_csv(runs / "clear" / "prices.csv", try_parse_dates=True)
    fig = plots.feeder_tree(feeder, prices.filter(pl.col("interval") == prices["interval"][0])
                            .select(pl.col("bus").cast(pl.Utf8), pl.col("dlmp").alias("value")),
                            size=(4, 3), dpi=80)
    assert_drawn(plots.save(fig, tmp_path / "tree.png"), 320, 240)
