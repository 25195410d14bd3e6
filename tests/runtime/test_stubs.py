"""Stubs, RPC and fetch: what crosses, by value, and how errors come back."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import pytest
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse

import roost
import roost.testing


class AppError(Exception):
    pass


class Thing(roost.DurableObject):
    def __init__(self, ctx: roost.ObjectState, env: roost.Env) -> None:
        super().__init__(ctx, env)
        self.kept: list[Any] = []

    async def keep(self, value: list[Any]) -> list[Any]:
        self.kept = value
        value.append("seen by object")
        return self.kept

    async def kept_value(self) -> list[Any]:
        return self.kept

    async def fail(self, kind: str) -> None:
        if kind == "value":
            raise ValueError("bad value", 42)
        if kind == "key":
            raise KeyError("missing")
        if kind == "custom":
            raise AppError("custom trouble")
        raise roost.ObjectOverloaded("inner overload")

    async def unreturnable(self) -> Any:
        return object()

    async def whoami(self) -> tuple[str, str | None]:
        return str(self.ctx.id), self.ctx.id.name

    async def call_other(self, name: str) -> int:
        return int(await self.env.OTHER.get_by_name(name).increment())

    async def _private(self) -> None:
        pass

    def sync_method(self) -> int:
        return 1

    async def alarm(self) -> None:
        pass

    async def websocket_message(self, ws: Any, message: Any) -> None:
        pass

    async def fetch(self, request: roost.Request) -> roost.Response:
        body = await request.body()
        if request.url.path == "/json":
            return JSONResponse({"q": request.query_params.get("q"), "len": len(body)})
        if request.url.path == "/stream":

            async def chunks() -> Any:
                yield b"a"
                yield "b"

            return StreamingResponse(chunks(), media_type="text/plain")
        return PlainTextResponse(
            f"{request.method} {request.url.path}?{request.url.query} "
            f"{request.headers.get('x-test')} {body.decode()}",
            status_code=201,
            headers={"x-reply": "yes"},
        )


class Other(roost.DurableObject):
    async def increment(self) -> int:
        value = (await self.ctx.storage.get("n") or 0) + 1
        await self.ctx.storage.put("n", value)
        return value


@pytest.fixture
async def rt() -> Any:
    async with roost.Runtime({"THING": Thing, "OTHER": Other}, env={"GREETING": "hi"}) as r:
        yield r


async def test_arguments_and_results_are_copies(rt: roost.Runtime) -> None:
    stub = rt.env.THING.get_by_name("a")
    mine = ["mine"]
    back = await stub.keep(mine)
    assert mine == ["mine"]  # the object's append did not reach the caller's list
    back.append("caller")
    assert await stub.kept_value() == ["mine", "seen by object"]


async def test_unsendable_arguments_fail_at_the_caller(rt: roost.Runtime) -> None:
    with pytest.raises(TypeError, match="'object'"):
        await rt.env.THING.get_by_name("a").keep([object()])


async def test_unreturnable_results_fail_clearly(rt: roost.Runtime) -> None:
    with pytest.raises(TypeError, match="'object'"):
        await rt.env.THING.get_by_name("a").unreturnable()


@pytest.mark.parametrize(
    ("kind", "builtin", "text"),
    [
        ("value", ValueError, "('bad value', 42)"),
        ("key", KeyError, "'missing'"),
        ("custom", AppError, "custom trouble"),
    ],
)
async def test_errors_keep_type_name_message_and_flags(
    rt: roost.Runtime, kind: str, builtin: type[Exception], text: str
) -> None:
    with pytest.raises(builtin) as info:
        await rt.env.THING.get_by_name("a").fail(kind)
    error = info.value
    assert type(error).__name__ == builtin.__name__
    assert str(error) == text
    assert isinstance(error, roost.RemoteError)
    assert error.remote is True and error.retryable is False and error.overloaded is False
    assert "raise" in error.remote_traceback


async def test_the_object_side_traceback_shows_where_errors_are_printed(
    rt: roost.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """logging (the server's 500 log) and pytest print exception notes."""
    with pytest.raises(ValueError) as info:
        await rt.env.THING.get_by_name("a").fail("value")
    printed = "".join(traceback.format_exception(info.value))
    assert "Raised inside a THING object, where the traceback was:" in printed
    assert "in fail" in printed and "raise ValueError(" in printed  # the object's frame
    logging.getLogger("roost.test").error("failed", exc_info=info.value)
    assert "in fail" in caplog.text


async def test_flags_of_roost_errors_cross_too(rt: roost.Runtime) -> None:
    with pytest.raises(roost.ObjectOverloaded) as info:
        await rt.env.THING.get_by_name("a").fail("overload")
    assert info.value.overloaded and info.value.remote


@pytest.mark.parametrize(
    "name", ["alarm", "websocket_message", "websocket_close", "sync_method", "nope"]
)
async def test_only_public_async_methods_are_rpc(rt: roost.Runtime, name: str) -> None:
    with pytest.raises(roost.RpcMethodNotFound) as info:
        await getattr(rt.env.THING.get_by_name("a"), name)()
    assert isinstance(info.value, AttributeError)


async def test_private_names_are_not_even_reachable(rt: roost.Runtime) -> None:
    with pytest.raises(AttributeError):
        rt.env.THING.get_by_name("a")._private  # noqa: B018


async def test_objects_know_their_id_and_reach_others_through_env(rt: roost.Runtime) -> None:
    stub = rt.env.THING.get_by_name("alice")
    assert await stub.whoami() == (str(stub.id), "alice")
    assert await stub.call_other("o") == 1
    assert await rt.env.OTHER.get_by_name("o").increment() == 2


async def test_namespaces_and_env(rt: roost.Runtime) -> None:
    ns = rt.env.THING
    assert rt.env["THING"] is ns and rt.env.GREETING == "hi"
    assert ns.id_from_name("x") == ns.id_from_name("x")
    unique = ns.new_unique_id()
    assert ns.id_from_string(str(unique)) == unique
    with pytest.raises(roost.InvalidObjectId):
        ns.id_from_string(str(rt.env.OTHER.new_unique_id()))
    with pytest.raises(roost.InvalidObjectId):
        ns.get(rt.env.OTHER.id_from_name("x"))
    with pytest.raises(TypeError):
        ns.get(str(unique))  # type: ignore[arg-type]
    with pytest.raises(roost.UnknownBinding, match="THING") as info:
        rt.env.NOPE  # noqa: B018
    assert not isinstance(info.value, roost.UnknownNamespace)
    assert "namespaces are OTHER, THING, its configuration values GREETING" in str(info.value)
    assert isinstance(info.value, LookupError) and isinstance(info.value, AttributeError)
    assert getattr(rt.env, "NOPE", None) is None


async def test_the_runtime_refuses_an_id_of_another_live_namespace(rt: roost.Runtime) -> None:
    # Live objects are keyed by ID alone: a caller past the stubs' checks
    # must still not reach another namespace's object.
    stub = rt.env.THING.get_by_name("a")
    await stub.fetch("http://x/")  # now live
    forged = roost.ObjectId(stub.id.hex, "OTHER")

    async def handler(instance: Any) -> None:
        raise AssertionError("reached the wrong object")

    with pytest.raises(roost.InvalidObjectId, match="THING"):
        await rt.host.dispatch("OTHER", forged, handler)


def test_env_attributes_are_the_bindings_but_methods_stay_methods() -> None:
    env = roost.Env({"COUNTER": 1, "get": "a value", "keys": 2, "__x__": 3})
    assert (env.COUNTER, env["get"], env["keys"], env["__x__"]) == (1, "a value", 2, 3)
    assert env.get("COUNTER") == 1 and sorted(env.keys()) == ["COUNTER", "__x__", "get", "keys"]
    with pytest.raises(AttributeError):
        env.__x__  # noqa: B018
    with pytest.raises(AttributeError, match="read-only"):
        env.COUNTER = 2
    assert env.COUNTER == 1


async def test_fetch_keeps_method_headers_body_and_query(rt: roost.Runtime) -> None:
    stub = rt.env.THING.get_by_name("a")
    response = await stub.fetch(
        "http://example.com/path?x=1&y=2", method="POST", headers={"X-Test": "t"}, body="hello"
    )
    assert response.status_code == response.status == 201 and response.ok
    assert response.text == "POST /path?x=1&y=2 t hello"
    assert response.headers["x-reply"] == "yes"


async def test_fetch_takes_a_request_and_streams_are_collected(rt: roost.Runtime) -> None:
    stub = rt.env.THING.get_by_name("a")
    request = roost.Request.build("/json?q=v", method="PUT", body=b"12345")
    response = await stub.fetch(request)
    assert response.json() == {"q": "v", "len": 5}
    streamed = await stub.fetch("/stream")
    assert streamed.text == "ab" and streamed.headers["content-length"] == "2"


async def test_fetch_on_a_class_without_fetch_is_refused(rt: roost.Runtime) -> None:
    with pytest.raises(roost.RpcMethodNotFound, match="fetch"):
        await rt.env.OTHER.get_by_name("a").fetch("/")


class BrokenInit(roost.DurableObject):
    def __init__(self, ctx: roost.ObjectState, env: roost.Env) -> None:
        raise RuntimeError("constructor failed")

    async def ping(self) -> str:
        return "pong"


async def test_a_constructor_error_reaches_the_caller_and_is_retried_next_time() -> None:
    async with roost.Runtime({"B": BrokenInit}) as rt:
        for _ in range(2):
            with pytest.raises(RuntimeError, match="constructor failed") as info:
                await rt.env.B.get_by_name("x").ping()
            assert info.value.remote
        assert rt.statistics().live_objects == 0


class NoInit(roost.DurableObject):
    async def ping(self) -> str:
        return f"pong {self.ctx.id.name}"


async def test_classes_without_init_work() -> None:
    async with roost.Runtime({"N": NoInit}) as rt:
        assert await rt.env.N.get_by_name("z").ping() == "pong z"


class Echo(roost.DurableObject):
    async def fetch(self, request: roost.Request) -> roost.Response:
        return roost.Response(f"{request.scope['path']}|{request.url.query}")


async def test_fetch_keeps_percent_encoded_paths_intact() -> None:
    async with roost.Runtime({"E": Echo}) as rt:
        stub = rt.env.E.get_by_name("x")
        # "%3F" and "%2F" are part of the path segment, not a query or a slash.
        assert (await stub.fetch("http://h/room/a%3Fb%2Fc?x=1")).text == "/room/a?b/c|x=1"
        assert (await stub.fetch("/a%20b")).text == "/a b|"
        front = roost.Request(
            {
                "type": "http",
                "method": "GET",
                "path": "/r/a?b",
                "raw_path": b"/r/a%3Fb",
                "query_string": b"q=1",
                "headers": [(b"host", b"h")],
                "scheme": "http",
                "server": ("h", 80),
            }  # fmt: skip
        )
        assert (await stub.fetch(front)).text == "/r/a?b|q=1"


async def test_list_object_ids_names_only_namespaces(rt: roost.Runtime) -> None:
    await rt.env.OTHER.get_by_name("stored").increment()
    assert rt.list_object_ids("OTHER") == [rt.env.OTHER.id_from_name("stored")]
    assert rt.list_object_ids(rt.env.OTHER) == rt.list_object_ids("OTHER")
    assert roost.testing.list_object_ids(rt.env.OTHER) == rt.list_object_ids("OTHER")
    with pytest.raises(roost.UnknownNamespace, match="THING"):
        rt.list_object_ids("GREETING")  # a configuration value, not a namespace


async def test_the_runtimes_refusals_cross_the_router_by_value() -> None:
    # What a remote owner could send: the class and the message, not the
    # owner's live exception, its frames or what it was chained to.
    import traceback

    rt = roost.Runtime({"C": Thing})
    stub = rt.env.C.get_by_name("a")
    await rt.start()
    await rt.close()
    with pytest.raises(roost.RuntimeClosed) as caught:
        await stub.kept_value()
    frames = [frame.filename for frame in traceback.extract_tb(caught.value.__traceback__)]
    assert not any(name.endswith("runtime/runtime.py") for name in frames), frames
    assert caught.value.__context__ is None and caught.value.__cause__ is None


def test_a_crossed_error_keeps_its_class_data_and_cause_text() -> None:
    from roost.runtime.router import crossed

    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError as disk:
            raise roost.CommitFailed("commit failed") from disk
    except roost.CommitFailed as failed:
        original = failed
    copy = crossed(original)
    assert type(copy) is roost.CommitFailed and copy is not original
    assert str(copy) == "commit failed" and copy.retryable
    assert copy.__traceback__ is None and copy.__cause__ is None
    assert "No space left on device" in "".join(copy.__notes__)
    ws = crossed(roost.WebSocketError("bad frame", code=1002, reason="protocol"))
    assert (type(ws), ws.code, ws.reason) == (roost.WebSocketError, 1002, "protocol")
