"""Settings of ``roost dev`` and ``roost serve``: flags, ``ROOST_*`` variables, precedence.

command line > ROOST_* environment variable > the app's own setting > Roost's default
(``docs/deployment.md``).  ``--show-config`` reads each value back from the
objects the server would use; the subprocess tests check that a real server
honours what the environment says.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from roost.cli import main
from roost.cli.config import SETTINGS
from tests.cli import test_cli as cli
from tests.conftest import ROOT

processes = cli.processes  # the fixture: servers started by a test are stopped after it

#: An app that sets some of the settings in code, and answers with what its
#: runtime, engine and the request's scope ended up with.
CONFIGURED_APP = """
import json
from pathlib import Path

from roost import App, DurableObject, Request, Response, StorageLimits


class Box(DurableObject):
    async def put(self) -> int:
        self.ctx.storage.put("k", 1)
        return 1


async def fetch(request: Request, env) -> Response:
    if request.url.path.endswith("/write"):
        await env.BOX.get_by_name("a").put()
    rt = app.runtime
    return Response(json.dumps({
        "path": request.scope["path"],
        "root_path": request.scope["root_path"],
        "data_dir": str(rt.data_dir),
        "durability": rt.engine.durability,
        "idle_timeout": rt.idle_timeout,
        "call_timeout": rt.deadlines.timeout,
        "max_key_bytes": rt.limits.max_key_bytes,
        "max_value_bytes": rt.limits.max_value_bytes,
        "statement_timeout": rt.engine.files.limits.statement_timeout,
    }), media_type="application/json")


app = App(
    {"BOX": Box},
    fetch=fetch,
    data_dir=Path(__file__).parent / "app-data",
    idle_timeout=3,
    call_timeout=12,
    limits=StorageLimits(max_value_bytes=5000),
    stats_path="/app-stats",
)
"""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ROOST_* variable of the shell running the tests reaches them."""
    for name in list(os.environ):
        if name.startswith("ROOST_") or name == "FORWARDED_ALLOW_IPS":
            monkeypatch.delenv(name)


@pytest.fixture
def app_file(tmp_path: Path) -> Path:
    directory = tmp_path / "app"
    directory.mkdir()
    path = directory / "configured.py"
    path.write_text(CONFIGURED_APP)
    return path


def show(*args: str, env: dict[str, str] | None = None, command: str = "serve") -> dict[str, str]:
    """``roost COMMAND ARGS --show-config`` as {setting: "value  [source]"}."""
    result = CliRunner().invoke(main, [command, *args, "--show-config"], env=env)
    assert result.exit_code == 0, result.output
    rows = {}
    for line in result.output.splitlines():
        name, _, rest = line.partition(" ")
        rows[name] = rest.strip()
    assert set(rows) == {s.name for s in SETTINGS if command in s.commands}
    return rows


def test_each_layer_overrides_the_next(app_file: Path, tmp_path: Path) -> None:
    app = str(app_file)
    # Roost's default, and the app's setting over it.
    rows = show(app)
    assert rows["idle_timeout"] == "3  [the app]"
    assert rows["call_timeout"] == "12  [the app]"
    assert rows["max_value_bytes"] == "5000  [the app]"
    assert rows["stats_path"] == "/app-stats  [the app]"
    assert rows["data_dir"] == f"{app_file.parent / 'app-data'}  [the app]"
    assert rows["max_key_bytes"] == "2048  [default]"
    assert rows["loop_block_warning"] == "1.0  [default]"
    assert rows["port"] == "8787  [default]"
    # The environment over the app.
    env = {
        "ROOST_IDLE_TIMEOUT": "4",
        "ROOST_MAX_KEY_BYTES": "1KiB",
        "ROOST_STATS_PATH": "/env-stats",
        "ROOST_DATA_DIR": str(tmp_path / "env-data"),
        "ROOST_PORT": "9001",
    }
    rows = show(app, env=env)
    assert rows["idle_timeout"] == "4.0  [ROOST_IDLE_TIMEOUT]"
    assert rows["max_key_bytes"] == "1024  [ROOST_MAX_KEY_BYTES]"
    # A limit is set field by field: the app's other field stays.
    assert rows["max_value_bytes"] == "5000  [the app]"
    assert rows["stats_path"] == "/env-stats  [ROOST_STATS_PATH]"
    assert rows["data_dir"] == f"{tmp_path / 'env-data'}  [ROOST_DATA_DIR]"
    assert rows["port"] == "9001  [ROOST_PORT]"
    assert rows["call_timeout"] == "12  [the app]"
    # The command line over the environment.
    flags = ["--idle-timeout", "5", "--data", str(tmp_path / "flag-data"), "--port", "9002"]
    rows = show(app, *flags, env=env)
    assert rows["idle_timeout"] == "5.0  [command line (--idle-timeout)]"
    assert rows["data_dir"] == f"{tmp_path / 'flag-data'}  [command line (--data-dir)]"
    assert rows["port"] == "9002  [command line (--port)]"
    assert rows["max_key_bytes"] == "1024  [ROOST_MAX_KEY_BYTES]"
    assert not (tmp_path / "flag-data").exists()  # --show-config creates nothing


