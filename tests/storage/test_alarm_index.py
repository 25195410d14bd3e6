"""The alarm index as the scheduler reads it: order, keyset pages, SQL objects peeked at."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roost.storage.engine import AlarmEntry, CommitFuture, StorageEngine, WriteBatch
from roost.storage.memory import MemoryEngine
from roost.storage.objectfiles import ObjectFiles
from roost.storage.sqlite import SqliteEngine


@pytest.fixture(params=["memory", "sqlite"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StorageEngine]:
    made: StorageEngine = MemoryEngine() if request.param == "memory" else SqliteEngine(tmp_path)
    made.start(asyncio.get_running_loop())
    yield made
    await made.close()


async def set_alarm(engine: StorageEngine, namespace: str, object_id: str, due: int) -> None:
    batch = WriteBatch()
    batch.set_alarm(due)
    done = CommitFuture(loop=asyncio.get_running_loop())
    engine.open_object(namespace, object_id).commit(batch, done)
    await done


def key(entry: AlarmEntry) -> tuple[int, str, str]:
    return (entry.due_ms, entry.namespace, entry.object_id)


async def test_due_rows_come_in_due_then_key_order_and_page_by_keyset(
    engine: StorageEngine,
) -> None:
    rows = [
        (namespace, secrets.token_hex(32), due)
        for namespace in ("A", "B")
        for due in (1000, 1000, 1000, 2000, 3000)
    ]
    for namespace, object_id, due in rows:
        await set_alarm(engine, namespace, object_id, due)
    await set_alarm(engine, "A", secrets.token_hex(32), 9000)  # not due

    everything = engine.due_alarms(5000, 100)
    assert [key(e) for e in everything] == sorted((d, n, o) for n, o, d in rows)

    pages: list[AlarmEntry] = []
    after = None
    while page := engine.due_alarms(5000, 3, after=after):
        pages += page
        after = page[-1]
    assert pages == everything
    assert engine.due_alarms(5000, 3, after=everything[-1]) == []
    assert engine.next_alarm_after(5000) == 9000


async def test_peeking_keeps_the_file_open_for_the_activation(tmp_path: Path) -> None:
    files = ObjectFiles(tmp_path, durability="process")
    files.start(asyncio.get_running_loop())
    object_id = secrets.token_hex(32)
    try:
        # No file: nothing is created, no connection kept.
        assert await asyncio.wrap_future(files.peek("NS", object_id)) is None
        assert not files.path("NS", object_id).exists()
        files.release_peeked("NS", object_id)

        db = files.open("NS", object_id, create=True)
        assert db is not None
        with db.trusted() as conn:
            conn.execute("INSERT INTO _roost_alarm VALUES (0, 1234)")
        files.release("NS", object_id, db)

        # The peek reads the alarm in a thread; open() then takes that connection.
        assert await asyncio.wrap_future(files.peek("NS", object_id)) == 1234
        taken = files.open("NS", object_id, create=False)
        assert taken is not None and taken is not db
        files.release_peeked("NS", object_id)  # taken: nothing to close
        assert taken.read_alarm() == 1234
        files.release("NS", object_id, taken)

        # Peeked and not taken: release_peeked closes it, and a later open
        # waits for that close (one connection per file at a time).
        peek = files.peek("NS", object_id)
        files.release_peeked("NS", object_id)
        assert await asyncio.wrap_future(peek) == 1234
        again = files.open("NS", object_id, create=False)
        assert again is not None and again.read_alarm() == 1234
        files.release("NS", object_id, again)

        # open() while the peek is still opening the file waits for it and takes it.
        files.peek("NS", object_id)
        during = files.open("NS", object_id, create=False)
        assert during is not None and during.read_alarm() == 1234
        files.release_peeked("NS", object_id)
        files.release("NS", object_id, during)
    finally:
        await asyncio.to_thread(files.close)
