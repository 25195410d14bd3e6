"""The ``roost`` command: ``roost dev`` and ``roost serve``.

Thin by design: it finds the app (:mod:`.loader`), checks what can be checked
before starting (data directory, port), and runs :mod:`roost.server` on uvicorn.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..server import Server, bind, make_config
from ..storage.sqlite import lock_holder
from .loader import ENV_DATA, ENV_TARGET, AppNotFound, LoadedApp, load_app

__all__ = ["main"]

APP_HELP = "FILE_OR_MODULE[:ATTR], e.g. examples/counter.py, examples/chat or mypkg.main:app"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="roost")
def main() -> None:
    """Roost: durable objects for Python."""


def _raise_open_files_limit() -> None:
    """Lift the soft limit on open files to the hard one, as servers do.

    Every connection is a file, and so is every live SQL object (twice): the
    usual soft limit of 1,024 would cap a server at a few hundred of them.
    The runtime sizes its cap on live SQL objects from the limit in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # macOS refuses an infinite soft limit: a million is plenty.
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return
    with contextlib.suppress(ValueError, OSError):  # else keep it: the runtime adapts
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _load(spec: str) -> LoadedApp:
    try:
        return load_app(spec)
    except AppNotFound as exc:
        raise click.ClickException(str(exc)) from None


def _data_dir(loaded: LoadedApp, data: Path | None) -> Path:
    """``--data``, else the app's own ``data_dir``, else ``.roost/`` beside the app."""
    path = data or loaded.app.data_dir or loaded.directory / ".roost"
    path = path.resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(
            f"cannot create the data directory {path}: {exc.strerror or exc}"
        ) from None
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise click.ClickException(
            f"the data directory {path} is not writable: {exc.strerror or exc}"
        ) from None
    holder = lock_holder(path)
    if holder is not None:
        raise click.ClickException(
            f"the data directory {path} is in use by another Roost process (pid {holder}); "
            "stop it, or give this one another directory with --data"
        )
    return path


def _listen(host: str, port: int) -> Any:
    try:
        return bind(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise click.ClickException(
                f"port {port} on {host} is already in use; stop what uses it or pick "
                "another with --port"
            ) from None
        raise click.ClickException(str(exc)) from None


def _app_options(command: Callable[..., None]) -> Callable[..., None]:
    """APP, --host, --port and --data: the same for `dev` and `serve`."""
    for option in reversed(
        [
            click.argument("app", metavar="APP"),
            click.option(
                "--host", default="127.0.0.1", show_default=True, help="Interface to listen on."
            ),
            click.option("--port", default=8787, show_default=True, help="Port to listen on."),
            click.option(
                "--data",
                type=click.Path(file_okay=False, path_type=Path),
                help="Storage directory [default: .roost/ beside the app].",
            ),
        ]
    ):
        command = option(command)
    return command


def _banner(what: str, url: str, data: Path) -> None:
    click.echo(f"roost {what}: {click.style(url, bold=True)}  (storage: {data})", err=True)


@main.command()
@_app_options
@click.option("--reload/--no-reload", default=True, show_default=True, help="Restart on edits.")
def dev(app: str, host: str, port: int, data: Path | None, reload: bool) -> None:
    """Run APP for development: auto-reload, durable storage in .roost/.

    APP is FILE_OR_MODULE[:ATTR], e.g. examples/counter.py, examples/chat or
    mypkg.main:app.
    """
    _raise_open_files_limit()  # before the app (and its runtime) exist; inherited by workers
    loaded = _load(app)  # here, not only in the worker: clear errors, at once
    data_dir = _data_dir(loaded, data)
    sock = _listen(host, port)
    _banner("dev", f"http://{host}:{sock.getsockname()[1]}", data_dir)
    options: dict[str, Any] = {"log_level": "info", "ws_max_size": loaded.app.max_message_size}
    if not reload:
        loaded.app.data_dir = data_dir
        Server(make_config(loaded.app, **options)).run(sockets=[sock])
        return
    from uvicorn.supervisors import ChangeReload

    # The worker process imports the app again after each change; it learns
    # what to load from the environment.
    os.environ[ENV_TARGET] = app
    os.environ[ENV_DATA] = str(data_dir)
    config = make_config(
        f"{__name__}.loader:app_from_environ",
        factory=True,
        reload=True,
        reload_dirs=[str(loaded.directory)],
        **options,
    )
    ChangeReload(config, target=Server(config).run, sockets=[sock]).run()


@main.command()
@_app_options
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
@click.option("--access-log/--no-access-log", default=False, show_default=True)
@click.option(
    "--http",
    "http_impl",
    type=click.Choice(["roost", "httptools", "h11"]),
    default="roost",
    show_default=True,
    help="HTTP/1.1 implementation: Roost's own (fastest) or one of uvicorn's.",
)
@click.option(
    "--durability",
    type=click.Choice(["full", "process"]),
    help="full: fsync every commit before its outputs leave (survives power loss); "
    "process: survives kill -9 of the server only.  [default: the app's, else full]",
)
@click.option(
    "--stats-path",
    metavar="PATH",
    help="Answer GET PATH with the runtime's statistics as JSON (e.g. /_roost/stats).",
)
def serve(
    app: str,
    host: str,
    port: int,
    data: Path | None,
    log_level: str,
    access_log: bool,
    http_impl: str,
    durability: str | None,
    stats_path: str | None,
) -> None:
    """Serve APP in production on uvicorn (uvloop, Roost's HTTP/1.1 protocol).

    APP is FILE_OR_MODULE[:ATTR].  On SIGTERM or SIGINT the server stops
    accepting connections, lets in-flight events finish, closes WebSockets with
    1001, commits every pending write, and exits 0.
    """
    _raise_open_files_limit()
    loaded = _load(app)
    loaded.app.data_dir = _data_dir(loaded, data)
    if stats_path is not None:
        loaded.app.stats_path = stats_path
    if durability is not None:
        loaded.app.durability = durability
    sock = _listen(host, port)
    _banner("serve", f"http://{host}:{sock.getsockname()[1]}", loaded.app.data_dir)
    options: dict[str, Any] = {} if http_impl == "roost" else {"http": http_impl}
    config = make_config(
        loaded.app,
        **options,
        loop="uvloop",
        log_level=log_level,
        access_log=access_log,
    )
    server = Server(config)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(3)  # startup failed; uvicorn logged why


from .check import check as _check  # noqa: E402  (a command of its own module)

main.add_command(_check)
