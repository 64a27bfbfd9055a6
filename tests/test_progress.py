"""Progress of long curve runs: the engine reports each interval; the CLI shows it only on a terminal."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import polars as pl

from dsomarket.clients import progress as progress_mod
from dsomarket.clients.progress import Progress
from dsomarket.engine.bids import MarketRules, validate_bids
from dsomarket.engine.feeders import ieee33
from dsomarket.engine.interface import trace_curve
from dsomarket.engine.network_changes import network_runs
from dsomarket.engine.runs import trace_runs
from tests.test_interface import random_bids

RULES = MarketRules(price_floor=-200.0, price_cap=500.0)


def three_intervals():
    f = ieee33()
    t0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
    bids = pl.concat([random_bids(f, 8, 30 + h).with_columns(bid_id=pl.col("bid_id") + f"-{h}",
                                                             interval=pl.lit(t0 + timedelta(hours=h)))
                      for h in range(3)])
    return f, validate_bids(bids, f, RULES)


def test_the_tracer_reports_each_interval_done():
    f, book = three_intervals()
    calls = []
    trace_curve(f, book, RULES, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_runs_count_intervals_over_all_runs():
    f, book = three_intervals()
    calls = []
    runs = network_runs(f, None, book.intervals)
    trace_runs(runs, book, RULES, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_progress_shows_on_a_terminal_only_and_after_the_first_seconds(monkeypatch):
    quiet = io.StringIO()                    # not a terminal: nothing, however long the run
    with Progress("curve", quiet) as p:
        monkeypatch.setattr(progress_mod, "SHOW_AFTER_S", 0.0)
        p(1, 3)
    assert quiet.getvalue() == ""

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    monkeypatch.setattr(progress_mod, "SHOW_AFTER_S", 3600.0)
    with Progress("curve", term) as p:       # a short run on a terminal: nothing either
        p(1, 3)
    assert term.getvalue() == ""
    monkeypatch.setattr(progress_mod, "SHOW_AFTER_S", 0.0)
    with Progress("curve", term) as p:
        p(1, 3)
        p(3, 3)
    assert term.getvalue().startswith("\rcurve: 1/3 (") and "\rcurve: 3/3 (" in term.getvalue()
    assert term.getvalue().endswith("\n")
