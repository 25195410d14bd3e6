"""The chat example over real sockets, frame by frame against Cloudflare's workers-chat-demo.

The demo's ``src/chat.mjs`` is the reference: every sequence asserted here is the
one its ChatRoom sends.  ``examples/chat/README.md`` lists where Roost differs.
"""

from __future__ import annotations

import asyncio
import importlib
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from roost import App
from roost.runtime import ManualClock
from tests.conftest import Serve, ws_url

UNLIMITED = {"interval": 0.0, "burst": 1}
READY = {"ready": True}


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
    return sock, await name_and_read(sock, name)


async def name_and_read(sock: Any, name: str) -> list[Any]:
    """Send the name message, return every frame before {"ready": true}."""
    await sock.send({"name": name})
    seen = []
    while (message := await sock.recv()) != READY:
        seen.append(message)
    return seen


async def next_is_own_message(sock: Any, text: str) -> None:
    """Post ``text`` and check it is the very next frame: nothing else was pending."""
    await sock.send({"message": text})
    got = await sock.recv()
    assert isinstance(got, dict) and got.get("message") == text, got


async def close_code(sock: Any) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        await sock.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


# -- HTTP ---------------------------------------------------------------------------------


async def test_page_new_room_and_http_errors(chat: Callable[..., App], serve: Serve) -> None:
    async with serve(chat()) as url, httpx.AsyncClient(base_url=url) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "/api/room/" in page.text
        created = await http.post("/api/room")
        assert created.status_code == 200
        assert re.fullmatch(r"[0-9a-f]{64}", created.text)
        # The demo's page may be served from elsewhere: it fetches this cross-origin.
        assert created.headers["access-control-allow-origin"] == "*"
        assert (await http.post("/api/room")).text != created.text
        plain = await http.get("/api/room/lounge/websocket")
        assert (plain.status_code, plain.text) == (400, "expected websocket")
        assert (await http.get(f"/api/room/{created.text}/websocket")).status_code == 400
        long = await http.get("/api/room/" + "x" * 33 + "/websocket")
        assert (long.status_code, long.text) == (404, "Name too long")
        assert (await http.get("/api/room/" + "x" * 32 + "/websocket")).status_code == 400
        # A 64-hex name is an ID; one this namespace did not make fails as the
        # demo's idFromString() does: an error, not "no such room".
        foreign = await http.get("/api/room/" + "ab" * 32 + "/websocket")
        assert foreign.status_code == 500
        for method in ("GET", "PUT", "DELETE"):
            refused = await http.request(method, "/api/room")
            assert (refused.status_code, refused.text) == (405, "Method not allowed")
        for path in ("/nowhere", "/api", "/api/other", "/api/room/lounge", "/api/room/lounge/x"):
            missing = await http.get(path)
            assert (missing.status_code, missing.text) == (404, "Not found"), path
        # The name is checked before the rest of the path, as in the demo.
        deep = await http.get("/api/room/" + "x" * 33 + "/anything")
        assert (deep.status_code, deep.text) == (404, "Name too long")


async def test_upgrade_refused_for_long_name(chat: Callable[..., App], serve: Serve) -> None:
    async with serve(chat()) as url:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(room(url, "y" * 33), open_timeout=5):
                pass
        assert refused.value.response.status_code == 404


async def test_foreign_room_id_gets_an_error_frame(
    chat: Callable[..., App], serve: Serve, clients: Any
) -> None:
    # The demo answers a failed session setup with a socket that carries the error
    # (its page then shows it) and closes with 1011.
    async with serve(chat()) as url:
        sock = await clients(room(url, "ab" * 32))
        error = await sock.recv()
        assert set(error) == {"error"} and "room ID" in error["error"]
        assert await close_code(sock) == 1011


# -- joining ------------------------------------------------------------------------------


async def test_first_member_sees_itself_join(
    chat: Callable[..., App], serve: Serve, clients: Any
) -> None:
    async with serve(chat()) as url:
        sock = await clients(room(url))
        await sock.send({"name": "alice"})
        assert await sock.recv_n(2) == [{"joined": "alice"}, READY]


async def test_later_members_get_roster_then_themselves(
    chat: Callable[..., App], serve: Serve, clients: Any
) -> None:
    async with serve(chat()) as url:
        alice, seen = await join(clients, url, "alice")
        assert seen == [{"joined": "alice"}]
        bob, seen = await join(clients, url, "bob")
        assert seen == [{"joined": "alice"}, {"joined": "bob"}]
        assert await alice.recv() == {"joined": "bob"}
        carol, seen = await join(clients, url, "carol")
        assert seen == [{"joined": "alice"}, {"joined": "bob"}, {"joined": "carol"}]
        assert await alice.recv() == {"joined": "carol"}
        assert await bob.recv() == {"joined": "carol"}
        # Names are not unique, in the demo either: a second alice is listed twice.
        again, seen = await join(clients, url, "alice")
        assert seen[-2:] == [{"joined": "carol"}, {"joined": "alice"}]
        for sock in (alice, bob, carol):
            assert await sock.recv() == {"joined": "alice"}


