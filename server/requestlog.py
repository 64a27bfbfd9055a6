"""One log line per request: method, caller role and name, status code and milliseconds.

:class:`RequestLogInterceptor` is a ``grpc.aio`` server interceptor: it wraps
each method's behaviour, times it, and logs at INFO on the
``dsomarket.server.requests`` logger when the call ends (a stream when it ends
or is cancelled). The caller is whoever :func:`note_caller` names during the
call (the authentication wrapper in :mod:`server.rpc` does), ``-`` when the call
failed before that (no or unknown token). Each record carries the fields as
attributes (``method``, ``role``, ``caller``, ``status``, ``ms``, and
``messages`` for streams), so :class:`JsonFormatter` writes them as JSON keys.

:func:`configured` sets up the root handler for ``dsomarket serve``: text lines,
or one JSON object per line (``--log-format json``) for log collectors.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import json
import logging
import time
from datetime import datetime, timezone

import grpc

log = logging.getLogger("dsomarket.server.requests")
phase_log = logging.getLogger("dsomarket.server.phases")

PHASES = {"ClearMarket": "clearing and interface curves", "SubmitAward": "disaggregation of the award",
          "SettleMarket": "settlement", "ClearFlexibility": "flexibility auction", "CreateFeeder": "feeder check",
          "ClearTerritory": "territory clearing and interface curves"}
"""What the engine does for a method, named in its phase line; other methods are named as themselves."""

_CALL: contextvars.ContextVar[dict | None] = contextvars.ContextVar("dsomarket_call", default=None)
_RECORD_FIELDS = set(vars(logging.makeLogRecord({})))


def note_caller(name: str, role: str) -> None:
    """Name the caller of the request being served (a no-op outside a logged request)."""
    call = _CALL.get()
    if call is not None:
        call["caller"], call["role"] = name, role


class RequestLogInterceptor(grpc.aio.ServerInterceptor):
    """Log every call once, when it ends (a streamed response when its last message is sent or the call is
    cancelled)."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.rsplit("/", 1)[-1]
        kind = ("stream" if handler.request_streaming else "unary") + "_" + (
            "stream" if handler.response_streaming else "unary")
        behaviour = getattr(handler, kind)
        # A refused call arrives as a request-streaming handler (server.interceptors.Gate): log it all the same.
        wrapped = _stream(behaviour, method) if inspect.isasyncgenfunction(behaviour) else _unary(behaviour, method)
        return handler._replace(**{kind: wrapped})


@contextlib.contextmanager
def engine_phase():
    """Log one line when the engine work done for the current request ends: the phase, its market request's
    method and caller, and the milliseconds it took (status ``failed`` when it raised)."""
    call = _CALL.get() or {"method": "-", "caller": "-", "role": "-"}
    started, status = time.perf_counter(), "done"
    try:
        yield
    except BaseException:
        status = "failed"
        raise
    finally:
        ms = (time.perf_counter() - started) * 1000.0
        name = PHASES.get(call["method"], call["method"])
        phase_log.info("%s for %s by %s %s: %s in %.1f ms", name, call["method"], call["role"], call["caller"],
                       status, ms, extra={"phase": name, "method": call["method"], "role": call["role"],
                                          "caller": call["caller"], "status": status, "ms": round(ms, 3)})


def _start(method: str) -> tuple[dict, float]:
    call = {"caller": "-", "role": "-", "method": method}
    _CALL.set(call)
    return call, time.perf_counter()


def _finish(method: str, call: dict, started: float, context, error: BaseException | None, **extra) -> None:
    if isinstance(error, asyncio.CancelledError):
        code = grpc.StatusCode.CANCELLED
    else:
        code = context.code()
        if code is None:   # set only by abort or set_code; a plain exception is UNKNOWN to the caller
            code = grpc.StatusCode.UNKNOWN if error is not None else grpc.StatusCode.OK
    if isinstance(code, int):   # grpc.aio reports some codes as the raw integer
        code = next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    ms = (time.perf_counter() - started) * 1000.0
    fields = {"method": method, "role": call["role"], "caller": call["caller"], "status": code.name,
              "ms": round(ms, 3), **extra}
    more = "".join(f" {k} {v}" for k, v in extra.items())
    log.info("%s by %s %s: %s in %.1f ms%s", method, call["role"], call["caller"], code.name, ms, more,
             extra=fields)


def _unary(behaviour, method: str):
    async def logged(request, context):
        call, started = _start(method)
        error = None
        try:
            return await behaviour(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _finish(method, call, started, context, error)
    return logged


def _stream(behaviour, method: str):
    async def logged(request, context):
        call, started = _start(method)
        error, sent = None, 0
        try:
            async for message in behaviour(request, context):
                sent += 1
                yield message
        except BaseException as exc:
            error = exc
            raise
        finally:
            _finish(method, call, started, context, error, messages=sent)
    return logged


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, and the record's extra
    fields (for request lines: method, role, caller, status, ms)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
               .replace("+00:00", "Z"), "level": record.levelname, "logger": record.name,
               "message": record.getMessage()}
        out.update((k, v) for k, v in vars(record).items() if k not in _RECORD_FIELDS and k not in out)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


@contextlib.contextmanager
def configured(level: int = logging.INFO, fmt: str = "text"):
    """Route every logger to stderr as text lines or JSON objects (``fmt`` ``text`` or ``json``) while the
    block runs (``dsomarket serve``); the root logger's handlers and level are restored after it."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    handlers, old_level = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(level)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(old_level)
