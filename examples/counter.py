"""The classic atomic counter, one durable object per name.

    roost dev examples/counter.py
    curl localhost:8787/counter/apples/increment    ->  1
    curl localhost:8787/counter/apples/increment    ->  2
    curl localhost:8787/counter/apples              ->  2

``GET /counter/{name}`` returns the value, ``/increment`` and ``/decrement``
change it and return the new value, as plain-text integers; any other path is
404.  Values live in the object's storage and survive restarts.

It shows both ways into an object: the front calls ``value`` and ``increment``
as RPC (``await stub.increment()``: a method call, by value), and forwards the
decrement request over HTTP to the object's own ``fetch``
(``await stub.fetch(request)``: the object sees the method, path and headers).
"""

from __future__ import annotations

from starlette.routing import Route

from roost import App, DurableObject, Request, Response, Stub


class Counter(DurableObject):
    """One counter.  Each event runs alone against its storage, so a
    read-modify-write needs no lock (docs/consistency.md)."""

    async def value(self) -> int:
        """RPC: the current value."""
        return int(await self.ctx.storage.get("value") or 0)

    async def increment(self, by: int = 1) -> int:
        """RPC: add ``by`` and return the new value."""
        value = await self.value() + by
        self.ctx.storage.put("value", value)  # no await needed: the output gate holds the reply
        return value

    async def decrement(self) -> int:
        """RPC: subtract one and return the new value."""
        return await self.increment(-1)

    async def fetch(self, request: Request) -> Response:
        """HTTP: ``.../decrement`` subtracts one; any other path reads."""
        if request.url.path.endswith("/decrement"):
            return text(await self.decrement())
        return text(await self.value())


def counter(request: Request) -> Stub:
    """The stub of the counter named in the path (front code reaches objects by stubs)."""
    return request.state.env.COUNTER.get_by_name(request.path_params["name"])


async def read(request: Request) -> Response:
    return text(await counter(request).value())


async def increment(request: Request) -> Response:
    return text(await counter(request).increment())


async def decrement(request: Request) -> Response:
    return await counter(request).fetch(request)


def text(value: int) -> Response:
    return Response(str(value), media_type="text/plain")


routes = [
    Route("/counter/{name}", read),
    Route("/counter/{name}/increment", increment),
    Route("/counter/{name}/decrement", decrement),
]

app = App({"COUNTER": Counter}, routes=routes)
