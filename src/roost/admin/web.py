"""The admin server: ``/metrics`` and a small web page, on a port of their own, behind a token.

:class:`AdminApp` is an ASGI app that ``roost serve APP --admin HOST:PORT``
serves beside the app (``roost.server.Server(admin=...)``), never on the app's
own port.  Everything it answers needs ``Authorization: Bearer TOKEN``
(compared in constant time) except the page's static shell (``/`` and its
script and style sheet, which hold no data: the page asks for the token and
sends it on every ``fetch()``) and what the deployer opened explicitly
(``open_metrics=True``: ``/metrics`` without the token).  No cookies are
used, so there is nothing for another site to ride on (CSRF), and no CORS
headers are sent, so another origin's script cannot read an answer.

The JSON API the page uses:

* ``GET /api/overview``: namespaces (class, SQL or not, stored and live
  objects), the runtime's statistics (``roost.server.stats``), the main
  counters for the live charts;
* ``GET /api/objects?namespace=NS&q=TEXT&after=CURSOR&limit=N``: stored
  objects (:func:`roost.admin.list_objects`): in ID order, or with ``q`` the
  object named ``q`` (found by its ID, derived from the name) and then those
  whose stored name starts with ``q``, in name order (a whole 64-character ID
  as ``q``: that object); keyset paging, ``after`` being the ``next`` of the page
  before;
* ``GET /api/object?namespace=NS&id=ID`` (or ``&name=NAME``): one object's
  storage (:func:`roost.admin.show_object`): its KV pairs (values rendered
  with :func:`roost.admin.render_value`), its SQL tables and row counts, its
  alarm, whether it is live;
* ``GET /api/errors``: the last error records of the ``roost.*`` loggers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import starlette.responses
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..errors import InvalidObjectId
from ..server.stats import statistics
from .errors_log import RecentErrors
from .inspect import ObjectInfo, ObjectNotFound, list_objects, render_value, show_object
from .metrics import DEFAULT_SAMPLE_EVERY, EventMetrics, make_registry, storage_bytes

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..server import App

__all__ = ["AdminApp", "new_token"]

#: Where the page's files are (package data: ``pyproject.toml``).
STATIC_DIR: Final = Path(__file__).parent / "static"
#: The files of the page's shell: served without the token (they hold no data).
STATIC: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/admin.js": ("admin.js", "text/javascript; charset=utf-8"),
    "/static/admin.css": ("admin.css", "text/css; charset=utf-8"),
}
#: Most objects listed per page, and most KV pairs shown of one object.
MAX_PAGE: Final = 200
MAX_PAIRS: Final = 1000
#: Longest string shown of a value (characters); the rest is cut and marked.
MAX_VALUE_TEXT: Final = 4000
_HEX_ID: Final = re.compile(r"[0-9a-f]{64}")

#: Headers on every answer: the page runs only its own script (no inline
#: script, so an injected ``<script>`` could not run even if it reached the
#: DOM), is never framed, and nothing is cached or leaks a referrer.
SECURITY_HEADERS: Final = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def new_token() -> str:
    """A fresh admin token (``secrets.token_urlsafe(32)``: 256 random bits)."""
    return secrets.token_urlsafe(32)


class AdminApp:
    """The admin ASGI app of one served :class:`~roost.App` (see the module docstring).

    Parameters
    ----------
    app:
        The app whose runtime is shown.
    token:
        The bearer token every request (but the static shell) must carry.
    event_metrics:
        Observe every event (``roost_events``, ``roost_overloads``, queue
        depth, event duration).  Off by default: it costs CPU on every event
        (``docs/monitoring.md``).  Commit and fsync latencies and everything
        read from the runtime's own counters are always there.
    open_metrics:
        Serve ``/metrics`` without the token (for a scraper that cannot send
        one); off by default.
    sample_every:
        With ``event_metrics``, one event in this many is timed.
    """

    def __init__(
        self,
        app: App,
        token: str,
        *,
        event_metrics: bool = False,
        open_metrics: bool = False,
        sample_every: int = DEFAULT_SAMPLE_EVERY,
    ) -> None:
        if not token:
            raise ValueError("the admin token must not be empty")
        self.app = app
        self._token = token.encode()
        self.event_metrics = event_metrics
        self.open_paths = frozenset(STATIC) | ({"/metrics"} if open_metrics else frozenset())
        self.events = EventMetrics(sample_every=sample_every)
        self.registry, self.collector = make_registry(app, self.events)
        self.errors = RecentErrors()
        self._site = Starlette(
            routes=[
                Route("/metrics", self.metrics),
                Route("/api/overview", self.overview),
                Route("/api/objects", self.objects),
                Route("/api/object", self.object_view),
                Route("/api/errors", self.recent_errors),
                *(Route(path, self.static) for path in STATIC),
            ],
            lifespan=self._lifespan,
        )

    # -- serving ---------------------------------------------------------------------

    def on_serve(self, server: Any) -> None:
        """Called by ``roost.server.Server`` with the app's server (its request counters)."""
        self.collector.server_state = getattr(server, "server_state", None)

    def start(self) -> None:
        """Start observing the app's runtime and keeping its error records (idempotent)."""
        self.events.install(self.app.runtime.host, events=self.event_metrics)
        self.errors.attach()

    def stop(self) -> None:
        """Stop keeping error records (the metrics stay installed: they cost nothing idle)."""
        self.errors.detach()

    @contextlib.asynccontextmanager
    async def _lifespan(self, _site: Starlette) -> AsyncIterator[None]:
        self.start()
        try:
            yield
        finally:
            self.stop()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.open_paths:
            if not self.authorized(scope):
                response = starlette.responses.PlainTextResponse(
                    "401 Unauthorized: send Authorization: Bearer TOKEN (ROOST_ADMIN_TOKEN)\n",
                    401,
                    headers={"www-authenticate": 'Bearer realm="roost admin"', **SECURITY_HEADERS},
                )
                await response(scope, receive, send)
                return
        elif scope["type"] == "websocket":  # the admin server takes none
            await send({"type": "websocket.close", "code": 1008})
            return
        await self._site(scope, receive, send)

    def authorized(self, scope: Scope) -> bool:
        """Whether the request carries the token (compared in constant time)."""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    return hmac.compare_digest(given.strip(), self._token)
                return False
        return False

    # -- routes ----------------------------------------------------------------------

    async def static(self, request: Request) -> starlette.responses.Response:
        name, media_type = STATIC[request.url.path]
        body = (STATIC_DIR / name).read_bytes()
        return starlette.responses.Response(body, media_type=media_type, headers=SECURITY_HEADERS)

    async def metrics(self, request: Request) -> starlette.responses.Response:
        # The SQL objects' files are walked in a thread (there may be many);
        # everything else reads counters in memory, on the loop.
        self.collector.storage = await asyncio.to_thread(storage_bytes, self.app.runtime.data_dir)
        return starlette.responses.Response(
            generate_latest(self.registry),
            media_type=CONTENT_TYPE_LATEST,
            headers=SECURITY_HEADERS,
        )

    async def overview(self, request: Request) -> starlette.responses.Response:
        runtime = self.app.runtime
        live = _live_per_namespace(runtime)
        namespaces = [
            {
                "name": name,
                "class": cls.__qualname__,
                "sql": cls.sql_enabled,
                "stored": len(runtime.engine.list_object_ids(name)),
                "live": live.get(name, 0),
            }
            for name, cls in sorted(runtime.classes.items())
        ]
        events = self.events
        state = self.collector.server_state
        counters = {
            "http_requests": state.total_requests if state is not None else None,
            "events": sum(sum(n.values()) for n in events.events.values())
            if events.observing_events
            else None,
            "commits": runtime.engine.statistics().commits,
            "fsyncs": runtime.engine.statistics().syncs,
            "live_objects": runtime.statistics().live_objects,
            "websockets": len(getattr(self.app, "_connections", ())),
            "errors": len(self.errors.records()),
        }
        return _json(
            {
                "namespaces": namespaces,
                "counters": counters,
                "statistics": statistics(
                    runtime, websockets=len(getattr(self.app, "_connections", ()))
                ),
                "event_metrics": events.observing_events,
            }
        )

    async def objects(self, request: Request) -> starlette.responses.Response:
        runtime = self.app.runtime
        params = request.query_params
        namespace = _namespace(runtime, params.get("namespace", ""))
        if namespace is None:
            return _json({"error": "no such namespace"}, 404)
        try:
            limit = max(1, min(MAX_PAGE, int(params.get("limit", "50"))))
        except ValueError:
            return _json({"error": "limit must be a whole number"}, 400)
        query = params.get("q", "").strip()
        if _HEX_ID.fullmatch(query.lower()):  # a whole ID: that object, if it stores anything
            try:
                whole = [show_object(runtime, namespace, query.lower(), max_entries=0).info]
            except ObjectNotFound:
                whole = []
            return _json({"namespace": namespace, "objects": [_listed(i) for i in whole],
                          "next": None})  # fmt: skip
        try:
            page = list_objects(
                runtime, namespace, prefix=query or None, after=params.get("after"), limit=limit
            )
        except ValueError as exc:  # a cursor of another listing
            return _json({"error": str(exc)}, 400)
        found = page.objects
        if query and params.get("after") is None:
            # The object named exactly ``q`` first: its ID is derived from the
            # name, so it is found even when storage does not know its name.
            named = _named(runtime, namespace, query)
            if named is not None:
                found = [named, *(i for i in found if i.object_id != named.object_id)]
        return _json(
            {
                "namespace": namespace,
                "objects": [_listed(info) for info in found],
                "next": page.next_after,
            }
        )

    async def object_view(self, request: Request) -> starlette.responses.Response:
        runtime = self.app.runtime
        params = request.query_params
        namespace = _namespace(runtime, params.get("namespace", ""))
        if namespace is None:
            return _json({"error": "no such namespace"}, 404)
        name = params.get("name")
        try:
            view = show_object(
                runtime,
                namespace,
                None if name is not None else params.get("id", ""),
                name=name,
                max_entries=MAX_PAIRS,
            )
        except ObjectNotFound as exc:
            return _json({"error": str(exc)}, 404)
        except InvalidObjectId as exc:
            return _json({"error": str(exc)}, 400)
        return _json(
            {
                **view.to_json(),
                "class": runtime.classes[namespace].__qualname__,
                # Rendered for reading, in place of to_json's lossless values.
                "entries": [
                    {"key": key, "value": render_value(value, limit=MAX_VALUE_TEXT)}
                    for key, value in view.entries
                ],
            }
        )

    async def recent_errors(self, request: Request) -> starlette.responses.Response:
        return _json({"errors": [r.as_json() for r in self.errors.records()]})


def _json(body: Any, status: int = 200) -> starlette.responses.Response:
    return starlette.responses.JSONResponse(body, status, headers=SECURITY_HEADERS)


def _namespace(runtime: Runtime, given: str) -> str | None:
    return given if given in runtime.classes else None


def _named(runtime: Runtime, namespace: str, name: str) -> ObjectInfo | None:
    try:
        return show_object(runtime, namespace, name=name, max_entries=0).info
    except ObjectNotFound:
        return None


def _listed(info: ObjectInfo) -> dict[str, Any]:
    return info.to_json()


def _live_per_namespace(runtime: Runtime) -> dict[str, int]:
    counts: dict[str, int] = {}
    for act in list(runtime.host._live.values()):
        counts[act.namespace] = counts.get(act.namespace, 0) + 1
    return counts
