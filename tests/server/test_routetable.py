"""The direct path to plain async routes answers exactly as Starlette would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from roost import App, DurableObject
from tests.server.test_app import asgi_client


class Box(DurableObject):
    async def put(self, value: str) -> str:
        self.ctx.storage.put("v", value)
        return value


async def store(request: Request) -> Response:
    stub = request.state.env.BOX.get_by_name(request.path_params["name"])
    value = await stub.put(request.query_params.get("v", ""))
    return PlainTextResponse(f"{value} {request.url_for('store', name='other').path}")


async def teapot(request: Request) -> Response:
    raise HTTPException(418, "short and stout", headers={"x-tea": "yes"})


async def empty(request: Request) -> Response:
    raise HTTPException(204)


async def bad_id(request: Request) -> Response:
    request.state.env.BOX.id_from_string("not-an-id")
    raise AssertionError("unreachable")


async def boom(request: Request) -> Response:
    raise ValueError("handler failed")


def sync_endpoint(request: Request) -> Response:
    return PlainTextResponse("sync")


async def post_only(request: Request) -> Response:
    return PlainTextResponse("posted")


async def mounted(request: Request) -> Response:
    return PlainTextResponse("mounted")


RAN: list[str] = []


async def with_background(request: Request) -> Response:
    async def after(what: str) -> None:
        RAN.append(what)

    return PlainTextResponse("sent", background=BackgroundTask(after, "after the response"))


async def streamed(request: Request) -> Response:
    async def parts() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    return StreamingResponse(parts(), media_type="text/plain")


async def number(request: Request) -> Response:
    n = request.path_params["n"]
    return PlainTextResponse(f"{type(n).__name__} {n} {request.url_for('number', n=n + 1).path}")


ROUTES = [
    Route("/box/{name}", store, name="store"),
    Route("/teapot", teapot),
    Route("/empty", empty),
    Route("/bad-id", bad_id),
    Route("/boom", boom),
    Route("/post", post_only, methods=["POST"]),
    Route("/n/{n:int}", number, name="number"),
    Route("/background", with_background),
    Route("/streamed", streamed),
    Route("/sync", sync_endpoint),  # not plain: it and what follows go through Starlette
    Mount("/m", routes=[Route("/x", mounted)]),
]


def make_app() -> App:
    return App({"BOX": Box}, routes=ROUTES)


async def test_plain_routes_never_build_starlettes_stack() -> None:
    app = make_app()
    async with asgi_client(app) as client:
        response = await client.get("/box/a?v=hello")
        assert (response.status_code, response.text) == (200, "hello /box/other")
        assert (await client.post("/post")).text == "posted"
        front = app._front
        assert front is not None and front.middleware_stack is None  # type: ignore[attr-defined]
        assert (await client.get("/sync")).text == "sync"  # not plain: Starlette serves it
        assert front.middleware_stack is not None  # type: ignore[attr-defined]


async def test_errors_answer_as_starlette_does() -> None:
    async with asgi_client(make_app()) as client:
        response = await client.get("/teapot")
        assert (response.status_code, response.text) == (418, "short and stout")
        assert response.headers["x-tea"] == "yes"
        assert (await client.get("/empty")).status_code == 204
        response = await client.get("/bad-id")
        assert response.status_code == 400 and "Bad Request" in response.text
    transport_app = make_app()
    async with asgi_client(transport_app) as client:
        # The server sees the error after the 500 (httpx's transport re-raises it).
        with pytest.raises(ValueError, match="handler failed"):
            await client.get("/boom")


async def test_what_the_table_does_not_serve_goes_to_starlette() -> None:
    async with asgi_client(make_app()) as client:
        assert (await client.get("/post")).status_code == 405
        assert (await client.get("/m/x")).text == "mounted"
        assert (await client.get("/nowhere")).status_code == 404


@pytest.mark.parametrize("root_path", ["", "/api"])
async def test_paths_and_parameters_match_as_in_starlette(root_path: str) -> None:
    starlette = Starlette(routes=ROUTES)
    app = make_app()

    async def plain(scope: Any, receive: Any, send: Any) -> None:
        scope.setdefault("state", {})["env"] = app.env  # what App adds
        await starlette(scope, receive, send)

    served_directly = ["/box/a", "/n/41", "/teapot"]
    paths = [*served_directly, "/n/x", "/n/", "/box", "/box/a/b", "/post"]
    try:
        for i, path in enumerate(paths):
            answers = []
            for served in (app, plain):
                transport = httpx.ASGITransport(app=served, root_path=root_path)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                    response = await client.get(root_path + path)
                answers.append((response.status_code, response.text))
            assert answers[0] == answers[1], path
            if i < len(served_directly):  # ...by the table, not by Starlette
                assert app._front.middleware_stack is None  # type: ignore[union-attr]
    finally:
        await app.close()


async def test_background_tasks_and_streaming_responses() -> None:
    app = make_app()
    async with asgi_client(app) as client:
        assert (await client.get("/background")).text == "sent"
        assert RAN == ["after the response"]
        response = await client.get("/streamed")
        assert response.text == "ab"
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert app._front is not None and app._front.middleware_stack is None  # type: ignore[attr-defined]