async def test_roster_is_in_connection_order(
    chat: Callable[..., App], serve: Serve, clients: Any
) -> None:
    # The demo lists members in the order their sockets connected, not named.
    async with serve(chat()) as url:
        early = await clients(room(url))
        bob, _ = await join(clients, url, "bob")
        assert await name_and_read(early, "anne") == [{"joined": "bob"}, {"joined": "anne"}]
        assert await bob.recv() == {"joined": "anne"}
        _, seen = await join(clients, url, "carl")
        assert seen == [{"joined": "anne"}, {"joined": "bob"}, {"joined": "carl"}]


async def test_unnamed_window_is_queued_in_order(
    chat: Callable[..., App], serve: Serve, clients: Any
) -> None:
    """What happens between a socket's connect and its name reaches it afterwards,
    in order: the roster and history of the moment it connected, then each
    broadcast since, then its own join, then ready."""
    async with serve(chat()) as url:
        alice, _ = await join(clients, url, "alice")
        await alice.send({"message": "before"})
        before = await alice.recv()
        lurker = await clients(room(url))  # connected, not named yet
        bob, seen = await join(clients, url, "bob")
        assert seen == [{"joined": "alice"}, before, {"joined": "bob"}]
        assert await alice.recv() == {"joined": "bob"}
        await alice.send({"message": "during"})
        during = await alice.recv()
        assert await bob.recv() == during
        await bob.close()
        assert await alice.recv() == {"quit": "bob"}
        assert await name_and_read(lurker, "zed") == [
            {"joined": "alice"},
            before,
            {"joined": "bob"},
            during,
            {"quit": "bob"},
            {"joined": "zed"},
        ]
        assert await alice.recv() == {"joined": "zed"}
        # Delivered once: nothing more is pending for the newcomer.
        await next_is_own_message(lurker, "hello")


async def test_two_unnamed_sockets_see_each_other_join(
    chat: Callable[..., App], serve: Serve, clients: Any
) -> None:
    async with serve(chat()) as url:
        first = await clients(room(url))
        second = await clients(room(url))
        assert await name_and_read(second, "two") == [{"joined": "two"}]
        assert await name_and_read(first, "one") == [{"joined": "two"}, {"joined": "one"}]
        assert await second.recv() == {"joined": "one"}


# -- quitting -----------------------------------------------------------------------------


async def test_quit_is_broadcast_for_named_members_only(
    chat: Callable[..., App], serve: Serve, clients: Any
) -> None:
    async with serve(chat()) as url:
        alice, _ = await join(clients, url, "alice")
        bob, _ = await join(clients, url, "bob")
        assert await alice.recv() == {"joined": "bob"}
        carol, _ = await join(clients, url, "carol")
        assert await alice.recv() == {"joined": "carol"}
        assert await bob.recv() == {"joined": "carol"}
        await bob.close()
        assert await alice.recv() == {"quit": "bob"}
        assert await carol.recv() == {"quit": "bob"}
        # A socket that never named itself leaves without a notice.
        lurker = await clients(room(url))
        await lurker.close()
        await next_is_own_message(alice, "still here")
        assert (await carol.recv())["message"] == "still here"
        # A newcomer's roster no longer has bob; the history has the message.
        _, seen = await join(clients, url, "dave")
        assert [m.get("joined", m.get("message")) for m in seen] == [
            "alice",
            "carol",
            "still here",
            "dave",
        ]


# -- messages and history -----------------------------------------------------------------


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
        assert all(list(m) == ["name", "message", "timestamp"] for m in streams[0])
        stamps = [m["timestamp"] for m in streams[0]]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        for i in range(3):  # each sender's own messages keep their order
            mine = [m["message"] for m in streams[0] if m["name"] == f"m{i}"]
            assert mine == [f"{i}-{n}" for n in range(10)]


