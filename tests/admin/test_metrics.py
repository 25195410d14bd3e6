"""``/metrics`` on the admin port: Prometheus text, behind the token, never on the app's port."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from roost import App, DurableObject, Env, ObjectOverloaded, Request, Response
from roost.admin.web import AdminApp
from roost.cli import main
from roost.server import bind, running
from tests.cli import test_cli as cli
from tests.conftest import ROOT, quiesce, ws_url

pytestmark = pytest.mark.integration  # real servers on 127.0.0.1

TOKEN = "test-token-0123456789"


class Counter(DurableObject):
    async def increment(self) -> int:
        value = (await self.ctx.storage.get("value") or 0) + 1
        await self.ctx.storage.put("value", value)
        return value

    async def fetch(self, request: Request) -> Response:
        return Response(str(await self.ctx.storage.get("value") or 0), media_type="text/plain")


async def front(request: Request, env: Env) -> Response:
    parts = request.url.path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "inc":
        return Response(str(await env.COUNTER.get_by_name(parts[1]).increment()))
    if len(parts) == 2 and parts[0] == "read":
        return await env.COUNTER.get_by_name(parts[1]).fetch(request)
    return Response("not found", status_code=404)


@asynccontextmanager
async def served(app: App, **admin_options: Any) -> AsyncIterator[tuple[str, str]]:
    """The app and its admin server: yields (app URL, admin URL)."""
    admin = AdminApp(app, TOKEN, **admin_options)
    sock = bind("127.0.0.1", 0)
    admin_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with running(app, admin=(admin, sock)) as url:
        yield url, admin_url


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_counters_move_with_requests(tmp_path: Path) -> None:
    app = App({"COUNTER": Counter}, fetch=front, data_dir=tmp_path / "data")
    async with served(app, event_metrics=True) as (url, admin), httpx.AsyncClient() as http:
        before = parse((await http.get(admin + "/metrics", headers=auth())).text)
        for name in ("a", "a", "a", "b", "c"):
            assert (await http.get(f"{url}/inc/{name}")).status_code == 200
        assert (await http.get(f"{url}/read/a")).text == "3"
        assert (await http.get(f"{url}/read/b")).text == "1"
        answer = await http.get(admin + "/metrics", headers=auth())
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    after = parse(answer.text)
    ns = (("namespace", "COUNTER"),)

    def moved(name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
        return after[name, labels] - before.get((name, labels), 0.0)

    assert moved("roost_events_total", (("kind", "rpc"), *ns)) == 5
    assert moved("roost_events_total", (("kind", "fetch"), *ns)) == 2
    assert moved("roost_activations_total") == 3
    assert after["roost_live_objects", ns] == 3
    assert moved("roost_http_requests_total") == 7
    # Five batches written (reads write nothing), committed and fsynced.
    assert moved("roost_batches_committed_total") == 5
    assert moved("roost_commits_total") >= 1
    assert moved("roost_fsyncs_total") >= 1
    assert moved("roost_commit_duration_seconds_count") == moved("roost_commits_total")
    assert after["roost_fsync_duration_seconds_count", ()] == after["roost_fsyncs_total", ()]
    assert moved("roost_batch_writes_count") == 5
    assert moved("roost_batch_writes_sum") == 5  # one key per batch
    assert after.get(("roost_overloads_total", ns), 0) == 0
    assert after["roost_storage_bytes", (("part", "kv"),)] > 0
    assert after["roost_websockets", (("mode", "hibernatable"),)] == 0
    assert after["roost_info", (("durability", "full"),)] == 1
    assert after["process_resident_memory_bytes", ()] > 0
    # The queue-depth histogram observes one event in 16: its buckets are consistent.
    depth = after.get(("roost_event_queue_depth_count", ns), 0)
    assert depth == after.get(("roost_event_queue_depth_bucket", (("le", "+Inf"), *ns)), 0)


async def test_without_event_metrics_nothing_is_observed_per_event(tmp_path: Path) -> None:
    app = App({"COUNTER": Counter}, fetch=front, data_dir=tmp_path / "data")
    async with served(app) as (url, admin), httpx.AsyncClient() as http:
        await http.get(f"{url}/inc/a")
        after = parse((await http.get(admin + "/metrics", headers=auth())).text)
    assert not [key for key in after if key[0] == "roost_events_total"]
    assert after["roost_batches_committed_total", ()] == 1
    assert after["roost_commit_duration_seconds_count", ()] >= 1


async def test_metrics_are_not_on_the_apps_port(tmp_path: Path) -> None:
    app = App({"COUNTER": Counter}, fetch=front, data_dir=tmp_path / "data")
    async with served(app) as (url, _), httpx.AsyncClient() as http:
        answer = await http.get(url + "/metrics", headers=auth())
    assert answer.status_code == 404
    assert answer.text == "not found"  # the front answered: no metrics there


async def test_the_token_is_required(tmp_path: Path) -> None:
    app = App({"COUNTER": Counter}, fetch=front, data_dir=tmp_path / "data")
    async with served(app) as (_, admin), httpx.AsyncClient() as http:
        for path in ("/metrics", "/api/overview", "/api/objects?namespace=COUNTER", "/api/errors"):
            missing = await http.get(admin + path)
            assert missing.status_code == 401, path
            assert missing.headers["www-authenticate"].startswith("Bearer")
            assert "roost_" not in missing.text
            assert (await http.get(admin + path, headers=auth("wrong"))).status_code == 401
            assert (await http.get(admin + path, headers=auth(TOKEN + "x"))).status_code == 401
            basic = {"authorization": f"Basic {TOKEN}"}
            assert (await http.get(admin + path, headers=basic)).status_code == 401
            assert (await http.get(admin + path, headers=auth())).status_code == 200, path
        # The page's shell holds no data and is served without the token.
        shell = await http.get(admin + "/")
        assert shell.status_code == 200
        assert "content-security-policy" in shell.headers


async def test_open_metrics_opens_metrics_only(tmp_path: Path) -> None:
    app = App({"COUNTER": Counter}, fetch=front, data_dir=tmp_path / "data")
    async with served(app, open_metrics=True) as (_, admin), httpx.AsyncClient() as http:
        assert (await http.get(admin + "/metrics")).status_code == 200
        assert (await http.get(admin + "/api/overview")).status_code == 401


async def test_recent_errors_keep_roost_error_records(tmp_path: Path) -> None:
    app = App({"COUNTER": Counter}, fetch=front, data_dir=tmp_path / "data")
    async with served(app) as (_, admin), httpx.AsyncClient() as http:
        logging.getLogger("roost.test").error("broke <b>%s</b>", "here")
        logging.getLogger("elsewhere").error("not roost's")
        logging.getLogger("roost.test").warning("only a warning")
        errors = (await http.get(admin + "/api/errors", headers=auth())).json()["errors"]
    assert [(e["logger"], e["message"]) for e in errors] == [("roost.test", "broke <b>here</b>")]


processes = cli.processes  # the fixture: servers started by a test are stopped after it


async def test_roost_serve_admin_prints_a_generated_token(
    processes: list[subprocess.Popen[bytes]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROOST_ADMIN_TOKEN", raising=False)
    port, admin_port = cli.free_port(), cli.free_port()
    app = str(ROOT / "examples" / "counter.py")
    args = ["serve", app, "--port", str(port), "--data", str(tmp_path), "--admin", str(admin_port)]
    proc = cli.start(processes, *args, "--admin-event-metrics")
    url, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    await cli.wait_ready(url, proc)
    await cli.wait_ready(admin, proc)
    printed = re.findall(r"roost admin token \(generated; .*\): (\S+)", cli.output(proc))
    assert len(printed) == 1, cli.output(proc)
    async with httpx.AsyncClient() as http:
        assert (await http.get(url + "/counter/apples/increment")).text == "1"
        assert (await http.get(admin + "/metrics")).status_code == 401
        answer = await http.get(admin + "/metrics", headers=auth(printed[0]))
    assert answer.status_code == 200
    rpc = (("kind", "rpc"), ("namespace", "COUNTER"))
    assert parse(answer.text)["roost_events_total", rpc] == 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


async def test_roost_serve_admin_takes_the_token_from_the_environment(
    processes: list[subprocess.Popen[bytes]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROOST_ADMIN_TOKEN", TOKEN)
    port, admin_port = cli.free_port(), cli.free_port()
    monkeypatch.setenv("ROOST_ADMIN", f"127.0.0.1:{admin_port}")
    app = str(ROOT / "examples" / "counter.py")
    proc = cli.start(processes, "serve", app, "--port", str(port), "--data", str(tmp_path))
    admin = f"http://127.0.0.1:{admin_port}"
    await cli.wait_ready(admin, proc)
    assert TOKEN not in cli.output(proc) and "token (generated" not in cli.output(proc)
    async with httpx.AsyncClient() as http:
        assert (await http.get(admin + "/api/overview", headers=auth())).status_code == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_a_bad_admin_address_fails_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    app = str(ROOT / "examples" / "counter.py")
    result = CliRunner().invoke(main, ["serve", app], env={"ROOST_ADMIN": "localhost:http"})
    assert result.exit_code == 1
    assert "ROOST_ADMIN='localhost:http' is not valid" in result.output
    rows = CliRunner().invoke(main, ["serve", app, "--admin", "9090", "--show-config"]).output
    assert re.search(r"^admin +127\.0\.0\.1:9090 +\[command line \(--admin\)\]$", rows, re.M)


class Gate(DurableObject):
    """Holds its callers until released: the second event finds the queue full."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def wait(self) -> str:
        await self.release.wait()
        return "released"

    async def open(self) -> None:
        self.release.set()

    async def ping(self) -> int:
        return 1

    async def fetch(self, request: Request) -> Response:
        if request.websocket is not None:
            self.ctx.accept_websocket(request.websocket)
            return Response(status_code=101)
        return Response("gate")

    async def websocket_message(self, ws: Any, message: str | bytes) -> None:
        ws.send(f"echo {message}")


