"""The pytest plugin works in a user's project as docs/testing.md shows it,
without asyncio configuration, with env values, and for WebSocket objects."""

from __future__ import annotations

import textwrap

import pytest

# Real servers or processes: an integration test.
pytestmark = pytest.mark.integration

pytest_plugins = ["pytester"]

CONFTEST = """
    import pytest
    import roost


    class Counter(roost.DurableObject):
        async def increment(self) -> int:
            value = (await self.ctx.storage.get("value") or 0) + 1
            await self.ctx.storage.put("value", value)
            return value

        async def greeting(self) -> str:
            return self.env.GREETING


    @pytest.fixture
    def roost_objects():
        return {"COUNTER": Counter}
"""

TESTS = """
    import pytest
    from roost.testing import advance


    async def test_counts(roost_env):
        stub = roost_env.COUNTER.get_by_name("a")
        assert await stub.increment() == 1
        assert await stub.increment() == 2


    async def test_survives_a_restart(roost_runtime, roost_runtime_factory):
        await roost_runtime.env.COUNTER.get_by_name("a").increment()
        await roost_runtime.close()
        again = await roost_runtime_factory()
        assert await again.env.COUNTER.get_by_name("a").increment() == 2


    async def test_env_values(roost_runtime_factory):
        runtime = await roost_runtime_factory(env={"GREETING": "hello"})
        assert await runtime.env.COUNTER.get_by_name("a").greeting() == "hello"


    async def test_virtual_time(roost_runtime, roost_clock):
        before = roost_clock.time()
        await advance(roost_runtime, 3600)
        assert roost_clock.time() == before + 3600
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error", *args)


@pytest.mark.parametrize("mode", [None, "strict", "auto"])
def test_a_users_tests_run_in_any_asyncio_mode(pytester: pytest.Pytester, mode: str | None) -> None:
    pytester.makeconftest(textwrap.dedent(CONFTEST))
    pytester.makepyfile(test_counter=textwrap.dedent(TESTS))
    ini = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
    if mode is not None:
        ini += f"asyncio_mode = {mode}\n"
    pytester.makeini(ini)
    result = run(pytester)
    result.assert_outcomes(passed=4)


def test_async_tests_without_roost_fixtures_are_left_to_the_user(
    pytester: pytest.Pytester,
) -> None:
    # A negative control for the marking: strict mode still refuses an async
    # test that uses none of the kit's fixtures, as pytest-asyncio documents.
    pytester.makepyfile(
        test_plain="""
        async def test_plain():
            pass
        """
    )
    pytester.makeini(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*async def functions are not natively supported*"])


def test_the_websocket_recipe_of_the_docs_runs(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        textwrap.dedent(
            """
            import pytest
            import roost


            class Room(roost.DurableObject):
                async def fetch(self, request):
                    if request.websocket is None:
                        return roost.Response("expected a WebSocket", status_code=426)
                    self.ctx.accept_websocket(request.websocket)
                    return roost.Response(status_code=101)

                async def websocket_message(self, ws, message):
                    for other in self.ctx.get_websockets():
                        other.send(f"echo: {message}")


            async def front(request, env):
                return await env.ROOM.get_by_name("lobby").fetch(request)


            @pytest.fixture
            def app(roost_data_dir):
                return roost.App({"ROOM": Room}, fetch=front, data_dir=roost_data_dir)
            """
        )
    )
    pytester.makepyfile(test_room=textwrap.dedent(WEBSOCKET_TEST))
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = run(pytester)
    result.assert_outcomes(passed=1)


WEBSOCKET_TEST = """
    import json

    import websockets
    from roost.server import running


    async def test_two_clients_hear_each_other(app, roost_data_dir):
        async with running(app) as url:
            async with websockets.connect(url.replace("http", "ws") + "/room") as a:
                async with websockets.connect(url.replace("http", "ws") + "/room") as b:
                    await a.send("hi")
                    assert await a.recv() == "echo: hi"
                    assert await b.recv() == "echo: hi"
"""
