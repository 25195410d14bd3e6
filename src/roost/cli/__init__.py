"""The ``roost`` command: ``roost dev`` and ``roost serve``.

Thin by design: it finds the app (:mod:`.loader`), resolves its settings from
the command line, ``ROOST_*`` variables and the app (:mod:`.config`), checks
what can be checked before starting (data directory, port), and runs
:mod:`roost.server` on uvicorn.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import os
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
import uvicorn.config

from .. import __version__
from ..server import Server, bind, make_config
from ..storage.sqlite import lock_holder
from .config import Command, Settings, apply_to_app, setting_options, split_address
from .config import show_config as print_config
from .loader import ENV_DATA, ENV_SETTINGS, ENV_TARGET, AppNotFound, LoadedApp, load_app

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
    """``--data-dir`` (or ``ROOST_DATA_DIR``), else the app's own ``data_dir``,
    else ``.roost/`` beside the app."""
    return (data or loaded.app.data_dir or loaded.directory / ".roost").resolve()


def _check_data_dir(path: Path) -> None:
    """Create ``path``; fail in one line if it is not writable or in use."""
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
            "stop it, or give this one another directory with --data-dir"
        )


def _listen(host: str, port: int, flag: str = "--port") -> Any:
    try:
        return bind(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise click.ClickException(
                f"port {port} on {host} is already in use; stop what uses it or pick "
                f"another with {flag}"
            ) from None
        raise click.ClickException(str(exc)) from None


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging setup, with Roost's own loggers (``roost.*``) beside
    uvicorn's at the same level: otherwise they reach Python's last-resort
    handler, which prints warnings and above only, without level or format."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["loggers"]["roost"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config


def _prepare(command: Command, params: dict[str, Any]) -> tuple[Settings, LoadedApp, Path]:
    """Resolve the settings, load the app and give it what the command line
    and the environment set (see :mod:`.config` for the precedence)."""
    settings = Settings(command, params, click.get_current_context())
    _raise_open_files_limit()  # before the app (and its runtime) exist; inherited by workers
    loaded = _load(params["app"])
    settings.note_app(loaded.app)
    try:
        apply_to_app(loaded.app, settings.app_values())
    except (ValueError, TypeError, RuntimeError) as exc:
        raise click.ClickException(f"cannot apply the settings to {params['app']}: {exc}") from None
    return settings, loaded, _data_dir(loaded, settings["data_dir"])


def _server_options(settings: Settings) -> dict[str, Any]:
    options = settings.server_options()
    options["log_config"] = _log_config(settings["log_level"])
    return options


def _show_config(settings: Settings, loaded: LoadedApp, data_dir: Path, **extra: Any) -> None:
    config = make_config(loaded.app, **_server_options(settings), **extra)
    print_config(settings, loaded.app, config, data_dir)


#: The admin server's token comes from here (never a flag: a command line is
#: visible to every user of the machine).
ENV_ADMIN_TOKEN = "ROOST_ADMIN_TOKEN"


def _admin(settings: Settings, loaded: LoadedApp) -> tuple[Any, Any]:
    """The admin app (``--admin``) and its socket; prints where it is, and the
    token once if it was generated (to stderr)."""
    from ..admin.web import AdminApp, new_token  # prometheus_client only when asked for

    host, port = split_address(settings["admin"])
    sock = _listen(host, port, "--admin")
    token = os.environ.get(ENV_ADMIN_TOKEN, "").strip()
    generated = not token
    if generated:
        token = new_token()
    app = AdminApp(
        loaded.app,
        token,
        event_metrics=settings["admin_event_metrics"],
        open_metrics=settings["admin_open_metrics"],
    )
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}/"
    click.echo(f"roost admin: {click.style(url, bold=True)}  (/metrics and the page)", err=True)
    if generated:
        click.echo(
            f"roost admin token (generated; set {ENV_ADMIN_TOKEN} to choose one): {token}",
            err=True,
        )
    return app, sock


def _banner(what: str, url: str, data: Path) -> None:
    click.echo(f"roost {what}: {click.style(url, bold=True)}  (storage: {data})", err=True)


@main.command()
@setting_options("dev")
def dev(show_config: bool, **params: Any) -> None:
    """Run APP for development: auto-reload, durable storage in .roost/.

    APP is FILE_OR_MODULE[:ATTR], e.g. examples/counter.py, examples/chat or
    mypkg.main:app (or ROOST_APP).  Each option can also be set by the
    ROOST_* environment variable shown beside it; the command line wins over
    the environment, which wins over the app's own settings.
    """
    settings, loaded, data_dir = _prepare("dev", params)  # here, not only in the worker
    if show_config:
        _show_config(settings, loaded, data_dir)
        return
    _check_data_dir(data_dir)
    sock = _listen(settings["host"], settings["port"])
    _banner("dev", f"http://{settings['host']}:{sock.getsockname()[1]}", data_dir)
    options = _server_options(settings)
    options.setdefault("ws_max_size", loaded.app.max_message_size)
    if not settings["reload"]:
        loaded.app.data_dir = data_dir
        Server(make_config(loaded.app, **options)).run(sockets=[sock])
        return
    from uvicorn.supervisors import ChangeReload

    # The worker process imports the app again after each change; it learns
    # what to load, and the settings to give it, from the environment.
    os.environ[ENV_TARGET] = params["app"]
    os.environ[ENV_DATA] = str(data_dir)
    os.environ[ENV_SETTINGS] = json.dumps(settings.app_values())
    config = make_config(
        f"{__name__}.loader:app_from_environ",
        factory=True,
        reload=True,
        reload_dirs=[str(loaded.directory)],
        **options,
    )
    ChangeReload(config, target=Server(config).run, sockets=[sock]).run()


@main.command()
@setting_options("serve")
def serve(show_config: bool, **params: Any) -> None:
    """Serve APP in production on uvicorn (uvloop, Roost's HTTP/1.1 protocol).

    APP is FILE_OR_MODULE[:ATTR] (or ROOST_APP).  Each option can also be set
    by the ROOST_* environment variable shown beside it; the command line
    wins over the environment, which wins over the app's own settings.

    On SIGTERM or SIGINT the server stops accepting connections, lets
    in-flight events finish, closes WebSockets with 1001, commits every
    pending write, and exits 0.
    """
    settings, loaded, data_dir = _prepare("serve", params)
    if show_config:
        _show_config(settings, loaded, data_dir, loop="uvloop")
        return
    _check_data_dir(data_dir)
    loaded.app.data_dir = data_dir
    sock = _listen(settings["host"], settings["port"])
    _banner("serve", f"http://{settings['host']}:{sock.getsockname()[1]}", data_dir)
    admin = _admin(settings, loaded) if settings["admin"] is not None else None
    server = Server(
        make_config(loaded.app, **_server_options(settings), loop="uvloop"), admin=admin
    )
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(3)  # startup failed; uvicorn logged why


from .check import check as _check  # noqa: E402  (a command of its own module)

main.add_command(_check)

from .transfer import backup as _backup  # noqa: E402
from .transfer import export as _export  # noqa: E402
from .transfer import import_ as _import  # noqa: E402

for _command in (_export, _import, _backup):
    main.add_command(_command)

from .objects import objects as _objects  # noqa: E402

main.add_command(_objects)
