"""Shared fixtures.

ROOST_SLOW=1 runs the long versions of soak and crash tests.  Real servers
(uvicorn on a free port of 127.0.0.1) run in the test's event loop (``serve``)
or as a ``roost`` subprocess (``tests/cli``).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from roost import App, Runtime
from roost.cli.loader import load_module
from roost.runtime import runtime as runtime_module
from roost.runtime.loopback import LoopbackRouter
from roost.server import running
from roost.storage import SqliteEngine

SLOW = os.environ.get("ROOST_SLOW") == "1"
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

Serve = Callable[[App], AbstractAsyncContextManager[str]]


#: Fixtures that start a real server or another process: a test that asks for one is an
#: integration test (``-m "not integration"`` runs the in-process tests alone).
INTEGRATION_FIXTURES = frozenset(
    {"serve", "clients", "hostile_server", "processes", "chromium", "browser"}
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--router",
        choices=("local", "loopback"),
        default="local",
        help="the router of runtimes made without one: loopback sends every event as bytes "
        "through a task of its own, as a router to another process does",
    )


@pytest.fixture(autouse=True)
def _router_under_test(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.config.getoption("--router") == "loopback":
        monkeypatch.setattr(runtime_module, "_default_router", LoopbackRouter)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def scaled(quick: int, full: int) -> int:
    """A count for a soak/fault loop: bounded in CI, larger with ROOST_SLOW=1."""
    return full if SLOW else quick


async def quiesce(max_turns: int = 1_000) -> None:
    """Run the event loop until nothing is left that can run without outside input.

    Yields to the loop until its ready queue is empty (only this task was
    scheduled), so every task that is not waiting on a timer, a thread, I/O or
    an ``asyncio.Event`` has reached such a wait.  A test that must show that
    something has *not* happened (a result held by the output gate, an event
    held by the input gate) calls it in place of a sleep: past this point,
    nothing more happens until the test itself releases something, so the
    assertion holds at any machine speed.  Work running in a thread (an
    ``fsync``) is not waited for; hold it with :class:`BlockingCommits`.

    On an event loop without a visible ready queue (not asyncio's own) it
    yields ``max_turns`` times.
    """
    ready = getattr(asyncio.get_running_loop(), "_ready", None)
    for _ in range(max_turns):
        await asyncio.sleep(0)
        if ready is not None and not ready:
            return
    if ready is not None:
        raise AssertionError(f"the event loop was still busy after {max_turns} turns")


class BlockingCommits:
    """Holds a :class:`~roost.storage.SqliteEngine`'s ``fsync`` thread until released.

    ``BlockingCommits.installed(runtime)`` sets it as the engine's sync hook:
    the next commit is written (to the operating system) but not made durable,
    so outputs that wait for it stay held until ``blocker.release.set()``.
    """

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def __call__(self) -> None:
        self.entered.set()
        if not self.release.wait(10):
            raise TimeoutError("test never released the commit")

    @classmethod
    def installed(cls, runtime: Runtime) -> BlockingCommits:
        """A blocker set as ``runtime``'s sync hook (a runtime with a ``data_dir``)."""
        engine = runtime.engine
        if not isinstance(engine, SqliteEngine):
            raise TypeError("BlockingCommits holds the fsync of a SqliteEngine (data_dir=...)")
        blocker = cls()
        engine.sync_hook = blocker
        return blocker

    async def reached(self) -> None:
        """Wait until a commit is written and held before its ``fsync``."""
        if not await asyncio.to_thread(self.entered.wait, 5):
            raise TimeoutError("no commit reached the fsync thread")


@pytest.fixture
def data_dir(tmp_path: os.PathLike[str]) -> str:
    path = os.path.join(tmp_path, "data")
    os.makedirs(path)
    return path


@pytest.fixture
def serve() -> Serve:
    """``async with serve(app) as url``: the app on uvicorn, shut down gracefully after."""

    def start(app: App) -> AbstractAsyncContextManager[str]:
        return running(app)

    return start


@pytest.fixture(scope="session")
def examples() -> Callable[[str], ModuleType]:
    """Import an example the way ``roost dev`` does: ``examples("chat")``."""

    def load(name: str) -> ModuleType:
        path = EXAMPLES / name
        module, _ = load_module(str(path if path.is_dir() else path.with_suffix(".py")))
        return module

    return load


def ws_url(url: str, path: str) -> str:
    return url.replace("http://", "ws://", 1) + path


class JsonSocket:
    """A test client that speaks JSON messages, with a timeout on every receive."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn

    async def send(self, message: Any) -> None:
        await self.conn.send(message if isinstance(message, str) else json.dumps(message))

    async def recv(self, within: float = 5.0) -> Any:
        raw = await asyncio.wait_for(self.conn.recv(), within)
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    async def recv_n(self, count: int) -> list[Any]:
        return [await self.recv() for _ in range(count)]

    async def close(self) -> None:
        await self.conn.close()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[[str], Any]]:
    """``await clients(ws_url)`` opens a :class:`JsonSocket`; all close at the end."""
    opened: list[ClientConnection] = []

    async def open_socket(url: str, **options: Any) -> JsonSocket:
        conn = await connect(url, open_timeout=5, **options)
        opened.append(conn)
        return JsonSocket(conn)

    yield open_socket
    for conn in opened:
        await conn.close()
