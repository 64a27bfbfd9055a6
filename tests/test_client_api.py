"""The client library: decimal prices, unknown enums, retries while the server is away, resumable streams."""

from __future__ import annotations

import asyncio
import math
import shutil
import socket
import subprocess
from decimal import Decimal
from types import SimpleNamespace

import pytest

from dsomarket.clients import api
from dsomarket.clients.api import Client, ClientTls, Unavailable
from dsomarket.server.app import TlsFiles, create_server
from tests.harness import PARTICIPANTS, create_tokens, database, running, simple_bids, small_market


def test_prices_keep_their_decimal_text():
    assert api.price_text(0.1) == "0.1" and api.price_text(Decimal("12.500")) == "12.500"
    assert api.price_text(5) == "5" and api.price_text("1e3") == "1000" and api.price_text(-42.25) == "-42.25"
    with pytest.raises(ValueError):
        api.price_text(math.nan)


def test_unknown_enum_values_map_to_unspecified():
    assert api._name(api._STATES, 99) == "unspecified" and api._name(api._SIDES, 1) == "buy"
    with pytest.raises(ValueError, match="unknown side 'hold'"):
        api._value(api._SIDES, "hold", "side")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _until(condition, seconds: float = 60.0) -> None:
    """Poll ``condition`` until it holds, at most ``seconds``: generous, since a loaded machine is slow."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)


def test_calls_retry_until_the_server_is_up_and_streams_resume(tmp_path):
    path = database(tmp_path)
    tokens = create_tokens(path, PARTICIPANTS)
    port = _free_port()
    target = f"127.0.0.1:{port}"

    async def start():
        server, _ = await create_server(target, path)
        await server.start()
        return server

    async def body():
        # Enough retries with capped backoff that a slow server start on a loaded machine is waited for.
        a = Client(target, tokens["agg-a"], retries=10, backoff=0.05, timeout=60)
        clients = {n: Client(target, t, timeout=60) for n, t in tokens.items()}
        servers, tasks = [], []
        try:
            pending = asyncio.create_task(a.identity())  # no server yet: UNAVAILABLE, retried
            tasks.append(pending)
            await asyncio.sleep(0.3)
            servers.append(await start())
            assert (await asyncio.wait_for(pending, 60)).name == "agg-a"

            env = SimpleNamespace(clients=clients)
            op, iso = clients["dso"], clients["iso"]
            market = await small_market(env)
            await a.submit_bids(market.market_id, simple_bids(market, "a"))
            await op.close_gate(market.market_id)
            await op.clear_market(market.market_id)
            await op.publish_market(market.market_id)
            curves = await iso.list_curves()
            await iso.submit_award(market.market_id, [api.IntervalAward(c.interval_start, c.bands[0].import_kw)
                                                      for c in curves])
            seen = []

            async def follow():
                async for e in a.dispatch_stream():
                    seen.append(e)

            tasks.append(asyncio.create_task(follow()))
            await _until(lambda: len(seen) == 16)
            assert len(seen) == 16
            await servers.pop().stop(0.2)  # the stream ends with UNAVAILABLE; the client reconnects
            servers.append(await start())
            async with Client(target, tokens["dso"], retries=10, backoff=0.05, timeout=60) as op2:
                # An override is not retried (it has no idempotency key): a retried read first waits out a
                # listener that a loaded machine has not yet opened.
                assert (await op2.identity()).name == "dso"
                await op2.override_dispatch(market.market_id, aggregator_id="agg-a", resource_id="pv",
                                            interval_start=market.intervals[0], kw=0.0, reason="feeder 7 switching")
            await _until(lambda: len(seen) == 17)
            assert len(seen) == 17 and len({e.sequence for e in seen}) == 17
            assert seen[-1].source == "override" and seen[-1].reason == "feeder 7 switching"
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for c in (a, *clients.values()):
                await c.close()
            for server in servers:
                await server.stop(0.2)

    asyncio.run(body())


def test_unreachable_server_raises_unavailable():
    async def body():
        async with Client(f"127.0.0.1:{_free_port()}", "t", retries=1, backoff=0.01, timeout=2) as c:
            with pytest.raises(Unavailable):
                await c.identity()

    asyncio.run(body())


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_mutual_tls(tmp_path):
    d = tmp_path
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=test-ca", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)

    async def body():
        tls = TlsFiles(d / "server.pem", d / "server.key", d / "ca.pem")
        async with running(tmp_path, tls=tls) as env:
            token = env.tokens["agg-a"]
            mutual = ClientTls(d / "ca.pem", d / "client.pem", d / "client.key")
            async with Client(env.target, token, tls=mutual) as c:
                assert (await c.identity()).name == "agg-a"
            async with Client(env.target, token, tls=ClientTls(d / "ca.pem"), retries=0, timeout=5) as c:
                with pytest.raises(Unavailable):  # no client certificate: the handshake fails
                    await c.identity()

    asyncio.run(body())
