"""A retryable failure (a commit that failed, as on a full disk) is answered 503
with Retry-After, not 500 (issue 23, minor)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx

from roost import App, DurableObject, Env, Request, Response
from roost.errors import CommitFailed

ServeWith = Callable[..., AbstractAsyncContextManager[str]]


class Disk(DurableObject):
    async def write(self) -> None:
        raise CommitFailed("disk full")


async def front(request: Request, env: Env) -> Response:
    if request.url.path == "/direct":
        raise CommitFailed("disk full")
    if request.url.path == "/rpc":
        await env.DISK.get_by_name("d").write()
    return Response("ok")


async def test_a_failed_commit_is_503_with_retry_after(hostile_server: ServeWith) -> None:
    async with (
        hostile_server(App({"DISK": Disk}, fetch=front)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        for path in ("/direct", "/rpc"):
            response = await client.get(path)
            assert response.status_code == 503, (path, response.text)
            assert response.headers["retry-after"] == "1"
        assert (await client.get("/")).text == "ok"
