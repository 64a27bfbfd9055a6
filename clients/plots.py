"""Pictures of a market run, the ones operators look at (matplotlib, no display needed).

Each function takes polars tables as the offline commands write them and
returns a :class:`matplotlib.figure.Figure`; :func:`save` writes it as PNG or
SVG. Figures are built with the object API (``Figure``), never ``pyplot``, so
nothing here touches a global figure manager or needs a display, and
matplotlib is imported only when a picture is drawn.

- :func:`feeder_tree`: the feeder as a tree, root on the left, buses coloured
  by DLMP or voltage and lines by loading.
- :func:`interface_curve`: the exact interface curve of one interval with the
  ISO's reduced segments over it.
- :func:`dlmp_heatmap`: DLMP per bus (rows, feeder order) and interval (columns).
- :func:`dispatch_by_aggregator`: net injection per aggregator and interval.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from dsomarket.engine.errors import InputError
from dsomarket.engine.network import Feeder

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = (".png", ".svg")
SIZE_IN = (8.0, 5.0)
"""Default figure size in inches; at the default 100 dpi a PNG is 800 x 500 pixels."""
DPI = 100


def figure(size: tuple[float, float] = SIZE_IN, dpi: int = DPI) -> "Figure":
    """An empty figure of ``size`` inches at ``dpi``, laid out so that labels fit."""
    from matplotlib.figure import Figure

    return Figure(figsize=size, dpi=dpi, layout="constrained")


def save(fig: "Figure", path: str | Path) -> Path:
    """Write ``fig`` as PNG or SVG, chosen by the file extension; returns the path.

    The pixel size of a PNG is exactly ``figsize x dpi`` (no tight cropping).
    """
    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise InputError("plot", "out", f"{p}: unsupported picture format {p.suffix!r} (use .png or .svg)")
    fig.savefig(p, format=p.suffix.lower().lstrip("."))
    return p


def tree_layout(feeder: Feeder) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of every bus (topology order) for drawing the feeder as a tree.

    ``x`` is the number of lines from the root; leaves get consecutive ``y`` in
    depth-first order and every other bus sits at the mean of its children, so
    laterals branch off the main feeder without crossing.
    """
    topo = feeder.topology
    n = topo.n_bus
    children: list[list[int]] = [[] for _ in range(n)]
    for k in range(1, n):
        children[int(topo.parent[k])].append(k)
    depth = np.zeros(n)
    y = np.zeros(n)
    order, stack = [], [0]
    while stack:                      # depth-first, children in feeder order
        k = stack.pop()
        order.append(k)
        for c in reversed(children[k]):
            depth[c] = depth[k] + 1
            stack.append(c)
    leaf = 0
    for k in order:
        if not children[k]:
            y[k] = leaf
            leaf += 1
    for k in reversed(order):         # parents after their children
        if children[k]:
            y[k] = np.mean([y[c] for c in children[k]])
    return depth, -y


