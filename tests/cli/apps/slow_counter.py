"""A counter whose increments stay in flight for a while (for shutdown tests)."""

from __future__ import annotations

import asyncio

from roost import App, DurableObject, Env, Request, Response


class SlowCounter(DurableObject):
    async def increment(self) -> int:
        value: int = (await self.ctx.storage.get("value") or 0) + 1
        await self.ctx.storage.put("value", value)
        await asyncio.sleep(1.0)  # outside I/O: other increments interleave here
        return value

    async def fetch(self, request: Request) -> Response:
        ws = request.websocket
        if ws is None:
            return Response(str(await self.ctx.storage.get("value") or 0))
        self.ctx.accept_websocket(ws)
        return Response(status_code=101)

    async def websocket_message(self, ws: object, message: str | bytes) -> None:
        pass


async def fetch(request: Request, env: Env) -> Response:
    stub = env.COUNTER.get_by_name("c")
    if request.url.path == "/increment":
        return Response(str(await stub.increment()))
    return await stub.fetch(request)


app = App({"COUNTER": SlowCounter}, fetch=fetch)
