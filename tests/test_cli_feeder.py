"""Feeder files and the ``feeder`` / ``powerflow`` commands of the command line."""

from __future__ import annotations

from datetime import datetime, timezone

import json
import math
import os

import numpy as np
import polars as pl
import pytest

from dsomarket.clients.files import json_text, read_feeder, read_table, write_csv, write_feeder, write_json
from dsomarket.engine.errors import InputError
from dsomarket.engine.feeders import ieee33, synthetic
from dsomarket.engine.powerflow import ac_power_flow


def _same_feeder(a, b):
    assert a.header() == b.header()
    assert a.buses.equals(b.buses)
    assert a.lines.equals(b.lines)


# --- files --------------------------------------------------------------------------------------

def test_feeder_round_trip_is_exact(tmp_path):
    for f in (ieee33(), synthetic(500, 9)):
        write_feeder(f, tmp_path / f.name)
        _same_feeder(f, read_feeder(str(tmp_path / f.name)))
    assert sorted(os.listdir(tmp_path / "ieee33")) == ["buses.csv", "feeder.json", "lines.csv"]


def test_feeder_round_trip_with_profile_and_limits(tmp_path):
    f = ieee33()
    hours = ["2025-03-01T00:00:00Z", "2025-03-01T01:00:00Z"]
    profile = pl.DataFrame({"bus": ["18", "18", "5"], "interval": [hours[0], hours[1], hours[0]],
                            "load_kw": [10.0, 20.0, 30.0], "load_kvar": [1.0, 2.0, 3.0]})
    f = f.with_changes(load_profile=profile, import_max_kw=5000.0)
    write_feeder(f, tmp_path)
    back = read_feeder(tmp_path)
    _same_feeder(f, back)
    assert back.load_profile.equals(f.load_profile)
    assert json.loads((tmp_path / "feeder.json").read_text())["import_max_kw"] == 5000.0
    # Re-exporting without a profile must not leave the old one behind.
    write_feeder(ieee33(), tmp_path)
    assert read_feeder(tmp_path).load_profile is None


def test_read_feeder_names_and_errors(tmp_path):
    assert read_feeder("ieee69").name == "ieee69"
    with pytest.raises(InputError) as exc:
        read_feeder(tmp_path / "nowhere")
    assert (exc.value.table, exc.value.field) == ("feeder", "name")
    write_feeder(ieee33(), tmp_path)
    (tmp_path / "feeder.json").write_text("{not json")
    with pytest.raises(InputError) as exc:
        read_feeder(tmp_path)
    assert (exc.value.table, exc.value.field) == ("feeder", "file")
    (tmp_path / "feeder.json").write_text(json.dumps({"name": "x", "root_bus": "1", "base_kv": 12.66}))
    (tmp_path / "lines.csv").unlink()
    with pytest.raises(InputError) as exc:
        read_feeder(tmp_path)
    assert (exc.value.table, exc.value.field) == ("lines", "file")


def test_read_table_ids_as_strings_csv_and_parquet(tmp_path):
    (tmp_path / "bids.csv").write_text("bid_id,bus,interval,quantity_kw,price\n"
                                       "007,12,2026-07-01T13:00:00Z,10,25.5\n8,13,2026-07-01 15:00+02:00,5,30\n")
    df = read_table(tmp_path / "bids.csv")
    assert df["bid_id"].to_list() == ["007", "8"]
    assert df["bus"].to_list() == ["12", "13"]
    assert df["interval"].to_list() == [datetime(2026, 7, 1, 13, tzinfo=timezone.utc)] * 2
    assert df["quantity_kw"].dtype == pl.Int64 and df["price"].dtype == pl.Float64
    parquet = pl.DataFrame({"bid_id": [7, 8], "bus": [12, 13], "price": [1.0, 2.0]})
    parquet.write_parquet(tmp_path / "b.parquet")
    pq = read_table(tmp_path / "b.parquet")
    assert pq["bid_id"].to_list() == ["7", "8"] and pq["price"].dtype == pl.Float64


