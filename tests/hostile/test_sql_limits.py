"""Hostile SQL against a real server: a runaway query, a huge BLOB, a database that
grows without end.  Each is refused with a clear error within its limit, while a
normal client keeps being served and nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
from starlette.responses import JSONResponse

import roost
from roost import App, Request, Response, SqlLimits

LIMITS = SqlLimits(statement_timeout=0.2, max_row_bytes=100_000, max_database_bytes=256 * 1024)
RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


class Notes(roost.DurableObject, sql=True):
    """Runs the query in the request body and answers with its rows or its error."""

    def __init__(self, ctx: roost.ObjectState, env: roost.Env) -> None:
        super().__init__(ctx, env)
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS notes (body TEXT)")

    async def fetch(self, request: Request) -> Response:
        query = (await request.body()).decode()
        try:
            rows: Any = self.ctx.storage.sql.exec(query).to_list()
        except roost.RoostError as exc:
            return JSONResponse({"error": type(exc).__name__, "message": str(exc)}, status_code=400)
        return JSONResponse(rows)


async def front(request: Request, env: roost.Env) -> Response:
    return await env.NOTES.get_by_name(request.url.path.strip("/")).fetch(request)


async def test_hostile_sql_is_refused_while_others_are_served(serve: Any, tmp_path: Path) -> None:
    app = App({"NOTES": Notes}, fetch=front, data_dir=tmp_path / "data", sql_limits=LIMITS)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        insert = "INSERT INTO notes VALUES ('acknowledged')"
        assert (await client.post("/victim", content=insert)).status_code == 200

        async def normal() -> float:
            await asyncio.sleep(0.05)  # let the hostile query start first
            started = time.monotonic()
            response = await client.post("/victim", content="SELECT count(*) AS n FROM notes")
            assert response.json() == [{"n": 1}]
            return time.monotonic() - started

        started = time.monotonic()
        hostile, waited = await asyncio.gather(client.post("/attacker", content=RUNAWAY), normal())
        assert time.monotonic() - started < 2.0
        assert hostile.status_code == 400
        assert hostile.json()["error"] == "SqlTimeout"
        assert "time limit of 0.2 s" in hostile.json()["message"]
        assert waited < 1.0  # held up by at most the time limit

        huge = await client.post(
            "/attacker", content="INSERT INTO notes VALUES (zeroblob(950000000))"
        )
        assert huge.json()["error"] == "StorageLimitExceeded"

        fill = "INSERT INTO notes VALUES (printf('%.50000c', 'x'))"
        for _ in range(20):
            response = await client.post("/attacker", content=fill)
            if response.status_code != 200:
                break
        assert response.json()["error"] == "StorageLimitExceeded"
        assert "size limit of 262144 bytes" in response.json()["message"]

        # The attacker's object still answers, and the victim lost nothing.
        assert (await client.post("/attacker", content="SELECT 1 AS one")).json() == [{"one": 1}]
        count = await client.post("/victim", content="SELECT body FROM notes")
        assert count.json() == [{"body": "acknowledged"}]
