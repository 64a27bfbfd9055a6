"""The registry and hybrid commands against a test server: ders, direct, conflicts (client library underneath)."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import timedelta

import polars as pl

from dsomarket.clients.api import Client
from dsomarket.clients.demo import delivery_day
from tests.harness import PARTICIPANTS, ThreadedServer, create_tokens, database


def test_register_review_schedules_bids_check_and_alerts_through_the_cli(tmp_path, run):
    path = database(tmp_path)
    tokens = create_tokens(path, PARTICIPANTS)
    server = ThreadedServer(path)
    try:
        async def feeder():
            async with Client(server.target, tokens["dso"]) as op:
                await op.create_feeder("ieee33", builtin="ieee33")

        asyncio.run(feeder())
        conn = ["--server", server.target]
        agg, dso, iso = (["--token", tokens[n], *conn] for n in ("agg-a", "dso", "iso"))
        ders = tmp_path / "ders.csv"
        pl.DataFrame({"der_id": ["bess-25", "pv-18"], "kind": ["battery", "pv"], "feeder_id": ["ieee33"] * 2,
                      "bus": ["25", "18"], "export_kw": [600.0, 100.0], "import_kw": [600.0, 0.0],
                      "energy_kwh": [2400.0, None], "soc_init_kwh": [2400.0, None],
                      "metering": ["telemetry", "interval"], "control": ["dispatchable", "curtailable"],
                      "services": ["dso_flexibility;iso_direct", "dso_flexibility;iso_direct"]}).write_csv(ders)
        code, out, err = run("ders", "register", *agg, "--file", ders, "--format", "json")
        assert code == 0, err
        assert [d["status"] for d in json.loads(out)] == ["pending", "pending"]
        code, out, err = run("ders", "review", *dso, "--feeder", "ieee33", "--format", "csv")
        assert code == 0, err
        review = pl.read_csv(io.StringIO(out)).sort("der_id")
        assert review["approved_services"].to_list() == ["dso_flexibility;iso_direct", "dso_flexibility"]
        code, _, err = run("ders", "review", *agg, "--feeder", "ieee33")
        assert code == 1 and "PERMISSION_DENIED" in err
        code, out, _ = run("ders", "list", *agg)          # the table people read
        assert code == 0 and "bess-25" in out and "approved" in out
        # Envelopes on the feeder's loads: one row per approved DER, within its approved limits.
        code, out, err = run("ders", "envelopes", *agg, "--feeder", "ieee33", "--format", "json")
        assert code == 0, err
        env = {e["der_id"]: e for e in json.loads(out)}
        limits = {r["der_id"]: r for r in review.iter_rows(named=True)}
        assert set(env) == {"bess-25", "pv-18"} and env["bess-25"]["interval_start"] is None
        for der_id, e in env.items():
            assert 0 <= e["export_max_kw"] <= limits[der_id]["export_limit_kw"] + 1e-6
            assert 0 <= e["import_max_kw"] <= limits[der_id]["import_limit_kw"] + 1e-6
        code, out, _ = run("ders", "envelopes", *["--token", tokens["agg-b"], *conn], "--feeder", "ieee33",
                           "--format", "json")
        assert code == 0 and json.loads(out) == []          # agg-b has no DER there

        day = delivery_day()
        stamps = [(day + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%MZ") for h in (12, 13)]
        schedules = tmp_path / "schedules.csv"
        pl.DataFrame({"participant_id": ["bess-25"] * 2, "bus": ["25"] * 2, "interval": stamps,
                      "p_kw": [500.0, 500.0]}).write_csv(schedules)
        code, out, err = run("direct", "schedules", *iso, "--feeder", "ieee33", "--file", schedules)
        assert code == 0 and out.startswith("2 schedules stored"), err
        bids = tmp_path / "bids.csv"
        pl.DataFrame({"participant_id": ["big-pv"] * 2, "bus": ["18"] * 2, "interval": [stamps[0]] * 2,
                      "side": ["sell", "sell"], "quantity_kw": [3000.0, 3000.0], "price": ["10", "20"]}).write_csv(bids)
        code, out, err = run("direct", "bids", *iso, "--feeder", "ieee33", "--file", bids)
        assert code == 0 and out.startswith("2 bid segments stored"), err
        # 6 MW at bus 18 is more than ieee33 carries back: the bid's range is cut, so not deliverable (exit 1).
        code, out, err = run("direct", "check", *dso, "--feeder", "ieee33", "--bids", "--format", "json")
        assert code == 1, err
        (bid,) = json.loads(out)
        assert bid["offered_export_kw"] == 6000.0 and 0 < bid["export_limit_kw"] < 6000.0
        assert bid["export_binding"] != "offer"
        code, out, _ = run("direct", "check", *dso, "--feeder", "ieee33", "--format", "csv")
        assert set(pl.read_csv(io.StringIO(out))["participant_id"]) == {"bess-25"}

        # The ISO sells the battery's energy twice over: refused (exit 1, the reason on stderr), alerted.
        more = tmp_path / "more.csv"
        pl.DataFrame({"participant_id": ["bess-25"] * 3, "bus": ["25"] * 3,
                      "interval": [(day + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%MZ") for h in (14, 15, 16)],
                      "p_kw": [500.0] * 3}).write_csv(more)
        code, _, err = run("direct", "schedules", *iso, "--feeder", "ieee33", "--file", more)
        assert code == 1 and "FAILED_PRECONDITION" in err and "'bess-25'" in err and "energy_empty" in err
        code, out, _ = run("conflicts", "list", *agg, "--format", "json")
        (alert,) = json.loads(out)
        assert (alert["resource_id"], alert["kind"], alert["refused"]) == ("bess-25", "energy_empty", "direct_schedules")
        code, out, _ = run("conflicts", "follow", *dso, "--count", "1")
        assert code == 0 and json.loads(out)["sequence"] == alert["sequence"]
        code, out, _ = run("ders", "retire", *agg, "pv-18", "--reason", "sold", "--format", "json")
        assert code == 0 and json.loads(out)[0]["status"] == "retired"
        code, _, err = run("direct", "schedules", *iso, "--feeder", "ieee33", "--file", tmp_path / "missing.csv")
        assert code == 2 and err.count("\n") == 1
    finally:
        server.stop()
