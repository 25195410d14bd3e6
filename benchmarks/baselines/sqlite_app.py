"""Baseline (b): the same app, durable the naive way.

One SQLite ``UPDATE`` (an upsert) and one commit per request through aiosqlite,
with ``synchronous=FULL`` in WAL mode: what a developer writes when asked to
make the dict baseline survive a crash.  The database path comes from
``COUNTER_DB`` (default ``counters.sqlite3``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import aiosqlite
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

db: aiosqlite.Connection


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    global db
    db = await aiosqlite.connect(os.environ.get("COUNTER_DB", "counters.sqlite3"))
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=FULL")
    await db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER)")
    await db.commit()
    yield
    await db.close()


async def read(request: Request) -> PlainTextResponse:
    async with db.execute(
        "SELECT value FROM counters WHERE name = ?", (request.path_params["name"],)
    ) as cursor:
        row = await cursor.fetchone()
    return PlainTextResponse(str(row[0] if row else 0))


async def change(request: Request, by: int) -> PlainTextResponse:
    rows = await db.execute_fetchall(
        "INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ? "
        "RETURNING value",
        (request.path_params["name"], by, by),
    )
    await db.commit()
    return PlainTextResponse(str(next(iter(rows))[0]))


async def increment(request: Request) -> PlainTextResponse:
    return await change(request, 1)


async def decrement(request: Request) -> PlainTextResponse:
    return await change(request, -1)


app = Starlette(
    routes=[
        Route("/counter/{name}", read),
        Route("/counter/{name}/increment", increment),
        Route("/counter/{name}/decrement", decrement),
    ],
    lifespan=lifespan,
)
