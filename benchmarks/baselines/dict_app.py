"""Baseline (a): a Starlette app keeping the counters in a dict — the in-memory ceiling.

Same routes as ``examples/counter.py``; nothing is durable.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

counters: dict[str, int] = {}


async def read(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(counters.get(request.path_params["name"], 0)))


async def increment(request: Request) -> PlainTextResponse:
    name = request.path_params["name"]
    counters[name] = value = counters.get(name, 0) + 1
    return PlainTextResponse(str(value))


async def decrement(request: Request) -> PlainTextResponse:
    name = request.path_params["name"]
    counters[name] = value = counters.get(name, 0) - 1
    return PlainTextResponse(str(value))


app = Starlette(
    routes=[
        Route("/counter/{name}", read),
        Route("/counter/{name}/increment", increment),
        Route("/counter/{name}/decrement", decrement),
    ]
)
