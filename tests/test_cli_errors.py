"""The command line's promise: bad input exits 2 with one line on stderr, never a traceback,
and leaves nothing half-written; Ctrl-C stops a long solve."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from dsomarket.engine.feeders import builtin
from tests.test_interface import random_bids

BIDS = """bid_id,bus,side,quantity_kw,price,aggregator_id,resource_id
pv18,18,sell,400,20,agg1,pv18
ev17,17,buy,200,80,agg2,ev17
"""
T0 = datetime(2026, 7, 1, tzinfo=timezone.utc)


def one_line(code: int, err: str, *needles: str) -> str:
    """Assert exit 2 and a single stderr line holding every needle; return the line."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def bids(tmp_path):
    path = tmp_path / "bids.csv"
    path.write_text(BIDS)
    return path


def timed_bids(tmp_path, stamps: list[str], name: str = "timed.csv"):
    rows = [f"b{k},18,sell,10,20,a,r" for k in range(len(stamps))]
    path = tmp_path / name
    path.write_text("bid_id,bus,side,quantity_kw,price,aggregator_id,resource_id,interval\n"
                    + "".join(f"{r},{s}\n" for r, s in zip(rows, stamps)))
    return path


@pytest.mark.parametrize("command", [
    ["clear", "--iso-price", "50"],
    ["curve"],
    ["disaggregate", "--award", "AWARD"],
])
def test_out_naming_a_file_is_refused_and_the_file_kept(run, tmp_path, bids, command):
    award = tmp_path / "award.csv"
    award.write_text("interval,import_kw\n,3000\n")
    target = tmp_path / "taken"
    target.write_text("mine")
    argv = [str(award) if a == "AWARD" else a for a in command]
    code, _, err = run(*argv, "--feeder", "ieee33", "--bids", bids, "--out", target)
    one_line(code, err, "out", "is a file")
    assert target.read_text() == "mine"


def test_settle_and_flex_refuse_an_out_file(run, tmp_path):
    target = tmp_path / "taken"
    target.write_text("mine")
    code, _, err = run("settle", "--day-ahead", tmp_path, "--out", target)
    one_line(code, err, "is a file")
    code, _, err = run("flex", "clear", "--feeder", "ieee33", "--needs", tmp_path / "n.csv",
                       "--offers", tmp_path / "o.csv", "--out", target)
    one_line(code, err, "is a file")
    assert target.read_text() == "mine"


@pytest.mark.parametrize("content,command", [
    (b"hello, not a database\n" * 100, ["audit", "verify"]),
    (b"hello, not a database\n" * 100, ["audit", "replay"]),
    (b"hello, not a database\n" * 100, ["token", "list"]),
    (b"", ["audit", "verify"]),   # an empty file is an empty SQLite database, without the audit log
])
def test_db_naming_a_file_that_is_no_database(run, tmp_path, content, command):
    db = tmp_path / "notes.txt"
    db.write_bytes(content)
    code, _, err = run(*command, "--db", db)
    one_line(code, err, str(db), "not a dsomarket database")


def test_audit_replay_of_an_unknown_market(run, tmp_path):
    db = tmp_path / "m.sqlite"
    assert run("token", "create", "--role", "operator", "--name", "dso", "--db", db)[0] == 0
    code, _, err = run("audit", "replay", "--db", db, "--market", "UNKNOWN")
    one_line(code, err, "market", "no market 'UNKNOWN'")


@pytest.mark.parametrize("row,needles", [
    ("b,pv,sell,10,20,", ("bids row 3", "field interval", "is empty")),
    ("b,pv,sell,ten,20,2026-07-01T00:00:00Z", ("bids row 3", "field quantity_kw", "'ten' is not a")),
])
def test_bids_submit_names_the_row_and_field_before_connecting(run, tmp_path, row, needles):
    path = tmp_path / "bids.csv"
    path.write_text(f"bid_id,resource_id,side,quantity_kw,price,interval\na,pv,sell,10,20,2026-07-01T00:00:00Z\n"
                    f"{row}\n")
    code, _, err = run("bids", "submit", "--token", "t", "--server", "127.0.0.1:1", "--market", "m",
                       "--file", path)
    one_line(code, err, *needles)


