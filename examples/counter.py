"""The classic atomic counter, one durable object per name.

    roost dev examples/counter.py
    curl localhost:8787/counter/apples/increment    ->  1
    curl localhost:8787/counter/apples/increment    ->  2
    curl localhost:8787/counter/apples              ->  2

``GET /counter/{name}`` returns the value, ``/increment`` and ``/decrement``
change it and return the new value, as plain-text integers; anything else is
404.  Values live in the object's storage and survive restarts.

It shows both ways into an object: the front code calls ``increment`` as RPC
(``await stub.increment()``) and forwards the other requests over HTTP to the
object's own ``fetch`` (``await stub.fetch(request)``).
"""

from __future__ import annotations

from roost import App, DurableObject, Env, Request, Response


class Counter(DurableObject):
    """One counter.  Each event runs alone against its storage, so a
    read-modify-write needs no lock (DESIGN §4)."""

    async def increment(self, by: int = 1) -> int:
        """RPC: add ``by`` and return the new value."""
        value: int = (await self.ctx.storage.get("value") or 0) + by
        await self.ctx.storage.put("value", value)
        return value

    async def decrement(self) -> int:
        """RPC: subtract one and return the new value."""
        return await self.increment(-1)

    async def fetch(self, request: Request) -> Response:
        """HTTP: the last path segment says what to do."""
        action = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        if action == "increment":
            value = await self.increment()
        elif action == "decrement":
            value = await self.decrement()
        else:
            value = await self.ctx.storage.get("value") or 0
        return text(str(value))


async def fetch(request: Request, env: Env) -> Response:
    """The front: route ``/counter/{name}[/increment|/decrement]`` to the named counter."""
    parts = request.url.path.strip("/").split("/")
    if request.method != "GET" or parts[0] != "counter" or len(parts) not in (2, 3):
        return text("Not Found", 404)
    if not parts[1] or (len(parts) == 3 and parts[2] not in ("increment", "decrement")):
        return text("Not Found", 404)
    stub = env.COUNTER.get_by_name(parts[1])
    if parts[-1] == "increment" and len(parts) == 3:
        # RPC: a method call, by value, with no HTTP in between.
        return text(str(await stub.increment()))
    # HTTP: the object's fetch() sees this request's method, path and headers.
    return await stub.fetch(request)


def text(body: str, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="text/plain")


app = App({"COUNTER": Counter}, fetch=fetch)
