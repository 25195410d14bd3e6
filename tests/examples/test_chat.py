"""The chat example over real sockets: the workers-chat-demo protocol, message by message."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from roost import App
from roost.runtime import ManualClock
from tests.conftest import Serve, ws_url

UNLIMITED = {"interval": 0.0, "burst": 1}


@pytest.fixture
def chat(examples: Callable[[str], ModuleType]) -> Callable[..., App]:
    module = examples("chat")

    def make(**options: Any) -> App:
        options.setdefault("rate_limit", UNLIMITED)
        app: App = module.create_app(**options)
        return app

    return make


def room(url: str, name: str = "lounge") -> str:
    return ws_url(url, f"/api/room/{name}/websocket")


async def join(clients: Any, url: str, name: str, *, room_name: str = "lounge") -> Any:
    """Connect, send the name, read up to {"ready": true}; return (socket, what came)."""
    sock = await clients(room(url, room_name))
    await sock.send({"name": name})
    seen = []
    while True:
        message = await sock.recv()
        if message == {"ready": True}:
            return sock, seen
        seen.append(message)


async def test_page_new_room_and_http_errors(chat: Callable[..., App], serve: Serve) -> None:
    async with serve(chat()) as url, httpx.AsyncClient(base_url=url) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "/api/room/" in page.text
        created = await http.post("/api/room")
        assert created.status_code == 200
        assert re.fullmatch(r"[0-9a-f]{64}", created.text)
        assert (await http.post("/api/room")).text != created.text
        plain = await http.get("/api/room/lounge/websocket")
        assert (plain.status_code, plain.text) == (400, "expected websocket")
        long = await http.get("/api/room/" + "x" * 33 + "/websocket")
        assert (long.status_code, long.text) == (404, "Name too long")
        assert (await http.get("/api/room/" + "x" * 32 + "/websocket")).status_code == 400
        foreign = await http.get("/api/room/" + "ab" * 32 + "/websocket")
        assert foreign.status_code == 404
        assert (await http.get("/api/room")).status_code == 405


async def test_upgrade_refused_for_long_name(chat: Callable[..., App], serve: Serve) -> None:
    async with serve(chat()) as url:
        with pytest.raises(InvalidStatus) as refused:
            await asyncio.wait_for(_connect(room(url, "y" * 33)), 5)
        assert refused.value.response.status_code == 404


async def _connect(url: str) -> None:
    from websockets.asyncio.client import connect

    async with connect(url):
        pass


async def test_join_order_and_quit(chat: Callable[..., App], serve: Serve, clients: Any) -> None:
    async with serve(chat()) as url:
        alice, seen = await join(clients, url, "alice")
        assert seen == []
        bob, seen = await join(clients, url, "bob")
        assert seen == [{"joined": "alice"}]
        assert await alice.recv() == {"joined": "bob"}
        carol, seen = await join(clients, url, "carol")
        assert seen == [{"joined": "alice"}, {"joined": "bob"}]
        assert await alice.recv() == {"joined": "carol"}
        assert await bob.recv() == {"joined": "carol"}
        # A member who never sent a name is not announced, and not listed.
        lurker = await clients(room(url))
        await bob.close()
        assert await alice.recv() == {"quit": "bob"}
        assert await carol.recv() == {"quit": "bob"}
        await lurker.close()
        await alice.send({"message": "still here"})
        assert (await carol.recv())["message"] == "still here"


async def test_broadcast_order_and_increasing_timestamps(
    chat: Callable[..., App], serve: Serve, clients: Any
) -> None:
    async with serve(chat()) as url:
        members = [await join(clients, url, f"m{i}") for i in range(3)]
        socks = [s for s, _ in members]
        for i, sock in enumerate(socks):  # drain the joined notices
            for _ in range(len(socks) - 1 - i):
                assert "joined" in await sock.recv()
        await asyncio.gather(
            *(sock.send({"message": f"{i}-{n}"}) for n in range(10) for i, sock in enumerate(socks))
        )
        streams = [await sock.recv_n(30) for sock in socks]
        assert streams[0] == streams[1] == streams[2]
        stamps = [m["timestamp"] for m in streams[0]]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        for i in range(3):  # each sender's own messages keep their order
            mine = [m["message"] for m in streams[0] if m["name"] == f"m{i}"]
            assert mine == [f"{i}-{n}" for n in range(10)]


async def test_limits_on_name_and_message(
    chat: Callable[..., App], serve: Serve, clients: Any
) -> None:
    async with serve(chat()) as url:
        sock = await clients(room(url))
        await sock.send({"name": "n" * 33})
        assert await sock.recv() == {"error": "Name too long."}
        with pytest.raises(ConnectionClosed) as closed:
            await sock.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        alice, _ = await join(clients, url, "a" * 32)
        await alice.send({"message": "m" * 257})
        assert await alice.recv() == {"error": "Message too long."}
        await alice.send({"message": "m" * 256})
        assert (await alice.recv())["message"] == "m" * 256
        await alice.send("not json")
        assert "error" in await alice.recv()


async def test_history_backlog_and_restart(
    chat: Callable[..., App], serve: Serve, clients: Any, tmp_path: Path
) -> None:
    async with serve(chat(data_dir=tmp_path)) as url:
        alice, _ = await join(clients, url, "alice")
        for n in range(105):
            await alice.send({"message": f"msg {n}"})
        sent = await alice.recv_n(105)
        await alice.close()
    assert [m["message"] for m in sent] == [f"msg {n}" for n in range(105)]
    # A new server on the same storage: history survives, capped at 100, oldest first.
    async with serve(chat(data_dir=tmp_path)) as url:
        bob, seen = await join(clients, url, "bob")
        assert seen == sent[5:]
        await bob.send({"message": "after restart"})
        latest = await bob.recv()
        assert latest["timestamp"] > sent[-1]["timestamp"]


async def test_rate_limit_per_ip(chat: Callable[..., App], serve: Serve, clients: Any) -> None:
    limited = {"error": "Your IP is being rate-limited, please try again later."}
    # An interval far longer than the test: exactly `burst` messages get through.
    async with serve(chat(rate_limit={"interval": 1000.0, "burst": 3})) as url:
        alice, _ = await join(clients, url, "alice")
        for n in range(3):
            await alice.send({"message": str(n)})
            assert (await alice.recv())["message"] == str(n)
        await alice.send({"message": "too many"})
        assert await alice.recv() == limited
        # The limiter is per IP, not per socket or room: another client from the
        # same address, in another room, is limited too.
        bob, _ = await join(clients, url, "bob", room_name="other")
        await bob.send({"message": "hello"})
        assert await bob.recv() == limited


async def test_rate_limiter_refills(
    examples: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    from roost import Runtime

    ratelimit = examples("chat").ratelimit
    now = [1000.0]
    monkeypatch.setattr(ratelimit, "monotonic", lambda: now[0])
    env = {"RATE_LIMIT": {"interval": 5.0, "burst": 2}}
    async with Runtime({"LIMITERS": ratelimit.RateLimiter}, env=env) as runtime:
        stub = runtime.env.LIMITERS.get_by_name("10.0.0.1")
        assert [await stub.take() for _ in range(2)] == [0.0, 0.0]
        assert await stub.take() == 5.0  # the burst is used up
        now[0] += 4.0
        assert await stub.take() == 1.0
        now[0] += 1.0
        assert await stub.take() == 0.0  # one message per interval, sustained
        assert await stub.take() == 5.0
        now[0] += 60.0  # a long pause refills the burst, no more
        assert [await stub.take() for _ in range(3)] == [0.0, 0.0, 5.0]
        other = runtime.env.LIMITERS.get_by_name("10.0.0.2")
        assert await other.take() == 0.0


async def test_hibernated_room_is_evicted_and_wakes(
    chat: Callable[..., App], serve: Serve, clients: Any
) -> None:
    clock = ManualClock()
    app = chat(clock=clock, idle_timeout=10.0)
    async with serve(app) as url:
        alice, _ = await join(clients, url, "alice")
        bob, _ = await join(clients, url, "bob")
        assert await alice.recv() == {"joined": "bob"}
        runtime = app.runtime
        room_id = app.env.ROOMS.id_from_name("lounge")
        assert runtime.is_live("ROOMS", room_id)
        await clock.advance(11.0)
        await _evict(runtime, "ROOMS", room_id)
        assert not runtime.is_live("ROOMS", room_id)
        assert runtime.websockets.statistics().hibernatable == 2
        # The auto-response is answered without waking the room.
        await alice.send("ping")
        assert await alice.recv() == "pong"
        assert not runtime.is_live("ROOMS", room_id)
        before = runtime.statistics().activations
        await alice.send({"message": "anyone?"})
        got = [await alice.recv(), await bob.recv()]
        assert got[0] == got[1] and got[0]["name"] == "alice"
        # Re-created once (and the IP's rate limiter created on its first message).
        assert runtime.statistics().activations == before + 2
        assert runtime.is_live("ROOMS", room_id)
        # Attachments survived: the new instance knows both names.
        carol, seen = await join(clients, url, "carol")
        assert seen[:2] == [{"joined": "alice"}, {"joined": "bob"}]
        await bob.close()
        assert await alice.recv() == {"joined": "carol"}
        assert await alice.recv() == {"quit": "bob"}


async def _evict(runtime: Any, namespace: str, object_id: Any) -> None:
    # The last event's output gate may still be settling; give the loop a few turns.
    for _ in range(200):
        runtime.evict_idle()
        if not runtime.is_live(namespace, object_id):
            return
        await asyncio.sleep(0.005)