def test_without_the_app_setting_the_environment_overrides_the_default(tmp_path: Path) -> None:
    app = tmp_path / "counter.py"
    app.write_text((ROOT / "examples" / "counter.py").read_text())
    assert show(str(app))["data_dir"] == f"{tmp_path / '.roost'}  [default]"
    env = {"ROOST_DATA_DIR": str(tmp_path / "d"), "ROOST_DURABILITY": "process"}
    rows = show(str(app), env=env, command="dev")
    assert rows["data_dir"] == f"{tmp_path / 'd'}  [ROOST_DATA_DIR]"
    assert rows["durability"] == "process  [ROOST_DURABILITY]"
    assert rows["reload"] == "on  [default]"
    assert rows["access_log"] == "on  [default]"  # dev logs requests; serve does not
    assert show(str(app))["access_log"] == "off  [default]"


@pytest.mark.parametrize("command", ["serve", "dev"])
def test_server_settings_reach_the_server_config(command: str) -> None:
    app = str(ROOT / "examples" / "counter.py")
    env = {
        "ROOST_LOG_LEVEL": "warning",
        "ROOST_ROOT_PATH": "/api",
        "ROOST_FORWARDED_ALLOW_IPS": "10.0.0.0/8",
        "ROOST_PROXY_HEADERS": "false",
        "ROOST_MAX_CONNECTIONS": "none",
        "ROOST_MAX_BODY_BYTES": "2MiB",
        "ROOST_HEADER_TIMEOUT": "2.5",
        "ROOST_SHUTDOWN_TIMEOUT": "20",
        "ROOST_HTTP": "h11",
        "ROOST_SQL_STATEMENT_TIMEOUT": "off",
        "ROOST_MAX_MESSAGE_SIZE": "64KiB",
    }
    rows = show(app, "--log-level", "error", env=env, command=command)
    assert rows["log_level"] == "error  [command line (--log-level)]"
    assert rows["root_path"] == "/api  [ROOST_ROOT_PATH]"
    assert rows["forwarded_allow_ips"] == "10.0.0.0/8  [ROOST_FORWARDED_ALLOW_IPS]"
    assert rows["proxy_headers"] == "off  [ROOST_PROXY_HEADERS]"
    assert rows["max_connections"] == "none  [ROOST_MAX_CONNECTIONS]"
    assert rows["max_body_bytes"] == "2097152  [ROOST_MAX_BODY_BYTES]"
    assert rows["header_timeout"] == "2.5  [ROOST_HEADER_TIMEOUT]"
    assert rows["shutdown_timeout"] == "20.0  [ROOST_SHUTDOWN_TIMEOUT]"
    assert rows["http"] == "h11  [ROOST_HTTP]"
    assert rows["sql_statement_timeout"] == "none  [ROOST_SQL_STATEMENT_TIMEOUT]"
    assert rows["max_message_size"] == "65536  [ROOST_MAX_MESSAGE_SIZE]"


