"""The admin page in headless Chromium (Debian's ``chromium``, as the chat's browser test).

The page loads with the token, finds an object written through the app, shows
its value, shows a value holding ``<script>`` as text, and a wrong token gets 401.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from roost import App, DurableObject, Env, Request, Response
from roost.admin.web import AdminApp
from roost.server import bind, running
from tests.examples.test_chat_browser import Page, browser, chromium, open_page

__all__ = ["browser", "chromium"]  # the fixtures, used by name

pytestmark = pytest.mark.integration  # a real server and a Chromium process

TOKEN = "page-token-0123456789"
HOSTILE = "<script>window.pwned = 1</script><img src=x onerror='window.pwned = 2'>"


class Note(DurableObject):
    async def write(self, text: str) -> None:
        await self.ctx.storage.put("text", text)


async def front(request: Request, env: Env) -> Response:
    name = request.url.path.strip("/")
    await env.NOTES.get_by_name(name).write(request.query_params["text"])
    return Response("ok")


@asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    app = App({"NOTES": Note}, fetch=front, data_dir=tmp_path / "data")
    sock = bind("127.0.0.1", 0)
    async with running(app, admin=(AdminApp(app, TOKEN), sock)) as url:
        yield url, f"http://127.0.0.1:{sock.getsockname()[1]}"


async def log_in(page: Page, token: str) -> None:
    await page.until("!document.getElementById('login').hidden", "the login form")
    await page.js(
        f"document.getElementById('token').value = {json.dumps(token)};"
        "document.getElementById('login-form').requestSubmit();"
    )


async def search(page: Page, query: str) -> None:
    await page.js(
        "document.getElementById('results').replaceChildren();"  # not the last results
        f"document.getElementById('search-q').value = {json.dumps(query)};"
        "document.getElementById('search-form').requestSubmit();"
    )
    await page.until(
        "document.querySelector('#results button') !== null", f"the results for {query!r}"
    )


@pytest.mark.timeout(120)
async def test_the_page_finds_and_shows_objects_escaped(browser: str, tmp_path: Path) -> None:
    async with served(tmp_path) as (url, admin), httpx.AsyncClient() as http:
        for name, text in (("apples", HOSTILE), ("pears", "ripe")):
            assert (await http.get(f"{url}/{name}", params={"text": text})).text == "ok"
        async with open_page(browser, admin + "/") as page:
            # A wrong token: the API answers 401 and the page says so.
            await log_in(page, "not-the-token")
            await page.until(
                "document.getElementById('status').textContent.includes('401')", "the refusal"
            )
            assert await page.js("document.getElementById('main').hidden") is True
            status = "fetch('/api/overview', {headers: {Authorization: 'Bearer %s'}})"
            assert await page.js(f"{status % 'nope'}.then((r) => r.status)") == 401
            assert await page.js("fetch('/metrics').then((r) => r.status)") == 401

            await log_in(page, TOKEN)
            await page.until("!document.getElementById('main').hidden", "the page's data")
            rows = "[...document.querySelectorAll('#namespaces tbody tr')].map((r) => r.innerText)"
            await page.until(f"{rows}.length === 1", "the namespaces")
            assert (await page.js(rows))[0].split("\t")[::2] == ["NOTES", "2"]
            await page.until(
                "document.getElementById('chart-live_objects') !== null", "a live chart"
            )

            await search(page, "pears")
            results = "[...document.querySelectorAll('#results button')]"
            assert await page.js(f"{results}.length") == 1
            await page.js(f"{results}[0].click()")
            cells = (
                "[...document.querySelectorAll('#object-kv tbody td')].map((c) => c.textContent)"
            )
            await page.until(f"{cells}.length === 2", "the object's storage")
            assert await page.js(cells) == ["text", "'ripe'"]

            await search(page, "apples")
            assert await page.js(f"{results}[0].textContent.startsWith('apples')")
            await page.js(f"{results}[0].click()")
            await page.until(f"{cells}[1] !== \"'ripe'\"", "the other object")
            # The value is shown as the characters it holds: no element made of it.
            assert (await page.js(cells))[1] == repr(HOSTILE)
            assert (
                await page.js(
                    "document.querySelectorAll('#object-kv script, #object-kv img').length"
                )
                == 0
            )
            assert await page.js("window.pwned === undefined")

            # A logged error shows as text too.
            logging.getLogger("roost.test").error("failed for %s", HOSTILE)
            errors = "document.getElementById('errors').textContent"
            await page.until(f"{errors}.includes('failed for <script>')", "the error record")
            assert (
                await page.js("document.querySelectorAll('#errors script, #errors img').length")
                == 0
            )
            assert await page.js("window.pwned === undefined")