async def test_history_backlog_and_restart(
    chat: Callable[..., App], serve: Serve, clients: Any, tmp_path: Path
) -> None:
    async with serve(chat(data_dir=tmp_path)) as url:
        alice, _ = await join(clients, url, "alice")
        for n in range(105):
            await alice.send({"message": f"msg {n}"})
        sent = await alice.recv_n(105)
        # History comes after the roster and before the newcomer's own join.
        bob, seen = await join(clients, url, "bob")
        assert seen == [{"joined": "alice"}, *sent[5:], {"joined": "bob"}]
        await alice.close()
        await bob.close()
    assert [m["message"] for m in sent] == [f"msg {n}" for n in range(105)]
    # A new server on the same storage: history survives, capped at 100, oldest first.
    async with serve(chat(data_dir=tmp_path)) as url:
        carol, seen = await join(clients, url, "carol")
        assert seen == [*sent[5:], {"joined": "carol"}]
        await carol.send({"message": "after restart"})
        latest = await carol.recv()
        assert latest["timestamp"] > sent[-1]["timestamp"]


async def test_values_are_turned_into_text_as_in_javascript(
    chat: Callable[..., App], serve: Serve, clients: Any
) -> None:
    # The demo does `"" + (data.name || "anonymous")` and `"" + data.message`.
    async with serve(chat()) as url:
        named = {"": "anonymous", 0: "anonymous", None: "anonymous", 42: "42", True: "true"}
        for value, expected in named.items():
            sock = await clients(room(url, "names"))
            seen = await name_and_read(sock, value)  # type: ignore[arg-type]
            assert seen[-1] == {"joined": expected}
            await sock.close()
        sock = await clients(room(url))
        await sock.send(7)  # a JSON value without a name property: anonymous too
        assert (await sock.recv_n(2))[0] == {"joined": "anonymous"}
        posted = [
            ({}, "undefined"),
            ({"message": None}, "null"),
            ({"message": 1.5}, "1.5"),
            ({"message": 2.0}, "2"),
            ({"message": False}, "false"),
            ({"message": [1, None, "a", [2, 3]]}, "1,,a,2,3"),
            ({"message": {"a": 1}}, "[object Object]"),
            ("just a string", "undefined"),
        ]
        for data, expected in posted:
            await sock.send(data if not isinstance(data, str) else f'"{data}"')
            assert (await sock.recv())["message"] == expected, data


# -- errors -------------------------------------------------------------------------------


async def test_name_too_long_closes_without_announcing(
    chat: Callable[..., App], serve: Serve, clients: Any
) -> None:
    async with serve(chat()) as url:
        alice, _ = await join(clients, url, "alice")
        sock = await clients(room(url))
        await sock.send({"name": "n" * 33})
        assert await sock.recv() == {"error": "Name too long."}
        assert await close_code(sock) == 1009
        # The limit counts UTF-16 code units, like JavaScript's length.
        emoji = await clients(room(url))
        await emoji.send({"name": "\U0001f600" * 17})
        assert await emoji.recv() == {"error": "Name too long."}
        assert await close_code(emoji) == 1009
        await next_is_own_message(alice, "nobody else came")
        _, seen = await join(clients, url, "\U0001f600" * 16)
        assert seen[0] == {"joined": "alice"}
        assert seen[-1] == {"joined": "\U0001f600" * 16}
        assert await alice.recv() == seen[-1]


async def test_message_too_long(chat: Callable[..., App], serve: Serve, clients: Any) -> None:
    async with serve(chat()) as url:
        alice, _ = await join(clients, url, "a" * 32)
        await alice.send({"message": "m" * 257})
        assert await alice.recv() == {"error": "Message too long."}
        await next_is_own_message(alice, "m" * 256)
        await alice.send({"message": "\U0001f600" * 128 + "x"})
        assert await alice.recv() == {"error": "Message too long."}
        await next_is_own_message(alice, "\U0001f600" * 128)


async def test_bad_json_gets_an_error_frame(
    chat: Callable[..., App], serve: Serve, clients: Any
) -> None:
    async with serve(chat()) as url:
        # Before the name, too: the first frame must parse to become the name.
        sock = await clients(room(url))
        await sock.send("not json")
        first = await sock.recv()
        assert set(first) == {"error"} and "JSON" in first["error"]
        alice, seen = await join(clients, url, "alice")
        assert seen == [{"joined": "alice"}]
        assert await name_and_read(sock, "bob") == [{"joined": "alice"}, {"joined": "bob"}]
        assert await alice.recv() == {"joined": "bob"}
        for bad in ("{", "NaN", '{"message": Infinity}', "null", b'{"message": "binary"}'):
            await alice.conn.send(bad)
            error = await alice.recv()
            assert isinstance(error, dict) and set(error) == {"error"}, bad
            assert isinstance(error["error"], str) and "Traceback" not in error["error"]
        await next_is_own_message(alice, "still fine")
        assert (await sock.recv())["message"] == "still fine"


