"""The settings of ``roost dev`` and ``roost serve``: flags, ``ROOST_*`` variables, precedence.

Every setting a deployer may need is one :class:`Setting` in :data:`SETTINGS`,
which makes its command-line option (``--idle-timeout``), its environment
variable (``ROOST_IDLE_TIMEOUT``), its help line and the row of the table in
``docs/deployment.md``.  A value is taken from, first to last:

1. the command line;
2. the ``ROOST_*`` environment variable (an empty one counts as unset);
3. the app's own setting in code (``App(data_dir=..., idle_timeout=...)``),
   for the settings an app can make;
4. Roost's default.

Click applies the first two (``envvar=``); a setting left unset by both is
``None`` here, so that :func:`apply_to_app` leaves the app's own value alone.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import click
from click.core import ParameterSource

from ..runtime import Runtime
from ..server import App
from ..server.app import DEFAULT_MAX_MESSAGE_SIZE
from ..server.limits import DEFAULT_LIMITS
from ..storage.kv import StorageLimits
from ..storage.sqllimits import SqlLimits

__all__ = [
    "ENV_PREFIX",
    "NO_LIMIT",
    "SETTINGS",
    "Setting",
    "Settings",
    "apply_to_app",
    "setting_options",
    "split_address",
]

ENV_PREFIX: Final = "ROOST_"
#: What ``none`` (or ``off``) parses to for a limit that can be lifted; kept
#: apart from ``None``, which means "not set here".
NO_LIMIT: Final = "none"

Command = Literal["dev", "serve"]
#: Where a setting goes: the command itself, the uvicorn config (``server``),
#: Roost's server limits (``make_config`` options), an attribute of the App,
#: an option of its Runtime, a field of its StorageLimits or SqlLimits.
Target = Literal["command", "server", "server_limits", "app", "runtime", "limits", "sql_limits"]
#: The targets an app can also set in code: the third layer of precedence.
APP_TARGETS: Final = frozenset({"app", "runtime", "limits", "sql_limits"})

if TYPE_CHECKING:
    ParamType = click.ParamType[Any]
else:  # click before 8.3 has no generic ParamType
    ParamType = click.ParamType


class _Limit(ParamType):
    """A value that, where the limit can be lifted, may also be ``none`` or ``off``."""

    unit = "VALUE"

    def __init__(self, *, can_lift: bool = False) -> None:
        self.can_lift = can_lift
        self.name = f"{self.unit}|none" if can_lift else self.unit

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if self.can_lift and str(value).strip().lower() in (NO_LIMIT, "off"):
            return NO_LIMIT
        return self.parse(value, param, ctx)

    def parse(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        raise NotImplementedError


class Seconds(_Limit):
    """A positive number of seconds (``2.5``, ``30s``)."""

    unit = "SECONDS"

    def parse(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            number = float(str(value).strip().removesuffix("s"))
        except ValueError:
            lift = " or 'none'" if self.can_lift else ""
            self.fail(f"{value!r} is not a number of seconds{lift}", param, ctx)
        if not number > 0 or number == float("inf"):
            self.fail(f"{value!r} is not a positive number of seconds", param, ctx)
        return number


_BYTE_UNITS: Final = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


class Bytes(ParamType):
    """A size in bytes: ``65536``, ``64KiB``, ``16MiB``, ``10GB`` (KB = 1000, KiB = 1024)."""

    name = "BYTES"

    def __init__(self, minimum: int = 1, maximum: int | None = None) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            size = value
        else:
            found = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", str(value))
            unit = _BYTE_UNITS.get(found.group(2).lower()) if found else None
            if found is None or unit is None:
                example = "e.g. 65536, 64KiB, 16MiB"
                self.fail(f"{value!r} is not a size in bytes ({example})", param, ctx)
            size = int(found.group(1)) * unit
        if size < self.minimum or (self.maximum is not None and size > self.maximum):
            upper = f" and at most {self.maximum}" if self.maximum is not None else ""
            self.fail(f"{value!r} must be at least {self.minimum} bytes{upper}", param, ctx)
        return size


class Count(_Limit):
    """A positive whole number."""

    unit = "N"

    def parse(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            number = int(str(value).strip())
        except ValueError:
            number = 0
        if number < 1:
            self.fail(f"{value!r} is not a positive whole number", param, ctx)
        return number


class UrlPath(ParamType):
    """A URL path: empty, or starting with ``/`` and not ending with one."""

    name = "PATH"

    def __init__(self, *, root: bool = False) -> None:
        self.root = root  # a root path may be empty; it never ends with "/"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value)
        if (self.root and text == "") or (
            text.startswith("/") and not (self.root and text.endswith("/"))
        ):
            return text
        shape = "start with / and not end with one" if self.root else "start with /"
        self.fail(f"{text!r} must {shape}", param, ctx)


def split_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT``, ``:PORT`` or ``PORT`` as ``(host, port)``; the
    host defaults to 127.0.0.1.  Raises ``ValueError`` saying what is wrong."""
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:9090")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:9090, or 9090)")
    return host or "127.0.0.1", int(port_text)


