"""The wrapper around every servicer method: check the role, map errors.

The caller was authenticated before the request was read (:class:`server.interceptors.Gate`).
A servicer method decorated with :func:`unary` or :func:`stream` receives
``(self, request, principal)`` and simply raises on failure; the wrapper turns
the exception into a status code through :func:`server.errors.status_of`.
It names the caller for the request log (:func:`server.requestlog.note_caller`). An exception with an
async ``report(app, who)`` (:class:`server.registry_store.ConflictFound`) has it awaited first.
"""

from __future__ import annotations

import functools

from dsomarket.server.auth import require_role
from dsomarket.server.errors import status_of
from dsomarket.server.interceptors import caller
from dsomarket.server.requestlog import note_caller


def unary(*roles: str):
    """Decorate a unary method open to ``roles``."""
    def wrap(method):
        @functools.wraps(method)
        async def handler(self, request, context):
            try:
                who = caller()
                note_caller(who.name, who.role)
                require_role(who, roles, method.__name__)
                return await method(self, request, who)
            except Exception as exc:
                report = getattr(exc, "report", None)
                if report is not None:  # e.g. a conflict alert, recorded after its request was rolled back
                    await report(self.app, who)
                code, details = status_of(exc)
                await context.abort(code, details)
        return handler
    return wrap


def stream(*roles: str):
    """Decorate a server-streaming method (an async generator) open to ``roles``."""
    def wrap(method):
        @functools.wraps(method)
        async def handler(self, request, context):
            try:
                who = caller()
                note_caller(who.name, who.role)
                require_role(who, roles, method.__name__)
                async for message in method(self, request, who):
                    yield message
            except Exception as exc:
                code, details = status_of(exc)
                await context.abort(code, details)
        return handler
    return wrap