async def test_deeply_nested_json_gets_an_error_frame(
    chat: Callable[..., App], serve: Serve, clients: Any
) -> None:
    async with serve(chat()) as url:
        alice, _ = await join(clients, url, "alice")
        depth = 100_000
        await alice.conn.send('{"message": ' + "[" * depth + "]" * depth + "}")
        error = await alice.recv()
        assert set(error) == {"error"} and "nested" in error["error"]
        # Before the name as well; the socket stays usable either way.
        sock = await clients(room(url))
        await sock.send("[" * depth + "]" * depth)
        assert set(await sock.recv()) == {"error"}
        assert (await name_and_read(sock, "bob"))[-1] == {"joined": "bob"}
        assert await alice.recv() == {"joined": "bob"}
        await next_is_own_message(alice, "after")


async def test_rate_limit_per_ip(chat: Callable[..., App], serve: Serve, clients: Any) -> None:
    limited = {"error": "Your IP is being rate-limited, please try again later."}
    # An interval far longer than the test: exactly `burst` frames get through,
    # and the demo counts every frame a client sends, its name included.
    async with serve(chat(rate_limit={"interval": 1000.0, "burst": 4})) as url:
        alice, _ = await join(clients, url, "alice")
        await next_is_own_message(alice, "one")
        await alice.send("not json")  # counted before it is parsed
        assert "JSON" in (await alice.recv())["error"]
        await next_is_own_message(alice, "two")
        await alice.send({"message": "too many"})
        assert await alice.recv() == limited
        # The limiter is per IP, not per socket or room: another client from the
        # same address, in another room, cannot even name itself.
        bob = await clients(room(url, "other"))
        await bob.send({"name": "bob"})
        assert await bob.recv() == limited


async def test_failing_rate_limiter_closes_the_session(
    chat: Callable[..., App],
    serve: Serve,
    clients: Any,
    examples: Callable[[str], ModuleType],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serve(chat()) as url:
        alice, _ = await join(clients, url, "alice")
        bob, _ = await join(clients, url, "bob")
        assert await alice.recv() == {"joined": "bob"}

        async def broken(self: Any) -> float:
            raise RuntimeError("limiter down")

        monkeypatch.setattr(examples("chat").ratelimit.RateLimiter, "take", broken)
        await bob.send({"message": "hello"})
        assert await close_code(bob) == 1011
        assert await alice.recv() == {"quit": "bob"}


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


def test_default_rate_limit_is_the_demos(
    examples: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The demo: 5 s per action with 20 s of grace, i.e. a burst of 5 frames
    # (the name and four messages), then one frame per 5 s.
    monkeypatch.delenv("CHAT_RATE_LIMIT", raising=False)
    front = importlib.import_module(examples("chat").__name__ + ".app")
    assert front.rate_limit_from_environ() == {"interval": 5.0, "burst": 5}


# -- hibernation --------------------------------------------------------------------------


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
        assert seen == [{"joined": "alice"}, {"joined": "bob"}, got[0], {"joined": "carol"}]
        await bob.close()
        assert await alice.recv() == {"joined": "carol"}
        assert await alice.recv() == {"quit": "bob"}


async def test_unnamed_socket_across_hibernation(
    chat: Callable[..., App], serve: Serve, clients: Any
) -> None:
    """A socket still unnamed when the room hibernates gets, once named, the roster
    of the room that woke and every message since it connected (the README's
    deliberate difference: notices from before the hibernation are not replayed)."""
    clock = ManualClock()
    app = chat(clock=clock, idle_timeout=10.0)
    async with serve(app) as url:
        alice, _ = await join(clients, url, "alice")
        await alice.send({"message": "old"})
        old = await alice.recv()
        lurker = await clients(room(url))
        bob, _ = await join(clients, url, "bob")
        assert await alice.recv() == {"joined": "bob"}
        await alice.send({"message": "new"})
        new = await alice.recv()
        assert await bob.recv() == new
        await clock.advance(11.0)
        room_id = app.env.ROOMS.id_from_name("lounge")
        await _evict(app.runtime, "ROOMS", room_id)
        assert not app.runtime.is_live("ROOMS", room_id)
        assert await name_and_read(lurker, "zed") == [
            {"joined": "alice"},
            {"joined": "bob"},
            old,
            new,
            {"joined": "zed"},
        ]
        assert await alice.recv() == {"joined": "zed"}


async def _evict(runtime: Any, namespace: str, object_id: Any) -> None:
    # The last event's output gate may still be settling; give the loop a few turns.
    for _ in range(200):
        runtime.evict_idle()
        if not runtime.is_live(namespace, object_id):
            return
        await asyncio.sleep(0.005)
