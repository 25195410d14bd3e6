"""The chat page in headless Chromium, driven over the DevTools protocol.

Chromium is Debian's ``chromium`` package, found on PATH.  ``scripts/install``
installs it where it can (as root, with apt-get); the tests never install
anything, and fail, not skip, without it: a skipped browser test would hide
that the page was never tried.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import Serve, ws_url

pytestmark = pytest.mark.integration  # a real server and a Chromium process

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    found = find_chromium()
    if found is None:
        pytest.fail(
            "Chromium is not installed: run scripts/install (as root it installs Debian's "
            "chromium package), or install it yourself (apt-get install chromium)",
            pytrace=False,
        )
    return found


@pytest.fixture
def browser(chromium: str) -> Iterator[str]:
    """A headless Chromium; yields its DevTools WebSocket URL."""
    profile = tempfile.mkdtemp(prefix="roost-chromium-")
    proc = subprocess.Popen(
        [chromium, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or len(port_file.read_text().split()) < 2:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Chromium did not start (exit code {proc.poll()})")
            time.sleep(0.05)
        port, path = port_file.read_text().split()[:2]
        yield f"ws://127.0.0.1:{port}{path}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(profile, ignore_errors=True)


class DevTools:
    """A minimal Chrome DevTools Protocol client: commands and their results."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for raw in self.conn:
            message = json.loads(raw)
            future = self.waiting.pop(message.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(message)

    async def call(self, method: str, session: str | None = None, **params: Any) -> Any:
        number = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.waiting[number] = future
        command: dict[str, Any] = {"id": number, "method": method, "params": params}
        if session is not None:
            command["sessionId"] = session
        await self.conn.send(json.dumps(command))
        reply = await asyncio.wait_for(future, 30)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]


class Page:
    def __init__(self, tools: DevTools, session: str) -> None:
        self.tools = tools
        self.session = session

    async def js(self, expression: str) -> Any:
        result = await self.tools.call(
            "Runtime.evaluate",
            self.session,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page error: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def until(self, expression: str, what: str) -> Any:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            value = await self.js(expression)
            if value:
                return value
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def open_page(devtools_url: str, url: str) -> AsyncIterator[Page]:
    async with connect(devtools_url, max_size=None) as conn:
        tools = DevTools(conn)
        target = await tools.call("Target.createTarget", url=url)
        attached = await tools.call(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        page = Page(tools, attached["sessionId"])
        try:
            # A new tab starts on about:blank, already "complete": wait for ours.
            loaded = f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
            await page.until(loaded, "the page to load")
            yield page
        finally:
            tools.reader.cancel()


@pytest.mark.timeout(900)  # the first run on a new machine installs Chromium
async def test_page_joins_sends_and_receives(
    browser: str,
    examples: Callable[[str], ModuleType],
    serve: Serve,
    clients: Any,
) -> None:
    app = examples("chat").create_app(rate_limit={"interval": 0.0, "burst": 1})
    async with serve(app) as url, open_page(browser, url + "/") as page:
        await page.js(
            "document.getElementById('user-name').value = 'ada';"
            "document.getElementById('room-name').value = 'browser-room';"
            "document.getElementById('join').click();"
        )
        await page.until("!document.getElementById('message').disabled", "the room to be ready")
        # The page lists only what the room's frames say: its own "joined" included.
        roster = "[...document.querySelectorAll('#roster li')].map((li) => li.textContent)"
        assert await page.js(roster) == ["ada"]
        bob = await clients(ws_url(url, "/api/room/browser-room/websocket"))
        await bob.send({"name": "bob"})
        assert await bob.recv_n(3) == [{"joined": "ada"}, {"joined": "bob"}, {"ready": True}]
        await page.until(f"{roster}.length === 2", "bob in the roster")
        assert await page.js(roster) == ["ada", "bob"]
        await page.js(
            "document.getElementById('message').value = 'hello from chromium';"
            "document.querySelector('#send-form button').click();"
        )
        got = await bob.recv()
        assert (got["name"], got["message"]) == ("ada", "hello from chromium")
        await bob.send({"message": "hi ada"})
        await page.until(
            "document.getElementById('log').textContent.includes('hi ada')", "bob's message"
        )
        await bob.close()
        await page.until(
            "document.getElementById('log').textContent.includes('bob left')", "the quit notice"
        )
        assert await page.js(roster) == ["ada"]
