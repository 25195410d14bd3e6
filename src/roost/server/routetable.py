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
from collections.abc import Awaitable, Callable, Sequence

import starlette.applications
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Receive, Scope, Send

__all__ = ["RouteTable"]

ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


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
        self._routes: list[Route] = []
        for route in routes:
            if not _plain(route):
                break
            assert isinstance(route, Route)
            self._routes.append(route)

    def __bool__(self) -> bool:
        return bool(self._routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        for route in self._routes:
            match, child = route.matches(scope)
            if match is Match.NONE:
                continue
            if match is not Match.FULL:
                return False  # e.g. the wrong method: Starlette answers 405
            scope["app"] = self._app
            scope["router"] = self._app.router
            scope.update(child)
            request = Request(scope, receive, send)
            try:
                response = await route.endpoint(request)
            except Exception as exc:
                handled = await self._error_response(request, exc)
                if handled is None:
                    # Starlette's error middleware: a 500, then the error goes
                    # on to the server, which logs it.
                    await PlainTextResponse("Internal Server Error", 500)(scope, receive, send)
                    raise
                response = handled
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


def _plain(route: BaseRoute) -> bool:
    """A ``Route`` of an ``async def`` function with no route middleware."""
    if type(route) is not Route or not inspect.iscoroutinefunction(route.endpoint):
        return False
    # Starlette wraps a function endpoint in request_response (and route
    # middleware around that); only the bare wrapper behaves like our call.
    return getattr(route.app, "__qualname__", "") == "request_response.<locals>.app"