async def gate_front(request: Request, env: Env) -> Response:
    return await env.GATE.get_by_name("g").fetch(request)


async def test_overloads_websocket_events_and_sampled_durations_are_counted(
    tmp_path: Path,
) -> None:
    app = App({"GATE": Gate}, fetch=gate_front, data_dir=tmp_path / "data", max_queue=1)
    async with served(app, event_metrics=True) as (url, admin), httpx.AsyncClient() as http:
        gate = app.env.GATE.get_by_name("held")
        waiting = asyncio.ensure_future(gate.wait())
        await quiesce()  # the first call is in the object, holding its only queue place
        with pytest.raises(ObjectOverloaded):
            await gate.ping()
        await app.env.GATE.get_by_name("other").open()
        async with connect(ws_url(url, "/")) as ws:
            for i in range(3):
                await ws.send(f"m{i}")
                assert await asyncio.wait_for(ws.recv(), 5) == f"echo m{i}"
        for _ in range(30):
            assert await app.env.GATE.get_by_name("other").ping() == 1
        answer = await http.get(admin + "/metrics", headers=auth())
        waiting.cancel()
    after = parse(answer.text)
    ns = (("namespace", "GATE"),)
    assert after["roost_overloads_total", ns] == 1
    assert after["roost_events_total", (("kind", "websocket"), *ns)] == 3
    # The upgrade's fetch, and the refused ping counted as it arrived.
    assert after["roost_events_total", (("kind", "fetch"), *ns)] == 1
    assert after["roost_events_total", (("kind", "rpc"), *ns)] == 33
    events = sum(v for (name, _), v in after.items() if name == "roost_events_total")
    timed = sum(v for (name, _), v in after.items() if name == "roost_event_duration_seconds_count")
    assert timed == events // 16  # one event in 16, by arrival order
    depths = after["roost_event_queue_depth_count", ns]
    assert depths == timed
