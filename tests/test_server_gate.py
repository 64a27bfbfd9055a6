"""Authentication before work, revocation of open streams, and a server that owns its port and files."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import sqlite3
import stat
import subprocess

import grpc
import pytest

from dsomarket.server import auth, db
from dsomarket.server.app import StartupError, TlsFiles, create_server
from dsomarket.server.tokenbook import TokenBook
from dsomarket.v1 import aggregator_pb2 as agg_pb
from dsomarket.v1 import iso_pb2
from tests.harness import running, simple_bids, small_market

BIG = 40 * 1024 * 1024  # over the server's 32 MiB receive limit


def _submit(channel):
    return channel.unary_unary("/dsomarket.v1.AggregatorService/SubmitBids",
                               request_serializer=agg_pb.SubmitBidsRequest.SerializeToString,
                               response_deserializer=agg_pb.SubmitBidsResponse.FromString)


def test_an_unauthenticated_request_is_refused_without_its_body_being_read(tmp_path):
    """A 40 MiB request is over the 32 MiB receive limit: had the server read it, the caller would get
    RESOURCE_EXHAUSTED. Without a valid token it gets UNAUTHENTICATED: the body was never received whole."""
    request = agg_pb.SubmitBidsRequest(market_id="m", bids=agg_pb.BidColumns(bid_id=["x" * 60] * (BIG // 60)))
    assert request.ByteSize() > BIG

    async def body():
        async with running(tmp_path) as env:
            options = [("grpc.max_send_message_length", 2 * BIG)]
            async with grpc.aio.insecure_channel(env.target, options=options) as channel:
                for metadata in ((), (("authorization", "Bearer dsm_made-up"),), (("authorization", "Basic x"),)):
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await _submit(channel)(request, metadata=metadata, timeout=60)
                    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, err.value.details()
                # The same request with a valid token is read, and refused for its size.
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await _submit(channel)(request, metadata=(("authorization", f"Bearer {env.tokens['agg-a']}"),),
                                           timeout=60)
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (await env.clients["agg-a"].identity()).name == "agg-a"  # still serving

    asyncio.run(body())


class _CountingReader:
    """A reader over a real database that counts its reads."""

    def __init__(self, path):
        self.reader = db.Reader(path)
        self.reads = 0

    async def call(self, fn, *args):
        self.reads += 1
        return await self.reader.call(fn, *args)


def test_a_flood_of_made_up_tokens_costs_a_few_reads_not_one_per_call(tmp_path):
    path = tmp_path / "t.sqlite"
    tokens = auth.create_tokens(path, {"agg-a": "aggregator"})

    async def body():
        counting = _CountingReader(path)
        book = TokenBook(counting, recheck=2.0)
        try:
            assert (await book.principal([("authorization", f"Bearer {tokens['agg-a']}")])).name == "agg-a"
            first = counting.reads
            made_up = [[("authorization", f"Bearer dsm_{k:040d}")] for k in range(1000)]
            results = await asyncio.gather(*(book.principal(m) for m in made_up), return_exceptions=True)
            assert all(isinstance(r, auth.Unauthenticated) for r in results)
            assert counting.reads - first <= 3
            # Known tokens cost no read at all.
            before = counting.reads
            for _ in range(100):
                await book.principal([("authorization", f"Bearer {tokens['agg-a']}")])
            assert counting.reads == before
            # A token created while the server runs works on its first call.
            fresh = auth.create_tokens(path, {"agg-b": "aggregator"})["agg-b"]
            assert (await book.principal([("authorization", f"Bearer {fresh}")])).name == "agg-b"
        finally:
            counting.reader.close()

    asyncio.run(body())


def _revoke(path, name: str) -> None:
    conn = db.connect(path)
    try:
        db.transaction(conn, auth.revoke_tokens, name)
    finally:
        conn.close()


def test_revocation_ends_open_streams_and_they_deliver_nothing_made_after_it(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            market = await small_market(env)
            m = market.market_id
            op, a = env.clients["dso"], env.clients["agg-a"]
            await a.submit_bids(m, simple_bids(market))
            async with grpc.aio.insecure_channel(env.target) as channel:
                dispatch = channel.unary_stream("/dsomarket.v1.AggregatorService/ReceiveDispatchStream",
                                                request_serializer=agg_pb.ReceiveDispatchStreamRequest.SerializeToString,
                                                response_deserializer=agg_pb.DispatchEvent.FromString)
                curves = channel.unary_stream("/dsomarket.v1.IsoService/ReceiveInterfaceCurveStream",
                                              request_serializer=iso_pb2.ReceiveInterfaceCurveStreamRequest.SerializeToString,
                                              response_deserializer=iso_pb2.InterfaceCurve.FromString)
                streams = {
                    "agg-a": dispatch(agg_pb.ReceiveDispatchStreamRequest(),
                                      metadata=(("authorization", f"Bearer {env.tokens['agg-a']}"),), timeout=60),
                    "iso": curves(iso_pb2.ReceiveInterfaceCurveStreamRequest(),
                                  metadata=(("authorization", f"Bearer {env.tokens['iso']}"),), timeout=60)}
                received = {name: [] for name in streams}

                async def drain(name):
                    try:
                        async for item in streams[name]:
                            received[name].append(item)
                    except grpc.aio.AioRpcError as err:
                        return err.code(), err.details()
                    return grpc.StatusCode.OK, ""

                tasks = {name: asyncio.create_task(drain(name)) for name in streams}
                await asyncio.sleep(0.2)  # both streams are open and idle
                _revoke(env.db_path, "agg-a")
                # Curves and dispatch for agg-a are created after agg-a's revocation; the ISO's stream still
                # receives the curves, until the ISO's token is revoked too.
                await op.close_gate(m)
                await op.clear_market(m)
                await op.publish_market(m)
                while not received["iso"]:
                    await asyncio.sleep(0.05)
                _revoke(env.db_path, "iso")
                code, details = await tasks["iso"]
                assert code == grpc.StatusCode.UNAUTHENTICATED and "revoked" in details
                code, details = await tasks["agg-a"]
                assert code == grpc.StatusCode.UNAUTHENTICATED and "revoked" in details
                assert received["agg-a"] == []
                assert (await op.get_market(m)).state == "published"  # the server serves everyone else

    asyncio.run(body())


@pytest.fixture
def serve_cli(run):
    """``run`` for ``dsomarket serve``, which points the root logger at this test's stderr: restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield run
    root.handlers[:] = handlers
    root.setLevel(level)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_second_server_on_a_used_port_refuses_to_start(tmp_path, serve_cli):
    async def body():
        server, port = await create_server("127.0.0.1:0", tmp_path / "one.sqlite")
        await server.start()
        try:
            with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{port}: the port is in use"):
                await create_server(f"127.0.0.1:{port}", tmp_path / "two.sqlite")
            assert not (tmp_path / "two.sqlite").exists()  # refused before it made anything
            return port
        finally:
            await server.stop(0.5)

    port = asyncio.run(body())
    # Through the command line: exit 1, one line.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        code, out, err = serve_cli("serve", "--host", "127.0.0.1", "--port", holder.getsockname()[1],
                             "--db", tmp_path / "three.sqlite")
    finally:
        holder.close()
    assert code == 1 and err.count("\n") == 1 and "the port is in use" in err, (out, err)
    assert port


