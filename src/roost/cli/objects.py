"""``roost objects APP list|show|delete``: what an app's storage holds (:mod:`roost.admin`).

APP is loaded as ``roost serve`` loads it, for its namespaces and its data
directory (``--data-dir``/``--data`` or ``ROOST_DATA_DIR`` overrides it).  With no
server on the directory, the command opens it as a server would, holding its
lock meanwhile.  With a server running on it, ``list`` and ``show`` read the
shared database read-only beside the server (WAL mode lets a reader see the
last commit without blocking the writer; see ``SqliteEngine(read_only=True)``),
and ``delete`` is refused: only the server may change what its objects store.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..admin import ObjectInfo, ObjectNotFound, delete_object, list_objects, render_value
from ..admin import show_object as admin_show
from ..errors import InvalidObjectId, StorageError
from ..storage import datadir
from ..storage.sqlite import SqliteEngine, lock_holder
from .loader import AppNotFound, LoadedApp, load_app

__all__ = ["objects"]

T = TypeVar("T")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("app", metavar="APP")
@click.pass_context
def objects(ctx: click.Context, app: str) -> None:
    """List, inspect and delete the objects APP has stored.

    APP is FILE_OR_MODULE[:ATTR], as for `roost serve`.  While a server runs on
    the data directory, `list` and `show` read it read-only beside the server,
    and `delete` is refused.
    """
    ctx.obj = app


_data_option = click.option(
    "--data-dir",
    "--data",
    "data",
    envvar="ROOST_DATA_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Storage directory [env: ROOST_DATA_DIR] (default: the app's data_dir, else "
    ".roost/ beside the app).",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
_name_option = click.option("--name", help="The object's name (id_from_name) instead of its ID.")


def _prepare(spec: str, namespace: str, data: Path | None) -> tuple[LoadedApp, Path]:
    try:
        loaded = load_app(spec)
    except AppNotFound as exc:
        raise click.ClickException(str(exc)) from None
    bindings = sorted(getattr(loaded.app, "_objects", {}))
    if namespace not in bindings:
        raise click.ClickException(
            f"{spec} has no namespace {namespace!r}; its namespaces: {', '.join(bindings)}"
        )
    directory = (data or loaded.app.data_dir or loaded.directory / ".roost").resolve()
    if not (directory / datadir.SHARED_DATABASE).is_file():
        raise click.ClickException(f"{directory} holds no Roost data")
    return loaded, directory


def _run(directory: Path, *, write: bool, work: Callable[[SqliteEngine], Awaitable[T]]) -> T:
    """Run ``work`` on the directory's storage: locked if no server runs on it,
    read-only beside one (refused for ``write``)."""

    async def main() -> T:
        loop = asyncio.get_running_loop()
        engine: SqliteEngine | None = None
        if lock_holder(directory) is None:
            engine = SqliteEngine(directory)
            try:
                engine.start(loop)
            except StorageError:
                if lock_holder(directory) is None:
                    raise
                engine = None  # a server started meanwhile
        if engine is None:
            if write:
                raise click.ClickException(
                    f"a server is running on {directory} (pid {lock_holder(directory)}): "
                    "delete through it"
                )
            engine = SqliteEngine(directory, read_only=True)
            engine.start(loop)
        try:
            return await work(engine)
        finally:
            await engine.close()

    try:
        return asyncio.run(main())
    except (StorageError, InvalidObjectId, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _time(info: ObjectInfo, which: str) -> str:
    value = getattr(info, which)
    return "unknown" if value is None else value.isoformat(timespec="seconds")


@objects.command("list")
@click.argument("namespace")
@_data_option
@click.option("--prefix", help="Only objects whose name starts with this, in name order.")
@click.option("--after", help="Start after this cursor (the `next` of the page before).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@_json_option
@click.pass_obj
def list_command(
    spec: str,
    namespace: str,
    data: Path | None,
    prefix: str | None,
    after: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List the objects of NAMESPACE that store something, a page at a time."""
    _, directory = _prepare(spec, namespace, data)

    async def work(engine: SqliteEngine) -> None:
        page = list_objects(engine, namespace, prefix=prefix, after=after, limit=limit)
        if as_json:
            out = {"objects": [o.to_json() for o in page.objects], "next_after": page.next_after}
            click.echo(json.dumps(out, indent=2))
            return
        for o in page.objects:
            keys = "?" if o.keys is None else str(o.keys)
            kind = "sql" if o.sql else "kv"
            name = "-" if o.name is None else repr(o.name)
            click.echo(
                f"{o.object_id}  {kind:3}  {keys:>6} keys  {_size(o.bytes):>10}  "
                f"written {_time(o, 'written')}  {name}"
            )
        if not page.objects:
            click.echo("no objects", err=True)
        if page.next_after is not None:
            click.echo(f"more: --after {page.next_after}", err=True)

    _run(directory, write=False, work=work)