@pytest.mark.parametrize(
    ("variable", "value", "why"),
    [
        ("ROOST_PORT", "eighty", "'eighty' is not a valid integer"),
        ("ROOST_PORT", "70000", "70000 is not in the range 0<=x<=65535"),
        ("ROOST_IDLE_TIMEOUT", "-1", "'-1' is not a positive number of seconds"),
        ("ROOST_CALL_TIMEOUT", "soon", "'soon' is not a number of seconds or 'none'"),
        ("ROOST_DURABILITY", "fast", "'fast' is not one of 'full', 'process'"),
        ("ROOST_MAX_BODY_BYTES", "12XB", "'12XB' is not a size in bytes"),
        ("ROOST_SQL_MAX_DATABASE_BYTES", "1000", "'1000' must be at least 65536 bytes"),
        ("ROOST_MAX_QUEUE", "0", "'0' is not a positive whole number"),
        ("ROOST_ROOT_PATH", "api/", "'api/' must start with / and not end with one"),
        ("ROOST_PROXY_HEADERS", "maybe", "'maybe' is not on or off (1/0, true/false,"),
        ("ROOST_LOG_LEVEL", "loud", "'loud' is not one of 'critical'"),
    ],
)
@pytest.mark.parametrize("command", ["serve", "dev"])
def test_a_bad_environment_value_fails_in_one_line_naming_the_variable(
    command: str, variable: str, value: str, why: str
) -> None:
    app = str(ROOT / "examples" / "counter.py")
    result = CliRunner().invoke(main, [command, app], env={variable: value})
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    expected = f"Error: the environment variable {variable}={value!r} is not valid: "
    assert lines[0].startswith(expected)
    assert why in lines[0]
    assert "Traceback" not in result.output


def test_a_bad_flag_value_still_fails_as_a_usage_error() -> None:
    app = str(ROOT / "examples" / "counter.py")
    result = CliRunner().invoke(main, ["serve", app, "--idle-timeout", "-1"])
    assert result.exit_code == 2
    assert "Invalid value for '--idle-timeout'" in result.output


def test_the_app_may_come_from_roost_app(tmp_path: Path) -> None:
    counter = tmp_path / "counter.py"
    counter.write_text((ROOT / "examples" / "counter.py").read_text())
    rows = show(env={"ROOST_APP": str(counter)})
    assert rows["data_dir"] == f"{tmp_path / '.roost'}  [default]"


def test_the_deployment_docs_list_every_setting_with_its_variable() -> None:
    text = (ROOT / "docs" / "deployment.md").read_text()
    rows = {
        cells[0]: cells[1]
        for line in text.splitlines()
        if line.startswith("|")
        and (cells := [c.strip(" `") for c in line.strip().strip("|").split("|")])
        and cells[0].startswith("--")
    }
    for setting in SETTINGS:
        assert rows.get(setting.flag) == setting.envvar, setting.flag


def test_the_dockerfile_copies_only_what_exists_and_the_context_keeps() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    kept = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    sources = [
        word
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for word in line.split()[1:-1]
    ]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert any(source == k or source.startswith(k + "/") for k in kept), source
    # The image runs the command this checkout installs, as a non-root user.
    assert 'ENTRYPOINT ["roost", "serve"]' in dockerfile
    assert "USER roost" in dockerfile and 'VOLUME ["/data"]' in dockerfile
    assert "ROOST_DATA_DIR=/data" in dockerfile
    assert (ROOT / "examples" / "counter.py").is_file()  # the default ROOST_APP