def test_a_new_database_is_private_to_its_owner(tmp_path):
    async def body():
        server, _ = await create_server("127.0.0.1:0", tmp_path / "new.sqlite")
        await server.stop(0.1)

    old = os.umask(0o022)
    try:
        asyncio.run(body())
        auth.create_tokens(tmp_path / "tokens.sqlite", {"x": "operator"})
    finally:
        os.umask(old)
    for name in ("new.sqlite", "tokens.sqlite"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name
    assert sqlite3.connect(tmp_path / "new.sqlite").execute("SELECT COUNT(*) FROM meta").fetchone()[0] >= 1


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_files_that_cannot_work_are_named_in_one_line(tmp_path, serve_cli):
    d = tmp_path
    for name in ("a", "b"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
                 "-days", "2", "-subj", f"/CN={name}", cwd=d)
    (d / "junk.pem").write_text("not a certificate\n")
    cases = [(TlsFiles(d / "a.pem", d / "b.key"), "the key does not match the certificate"),
             (TlsFiles(d / "junk.pem", d / "a.key"), f"TLS certificate {d / 'junk.pem'}: not a PEM file"),
             (TlsFiles(d / "a.pem", d / "junk.pem"), f"TLS key {d / 'junk.pem'}: not a PEM file"),
             (TlsFiles(d / "a.pem", d / "missing.key"), f"TLS key {d / 'missing.key'}: No such file"),
             (TlsFiles(d / "a.pem", d / "a.key", d / "junk.pem"), "TLS client CA"),
             (TlsFiles(d / "a.key", d / "a.key"), "cannot load the certificate and key")]

    async def body():
        for tls, match in cases:
            with pytest.raises(StartupError, match=match.replace("(", r"\(")):
                await create_server("127.0.0.1:0", d / "m.sqlite", tls=tls)
        assert not (d / "m.sqlite").exists()
        server, _ = await create_server("127.0.0.1:0", d / "m.sqlite", tls=TlsFiles(d / "a.pem", d / "a.key"))
        await server.stop(0.1)

    asyncio.run(body())
    code, out, err = serve_cli("serve", "--host", "127.0.0.1", "--port", _free_port(), "--db", d / "n.sqlite",
                         "--tls-cert", d / "a.pem", "--tls-key", d / "b.key")
    assert code == 1 and err.count("\n") == 1 and "the key does not match the certificate" in err, err