def _target(object_id: str | None, name: str | None) -> dict[str, Any]:
    if (object_id is None) == (name is None):
        raise click.UsageError("give the object's ID or --name NAME (one of them)")
    return {"object_id": object_id} if object_id is not None else {"name": name}


@objects.command("show")
@click.argument("namespace")
@click.argument("object_id", metavar="[ID]", required=False)
@_name_option
@_data_option
@click.option(
    "--max-entries",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="KV pairs to print at most.",
)
@_json_option
@click.pass_obj
def show_command(
    spec: str,
    namespace: str,
    object_id: str | None,
    name: str | None,
    data: Path | None,
    max_entries: int,
    as_json: bool,
) -> None:
    """Print one object's KV pairs, SQL tables (with row counts) and alarm."""
    target = _target(object_id, name)
    _, directory = _prepare(spec, namespace, data)

    async def work(engine: SqliteEngine) -> None:
        try:
            view = admin_show(engine, namespace, max_entries=max_entries, **target)
        except ObjectNotFound as exc:
            raise click.ClickException(str(exc)) from None
        if as_json:
            click.echo(json.dumps(view.to_json(), indent=2))
            return
        info = view.info
        click.echo(f"{namespace} {info.object_id}")
        click.echo(f"  name:    {'-' if info.name is None else repr(info.name)}")
        keys = "?" if info.keys is None else info.keys
        click.echo(f"  kind:    {'SQL' if info.sql else 'KV'}, {keys} keys, {_size(info.bytes)}")
        click.echo(f"  created: {_time(info, 'created')}")
        click.echo(f"  written: {_time(info, 'written')}")
        alarm = "none" if view.alarm is None else view.alarm.isoformat(timespec="milliseconds")
        retries = f" ({view.alarm_retries} failed deliveries)" if view.alarm_retries else ""
        click.echo(f"  alarm:   {alarm}{retries}")
        click.echo("keys:" if view.entries else "keys: none")
        for key, value in view.entries:
            flag = "  (not decodable: stored bytes)" if key in view.undecodable else ""
            click.echo(f"  {key!r} = {render_value(value)}{flag}")
        if view.more_entries:
            click.echo(f"  ... more (--max-entries {max_entries} shown)")
        if info.sql:
            if view.tables is None:
                click.echo(f"tables: {view.tables_note or 'none'}")
            else:
                click.echo("tables:" if view.tables else "tables: none")
                for table in view.tables:
                    click.echo(f"  {table.name}: {table.rows} rows")

    _run(directory, write=False, work=work)


@objects.command("delete")
@click.argument("namespace")
@click.argument("object_id", metavar="[ID]", required=False)
@_name_option
@_data_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def delete_command(
    spec: str, namespace: str, object_id: str | None, name: str | None, data: Path | None, yes: bool
) -> None:
    """Delete everything one object stores (refused while a server runs on the directory)."""
    target = _target(object_id, name)
    _, directory = _prepare(spec, namespace, data)
    what = object_id if object_id is not None else f"named {name!r}"
    if not yes:
        click.confirm(f"delete everything object {what} of {namespace} stores?", abort=True)

    async def work(engine: SqliteEngine) -> bool:
        return await delete_object(engine, namespace, **target)

    if _run(directory, write=True, work=work):
        click.echo(f"deleted object {what} of {namespace}")
    else:
        click.echo(f"object {what} of {namespace} stored nothing", err=True)
