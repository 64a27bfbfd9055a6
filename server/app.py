"""Server assembly: :func:`create_server` for tests and embedding, :func:`serve` for ``dsomarket serve``.

The server registers the six dsomarket services, standard gRPC health
checking (``grpc.health.v1``) and server reflection, and logs one line per
request (:mod:`server.requestlog`). Shutdown is graceful:
health turns NOT_SERVING, streams end, in-flight calls get ``grace`` seconds,
then the writer finishes its queue and the database is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dsomarket.server import hybrid_service, network_service, realtime_service, services, territory_service
from dsomarket.server.scheduler import METER_WINDOW_SECONDS, Scheduler
from dsomarket.server.auth import TOKEN_RECHECK_SECONDS
from dsomarket.server.interceptors import Gate
from dsomarket.server.requestlog import RequestLogInterceptor
from dsomarket.server.runner import KEEP
from dsomarket.v1 import aggregator_pb2, aggregator_pb2_grpc, audit_pb2, audit_pb2_grpc
from dsomarket.v1 import flexibility_pb2, flexibility_pb2_grpc, iso_pb2
from dsomarket.v1 import iso_pb2_grpc, market_pb2, market_pb2_grpc, network_pb2, network_pb2_grpc, operator_pb2
from dsomarket.v1 import hybrid_pb2, hybrid_pb2_grpc, operator_pb2_grpc, realtime_pb2, realtime_pb2_grpc
from dsomarket.v1 import territory_pb2, territory_pb2_grpc

MAX_MESSAGE_BYTES = 32 * 1024 * 1024
"""Largest request or response; a bigger request fails with RESOURCE_EXHAUSTED before it is parsed."""

STREAM_WINDOW_BYTES = 1024 * 1024
"""HTTP/2 flow-control window of a call: the most a caller sends before the server has read it."""

SERVICE_NAMES = tuple(m.DESCRIPTOR.services_by_name[s].full_name for m, s in (
    (market_pb2, "MarketService"), (operator_pb2, "OperatorService"), (aggregator_pb2, "AggregatorService"),
    (iso_pb2, "IsoService"), (audit_pb2, "AuditService"), (flexibility_pb2, "FlexibilityService"),
    (network_pb2, "NetworkService"), (realtime_pb2, "RealTimeService"), (hybrid_pb2, "DerRegistryService"),
    (hybrid_pb2, "HybridService"), (territory_pb2, "TerritoryService")))

log = logging.getLogger("dsomarket.server")


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the server's certificate and key, and optionally a CA that client certificates must chain to
    (mutual TLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials from the files, checked first: gRPC itself only says "Failed to bind"."""
        check_tls_files(self)
        ca = self.client_ca.read_bytes() if self.client_ca else None
        return grpc.ssl_server_credentials([(self.key.read_bytes(), self.cert.read_bytes())],
                                           root_certificates=ca, require_client_auth=ca is not None)


class StartupError(OSError):
    """The server cannot start; the message is one line for the operator."""


def check_port_free(address: str) -> None:
    """StartupError when ``host:port`` cannot be bound because something listens there.

    gRPC would refuse too (SO_REUSEPORT is off), but only after logging a line of its own on stderr; a
    plain bind first keeps the operator's message to one line. Port 0 always binds.
    """
    host, _, port = address.rpartition(":")
    if not port.isdigit() or int(port) == 0:
        return
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {address}: {exc.strerror}") from None
    for family, kind, proto, _, where in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does
            try:
                probe.bind(where)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise StartupError(f"cannot listen on {address}: the port is in use") from None
                raise StartupError(f"cannot listen on {address}: {exc.strerror}") from None


