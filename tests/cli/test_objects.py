"""``roost objects APP list|show|delete``: offline, and beside a running server."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from roost import codec
from roost.cli import main
from roost.cli.loader import load_app
from roost.storage.engine import CommitFuture, WriteBatch
from roost.storage.sqlite import SqliteEngine, lock_data_dir

APP = """
import roost

class Box(roost.DurableObject):
    async def put(self, values):
        await self.ctx.storage.put(values)

    async def arm(self, when_ms):
        await self.ctx.storage.set_alarm(when_ms)

    async def alarm(self):
        pass

class Notes(roost.DurableObject, sql=True):
    async def add(self, body):
        sql = self.ctx.storage.sql
        sql.exec("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
        sql.exec("INSERT INTO notes (body) VALUES (?)", body)

async def fetch(request, env):
    return roost.Response("ok")

app = roost.App({"BOX": Box, "NOTES": Notes}, fetch=fetch)
"""


@pytest.fixture
def app(tmp_path: Path) -> Path:
    path = tmp_path / "boxapp.py"
    path.write_text(APP)
    return path


def populate(app: Path) -> dict[str, str]:
    """Write objects through the app's own runtime; their IDs by name."""
    loaded = load_app(str(app))

    async def write() -> dict[str, str]:
        loaded.app.data_dir = app.parent / ".roost"
        runtime = loaded.app.runtime
        async with runtime:
            env = runtime.env
            await env.BOX.get_by_name("apples").put(
                {"count": 5, "blob": b"\x00\x01\xff", "when": [1, "two"]}
            )
            await env.BOX.get_by_name("pears").put({"count": 1})
            await env.BOX.get_by_name("pears").arm(1_900_000_000_000)
            await env.NOTES.get_by_name("n").add("hello")
            return {n: env.BOX.id_from_name(n).hex for n in ("apples", "pears")} | {
                "n": env.NOTES.id_from_name("n").hex
            }

    return asyncio.run(write())


def run(*args: str) -> Any:
    return CliRunner().invoke(main, ["objects", *args], catch_exceptions=False)


def test_list_and_show_read_what_the_app_stored(app: Path) -> None:
    ids = populate(app)
    listed = run(str(app), "list", "BOX", "--json")
    assert listed.exit_code == 0, listed.output
    page = json.loads(listed.output)
    assert [o["id"] for o in page["objects"]] == sorted([ids["apples"], ids["pears"]])
    assert page["next_after"] is None
    assert {o["keys"] for o in page["objects"]} == {3, 1}

    shown = run(str(app), "show", "BOX", "--name", "apples", "--json")
    assert shown.exit_code == 0, shown.output
    view = json.loads(shown.output)
    values = {e["key"]: e["value"] for e in view["entries"]}
    assert values == {"count": 5, "blob": {"$bytes": "AAH/"}, "when": [1, "two"]}

    text = run(str(app), "show", "BOX", ids["pears"])
    assert text.exit_code == 0, text.output
    assert "'count' = 1" in text.output and "alarm:   2030-03-17T17:46:40.000+00:00" in text.output

    notes = run(str(app), "show", "NOTES", "--name", "n")
    assert notes.exit_code == 0, notes.output
    assert "notes: 1 rows" in notes.output and "kind:    SQL" in notes.output


def test_list_pages_with_a_cursor_and_filters_names_by_prefix(app: Path) -> None:
    populate(app)
    data = app.parent / ".roost"

    async def named() -> None:  # names are recorded when the caller gives them
        engine = SqliteEngine(data)
        engine.start(asyncio.get_running_loop())
        for i in range(5):
            done = CommitFuture(loop=asyncio.get_running_loop())
            store = engine.open_object("BOX", f"{i:064x}", name=f"fig-{i}")
            store.commit(WriteBatch(writes={"k": codec.encode(i)}), done)
            await done
        await engine.close()

    asyncio.run(named())
    first = run(str(app), "list", "BOX", "--prefix", "fig-", "--limit", "3")
    assert first.exit_code == 0, first.output
    assert [line.split()[-1] for line in first.stdout.splitlines()] == [
        "'fig-0'",
        "'fig-1'",
        "'fig-2'",
    ]
    cursor = first.stderr.split("--after ")[1].strip()
    rest = run(str(app), "list", "BOX", "--prefix", "fig-", "--after", cursor, "--json")
    assert [o["name"] for o in json.loads(rest.output)["objects"]] == ["fig-3", "fig-4"]


def test_delete_removes_one_object(app: Path) -> None:
    ids = populate(app)
    gone = run(str(app), "delete", "BOX", "--name", "apples", "--yes")
    assert gone.exit_code == 0, gone.output
    page = json.loads(run(str(app), "list", "BOX", "--json").output)
    assert [o["id"] for o in page["objects"]] == [ids["pears"]]
    again = run(str(app), "show", "BOX", ids["apples"])
    assert again.exit_code == 1 and "stores anything" in again.output


def test_beside_a_running_server_reads_work_and_delete_is_refused(app: Path) -> None:
    ids = populate(app)
    data = app.parent / ".roost"
    fd = lock_data_dir(data)  # what a running server holds
    try:
        listed = run(str(app), "list", "BOX", "--json")
        assert listed.exit_code == 0, listed.output
        assert len(json.loads(listed.output)["objects"]) == 2
        shown = run(str(app), "show", "BOX", "--name", "pears")
        assert shown.exit_code == 0 and "'count' = 1" in shown.output
        notes = run(str(app), "show", "NOTES", "--name", "n")
        assert notes.exit_code == 0 and "tables: not read" in notes.output
        refused = run(str(app), "delete", "BOX", ids["apples"], "--yes")
        assert refused.exit_code == 1
        assert f"a server is running on {data.resolve()}" in refused.output
        assert "delete through it" in refused.output
    finally:
        os.close(fd)
    assert len(json.loads(run(str(app), "list", "BOX", "--json").output)["objects"]) == 2


def test_mistakes_are_one_line_errors(app: Path, tmp_path: Path) -> None:
    populate(app)
    unknown = run(str(app), "list", "NOPE")
    assert unknown.exit_code == 1 and "no namespace 'NOPE'" in unknown.output
    empty = run(str(app), "list", "BOX", "--data", str(tmp_path / "empty"))
    assert empty.exit_code == 1 and "holds no Roost data" in empty.output
    both = run(str(app), "show", "BOX", "ab" * 32, "--name", "x")
    assert both.exit_code == 2
    bad = run(str(app), "show", "BOX", "not-an-id")
    assert bad.exit_code == 1 and "not an object ID" in bad.output