def feeder_tree(feeder: Feeder, bus_values: pl.DataFrame | None = None, bus_label: str = "DLMP per MWh",
                line_loading: pl.DataFrame | None = None, title: str = "", size=SIZE_IN, dpi=DPI) -> "Figure":
    """The feeder as a tree: buses coloured by a value, lines by loading.

    Parameters
    ----------
    bus_values
        ``bus, value`` (e.g. DLMP per MWh or voltage in pu); grey buses where absent.
    line_loading
        ``line, loading_pct``; lines without a rating are drawn grey.
    """
    from matplotlib.collections import LineCollection

    topo = feeder.topology
    x, y = tree_layout(feeder)
    fig = figure(size, dpi)
    ax = fig.add_subplot()
    segments = [((x[int(topo.parent[k])], y[int(topo.parent[k])]), (x[k], y[k])) for k in range(1, topo.n_bus)]
    # Every line in grey first, so the tree stays readable where loading is low or unrated.
    ax.add_collection(LineCollection(segments, colors="0.7", linewidths=1.5, zorder=0))
    if line_loading is not None and line_loading.height:
        from matplotlib import colormaps
        from matplotlib.colors import ListedColormap

        load = dict(zip(line_loading["line"].cast(pl.Utf8), line_loading["loading_pct"]))
        pct = np.array([np.nan if load.get(str(lid)) is None else load[str(lid)] for lid in topo.line_ids], float)
        # The light end of "Reds" is near white; start a quarter in so a lightly loaded line still shows.
        reds = ListedColormap(colormaps["Reds"](np.linspace(0.25, 1.0, 256)))
        lines = LineCollection(segments, array=np.ma.masked_invalid(pct), cmap=reds, linewidths=3.0, zorder=1)
        lines.set_clim(0.0, max(100.0, float(np.nanmax(pct)) if np.isfinite(pct).any() else 100.0))
        fig.colorbar(lines, ax=ax, label="line loading (% of rating)", location="bottom", shrink=0.6)
        ax.add_collection(lines)
    if bus_values is not None and bus_values.height:
        val = dict(zip(bus_values["bus"].cast(pl.Utf8), bus_values["value"]))
        v = np.array([val.get(str(b), np.nan) for b in topo.bus_ids], float)
        dots = ax.scatter(x, y, c=np.ma.masked_invalid(v), cmap="viridis", s=60, zorder=2, edgecolors="k",
                          linewidths=0.4)
        fig.colorbar(dots, ax=ax, label=bus_label)
    else:
        ax.scatter(x, y, color="0.3", s=30, zorder=2)
    label_every = max(1, topo.n_bus // 40)
    for k in range(0, topo.n_bus, label_every):
        ax.annotate(str(topo.bus_ids[k]), (x[k], y[k]), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize=7)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("lines from the T-D interface (root, left)")
    ax.set_yticks([])
    ax.set_title(title or f"feeder {feeder.name}")
    ax.margins(0.05, 0.08)
    return fig


def interface_curve(curve: pl.DataFrame, offer: pl.DataFrame | None = None, interval=None, title: str = "",
                    size=SIZE_IN, dpi=DPI) -> "Figure":
    """The exact interface curve of one interval, with the ISO's reduced segments over it.

    Parameters
    ----------
    curve
        ``interval, price_low, price_high, import_kw`` (``curve.csv``).
    offer
        ``interval, kind, segment, price, quantity_kw`` (``iso_offer.csv``); optional.
    interval
        The interval to draw (a UTC datetime, or None for a single-interval run);
        default the first.
    """
    curve = _one_interval(curve, interval).sort("price_low")
    fig = figure(size, dpi)
    ax = fig.add_subplot()
    lo, hi, q = (curve[c].to_numpy() for c in ("price_low", "price_high", "import_kw"))
    ax.step(np.repeat(q, 2), np.column_stack([lo, hi]).ravel(), where="post", color="C0", linewidth=2,
            label=f"exact curve ({curve.height} bands)")
    if offer is not None and offer.height:
        mine = _one_interval(offer, interval)
        rq, rp = reduced_curve(mine, float(lo[0]), float(hi[-1]))
        ax.plot(rq, rp, color="C3", linewidth=1.5, linestyle="--",
                label=f"ISO offer ({mine.filter(pl.col('kind').is_in(['demand', 'supply'])).height} steps)")
    steps = hi[:-1]
    if len(steps):   # the floor and cap are far from where the curve moves: show the steps
        pad = max(10.0, 0.15 * float(steps.max() - steps.min()))
        ax.set_ylim(float(steps.min()) - pad, float(steps.max()) + pad)
    if q.min() < 0 < q.max():
        ax.axvline(0.0, color="0.7", linewidth=0.8)
    ax.set_xlabel("interface import, kW (positive = the feeder buys from the ISO)")
    ax.set_ylabel("ISO price per MWh")
    ax.legend(loc="upper right")
    iv = curve["interval"][0] if "interval" in curve.columns else None
    ax.set_title(title or ("interface curve" + (f", {iv:%Y-%m-%d %H:%M} UTC" if iv is not None else "")))
    return fig


def reduced_curve(offer: pl.DataFrame, floor: float, cap: float) -> tuple[np.ndarray, np.ndarray]:
    """The import the ISO's offer buys at each price from ``floor`` to ``cap``, as a polyline (kW, price).

    The import at a price is the fixed demand, plus every demand step priced
    above it, minus the fixed supply and every supply step priced below it.
    """
    def total(kind: str) -> float:
        return float(offer.filter(pl.col("kind") == kind)["quantity_kw"].sum())

    dem = offer.filter(pl.col("kind") == "demand")
    sup = offer.filter(pl.col("kind") == "supply")
    prices = np.unique(np.concatenate([dem["price"].to_numpy(), sup["price"].to_numpy()]).astype(float))

    def imports(p: float) -> float:
        d = float(dem.filter(pl.col("price") > p)["quantity_kw"].sum())
        s = float(sup.filter(pl.col("price") < p)["quantity_kw"].sum())
        return total("fixed_demand") + d - total("fixed_supply") - s

    edges = np.concatenate([[floor], prices, [cap]])
    mids = (edges[:-1] + edges[1:]) / 2
    q = np.array([imports(m) for m in mids])
    return np.repeat(q, 2), np.column_stack([edges[:-1], edges[1:]]).ravel()


def dlmp_heatmap(prices: pl.DataFrame, title: str = "", size=SIZE_IN, dpi=DPI) -> "Figure":
    """DLMP per bus (rows, feeder order) and interval (columns), per MWh."""
    from dsomarket.clients.files import by_id

    table = by_id(prices.select("bus", "interval", "dlmp"), "bus")
    ivs = table["interval"].unique(maintain_order=True).sort(nulls_last=False)
    buses = table["bus"].unique(maintain_order=True)
    matrix = (table.with_columns(pl.col("interval").rank("dense").alias("_k"))
              .pivot(on="_k", index="bus", values="dlmp", sort_columns=True))
    m = matrix.drop("bus").to_numpy()
    fig = figure(size, dpi)
    ax = fig.add_subplot()
    im = ax.imshow(m, aspect="auto", cmap="magma", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="DLMP per MWh")
    step = max(1, len(buses) // 25)
    ax.set_yticks(range(0, len(buses), step), [str(b) for b in buses.to_list()[::step]], fontsize=7)
    tstep = max(1, len(ivs) // 12)
    ax.set_xticks(range(0, len(ivs), tstep),
                  ["-" if iv is None else f"{iv:%H:%M}" for iv in ivs.to_list()[::tstep]], fontsize=8)
    ax.set_ylabel("bus (feeder order)")
    ax.set_xlabel("interval start (UTC)")
    ax.set_title(title or "DLMP per bus and interval")
    return fig


def dispatch_by_aggregator(dispatch: pl.DataFrame, title: str = "", size=SIZE_IN, dpi=DPI) -> "Figure":
    """Net injection per aggregator and interval, kW: stacked bars, sales up, purchases down."""
    d = dispatch.with_columns(
        pl.when(pl.col("side") == "sell").then(pl.col("cleared_kw")).otherwise(-pl.col("cleared_kw")).alias("kw"),
        pl.col("aggregator_id").fill_null("").replace("", "(none)"))
    ivs = d["interval"].unique().sort(nulls_last=False).to_list()
    fig = figure(size, dpi)
    ax = fig.add_subplot()
    x = np.arange(len(ivs))
    up, down = np.zeros(len(ivs)), np.zeros(len(ivs))
    for k, (agg,) in enumerate(sorted(d.select("aggregator_id").unique().rows())):
        per = d.filter(pl.col("aggregator_id") == agg)
        for part, base, sign in ((per.filter(pl.col("kw") > 0), up, 1), (per.filter(pl.col("kw") < 0), down, -1)):
            by = dict(part.group_by("interval").agg(pl.col("kw").sum()).rows())
            h = np.array([by.get(iv, 0.0) for iv in ivs])
            ax.bar(x, h, bottom=base, color=f"C{k % 10}", label=agg if sign > 0 or not up.any() else None,
                   width=0.8)
            base += h
    ax.axhline(0.0, color="k", linewidth=0.8)
    step = max(1, len(ivs) // 12)
    ax.set_xticks(x[::step], ["-" if iv is None else f"{iv:%H:%M}" for iv in ivs[::step]], fontsize=8)
    ax.set_xlabel("interval start (UTC)")
    ax.set_ylabel("kW (up: sold = injected, down: bought = withdrawn)")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), loc="best", fontsize=8)
    ax.set_title(title or "dispatch by aggregator")
    return fig


def _one_interval(table: pl.DataFrame, interval) -> pl.DataFrame:
    if "interval" not in table.columns:
        return table
    ivs = table["interval"].unique().sort(nulls_last=False).to_list()
    pick = ivs[0] if interval is None else interval
    if pick not in ivs:
        shown = ", ".join("-" if iv is None else f"{iv:%Y-%m-%dT%H:%MZ}" for iv in ivs[:4])
        raise InputError("plot", "interval", f"{interval} is not an interval of this run ({shown}...)")
    return table.filter(pl.col("interval").is_null() if pick is None else pl.col("interval") == pick)
