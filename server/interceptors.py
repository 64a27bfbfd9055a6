"""The door of every call: authenticate before the request is read, and never crash on its bytes.

:class:`Gate` is a ``grpc.aio`` server interceptor. gRPC runs interceptors when
a call's headers have arrived, before its message is received: a unary
handler receives and parses the whole message before its behaviour runs,
whatever the behaviour does. So the gate checks the bearer token right there,
and for a caller it refuses it returns a *request-streaming* handler that
aborts with UNAUTHENTICATED without ever reading the request: the body of an
unauthenticated call is never buffered whole nor parsed, whatever its size.

For an authenticated caller the gate wraps the service's handler:

- its request deserialiser no longer raises on invalid protobuf (corrupt bytes,
  invalid UTF-8 in a string field); the behaviour then ends the call with
  INVALID_ARGUMENT naming the message type, instead of gRPC logging a traceback
  and answering UNKNOWN;
- the behaviour runs with the caller (:func:`caller`) and the server's page-token
  signer (:func:`server.pagetoken.current`) in its context.

Health checking and reflection stay open to everyone, as their clients carry no token.
"""

from __future__ import annotations

import contextvars
import functools
import inspect

import grpc

from dsomarket.server import pagetoken
from dsomarket.server.auth import Principal
from dsomarket.server.errors import ServiceError

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
"""Methods any caller may call without a token."""

_CALLER: contextvars.ContextVar[Principal] = contextvars.ContextVar("dsomarket_caller")


def caller() -> Principal:
    """Who is making the current call (set by :class:`Gate` before the servicer runs)."""
    return _CALLER.get()


class _Undecodable:
    """Stands in for a request whose bytes did not parse."""

    def __init__(self, reason: str):
        self.reason = reason


def _safe(deserializer):
    if deserializer is None:
        return None

    def parse(raw: bytes):
        try:
            return deserializer(raw)
        except Exception as exc:  # protobuf raises DecodeError, and RuntimeError/ValueError in some builds
            return _Undecodable(type(exc).__name__)
    return parse


def _refuse(code: grpc.StatusCode, details: str, handler) -> grpc.RpcMethodHandler:
    """A handler that ends the call with ``code`` without reading the request."""
    async def abort(request_iterator, context):
        await context.abort(code, details)

    if handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    return grpc.stream_unary_rpc_method_handler(abort)


def _wrap(behavior, request_streaming: bool, method: str, who: Principal | None, signer: pagetoken.Signer):
    """``behavior`` run with the caller (None for the open methods) and signer in context, refusing
    undecodable requests, alone or in a request stream."""
    message = method.rsplit("/", 1)[-1]

    async def refuse_undecodable(request, context):
        if isinstance(request, _Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"request: the bytes are not a valid {message} request message ({request.reason})")

    async def checked(requests, context):
        async for request in requests:
            await refuse_undecodable(request, context)
            yield request

    async def prepare(request, context):
        if who is not None:
            _CALLER.set(who)
        pagetoken.use(signer)
        if request_streaming:
            return checked(request, context)
        await refuse_undecodable(request, context)
        return request

    if inspect.isasyncgenfunction(behavior):
        @functools.wraps(behavior)
        async def stream(request, context):
            async for response in behavior(await prepare(request, context), context):
                yield response
        return stream

    @functools.wraps(behavior)
    async def unary(request, context):
        return await behavior(await prepare(request, context), context)
    return unary


class Gate(grpc.aio.ServerInterceptor):
    """Authenticate each call from its headers through ``book`` (a :class:`server.tokenbook.TokenBook`)
    and hand the servicer a request that parsed, the caller and the page-token ``signer``. The open
    methods (health, reflection) skip authentication but not the parsing check."""

    def __init__(self, book, signer: pagetoken.Signer):
        self._book = book
        self._signer = signer

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        who = None
        if not details.method.startswith(OPEN_PREFIXES):
            try:
                who = await self._book.principal(details.invocation_metadata)
            except ServiceError as exc:
                return _refuse(exc.code, str(exc), handler)
        kind = ("stream" if handler.request_streaming else "unary") + "_" + (
            "stream" if handler.response_streaming else "unary")
        if not (inspect.iscoroutinefunction(getattr(handler, kind)) or inspect.isasyncgenfunction(getattr(handler, kind))):
            return handler  # a synchronous handler (none here) would run on a thread: left as it is
        behavior = _wrap(getattr(handler, kind), handler.request_streaming, details.method, who, self._signer)
        return handler._replace(request_deserializer=_safe(handler.request_deserializer), **{kind: behavior})
