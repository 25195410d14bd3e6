"""A direct path to the plain async routes of a ``routes=`` front.

Starlette serves a route through seven layers: the application, its error
middleware, its exception middleware, the router, the route, the
``request_response`` wrapper and a second exception wrapper.  Measured on the
counter example they cost about 8 µs of the 45-55 µs a request takes
(``docs/design.md``).  For the common case, a plain :class:`~starlette.routing.Route`
whose endpoint is an ``async def`` function, :class:`RouteTable` matches the
route and calls the endpoint itself, with the same request object, scope keys,
exception handling and responses as Starlette.  Anything else (a method the
route does not take, ``Mount``, class endpoints, sync functions, route
middleware, no match) goes to the Starlette app unchanged, and nothing has run
before it does.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import starlette.applications
from starlette.convertors import Convertor, StringConvertor
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

__all__ = ["RouteTable"]

ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]

#: How a plain (not streaming, not file) Starlette response sends itself.
_SEND_WHOLE = Response.__call__


class RouteTable:
    """The leading plain async routes of a front, served without Starlette's layers.

    ``await table(scope, receive, send)`` answers the request and returns True,
    or returns False, having done nothing, when the Starlette app must serve it.
    """

    def __init__(
        self,
        app: starlette.applications.Starlette,
        routes: Sequence[BaseRoute],
        errors: tuple[type[Exception], ErrorHandler],
    ) -> None:
        self._app = app
        self._errors = errors
        # Only a prefix: a route the table cannot serve may match first.
        self._routes: list[_Entry] = []
        for route in routes:
            if not _plain(route):
                break
            assert isinstance(route, Route)
            self._routes.append(_Entry(route))

    def __bool__(self) -> bool:
        return bool(self._routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        # Route.matches, inlined: the same path, parameters and method check,
        # without a call, a tuple and a scope dict for every route tried.
        path = _route_path(scope) if scope.get("root_path") else scope["path"]
        for entry in self._routes:
            match = entry.match(path)
            if match is None:
                continue
            if entry.methods is not None and scope["method"] not in entry.methods:
                return False  # Starlette answers 405
            params: dict[str, Any] = match.groupdict()
            for key, convertor in entry.convertors:
                params[key] = convertor.convert(params[key])
            outer = scope.get("path_params")
            if outer:
                params = {**outer, **params}
            scope["app"] = self._app
            scope["router"] = self._app.router
            scope["endpoint"] = entry.endpoint
            scope["path_params"] = params
            request = Request(scope, receive, send)
            try:
                response = await entry.endpoint(request)
            except Exception as exc:
                handled = await self._error_response(request, exc)
                if handled is None:
                    # Starlette's error middleware: a 500, then the error goes
                    # on to the server, which logs it.
                    await PlainTextResponse("Internal Server Error", 500)(scope, receive, send)
                    raise
                response = handled
            if type(response).__call__ is _SEND_WHOLE:
                # What Response.__call__ does, without its coroutine.
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status_code,
                        "headers": response.raw_headers,
                    }
                )
                await send({"type": "http.response.body", "body": response.body})
                if response.background is not None:
                    await response.background()
            else:
                await response(scope, receive, send)
            return True
        return False

    async def _error_response(self, request: Request, exc: Exception) -> Response | None:
        """What Starlette's exception middleware answers (None: it would not handle it)."""
        if isinstance(exc, HTTPException):
            if exc.status_code in (204, 304):
                return Response(status_code=exc.status_code, headers=exc.headers)
            return PlainTextResponse(exc.detail, exc.status_code, headers=exc.headers)
        kind, handler = self._errors
        if isinstance(exc, kind):
            return await handler(request, exc)
        return None


class _Entry:
    """What matching one route needs, taken from the Starlette ``Route``."""

    __slots__ = ("match", "endpoint", "methods", "convertors")

    def __init__(self, route: Route) -> None:
        self.match: Callable[[str], re.Match[str] | None] = route.path_regex.match
        self.endpoint: Callable[[Request], Awaitable[Response]] = route.endpoint
        self.methods: set[str] | None = route.methods or None
        # A string parameter converts to itself: skip it.
        self.convertors: list[tuple[str, Convertor[Any]]] = [
            (key, convertor)
            for key, convertor in route.param_convertors.items()
            if type(convertor) is not StringConvertor
        ]


def _route_path(scope: Scope) -> str:
    """The path below ``root_path``, as Starlette's router matches it."""
    path: str = scope["path"]
    root: str = scope["root_path"]
    if path == root:
        return ""
    if path.startswith(root) and path[len(root)] == "/":
        return path[len(root) :]
    return path


def _plain(route: BaseRoute) -> bool:
    """A ``Route`` of an ``async def`` function with no route middleware."""
    if type(route) is not Route or not inspect.iscoroutinefunction(route.endpoint):
        return False
    # Starlette wraps a function endpoint in request_response (and route
    # middleware around that); only the bare wrapper behaves like our call.
    return getattr(route.app, "__qualname__", "") == "request_response.<locals>.app"
