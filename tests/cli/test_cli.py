"""The ``roost`` command: help, clear errors, ``serve`` with graceful shutdown, ``dev``."""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from roost.cli import main
from roost.storage.sqlite import _lock_data_dir, lock_holder
from tests.conftest import EXAMPLES, ROOT

APPS = Path(__file__).parent / "apps"
ROOST = [sys.executable, "-m", "roost"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.parametrize("args", [[], ["dev"], ["serve"]])
def test_help(runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(main, [*args, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_serve_offers_the_stats_route(runner: CliRunner) -> None:
    result = runner.invoke(main, ["serve", "--help"])
    assert "--stats-path" in result.output


def test_missing_file(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["serve", str(tmp_path / "nope.py"), "--data", str(tmp_path)])
    assert result.exit_code != 0
    assert "no such file" in result.output


def test_missing_module(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["serve", "no_such_module_xyz", "--data", str(tmp_path)])
    assert result.exit_code != 0
    assert "no file or module named 'no_such_module_xyz'" in result.output


def test_module_without_app(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["serve", str(APPS / "no_app.py"), "--data", str(tmp_path)])
    assert result.exit_code != 0
    assert "no roost.App" in result.output
    named = runner.invoke(main, ["serve", f"{APPS / 'no_app.py'}:VALUE", "--data", str(tmp_path)])
    assert named.exit_code != 0
    assert "is a int, not a roost.App" in named.output


def test_a_class_as_the_target_says_what_is_wrong(runner: CliRunner, tmp_path: Path) -> None:
    target = f"{EXAMPLES / 'counter.py'}:Counter"
    result = runner.invoke(main, ["serve", target, "--data", str(tmp_path)])
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "is the class Counter, not a roost.App; wrap it in one" in result.output


def test_a_locked_data_dir_is_refused_in_one_line_before_the_banner(
    runner: CliRunner, tmp_path: Path
) -> None:
    fd = _lock_data_dir(tmp_path)  # what a running server holds
    try:
        for command in ("serve", "dev"):
            result = runner.invoke(
                main, [command, str(EXAMPLES / "counter.py"), "--data", str(tmp_path)]
            )
            assert result.exit_code == 1
            assert f"in use by another Roost process (pid {os.getpid()})" in result.output
            assert "roost serve:" not in result.output and "roost dev:" not in result.output
            assert "Traceback" not in result.output
    finally:
        os.close(fd)
    assert lock_holder(tmp_path) is None


def test_unwritable_data_dir(runner: CliRunner, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    app = str(EXAMPLES / "counter.py")
    result = runner.invoke(main, ["serve", app, "--data", str(blocker / "data")])
    assert result.exit_code != 0
    assert "cannot create the data directory" in result.output
    if os.geteuid() != 0:  # root writes through any mode bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        result = runner.invoke(main, ["serve", app, "--data", str(locked)])
        assert result.exit_code != 0
        assert "not writable" in result.output


def test_port_in_use(runner: CliRunner, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = str(EXAMPLES / "counter.py")
        for command in ("serve", "dev"):
            args = [command, app, "--port", str(port), "--data", str(tmp_path)]
            result = runner.invoke(main, args)
            assert result.exit_code != 0
            assert f"port {port} on 127.0.0.1 is already in use" in result.output


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:  # a failed test: take its worker processes down too
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        shutil.rmtree(Path(proc.log).parent, ignore_errors=True)  # type: ignore[attr-defined]


def start(
    processes: list[subprocess.Popen[bytes]], *args: str, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    """Run ``roost ARGS``; its output goes to a file (``output(proc)`` reads it).

    The file is kept out of ``cwd``: `roost dev` watches the app's directory.
    """
    log = Path(tempfile.mkdtemp(prefix="roost-test-")) / "roost.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [*ROOST, *args],
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc.log = log  # type: ignore[attr-defined]
    processes.append(proc)
    return proc


def output(proc: subprocess.Popen[bytes]) -> str:
    return Path(proc.log).read_text()  # type: ignore[attr-defined]


async def wait_ready(url: str, proc: subprocess.Popen[bytes], path: str = "/") -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=url) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{output(proc)}")
            try:
                await http.get(path)
                return
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise AssertionError("server did not start in 30 s")


async def test_serve_sigterm_loses_no_acknowledged_write(
    processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["serve", str(APPS / "slow_counter.py"), "--port", str(port), "--data", str(tmp_path)]
    proc = start(processes, *args)
    await wait_ready(url, proc)
    ws = await connect(url.replace("http", "ws") + "/socket")
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
        in_flight = [asyncio.ensure_future(http.get("/increment")) for _ in range(30)]
        # Each increment writes, then stays in the object for 1 s: once all 30
        # writes are visible, all 30 requests are in flight.
        deadline = time.monotonic() + 20
        while int((await http.get("/value")).text) < 30:
            assert time.monotonic() < deadline, "the increments did not arrive"
        proc.send_signal(signal.SIGTERM)
        results = await asyncio.gather(*in_flight, return_exceptions=True)
    acknowledged = [int(r.text) for r in results if isinstance(r, httpx.Response)]
    assert acknowledged, results
    assert all(isinstance(r, httpx.Response) and r.status_code == 200 for r in results)
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert proc.wait(30) == 0
    # Restart on the same storage: every acknowledged increment is there.
    proc = start(processes, *args)
    await wait_ready(url, proc)
    async with httpx.AsyncClient(base_url=url) as http:
        value = int((await http.get("/value")).text)
    assert value >= max(acknowledged)
    assert value == len(acknowledged) == 30  # every request was in flight and finished
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


async def test_dev_serves_reloads_and_keeps_data_beside_the_app(
    processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    app_file = tmp_path / "myapp.py"
    shutil.copy(EXAMPLES / "counter.py", app_file)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(processes, "dev", str(app_file), "--port", str(port), cwd=tmp_path)
    await wait_ready(url, proc)
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/counter/d/increment")).text == "1"
        assert (tmp_path / ".roost").is_dir()
        # An edit restarts the worker; the data stays.
        edited = app_file.read_text().replace("Response(str(value),", 'Response("=" + str(value),')
        assert edited != app_file.read_text()
        deadline = time.monotonic() + 30
        rewrite_at = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= rewrite_at:
                # Written again now and then, in case the watcher was not yet
                # watching when the first write happened.
                app_file.write_text(edited)
                rewrite_at = time.monotonic() + 3
            try:
                if (await http.get("/counter/d")).text == "=1":
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the edit was not picked up")
        # The reloaded app read the value the first worker stored.
        assert (await http.get("/counter/d/increment")).text == "=2"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert f"roost dev: http://127.0.0.1:{port}" in output(proc)


async def test_dev_runs_the_chat_package(
    processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["dev", "examples/chat", "--port", str(port), "--data", str(tmp_path), "--no-reload"]
    proc = start(processes, *args)
    await wait_ready(url, proc)
    async with httpx.AsyncClient(base_url=url) as http:
        assert "Roost chat" in (await http.get("/")).text
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


@pytest.mark.parametrize(
    ("impl", "durability"), [("roost", "full"), ("httptools", "process"), ("h11", "full")]
)
async def test_serve_runs_each_http_implementation_and_durability(
    processes: list[subprocess.Popen[bytes]], tmp_path: Path, impl: str, durability: str
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    counter = str(ROOT / "examples" / "counter.py")
    proc = start(processes, "serve", counter, "--port", str(port), "--data", str(tmp_path),
                 "--http", impl, "--durability", durability, "--stats-path", "/_s")  # fmt: skip
    await wait_ready(url, proc, "/counter/a")
    async with httpx.AsyncClient(base_url=url) as http:
        assert [(await http.get("/counter/a/increment")).text for _ in range(3)] == ["1", "2", "3"]
        assert (await http.get("/counter/a")).text == "3"
        storage = (await http.get("/_s")).json()["storage"]
        assert storage["durability"] == durability
        assert (storage["syncs"] > 0) == (durability == "full")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


async def test_serve_lifts_the_open_files_limit_to_the_hard_one(
    processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 512:
        pytest.fail(f"the hard limit on open files ({hard}) leaves nothing to lift")
    port = free_port()
    counter = str(ROOT / "examples" / "counter.py")
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))  # inherited by the server
    try:
        proc = start(processes, "serve", counter, "--port", str(port), "--data", str(tmp_path))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    await wait_ready(f"http://127.0.0.1:{port}", proc, "/counter/a")
    limits = await asyncio.to_thread(Path(f"/proc/{proc.pid}/limits").read_text)
    line = next(row for row in limits.splitlines() if row.startswith("Max open files"))
    server_soft = line.split()[3]
    assert server_soft == (str(hard) if hard != resource.RLIM_INFINITY else str(1 << 20))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
