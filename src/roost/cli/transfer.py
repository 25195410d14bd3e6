"""``roost export``, ``roost import`` and ``roost backup`` (:mod:`roost.admin.archive`,
:mod:`roost.admin.backup`; ``docs/backup.md``).

APP and ``--data`` mean what they mean to ``roost serve``: the data directory
is ``--data-dir``/``--data`` (or ``ROOST_DATA_DIR``), else the app's own
``data_dir``, else ``.roost/`` beside the app.  Progress is drawn with rich on
a terminal and written as plain lines otherwise.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..admin.archive import ArchiveError, export_archive, import_archive
from ..admin.backup import backup_data_dir
from ..errors import StorageError
from ..storage import idsecret
from ..storage.sqlite import COPY_WAIT
from . import _data_dir
from . import _load as _loaded
from .loader import ENV_DATA, LoadedApp

__all__ = ["backup", "export", "import_"]

_DATA = click.option(
    "--data-dir",
    "--data",
    "data",
    envvar=ENV_DATA,
    type=click.Path(file_okay=False, path_type=Path),
    help="Storage directory (as for roost serve).  [env: ROOST_DATA_DIR; default: the "
    "app's data_dir, else .roost/ beside the app]",
)
_WAIT = click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=COPY_WAIT,
    show_default=True,
    help="Seconds to wait for a SQL object that is live in a running server to go idle.",
)


def _bindings(loaded: LoadedApp) -> dict[str, Any]:
    objects: dict[str, Any] = getattr(loaded.app, "_objects", {})
    return objects


def _given_secret() -> bytes | None:
    value = os.environ.get(idsecret.ENV_VAR)
    if not value:
        return None
    try:
        return idsecret.check_secret(value, idsecret.ENV_VAR)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


class LineProgress:
    """Progress as plain lines on stderr (not a terminal): a line per tenth."""

    def __init__(self) -> None:
        self._what = ""
        self._unit = ""
        self._total: int | None = None
        self._done = 0
        self._next = 0
        self._began = 0.0

    def start(self, what: str, total: int | None, unit: str) -> None:
        self._what, self._total, self._unit, self._done = what, total, unit, 0
        self._began = time.monotonic()
        self._next = max(1, (total or 100_000) // 10)
        shown = f"{total} {unit}" if total is not None else unit
        click.echo(f"{what}: {shown}", err=True)

    def advance(self, count: int) -> None:
        self._done += count
        if self._done >= self._next:
            self._next += max(1, (self._total or 100_000) // 10)
            click.echo(self._line(), err=True)

    def _line(self) -> str:
        elapsed = time.monotonic() - self._began
        rate = self._done / elapsed if elapsed > 0 else 0.0
        line = f"{self._what}: {self._done}"
        if self._total is not None:
            line += f"/{self._total}"
        line += f" {self._unit} ({rate:,.0f} {self._unit}/s"
        if self._total is not None and rate > 0:
            line += f", ETA {max(0.0, (self._total - self._done) / rate):.0f} s"
        return line + ")"

    def finish(self) -> None:
        return None


#: Units of work between two redraws of the rich bar.
_RICH_STEP = 500


class RichProgress:
    """Progress as a rich bar with the rate and the time left (on a terminal)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task: Any = None
        self._unit = ""
        self._began = 0.0
        self._done = 0
        self._pending = 0

    def start(self, what: str, total: int | None, unit: str) -> None:
        self.finish()
        self._pending = 0
        self._unit, self._began, self._done = unit, time.monotonic(), 0
        self._bar.start()
        self._task = self._bar.add_task(what, total=total, rate="")

    def advance(self, count: int) -> None:
        self._done += count
        self._pending += count
        # Updating the bar per object cost a third of an export's time: batch it.
        if self._pending >= _RICH_STEP:
            self._update()

    def _update(self) -> None:
        elapsed = time.monotonic() - self._began
        rate = f"{self._done / elapsed:,.0f} {self._unit}/s" if elapsed > 0 else ""
        self._bar.update(self._task, advance=self._pending, rate=rate)
        self._pending = 0

    def finish(self) -> None:
        if self._task is not None:
            self._update()
            self._bar.stop()
            self._task = None


def _progress() -> LineProgress | RichProgress:
    return RichProgress() if sys.stderr.isatty() else LineProgress()


def _fail(command: str, exc: Exception) -> click.ClickException:
    return click.ClickException(f"{command}: {exc}")


@click.command()
@click.argument("app", envvar="ROOST_APP")
@_DATA
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="Export only this namespace (binding name); repeat for more.  [default: all]",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The archive file to write.",
)
@_WAIT
def export(
    app: str, data: Path | None, namespaces: tuple[str, ...], output: Path, wait: float
) -> None:
    """Write every object of APP's data directory to an archive file.

    Safe while a server serves the directory (docs/backup.md says what the
    copy is consistent with).  The archive carries the directory's ID secret
    when the directory keeps it (ids.json): keep archives as private as the
    data directory.
    """
    loaded = _loaded(app)
    bindings = _bindings(loaded)
    unknown = sorted(set(namespaces) - set(bindings))
    if unknown:
        raise click.ClickException(
            f"{app} binds no namespace {', '.join(map(repr, unknown))} "
            f"(it binds {', '.join(sorted(bindings)) or 'none'})"
        )
    data_dir = _data_dir(loaded, data)
    try:
        summary = export_archive(
            data_dir,
            output,
            namespaces=list(namespaces) if namespaces else None,
            id_secret=_given_secret(),
            progress=_progress(),
            wait=wait,
        )
    except (StorageError, OSError) as exc:
        raise _fail("export", exc) from None
    click.echo(f"{summary.line('exported')} to {output}", err=True)


@click.command("import")
@click.argument("app", envvar="ROOST_APP")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_DATA
def import_(app: str, archive: Path, data: Path | None) -> None:
    """Import an archive written by roost export into APP's (new) data directory.

    The whole archive is checked first; a damaged or truncated one is refused
    and nothing changes.  The data directory must not exist yet, or be empty.
    """
    loaded = _loaded(app)
    data_dir = _data_dir(loaded, data)
    try:
        summary = import_archive(
            archive,
            data_dir,
            id_secret=_given_secret(),
            progress=_progress(),
            bindings={ns: bool(cls.sql_enabled) for ns, cls in _bindings(loaded).items()},
        )
    except (ArchiveError, StorageError, OSError) as exc:
        raise _fail("import", exc) from None
    click.echo(f"{summary.line('imported')} into {data_dir}", err=True)


@click.command()
@click.argument("app", envvar="ROOST_APP")
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
@_DATA
@_WAIT
def backup(app: str, target: Path, data: Path | None, wait: float) -> None:
    """Copy APP's data directory to the new directory TARGET, online.

    Uses SQLite's backup API, so a server may keep serving meanwhile.  To
    restore, stop the server and put TARGET in the data directory's place
    (docs/backup.md).
    """
    loaded = _loaded(app)
    data_dir = _data_dir(loaded, data)
    try:
        summary = backup_data_dir(data_dir, target, progress=_progress(), wait=wait)
    except (StorageError, OSError) as exc:
        raise _fail("backup", exc) from None
    click.echo(f"{summary.line()} to {target}", err=True)