class Environment:
    """Variables set in this process for the servers a test starts (they inherit them)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch

    def set(self, **values: str) -> None:
        for name, value in values.items():
            self._monkeypatch.setenv(name, value)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Environment:
    return Environment(monkeypatch)


async def _get_json(url: str) -> dict[str, object]:
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


def _healthcheck() -> subprocess.CompletedProcess[str]:
    script = ROOT / "deploy" / "healthcheck.py"
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=False
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


async def test_serve_honours_the_environment(
    processes: list[subprocess.Popen[bytes]], app_file: Path, env: Environment
) -> None:
    port = cli.free_port()
    data = app_file.parent.parent / "env-data"
    env.set(
        ROOST_PORT=str(port),
        ROOST_DATA_DIR=str(data),
        ROOST_ROOT_PATH="/api",
        ROOST_IDLE_TIMEOUT="7",
        ROOST_MAX_KEY_BYTES="100",
        ROOST_SQL_STATEMENT_TIMEOUT="none",
        ROOST_DURABILITY="full",
    )
    # The flag wins over ROOST_DURABILITY; the app's call_timeout (12) and
    # max_value_bytes (5000) stay, its idle_timeout (3) and data_dir do not.
    proc = cli.start(processes, "serve", str(app_file), "--durability", "process")
    url = f"http://127.0.0.1:{port}"
    await cli.wait_ready(url, proc)
    # The proxy stripped /api: the app sees its root path and the full path.
    seen = await _get_json(f"{url}/box/write")
    assert seen == {
        "path": "/api/box/write",
        "root_path": "/api",
        "data_dir": str(data),
        "durability": "process",
        "idle_timeout": 7.0,
        "call_timeout": 12,
        "max_key_bytes": 100,
        "max_value_bytes": 5000,
        "statement_timeout": None,
    }
    # The Docker image's HEALTHCHECK, on the same ROOST_PORT: healthy while it answers.
    assert _healthcheck().returncode == 0
    _stop(proc)
    stopped = _healthcheck()
    assert stopped.returncode == 1 and "unhealthy: no answer" in stopped.stderr
    assert json.loads((data / "roost.json").read_text())["roost_data_dir"] == 1
    assert not (app_file.parent / "app-data").exists()
    assert f"roost serve: http://127.0.0.1:{port}  (storage: {data})" in cli.output(proc)


async def test_dev_passes_the_settings_to_its_reloading_worker(
    processes: list[subprocess.Popen[bytes]], app_file: Path, env: Environment
) -> None:
    port = cli.free_port()
    data = app_file.parent.parent / "dev-data"
    env.set(
        ROOST_DATA_DIR=str(data),
        ROOST_IDLE_TIMEOUT="7",
        ROOST_CALL_TIMEOUT="none",
        ROOST_LOG_LEVEL="warning",
    )
    proc = cli.start(processes, "dev", str(app_file), "--port", str(port), cwd=data.parent)
    url = f"http://127.0.0.1:{port}"
    await cli.wait_ready(url, proc)
    seen = await _get_json(f"{url}/box/write")
    assert (seen["idle_timeout"], seen["call_timeout"]) == (7.0, None)
    assert seen["data_dir"] == str(data) and seen["max_value_bytes"] == 5000
    # Served, so startup is over: at level warning, its info lines were not logged.
    log = cli.output(proc)
    assert "Application startup complete" not in log
    assert f"roost dev: http://127.0.0.1:{port}" in log
    _stop(proc)
    assert (data / "roost.json").is_file()


@pytest.fixture
def slow_app(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "blocking.py"
    path.write_text(
        "import time\n"
        "from roost import App, Response\n"
        "async def fetch(request, env):\n"
        "    time.sleep(0.5)  # holds the loop\n"
        "    return Response('done')\n"
        "app = App({}, fetch=fetch)\n"
    )
    yield path


async def test_roost_warnings_are_logged_at_the_chosen_level(
    processes: list[subprocess.Popen[bytes]], slow_app: Path, env: Environment
) -> None:
    port = cli.free_port()
    env.set(ROOST_LOOP_BLOCK_WARNING="0.1", ROOST_PORT=str(port))
    proc = cli.start(processes, "serve", str(slow_app), "--data", str(slow_app.parent / "d"))
    url = f"http://127.0.0.1:{port}"
    await cli.wait_ready(url, proc)
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).text == "done"
    _stop(proc)
    # Roost's own logger goes through the server's format, with its level.
    assert re.search(r"WARNING: +the event loop has been blocked for", cli.output(proc))
