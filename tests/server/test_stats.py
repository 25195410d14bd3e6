"""The opt-in statistics route."""

from __future__ import annotations

import httpx
from websockets.asyncio.client import connect

from roost import App, DurableObject, Env, Request, Response
from tests.conftest import Serve, ws_url


class Spot(DurableObject):
    async def fetch(self, request: Request) -> Response:
        if request.websocket is not None:
            self.ctx.accept_websocket(request.websocket)
            return Response(status_code=101)
        return Response("spot", media_type="text/plain")


async def front(request: Request, env: Env) -> Response:
    return await env.SPOT.get_by_name("s").fetch(request)


async def test_stats_route_is_off_by_default(serve: Serve) -> None:
    async with serve(App({"SPOT": Spot}, fetch=front)) as url, httpx.AsyncClient() as http:
        assert (await http.get(url + "/_roost/stats")).text == "spot"


async def test_stats_route_reports_objects_and_sockets(serve: Serve) -> None:
    app = App({"SPOT": Spot}, fetch=front, stats_path="/_roost/stats")
    async with serve(app) as url, httpx.AsyncClient() as http:
        async with connect(ws_url(url, "/")):
            answer = await http.get(url + "/_roost/stats")
        assert answer.status_code == 200
        assert answer.headers["cache-control"] == "no-store"
        stats = answer.json()
        assert stats["runtime"]["live_objects"] == 1
        assert stats["websockets"]["hibernatable"] == 1
        assert stats["websockets"]["connections"] == 1
        assert stats["alarms"]["delivered"] == 0
        assert stats["process"]["rss_bytes"] > 0
        assert stats["storage"]["durability"] is None  # in memory: nothing is durable
        assert (await http.get(url + "/elsewhere")).text == "spot"
