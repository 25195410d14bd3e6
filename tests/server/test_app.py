"""roost.App: the three front styles, env access, errors at the HTTP boundary."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from roost import App, DurableObject, Env, Request, Response
from roost.testing import ManualClock
from tests.conftest import Serve


class Mirror(DurableObject):
    """Answers with what it received."""

    gate: asyncio.Event | None = None

    async def fetch(self, request: Request) -> Response:
        if request.url.path == "/slow" and Mirror.gate is not None:
            await Mirror.gate.wait()
        if request.url.path == "/boom":
            raise ValueError("object failed")
        body = await request.body()
        return JSONResponse(
            {
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "header": request.headers.get("x-test"),
                "body": body.decode(),
            }
        )


async def mirror_front(request: Request, env: Env) -> Response:
    if request.url.path == "/bad-return":
        return "not a response"  # type: ignore[return-value]
    return await env.MIRROR.get_by_name("m").fetch(request)


@contextlib.asynccontextmanager
async def asgi_client(app: App) -> AsyncIterator[httpx.AsyncClient]:
    # No lifespan here: the App starts its runtime on the first request.
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
    finally:
        await app.close()


async def test_fetch_front_keeps_method_headers_body_and_query() -> None:
    app = App({"MIRROR": Mirror}, fetch=mirror_front)
    async with asgi_client(app) as client:
        response = await client.post(
            "/some/path?a=1&b=two", content=b"payload", headers={"x-test": "yes"}
        )
    assert response.status_code == 200
    assert response.json() == {
        "method": "POST",
        "path": "/some/path",
        "query": "a=1&b=two",
        "header": "yes",
        "body": "payload",
    }


async def test_fetch_front_errors_become_500_and_overload_503() -> None:
    Mirror.gate = asyncio.Event()
    app = App({"MIRROR": Mirror}, fetch=mirror_front, max_queue=1)
    try:
        async with asgi_client(app) as client:
            assert (await client.get("/boom")).status_code == 500
            assert (await client.get("/bad-return")).status_code == 500
            slow = asyncio.ensure_future(client.get("/slow"))
            for _ in range(100):
                if app.runtime.statistics().events_in_flight:
                    break
                await asyncio.sleep(0.005)
            refused = await client.get("/fast")
            assert refused.status_code == 503
            Mirror.gate.set()
            assert (await slow).status_code == 200
    finally:
        Mirror.gate = None


async def test_a_call_past_its_timeout_is_504() -> None:
    Mirror.gate = asyncio.Event()
    clock = ManualClock()
    app = App({"MIRROR": Mirror}, fetch=mirror_front, clock=clock, call_timeout=5)
    try:
        async with asgi_client(app) as client:
            slow = asyncio.ensure_future(client.get("/slow"))
            for _ in range(100):
                if app.runtime.statistics().events_in_flight:
                    break
                await asyncio.sleep(0.005)
            await clock.advance(4)
            assert not slow.done()
            await clock.advance(2)
            response = await slow
            assert response.status_code == 504
            assert "did not finish within 5 s" in response.text
            assert (await client.get("/fast")).status_code == 200
    finally:
        Mirror.gate = None


async def test_routes_front_reads_env_from_request_state() -> None:
    async def route(request: StarletteRequest) -> Response:
        stub = request.state.env.MIRROR.get_by_name(request.path_params["name"])
        return await stub.fetch(request)

    async def config(request: StarletteRequest) -> PlainTextResponse:
        return PlainTextResponse(request.state.env.GREETING)

    app = App(
        {"MIRROR": Mirror},
        routes=[Route("/m/{name}", route, methods=["GET", "PUT"]), Route("/hello", config)],
        env={"GREETING": "hi"},
    )
    async with asgi_client(app) as client:
        response = await client.put("/m/x?q=1", content=b"data")
        assert response.json()["body"] == "data"
        assert response.json()["method"] == "PUT"
        assert (await client.get("/hello")).text == "hi"
        assert (await client.get("/nowhere")).status_code == 404


async def test_asgi_front_runs_its_own_lifespan(serve: Serve) -> None:
    log: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        log.append("startup")
        yield {"token": "from-lifespan"}
        log.append("shutdown")

    async def home(request: StarletteRequest) -> Response:
        value = await request.state.env.MIRROR.get_by_name("m").fetch("/x?y=1")
        return PlainTextResponse(request.state.token + " " + value.json()["query"])

    front = Starlette(routes=[Route("/", home)], lifespan=lifespan)
    app = App({"MIRROR": Mirror}, asgi=front)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        assert log == ["startup"]
        assert (await client.get("/")).text == "from-lifespan y=1"
    assert log == ["startup", "shutdown"]


def test_app_takes_exactly_one_front() -> None:
    with pytest.raises(TypeError):
        App({"MIRROR": Mirror})
    with pytest.raises(TypeError):
        App({"MIRROR": Mirror}, fetch=mirror_front, routes=[])
    with pytest.raises(TypeError):
        App({"MIRROR": object}, fetch=mirror_front)  # type: ignore[dict-item]


async def test_data_dir_is_fixed_once_the_runtime_exists(tmp_path: Any) -> None:
    app = App({"MIRROR": Mirror}, fetch=mirror_front)
    app.data_dir = tmp_path
    assert app.env.MIRROR.name == "MIRROR"
    assert app.runtime.data_dir == tmp_path
    with pytest.raises(RuntimeError):
        app.data_dir = tmp_path / "other"


def test_durability_is_set_before_the_runtime_exists(tmp_path: Any) -> None:
    app = App({"MIRROR": Mirror}, fetch=mirror_front, data_dir=tmp_path)
    assert app.durability == "full"
    app.durability = "process"
    with pytest.raises(ValueError, match="durability"):
        app.durability = "sometimes"
    assert app.runtime.engine.durability == "process"  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="runtime exists"):
        app.durability = "full"
    assert App({"MIRROR": Mirror}, fetch=mirror_front, durability="process").durability == (
        "process"
    )