class Address(ParamType):
    """Where to listen: ``HOST:PORT`` (``PORT`` alone: on 127.0.0.1), as ``host:port``."""

    name = "HOST:PORT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            host, port = split_address(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its option, its ``ROOST_*`` variable and where its value goes."""

    #: The parameter's name; ``ROOST_`` + its upper case is the variable.
    name: str
    #: The option's declarations, first the long name (``--idle-timeout``).
    flags: tuple[str, ...]
    type: ParamType
    target: Target
    help: str
    #: Roost's default, as the help and the docs show it.
    default_text: str
    #: The attribute, option or field set (default: ``name``).
    field: str = ""
    #: A click default for settings no app can make (host, port, log level).
    default: Any = None
    commands: frozenset[str] = frozenset({"dev", "serve"})
    #: A per-command default where the two commands differ.
    command_defaults: tuple[tuple[str, Any], ...] = ()

    @property
    def envvar(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return self.flags[0].split("/")[0]

    @property
    def key(self) -> str:
        """Where the value goes: the runtime option, App attribute or config option."""
        return self.field or self.name

    def default_for(self, command: str) -> Any:
        return dict(self.command_defaults).get(command, self.default)


def _runtime_default(name: str) -> Any:
    return inspect.signature(Runtime.__init__).parameters[name].default


def _seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"


_STORAGE = StorageLimits()
_SQL = SqlLimits()
_LIMITS = DEFAULT_LIMITS

SETTINGS: Final[tuple[Setting, ...]] = (
    # -- where it listens and keeps its data
    Setting("host", ("--host",), click.STRING, "command", "Interface to listen on.",
            "127.0.0.1", default="127.0.0.1"),
    Setting("port", ("--port",), click.IntRange(0, 65535), "command",
            "Port to listen on (0: any free one).", "8787", default=8787),
    Setting("data_dir", ("--data-dir", "--data"),
            click.Path(file_okay=False, path_type=Path), "command",
            "Storage directory.", "the app's data_dir, else .roost/ beside the app"),
    Setting("reload", ("--reload/--no-reload",), click.BOOL, "command",
            "Restart on edits of the app's directory.", "on", default=True,
            commands=frozenset({"dev"})),
    # -- the server
    Setting("log_level", ("--log-level",),
            click.Choice(["critical", "error", "warning", "info", "debug"]), "server",
            "Log level of the server and of Roost.", "info", default="info"),
    Setting("access_log", ("--access-log/--no-access-log",), click.BOOL, "server",
            "Log every request.", "off for serve, on for dev",
            command_defaults=(("serve", False), ("dev", True))),
    Setting("http", ("--http",), click.Choice(["roost", "httptools", "h11"]), "server",
            "HTTP/1.1 implementation: Roost's own (fastest) or one of uvicorn's.",
            "roost", default="roost"),
    Setting("proxy_headers", ("--proxy-headers/--no-proxy-headers",), click.BOOL, "server",
            "Take the client address and scheme from X-Forwarded-For and X-Forwarded-Proto "
            "when the peer is in --forwarded-allow-ips.", "on"),
    Setting("forwarded_allow_ips", ("--forwarded-allow-ips",), click.STRING, "server",
            "Comma-separated addresses or networks of proxies whose forwarded headers "
            "are trusted ('*': all).", "$FORWARDED_ALLOW_IPS, else 127.0.0.1,::1"),
    Setting("root_path", ("--root-path",), UrlPath(root=True), "server",
            "URL prefix the app is served under by a proxy that strips it (e.g. /api).",
            "none"),
    Setting("max_connections", ("--max-connections",), Count(can_lift=True), "server",
            "Open connections past which new ones are answered 503.",
            "the open-files limit less an eighth (at least 256)", field="limit_concurrency"),
    Setting("keep_alive_timeout", ("--keep-alive-timeout",), Seconds(), "server",
            "Seconds an idle kept-alive connection stays open.", "5",
            field="timeout_keep_alive"),
    Setting("shutdown_timeout", ("--shutdown-timeout",), Seconds(), "server",
            "On SIGTERM, seconds WebSockets get to finish their message, then requests.", "30",
            field="timeout_graceful_shutdown"),
    Setting("header_timeout", ("--header-timeout",), Seconds(), "server_limits",
            "Seconds a client may take to send a request's headers (then 408).",
            _seconds(_LIMITS.header_timeout)),
    Setting("max_url_bytes", ("--max-url-bytes",), Bytes(), "server_limits",
            "Longest request URL (then 414).", "64KiB"),
    Setting("max_header_bytes", ("--max-header-bytes",), Bytes(), "server_limits",
            "Largest request header block (then 431).", "64KiB"),
    Setting("max_headers", ("--max-headers",), Count(), "server_limits",
            "Most header fields in a request (then 431).", str(_LIMITS.max_headers)),
    Setting("max_body_bytes", ("--max-body-bytes",), Bytes(), "server_limits",
            "Largest request body (then 413).", "16MiB"),
    Setting("max_fragmented_bytes", ("--max-fragmented-bytes",), Bytes(), "server_limits",
            "Bytes of unfinished fragmented WebSocket messages, all connections together.",
            "64MiB"),
    Setting("max_send_buffer_bytes", ("--max-send-buffer-bytes",), Bytes(), "server_limits",
            "Outgoing WebSocket bytes waiting for a client that does not read (then 1008).",
            "16MiB"),
    # -- the app
    Setting("max_message_size", ("--max-message-size",), Bytes(), "app",
            "Largest WebSocket message accepted (then 1009).", "1MiB"),
    Setting("stats_path", ("--stats-path",), UrlPath(), "app",
            "Answer GET on this path with the runtime's statistics as JSON "
            "(e.g. /_roost/stats).", "off"),
    # -- the admin server (docs/monitoring.md); its token is ROOST_ADMIN_TOKEN, never a flag
    Setting("admin", ("--admin",), Address(), "command",
            "Serve /metrics and the admin page on HOST:PORT (PORT alone: on 127.0.0.1), "
            "behind the token of ROOST_ADMIN_TOKEN (or one generated and printed).", "off",
            commands=frozenset({"serve"})),
    Setting("admin_event_metrics", ("--admin-event-metrics/--no-admin-event-metrics",),
            click.BOOL, "command",
            "With --admin, count every event by namespace and kind, and time one in 16 "
            "(costs CPU on every event).", "off", default=False,
            commands=frozenset({"serve"})),
    Setting("admin_open_metrics", ("--admin-open-metrics/--no-admin-open-metrics",),
            click.BOOL, "command",
            "With --admin, serve /metrics without the token (the page's data stays behind it).",
            "off", default=False, commands=frozenset({"serve"})),
    # -- the runtime
    Setting("durability", ("--durability",), click.Choice(["full", "process"]), "runtime",
            "full: fsync every commit before its outputs leave (survives power loss); "
            "process: survives kill -9 of the server only.", str(_runtime_default("durability"))),
    Setting("idle_timeout", ("--idle-timeout",), Seconds(), "runtime",
            "Seconds without events after which an object is evicted from memory.",
            _seconds(_runtime_default("idle_timeout"))),
    Setting("call_timeout", ("--call-timeout",), Seconds(can_lift=True), "runtime",
            "Seconds a stub call may take before its caller gets CallTimeout.",
            _seconds(_runtime_default("call_timeout"))),
    Setting("loop_block_warning", ("--loop-block-warning",), Seconds(can_lift=True), "runtime",
            "Log a warning with the stack when an event holds the loop this long.",
            _seconds(_runtime_default("loop_block_warning"))),
    Setting("max_live_objects", ("--max-live-objects",), Count(), "runtime",
            "Objects kept in memory; past it the least recently used idle ones go.",
            str(_runtime_default("max_live_objects"))),
    Setting("max_live_sql_objects", ("--max-live-sql-objects",), Count(), "runtime",
            "Live SQL objects (two open files each).",
            "a quarter of the open-files limit left after 256"),
    Setting("max_queue", ("--max-queue",), Count(), "runtime",
            "Events waiting or running per object; past it callers get ObjectOverloaded.",
            str(_runtime_default("max_queue"))),
    Setting("max_key_bytes", ("--max-key-bytes",), Bytes(), "limits",
            "Longest KV key.", str(_STORAGE.max_key_bytes)),
    Setting("max_value_bytes", ("--max-value-bytes",), Bytes(), "limits",
            "Largest KV value.", "128KiB"),
    Setting("sql_statement_timeout", ("--sql-statement-timeout",), Seconds(can_lift=True),
            "sql_limits", "Seconds one sql.exec() may run before SqlTimeout.",
            _seconds(_SQL.statement_timeout), field="statement_timeout"),
    Setting("sql_max_row_bytes", ("--sql-max-row-bytes",), Bytes(maximum=1_000_000_000),
            "sql_limits", "Longest string, BLOB or row a SQL statement may make.", "2MB",
            field="max_row_bytes"),
    Setting("sql_max_database_bytes", ("--sql-max-database-bytes",), Bytes(minimum=65536),
            "sql_limits", "Size of one SQL object's database past which writes fail.", "10GB",
            field="max_database_bytes"),
)  # fmt: skip

_BY_NAME: Final = {setting.name: setting for setting in SETTINGS}


class SettingOption(click.Option):
    """A click option whose bad ``ROOST_*`` value fails in one line naming the variable."""

    def process_value(self, ctx: click.Context, value: Any) -> Any:
        try:
            return super().process_value(ctx, value)
        except click.BadParameter as exc:
            if self.name is None or ctx.get_parameter_source(self.name) not in (
                ParameterSource.ENVIRONMENT,
            ):
                raise
            why = exc.message
            if isinstance(self.type, click.types.BoolParamType):  # click lists "" among them
                why = f"{value!r} is not on or off (1/0, true/false, yes/no, on/off)"
            raise click.ClickException(
                f"the environment variable {self.envvar}={value!r} is not valid: "
                f"{why} (unset it, or override it with {self.opts[0]})"
            ) from None


def setting_options(command: Command) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorate a command with APP, every setting of ``command`` and ``--show-config``."""

    def decorate(function: Callable[..., None]) -> Callable[..., None]:
        function = click.option(
            "--show-config",
            is_flag=True,
            help="Print every setting in force and where it comes from, then exit.",
        )(function)
        for setting in reversed([s for s in SETTINGS if command in s.commands]):
            function = click.option(
                *setting.flags,
                setting.name,
                cls=SettingOption,
                type=setting.type,
                default=setting.default_for(command),
                envvar=setting.envvar,
                show_envvar=True,
                # A real default shows as itself, a described one as its text.
                show_default=True if setting.default is not None else setting.default_text,
                help=setting.help,
            )(function)
        # The app may also come from ROOST_APP (a container's environment).
        return click.argument("app", metavar="APP", envvar=ENV_PREFIX + "APP")(function)

    return decorate


def _app_layer(app: App, setting: Setting) -> Any:
    """What the app itself set in code for ``setting`` (None: nothing)."""
    # The App keeps the options it passes to its Runtime in _runtime_options;
    # reading (and, in apply_to_app, replacing) them here is what the
    # durability setter does for one option.
    options = app._runtime_options
    if setting.target == "runtime":
        return options.get(setting.key)
    if setting.target in ("limits", "sql_limits"):
        limits = options.get(setting.target)
        if limits is None:
            return None
        # A field the app left at its default was not set by the app.
        value = getattr(limits, setting.key)
        return None if value == getattr(type(limits)(), setting.key) else value
    if setting.name == "max_message_size":
        size = app.max_message_size
        return None if size == DEFAULT_MAX_MESSAGE_SIZE else size
    if setting.name == "stats_path":
        return app.stats_path
    if setting.name == "data_dir":
        return app.data_dir
    return None


def apply_to_app(app: App, values: Mapping[str, Any]) -> None:
    """Set the app's runtime options and attributes given in ``values``.

    ``values`` maps setting names to what the command line or environment
    gave (``None`` or absent: leave the app's own).  Raises ``ValueError`` for
    a value the runtime refuses, and ``RuntimeError`` once the app's runtime
    exists (the app made it at import time).
    """
    options = dict(app._runtime_options)
    fields: dict[str, dict[str, Any]] = {"limits": {}, "sql_limits": {}}
    for name, value in values.items():
        setting = _BY_NAME[name]
        if value is None or setting.target not in APP_TARGETS:
            continue
        value = None if value == NO_LIMIT else value
        if setting.target == "runtime":
            options[setting.key] = value
        elif setting.target in fields:
            fields[setting.target][setting.key] = value
    for target, changed in fields.items():
        if changed:
            base = options.get(target) or (StorageLimits() if target == "limits" else SqlLimits())
            options[target] = dataclasses.replace(base, **changed)
    if options != app._runtime_options:
        if app._runtime is not None:
            raise RuntimeError(
                "the app made its runtime at import time (it used app.env or app.runtime), "
                "so its runtime options can no longer change"
            )
        app._check_options(options)  # raises ValueError (e.g. SqlLimits' own bounds)
        app._runtime_options = options
    if values.get("stats_path") is not None:
        app.stats_path = values["stats_path"]
    if values.get("max_message_size") is not None:
        app.max_message_size = values["max_message_size"]


class Settings:
    """The values one invocation resolved, and where each came from."""

    def __init__(self, command: Command, params: Mapping[str, Any], ctx: click.Context) -> None:
        self.command = command
        self.values = {s.name: params[s.name] for s in SETTINGS if command in s.commands}
        self._sources = {name: ctx.get_parameter_source(name) for name in self.values}
        self._set_by_app: frozenset[str] = frozenset()

    def note_app(self, app: App) -> None:
        """Remember what the app set in code, before the command changes it."""
        self._set_by_app = frozenset(
            s.name for s in SETTINGS if s.name in self.values and _app_layer(app, s) is not None
        )

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def given(self, name: str) -> bool:
        """Whether the command line or the environment set ``name``."""
        return self._sources[name] in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)

    def source(self, name: str) -> str:
        """Where the value in force comes from, as ``--show-config`` prints it."""
        setting = _BY_NAME[name]
        found = self._sources[name]
        if found is ParameterSource.COMMANDLINE:
            return f"command line ({setting.flag})"
        if found is ParameterSource.ENVIRONMENT:
            return setting.envvar
        if name in self._set_by_app:
            return "the app"
        return "default"

    def app_values(self) -> dict[str, Any]:
        """The settings that go to the App, as given (for :func:`apply_to_app`)."""
        return {
            name: value
            for name, value in self.values.items()
            if _BY_NAME[name].target in APP_TARGETS and self.given(name)
        }

    def server_options(self) -> dict[str, Any]:
        """Options for ``make_config``: the server settings that were given."""
        options: dict[str, Any] = {"log_level": self["log_level"]}
        for name, value in self.values.items():
            setting = _BY_NAME[name]
            if setting.target not in ("server", "server_limits") or value is None:
                continue
            if name == "http":
                if value != "roost":  # make_config's default is Roost's protocol
                    options["http"] = value
            elif name == "log_level":
                continue
            else:
                options[setting.key] = None if value == NO_LIMIT else value
        return options


def in_force(
    settings: Settings, app: App, config: Any, data_dir: Path
) -> Iterator[tuple[str, str]]:
    """``(setting, value)`` for each setting, read back from the objects that use them."""
    runtime = app._runtime_options
    limits = runtime.get("limits") or StorageLimits()
    sql = runtime.get("sql_limits") or SqlLimits()
    for name in settings.values:
        setting = _BY_NAME[name]
        value: Any
        if name == "data_dir":
            value = data_dir
        elif setting.target == "command":
            value = settings[name]
        elif name == "http":
            value = config.http if isinstance(config.http, str) else "roost"
        elif setting.target == "server":
            value = getattr(config, setting.key)
            if isinstance(value, list):  # forwarded_allow_ips, as uvicorn keeps it
                value = ",".join(value)
        elif setting.target == "server_limits":
            value = getattr(config.limits, setting.key)
        elif setting.target == "app":
            value = getattr(app, setting.key)
        elif setting.target == "runtime":
            value = runtime.get(setting.key, _runtime_default(setting.key))
        else:
            value = getattr(limits if setting.target == "limits" else sql, setting.key)
        if value is None or value == "":
            value = {"max_live_sql_objects": "auto", "admin": "off"}.get(name, "none")
        if isinstance(value, bool):
            value = "on" if value else "off"
        yield name, str(value)


def show_config(settings: Settings, app: App, config: Any, data_dir: Path) -> None:
    """Print the settings in force, one a line: name, value, where it comes from."""
    rows = list(in_force(settings, app, config, data_dir))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value}  [{settings.source(name)}]")