def test_read_table_errors(tmp_path):
    with pytest.raises(InputError) as exc:
        read_table(tmp_path / "bids.csv")
    assert (exc.value.table, exc.value.field) == ("bids", "file")
    (tmp_path / "bids.xlsx").write_text("x")
    with pytest.raises(InputError, match="unsupported extension"):
        read_table(tmp_path / "bids.xlsx", table="bids")
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="cannot read"):
        read_table(tmp_path / "broken.parquet")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="cannot read"):
        read_table(tmp_path / "empty.csv")


def test_write_json_and_csv_are_atomic_and_clean(tmp_path):
    obj = {"b": float("nan"), "a": [1.5, float("inf"), np.float64(2.0)], "c": np.arange(2), "d": np.int64(3)}
    write_json(tmp_path / "out.json", obj)
    text = (tmp_path / "out.json").read_text()
    assert text == json_text(obj) + "\n"
    assert json.loads(text) == {"a": [1.5, None, 2.0], "b": None, "c": [0, 1], "d": 3}
    assert text.index('"a"') < text.index('"b"') < text.index('"c"')
    write_csv(pl.DataFrame({"x": [1.0, math.inf]}), tmp_path / "t.csv")
    assert read_table(tmp_path / "t.csv")["x"].to_list() == [1.0, math.inf]
    assert sorted(os.listdir(tmp_path)) == ["out.json", "t.csv"]  # no temporary files left behind


def test_failed_write_keeps_the_old_file(tmp_path):
    write_csv(pl.DataFrame({"v": [1]}), tmp_path / "t.csv")

    class FailsHalfway:
        def write_csv(self, fh, **_):
            fh.write(b"v\n2\n")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_csv(FailsHalfway(), tmp_path / "t.csv", rounded=False)
    assert (tmp_path / "t.csv").read_text() == "v\n1\n"
    assert os.listdir(tmp_path) == ["t.csv"]


def test_writes_synced_once_are_flushed_together_when_the_block_ends(tmp_path, monkeypatch):
    import dsomarket.clients.files as files

    calls: list[str] = []
    replace = os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: calls.append("fsync"))
    monkeypatch.setattr(files.os, "sync", lambda: calls.append("sync"))
    monkeypatch.setattr(files.os, "replace", lambda a, b: (calls.append(f"rename {os.path.basename(b)}"), replace(a, b)))
    write_json(tmp_path / "b.json", {"v": 0})
    calls.clear()
    with files.synced_once():
        write_csv(pl.DataFrame({"v": [1.0]}), tmp_path / "a.csv")
        write_json(tmp_path / "b.json", {"v": 1})
        assert calls == []                      # nothing flushed or renamed file by file inside the block
        assert json.loads((tmp_path / "b.json").read_text()) == {"v": 0}
        assert "a.csv" not in os.listdir(tmp_path)
    # The contents on disk before any name points at them (a crash leaves old or whole new files), then the renames.
    assert calls == ["sync", "rename a.csv", "rename b.json", "sync"]
    write_json(tmp_path / "c.json", {"v": 2})   # outside it, each file is synced as before
    assert calls[4:] == ["fsync", "rename c.json", "fsync"]   # the contents, the rename, the folder's entry
    assert read_table(tmp_path / "a.csv")["v"].to_list() == [1.0]
    assert json.loads((tmp_path / "b.json").read_text()) == {"v": 1}
    assert sorted(os.listdir(tmp_path)) == ["a.csv", "b.json", "c.json"]