def check_tls_files(tls: TlsFiles) -> None:
    """StartupError naming the file when one is missing, not PEM, or the key does not match the certificate."""
    for label, path in (("certificate", tls.cert), ("key", tls.key), ("client CA", tls.client_ca)):
        if path is None:
            continue
        try:
            text = Path(path).read_bytes()
        except OSError as exc:
            raise StartupError(f"TLS {label} {path}: {exc.strerror or exc}") from None
        if b"-----BEGIN " not in text:
            raise StartupError(f"TLS {label} {path}: not a PEM file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except ssl.SSLError as exc:
        what = ("the key does not match the certificate" if "KEY_VALUES_MISMATCH" in str(exc)
                else f"cannot load the certificate and key ({exc.reason or exc})")
        raise StartupError(f"TLS {tls.cert} and {tls.key}: {what}") from None
    if tls.client_ca is not None:
        try:
            context.load_verify_locations(cafile=str(tls.client_ca))
        except ssl.SSLError as exc:
            raise StartupError(f"TLS client CA {tls.client_ca}: cannot load it ({exc.reason or exc})") from None


class Server:
    """A started-or-not dsomarket server: the grpc.aio server plus the state it must close."""

    def __init__(self, grpc_server: grpc.aio.Server, app: services.App, health_servicer, timeline_clock=None,
                 meter_window: float = METER_WINDOW_SECONDS):
        self.grpc = grpc_server
        self.app = app
        self._health = health_servicer
        self.scheduler = None if timeline_clock is None else Scheduler(app, timeline_clock,
                                                                        meter_window=meter_window)
        self._book: contextlib.AsyncExitStack | None = None

    async def start(self) -> None:
        self._book = contextlib.AsyncExitStack()
        await self._book.enter_async_context(self.app.tokens.running())
        await self.grpc.start()
        if self.scheduler is not None:
            self.scheduler.start()

    async def wait_for_termination(self) -> None:
        await self.grpc.wait_for_termination()

    async def stop(self, grace: float | None = 5.0) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
        await self._health.enter_graceful_shutdown()
        self.app.notifier.close()
        await self.grpc.stop(grace)
        if self._book is not None:
            await self._book.aclose()
        # The writer thread blocks on fsync: close it off the event loop.
        await asyncio.get_running_loop().run_in_executor(None, self.app.close)


async def create_server(address: str, db_path: str | Path, *, tls: TlsFiles | None = None,
                        solve_time_limit: float | None = None,
                        token_recheck_seconds: float = TOKEN_RECHECK_SECONDS,
                        timeline_clock=None, workers: int | None = None,
                        ray_address: str | None = None,
                        meter_window: float = METER_WINDOW_SECONDS,
                        warm_interfaces: int = KEEP) -> tuple[Server, int]:
    """Build a server bound to ``address`` (``host:port``; port 0 picks a free one).

    Parameters
    ----------
    address
        Where to listen, e.g. ``127.0.0.1:0`` or ``0.0.0.0:50051``.
    db_path
        SQLite file; created if missing, resumed (open markets included) if present.
    tls
        Serve TLS (mutual TLS when ``tls.client_ca`` is set); plaintext when None.
    solve_time_limit
        Seconds per solve before the call fails with DEADLINE_EXCEEDED.
    token_recheck_seconds
        The longest a token revoked with ``dsomarket token revoke`` keeps working: new calls and open
        streams get UNAUTHENTICATED within this many seconds.
    timeline_clock
        When set, a :class:`server.scheduler.Scheduler` on this clock (``now_us()``, ``sleep(seconds)``) closes
        gates, clears, publishes and settles every market on its schedule while the server runs; None: the
        operator does.
    meter_window
        Simulated seconds after a market's last interval ends before the scheduler settles it.
    workers, ray_address
        Where a territory session clears (TerritoryService): ``workers`` local worker processes (default one
        per core), or Ray actors on the cluster at ``ray_address`` (``auto``, ``ray://host:10001``).
    warm_interfaces
        Interfaces whose built market each worker keeps between territory clearings, so that a real-time
        session of the same feeders and bids re-clears warm (0: always cold; see :data:`server.runner.KEEP`).

    Returns
    -------
    (Server, int)
        The server (call ``await server.start()``) and the bound port.
    """
    # Bad TLS files and a port in use fail before anything is created (the database included).
    credentials = tls.credentials() if tls else None
    check_port_free(address)
    app = services.App(db_path, solve_time_limit, token_recheck_seconds, workers, ray_address, warm_interfaces)
    server = grpc.aio.server(
        # The request log sees every authenticated call; the gate refuses the others before their body is read.
        interceptors=[RequestLogInterceptor(), Gate(app.tokens, app.pages)],
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                 # SO_REUSEPORT off: a second server on a port in use fails to bind instead of sharing it.
                 ("grpc.so_reuseport", 0),
                 # A fixed 1 MiB flow-control window per stream (no BDP growth): what a refused caller can
                 # push before its call ends is bounded, and uploads still move 1 MiB per round trip.
                 ("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", STREAM_WINDOW_BYTES)])
    market_pb2_grpc.add_MarketServiceServicer_to_server(services.MarketService(app), server)
    operator_pb2_grpc.add_OperatorServiceServicer_to_server(services.OperatorService(app), server)
    aggregator_pb2_grpc.add_AggregatorServiceServicer_to_server(services.AggregatorService(app), server)
    iso_pb2_grpc.add_IsoServiceServicer_to_server(services.IsoService(app), server)
    audit_pb2_grpc.add_AuditServiceServicer_to_server(services.AuditService(app), server)
    flexibility_pb2_grpc.add_FlexibilityServiceServicer_to_server(services.FlexibilityService(app), server)
    network_pb2_grpc.add_NetworkServiceServicer_to_server(network_service.NetworkService(app), server)
    realtime_pb2_grpc.add_RealTimeServiceServicer_to_server(realtime_service.RealTimeService(app), server)
    hybrid_pb2_grpc.add_DerRegistryServiceServicer_to_server(hybrid_service.DerRegistryService(app), server)
    hybrid_pb2_grpc.add_HybridServiceServicer_to_server(hybrid_service.HybridService(app), server)
    territory_pb2_grpc.add_TerritoryServiceServicer_to_server(territory_service.TerritoryService(app), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME),
                                        server)
    try:
        port = server.add_secure_port(address, credentials) if tls else server.add_insecure_port(address)
    except RuntimeError:  # grpc's "Failed to bind to address"
        port = 0
    if port == 0:
        app.close()
        raise StartupError(f"cannot listen on {address}: the port is in use or the address is not this host's")
    return Server(server, app, health_servicer, timeline_clock, meter_window), port


async def serve(address: str, db_path: str | Path, *, tls: TlsFiles | None = None,
                solve_time_limit: float | None = None, grace: float = 10.0, ready=None,
                timeline_clock=None, workers: int | None = None, ray_address: str | None = None,
                meter_window: float = METER_WINDOW_SECONDS, warm_interfaces: int = KEEP) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully.

    ``ready(port)`` is called once the server listens; ``timeline_clock`` runs the scheduler, ``workers`` and
    ``ray_address`` place territory clearings and ``warm_interfaces`` bounds what their workers keep (see
    :func:`create_server`).
    """
    server, port = await create_server(address, db_path, tls=tls, solve_time_limit=solve_time_limit,
                                       timeline_clock=timeline_clock, workers=workers, ray_address=ray_address,
                                       meter_window=meter_window, warm_interfaces=warm_interfaces)
    await server.start()
    if ready is not None:
        ready(port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await server.stop(grace)
