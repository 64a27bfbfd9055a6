"""The server's request log: one line per call with method, caller, status and time, as text or JSON."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dsomarket.clients.api import Client, PermissionDenied, Unauthenticated
from dsomarket.server.auth import create_tokens
from dsomarket.server.requestlog import JsonFormatter
from tests.harness import running, simple_bids, small_market


def request_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "dsomarket.server.requests"]


def test_each_call_is_logged_once_with_its_caller_status_and_time(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dsomarket.server.requests")

    async def body():
        async with running(tmp_path) as env:
            market = await small_market(env, intervals=1)
            caplog.clear()
            await env.clients["agg-a"].submit_bids(market.market_id, simple_bids(market))
            with pytest.raises(PermissionDenied):
                await env.clients["agg-a"].close_gate(market.market_id)
            async with env.client("not-a-token") as stranger:
                with pytest.raises(Unauthenticated):
                    await stranger.list_markets()
            stream = env.clients["dso"].dispatch_stream(market_id=market.market_id)
            with pytest.raises(asyncio.TimeoutError):   # nothing to dispatch yet: the caller gives up
                await asyncio.wait_for(stream.__anext__(), 0.5)
            await stream.aclose()
            for _ in range(100):   # the server logs a cancelled stream once it sees the cancellation
                if len(request_lines(caplog)) >= 4:
                    break
                await asyncio.sleep(0.05)

    asyncio.run(body())
    lines = request_lines(caplog)
    assert [(r.method, r.role, r.caller, r.status) for r in lines] == [
        ("SubmitBids", "aggregator", "agg-a", "OK"),
        ("CloseGate", "aggregator", "agg-a", "PERMISSION_DENIED"),
        ("ListMarkets", "-", "-", "UNAUTHENTICATED"),
        ("ReceiveDispatchStream", "operator", "dso", "CANCELLED")]
    assert all(r.levelno == logging.INFO and r.ms >= 0 for r in lines)
    assert lines[0].getMessage().startswith("SubmitBids by aggregator agg-a: OK in ")
    assert lines[3].messages == 0


def test_each_engine_phase_is_logged_with_its_time(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dsomarket.server.phases")

    async def body():
        async with running(tmp_path) as env:
            market = await small_market(env, intervals=1)
            await env.clients["agg-a"].submit_bids(market.market_id, simple_bids(market))
            op = env.clients["dso"]
            await op.close_gate(market.market_id)
            caplog.clear()
            await op.clear_market(market.market_id, iso_price_forecast=["50"])

    asyncio.run(body())
    phases = [r for r in caplog.records if r.name == "dsomarket.server.phases"]
    assert [(r.phase, r.method, r.caller, r.status) for r in phases] == \
        [("clearing and interface curves", "ClearMarket", "dso", "done")]
    assert phases[0].ms > 0


def test_json_lines_carry_the_fields_as_keys():
    record = logging.LogRecord("dsomarket.server.requests", logging.INFO, __file__, 1, "%s done", ("ListBids",),
                               None)
    for k, v in {"method": "ListBids", "role": "iso", "caller": "iso-1", "status": "OK", "ms": 1.25}.items():
        setattr(record, k, v)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "ListBids done" and line["level"] == "INFO" and line["time"].endswith("Z")
    assert (line["method"], line["role"], line["caller"], line["status"], line["ms"]) == \
        ("ListBids", "iso", "iso-1", "OK", 1.25)


def test_serve_says_where_it_listens_and_logs_json(tmp_path):
    """``dsomarket serve --port 0 --log-format json`` as a user runs it: its first line, then a call's log line."""
    db = tmp_path / "day.sqlite"
    tokens = create_tokens(db, {"dso": "operator"})
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dsomarket.clients.cli", "serve", "--db", str(db), "--port", "0",
                             "--log-format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=tmp_path)
    try:
        first = proc.stdout.readline()
        assert first.startswith("dsomarket: serving on 127.0.0.1:") and "(plaintext)" in first
        assert f"existing database {Path(db).resolve()}" in first
        port = int(first.split("127.0.0.1:")[1].split()[0])

        async def call():
            async with Client(f"127.0.0.1:{port}", tokens["dso"]) as c:
                return await c.list_feeders()

        assert asyncio.run(call()) == []
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    calls = [x for x in lines if x.get("method") == "ListFeeders"]
    assert len(calls) == 1 and (calls[0]["role"], calls[0]["caller"], calls[0]["status"]) == ("operator", "dso", "OK")
    assert proc.returncode == 0