def test_writes_flushed_later_are_in_place_at_once_and_flushed_by_one_sync(tmp_path, monkeypatch):
    import dsomarket.clients.files as files

    calls: list[str] = []
    monkeypatch.setattr(files.os, "fsync", lambda fd: calls.append("fsync"))
    monkeypatch.setattr(files.os, "sync", lambda: calls.append("sync"))
    write_json(tmp_path / "b.json", {"v": 0})
    calls.clear()
    written: list = []
    with files.flushed_later(written):
        write_csv(pl.DataFrame({"v": [1.0]}), tmp_path / "a.csv")
        write_json(tmp_path / "b.json", {"v": 1})
        assert json.loads((tmp_path / "b.json").read_text()) == {"v": 1}   # whole, and in place at once
    assert calls == [] and written == [tmp_path / "a.csv", tmp_path / "b.json"]
    files.flush(written)
    assert calls == ["sync"]
    files.flush([])
    assert calls == ["sync"]                    # nothing written, nothing to wait for
    monkeypatch.delattr(files.os, "sync")       # where there is no os.sync: each file, then each folder
    files.flush(written)
    assert calls == ["sync", "fsync", "fsync", "fsync"]
    assert sorted(os.listdir(tmp_path)) == ["a.csv", "b.json"]


def test_a_block_synced_once_that_raises_writes_nothing(tmp_path):
    import dsomarket.clients.files as files

    write_json(tmp_path / "b.json", {"v": 0})
    with pytest.raises(RuntimeError, match="half way"), files.synced_once():
        write_csv(pl.DataFrame({"v": [1.0]}), tmp_path / "a.csv")
        write_json(tmp_path / "b.json", {"v": 1})
        raise RuntimeError("half way")
    assert sorted(os.listdir(tmp_path)) == ["b.json"]      # no new file, no temporary file left
    assert json.loads((tmp_path / "b.json").read_text()) == {"v": 0}


# --- command line -------------------------------------------------------------------------------

def test_cli_export_and_powerflow(run, tmp_path):
    code, out, err = run("feeder", "export", "ieee33", tmp_path / "f")
    assert code == 0 and "33 buses" in out and not err
    _same_feeder(ieee33(), read_feeder(tmp_path / "f"))
    code, out, _ = run("powerflow", "--feeder", tmp_path / "f")
    assert code == 0
    fields = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert fields["min_v_bus"] == "18" and fields["converged"] == "yes"
    assert float(fields["losses_kw"]) == pytest.approx(202.677, abs=1e-3)
    assert {"min_v_pu", "p0_kw", "q0_kvar", "iterations"} <= fields.keys()


def test_cli_powerflow_json(run):
    code, out, _ = run("powerflow", "--feeder", "ieee69", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["min_v_bus"] == "65" and data["converged"] is True
    assert data["losses_kw"] == pytest.approx(ac_power_flow(read_feeder("ieee69")).losses_kw, abs=5e-4)  # 1 W
    keys = {"losses_kw", "min_v_pu", "min_v_bus", "p0_kw", "q0_kvar", "converged", "iterations"}
    assert keys <= data.keys()


def test_cli_synth(run, tmp_path):
    code, out, _ = run("feeder", "synth", "--buses", 200, "--seed", 5, tmp_path)
    assert code == 0 and "200 buses" in out
    _same_feeder(synthetic(200, 5), read_feeder(tmp_path))


@pytest.mark.parametrize("argv, field", [
    (("powerflow", "--feeder", "ieee34"), "field name"),
    (("feeder", "synth", "--buses", "1", "{tmp}/s"), "field n_buses"),
    (("powerflow", "--feeder", "{tmp}/bad"), "field r_ohm"),
    (("feeder", "export", "{tmp}/nowhere", "{tmp}/out"), "field name"),
])
def test_cli_bad_input_exits_2_with_one_line(run, tmp_path, argv, field):
    bad = write_feeder(ieee33(), tmp_path / "bad")
    lines = read_table(bad / "lines.csv").with_columns(pl.lit(-1.0).alias("r_ohm"))
    write_csv(lines, bad / "lines.csv")
    code, out, err = run(*(a.format(tmp=tmp_path) for a in argv))
    assert code == 2 and not out
    assert err.count("\n") == 1 and err.startswith("dsomarket: error: ") and field in err


def test_cli_export_onto_a_file_exits_2(run, tmp_path):
    (tmp_path / "file").write_text("x")
    code, _, err = run("feeder", "export", "ieee33", tmp_path / "file")
    assert code == 2 and err.count("\n") == 1
