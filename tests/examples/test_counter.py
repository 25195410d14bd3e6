"""The counter example over real sockets: routes, atomicity, persistence across restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import httpx

from roost import App
from tests.conftest import Serve


def counter_app(examples: Callable[[str], ModuleType], data_dir: Path) -> App:
    module = examples("counter")
    return App({"COUNTER": module.Counter}, routes=module.routes, data_dir=data_dir)


async def test_routes(examples: Callable[[str], ModuleType], serve: Serve, tmp_path: Path) -> None:
    async with (
        serve(counter_app(examples, tmp_path)) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):

        async def get(path: str) -> tuple[int, str]:
            response = await http.get(path)
            return response.status_code, response.text

        assert await get("/counter/apples") == (200, "0")
        assert await get("/counter/apples/increment") == (200, "1")
        assert await get("/counter/apples/increment") == (200, "2")
        assert await get("/counter/apples/decrement") == (200, "1")
        assert await get("/counter/apples") == (200, "1")
        assert await get("/counter/pears/decrement") == (200, "-1")
        assert await get("/counter/apples") == (200, "1")  # counters are independent
        for path in ("/", "/counter", "/counter/", "/counter/a/reset", "/counter/a/b/c", "/x/a"):
            assert (await get(path))[0] == 404, path
        assert (await http.post("/counter/apples/increment")).status_code == 405
        response = await http.get("/counter/apples")
        assert response.headers["content-type"].startswith("text/plain")


async def test_concurrent_increments_are_atomic_and_survive_restart(
    examples: Callable[[str], ModuleType], serve: Serve, tmp_path: Path
) -> None:
    async with (
        serve(counter_app(examples, tmp_path)) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        paths = ["/counter/c/increment"] * 60 + ["/counter/c/decrement"] * 20
        results = await asyncio.gather(*(http.get(p) for p in paths))
        assert all(r.status_code == 200 for r in results)
        assert (await http.get("/counter/c")).text == "40"
    async with (
        serve(counter_app(examples, tmp_path)) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        assert (await http.get("/counter/c")).text == "40"
        assert (await http.get("/counter/c/increment")).text == "41"


async def test_the_example_module_exposes_app_and_rpc(
    examples: Callable[[str], ModuleType],
) -> None:
    module = examples("counter")
    assert isinstance(module.app, App)
    from roost import Runtime

    async with Runtime({"COUNTER": module.Counter}) as runtime:
        stub = runtime.env.COUNTER.get_by_name("rpc")
        assert await stub.increment() == 1
        assert await stub.increment(5) == 6
        assert await stub.decrement() == 5