def test_award_submit_with_a_non_numeric_import_names_import_kw(run, tmp_path):
    path = tmp_path / "award.csv"
    path.write_text("interval,import_kw,price\n2026-07-01T00:00:00Z,lots,40\n")
    code, _, err = run("award", "submit", "--token", "t", "--server", "127.0.0.1:1", "--market", "m",
                       "--file", path)
    one_line(code, err, "award row 2", "field import_kw")


def test_offline_award_with_a_non_numeric_import_names_import_kw(run, tmp_path, bids):
    award = tmp_path / "award.csv"
    award.write_text("interval,import_kw\n,lots\n")
    code, _, err = run("disaggregate", "--feeder", "ieee33", "--bids", bids, "--award", award,
                       "--out", tmp_path / "o")
    one_line(code, err, "award row 2", "field import_kw", "'lots'")
    assert not (tmp_path / "o").exists()


def test_curves_fetch_into_a_directory_is_refused(capsys, tmp_path):
    from dsomarket.clients.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["curves", "fetch", "--token", "t", "--server", "127.0.0.1:1", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1 and "is a directory" in err, err


def test_irregular_interval_spacing_is_refused_naming_the_row(run, tmp_path):
    path = timed_bids(tmp_path, ["2026-07-01T00:00:00Z", "2026-07-01T00:15:00Z", "2026-07-01T01:00:00Z"])
    code, _, err = run("clear", "--feeder", "ieee33", "--bids", path, "--iso-price", "50", "--out", tmp_path / "o")
    one_line(code, err, "bids row 4", "field interval", "45 minutes", "evenly spaced")
    assert not (tmp_path / "o").exists()
    # Given the interval length, intervals without bids are allowed; off the grid is not.
    code, _, err = run("clear", "--feeder", "ieee33", "--bids", path, "--iso-price", "50",
                       "--interval-minutes", 15, "--out", tmp_path / "o")
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["status"] == "optimal"
    code, _, err = run("clear", "--feeder", "ieee33", "--bids", path, "--iso-price", "50",
                       "--interval-minutes", 10, "--out", tmp_path / "o2")
    one_line(code, err, "bids row 3", "10-minute")


@pytest.mark.parametrize("stamp", ["01/12/2026 00:00", "12.01.2026", "2026-02-30T00:00:00Z", "noon"])
def test_ambiguous_or_invalid_dates_are_refused_naming_the_row(run, tmp_path, stamp):
    path = timed_bids(tmp_path, ["2026-07-01T00:00:00Z", stamp])
    code, _, err = run("clear", "--feeder", "ieee33", "--bids", path, "--iso-price", "50", "--out", tmp_path / "o")
    one_line(code, err, "bids row 3 (the header is row 1)", "field interval", "ISO 8601")


def test_a_semicolon_separated_file_gets_a_delimiter_hint(run, tmp_path):
    path = tmp_path / "bids.csv"
    path.write_text(BIDS.replace(",", ";"))
    code, _, err = run("clear", "--feeder", "ieee33", "--bids", path, "--iso-price", "50", "--out", tmp_path / "o")
    one_line(code, err, "one column", "semicolons", "comma-separated")
    assert not (tmp_path / "o").exists()


def test_an_infeasible_run_leaves_no_stale_tables(run, tmp_path, bids):
    out = tmp_path / "o"
    assert run("clear", "--feeder", "ieee33", "--bids", bids, "--iso-price", "50", "--out", out)[0] == 0
    assert (out / "dispatch.csv").is_file() and (out / "prices.csv").is_file()
    feeder = tmp_path / "f"
    assert run("feeder", "export", "ieee33", feeder)[0] == 0
    pl.read_csv(feeder / "buses.csv").with_columns(vmin_pu=pl.lit(0.95)).write_csv(feeder / "buses.csv")
    code, _, err = run("clear", "--feeder", feeder, "--bids", bids, "--iso-price", "50", "--out", out)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert json.loads((out / "summary.json").read_text())["status"] == "infeasible"
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]


