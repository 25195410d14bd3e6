"""``roost export``, ``roost import`` and ``roost backup`` from the command line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner

import roost
from roost.cli import main
from roost.cli.loader import load_app
from tests.conftest import EXAMPLES

COUNTER = str(EXAMPLES / "counter.py")
ROOST = [sys.executable, "-m", "roost"]


def counters(data_dir: Path, names: list[str]) -> dict[str, int]:
    objects = load_app(COUNTER).app._objects

    async def run() -> dict[str, int]:
        async with roost.Runtime(objects, data_dir=data_dir) as runtime:
            return {n: await runtime.env.COUNTER.get_by_name(n).value() for n in names}

    return asyncio.run(run())


def seeded(data_dir: Path) -> None:
    objects = load_app(COUNTER).app._objects

    async def run() -> None:
        async with roost.Runtime(objects, data_dir=data_dir) as runtime:
            for i in range(5):
                await runtime.env.COUNTER.get_by_name(f"c{i}").increment(i + 1)

    asyncio.run(run())


def test_export_then_import_with_plain_progress_lines(tmp_path: Path) -> None:
    seeded(tmp_path / "src")
    archive = tmp_path / "a.roost"
    runner = CliRunner()
    result = runner.invoke(
        main, ["export", COUNTER, "--data", str(tmp_path / "src"), "-o", str(archive)]
    )
    assert result.exit_code == 0, result.output
    assert "exporting: 5 objects" in result.output
    assert "exported 5 objects (5 KV, 0 SQL" in result.output
    result = runner.invoke(main, ["import", COUNTER, str(archive), "--data", str(tmp_path / "dst")])
    assert result.exit_code == 0, result.output
    assert "imported 5 objects" in result.output
    names = [f"c{i}" for i in range(5)]
    assert counters(tmp_path / "dst", names) == {f"c{i}": i + 1 for i in range(5)}
    # Twice into the same directory: refused, nothing changes.
    result = runner.invoke(main, ["import", COUNTER, str(archive), "--data", str(tmp_path / "dst")])
    assert result.exit_code == 1
    assert "is not empty: import writes only into a new data directory" in result.output


def test_a_truncated_archive_fails_the_command(tmp_path: Path) -> None:
    seeded(tmp_path / "src")
    archive = tmp_path / "a.roost"
    runner = CliRunner()
    runner.invoke(main, ["export", COUNTER, "--data", str(tmp_path / "src"), "-o", str(archive)])
    archive.write_bytes(archive.read_bytes()[:-3])
    result = runner.invoke(main, ["import", COUNTER, str(archive), "--data", str(tmp_path / "dst")])
    assert result.exit_code == 1
    assert "Error: import: " in result.output and "is truncated" in result.output
    assert not (tmp_path / "dst").exists()


def test_export_names_an_unknown_namespace(tmp_path: Path) -> None:
    seeded(tmp_path / "src")
    args = ["export", COUNTER, "--data", str(tmp_path / "src"), "-o", str(tmp_path / "a")]
    result = CliRunner().invoke(main, [*args, "--namespace", "NOPE"])
    assert result.exit_code == 1
    assert "binds no namespace 'NOPE' (it binds COUNTER)" in result.output


def test_backup_then_check(tmp_path: Path) -> None:
    seeded(tmp_path / "src")
    runner = CliRunner()
    result = runner.invoke(
        main, ["backup", COUNTER, str(tmp_path / "copy"), "--data", str(tmp_path / "src")]
    )
    assert result.exit_code == 0, result.output
    assert "backed up 1 databases" in result.output
    result = runner.invoke(main, ["check", str(tmp_path / "copy")])
    assert result.exit_code == 0, result.output
    names = [f"c{i}" for i in range(5)]
    assert counters(tmp_path / "copy", names) == counters(tmp_path / "src", names)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def roost_command(*args: str) -> None:
    """Run ``roost ARGS`` in a process of its own, as an operator would; it must succeed."""
    proc = await asyncio.create_subprocess_exec(
        *ROOST, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()


async def test_export_and_backup_while_a_server_keeps_serving_writes(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    log = (tmp_path / "serve.log").open("wb")
    serve = await asyncio.create_subprocess_exec(
        *ROOST, "serve", COUNTER, "--port", str(port), "--data", str(data),
        stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    names = [f"w{i}" for i in range(16)]
    acknowledged: dict[str, int] = dict.fromkeys(names, 0)
    stop = asyncio.Event()
    acked = asyncio.Condition()

    async def until(predicate: Any) -> None:
        async with acked:
            await acked.wait_for(predicate)

    async def write(http: httpx.AsyncClient, name: str) -> None:
        while not stop.is_set():
            response = await http.get(f"/counter/{name}/increment")
            assert response.status_code == 200
            async with acked:
                acknowledged[name] = int(response.text)
                acked.notify_all()

    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            for _ in range(600):
                with contextlib.suppress(httpx.TransportError):
                    await http.get("/counter/w0")
                    break
                assert serve.returncode is None, (tmp_path / "serve.log").read_text()
                await asyncio.sleep(0.05)
            writers = [asyncio.create_task(write(http, n)) for n in names]
            await until(lambda: min(acknowledged.values()) >= 5)  # every writer is under way
            before = dict(acknowledged)  # acknowledged before the export starts
            archive = tmp_path / "a.roost"
            await roost_command("export", COUNTER, "--data", str(data), "-o", str(archive))
            during = dict(acknowledged)
            await roost_command("backup", COUNTER, str(tmp_path / "copy"), "--data", str(data))
            # The server kept serving: every writer is still being acknowledged.
            after = dict(acknowledged)
            await until(lambda: all(acknowledged[n] > after[n] for n in names))
            stop.set()
            await asyncio.gather(*writers)
    finally:
        if serve.returncode is None:
            os.killpg(serve.pid, signal.SIGTERM)
        await serve.wait()
        log.close()
    runner = CliRunner()
    args = ["import", COUNTER, str(archive), "--data", str(tmp_path / "dst")]
    result = await asyncio.to_thread(runner.invoke, main, args)  # it runs a loop of its own
    assert result.exit_code == 0, result.output
    imported: dict[str, Any] = await asyncio.to_thread(counters, tmp_path / "dst", names)
    for name in names:
        # Every write acknowledged before the export began is in the archive; none
        # acknowledged after it ended can be.
        assert before[name] <= imported[name] <= max(during[name], before[name]) + 1, name
    copied = await asyncio.to_thread(counters, tmp_path / "copy", names)
    assert all(copied[n] >= during[n] for n in names)
    result = runner.invoke(main, ["check", str(tmp_path / "copy")])
    assert result.exit_code == 0, result.output