def test_failed_input_checks_leave_no_out_folder_but_keep_an_existing_one(run, tmp_path, bids):
    bad = tmp_path / "bad.csv"
    bad.write_text(BIDS + "x,99,sell,5,20,a,r\n")
    for out in (tmp_path / "new", tmp_path / "deep" / "new"):
        code, _, err = run("clear", "--feeder", "ieee33", "--bids", bad, "--iso-price", "50", "--out", out)
        one_line(code, err, "bids row 4", "field bus")
        assert not out.exists()
    existing = tmp_path / "kept"
    existing.mkdir()
    code, _, _ = run("curve", "--feeder", "ieee33", "--bids", bad, "--out", existing)
    assert code == 2 and existing.is_dir()
    code, _, err = run("settle", "--day-ahead", tmp_path / "nowhere", "--out", tmp_path / "s")
    one_line(code, err, "summary.json")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("argv", [
    ["awards", "follow", "--token", "t", "--count", "-1"],
    ["awards", "follow", "--token", "t", "--after", "-5"],
    ["flex", "clear", "--feeder", "ieee33", "--needs", "n.csv", "--offers", "o.csv", "--out", "o",
     "--time-limit", "-1"],
    ["flex", "clear", "--feeder", "ieee33", "--needs", "n.csv", "--offers", "o.csv", "--out", "o",
     "--time-limit", "nan"],
    ["curve", "--feeder", "ieee33", "--bids", "b.csv", "--out", "o", "--max-segments", "0"],
    ["clear", "--feeder", "ieee33", "--bids", "b.csv", "--out", "o", "--iso-price", "5",
     "--interval-minutes", "-15"],
    ["feeder", "synth", "--buses", "-3", "d"],
    ["clear", "--feeder", "ieee33"],   # a missing required option
])
def test_bad_options_exit_2_with_one_line(capsys, argv):
    from dsomarket.clients.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1 and "--help" in err, err


def _cli(*argv) -> list[str]:
    return [sys.executable, "-m", "dsomarket.clients.cli", *map(str, argv)]


def test_the_highs_banner_never_reaches_stdout(tmp_path, bids):
    proc = subprocess.run(_cli("clear", "--feeder", "ieee33", "--bids", bids, "--iso-price", "50",
                               "--out", tmp_path / "o"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HiGHS" not in proc.stdout and "HiGHS" not in proc.stderr
    # Nor from worker processes, which inherit the command's stdout.
    assert subprocess.run(_cli("territory", "synth", "--feeders", 2, "--buses", 12, "--bids", 10, "--seed", 1,
                               tmp_path / "t"), capture_output=True, timeout=120).returncode == 0
    proc = subprocess.run(_cli("territory", "clear", "--territory", tmp_path / "t", "--iso-price", "50",
                               "--workers", 2, "--out", tmp_path / "to"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "HiGHS" not in proc.stdout and "2 optimal" in proc.stdout


@pytest.mark.parametrize("argv", [["serve"], ["demo"], ["flex", "clear", "--feeder", "f", "--needs", "n",
                                                             "--offers", "o", "--out", "d"]])
def test_commands_that_solve_in_process_silence_the_highs_banner(argv):
    from dsomarket.clients.cli import build_parser

    args = build_parser().parse_args(argv)
    assert getattr(args, "solves", False) or getattr(args, "quiet_highs", False)


def test_ctrl_c_stops_a_long_solve_with_one_line(tmp_path):
    # Four hours of 30,000 bids on a 3,000-bus feeder: a solve of many seconds on a 2-core machine.
    feeder = builtin("synth:3000:1")
    base = random_bids(feeder, 30_000, 3)
    pl.concat([base.with_columns(bid_id=pl.col("bid_id") + f"-{h}",
                                 interval=pl.lit((T0 + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ")))
               for h in range(4)]).write_csv(tmp_path / "big.csv")
    out = tmp_path / "o"
    proc = subprocess.Popen(_cli("clear", "--feeder", "synth:3000:1", "--bids", tmp_path / "big.csv",
                                 "--iso-price", "50", "--out", out),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2.0)   # into the model build or the solve
        os.kill(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0], stderr
    assert not (out / "dispatch.csv").exists() and not (out / "summary.json").exists()


def test_spacing_is_read_from_evenly_spaced_intervals(run, tmp_path):
    path = timed_bids(tmp_path, [f"2026-07-01T{h:02d}:00:00Z" for h in (0, 1, 2)])
    code, _, err = run("clear", "--feeder", "ieee33", "--bids", path, "--iso-price", "50", "--out", tmp_path / "o")
    assert code == 0, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert len(summary["intervals"]) == 3
    assert np.all(np.asarray(summary["interface_import_kw"]) > 0)
