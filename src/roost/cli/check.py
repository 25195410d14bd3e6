"""``roost check DATA_DIR``: the integrity of a data directory (:mod:`roost.storage.check`)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import StorageError
from ..storage.check import check_data_dir

__all__ = ["check"]


@click.command()
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--quick", is_flag=True, help="SQLite's quick_check: faster, does not compare indexes."
)
def check(data_dir: Path, quick: bool) -> None:
    """Check every database in DATA_DIR with SQLite's integrity check.

    Prints one line per problem and a summary; exits 0 when the directory is
    intact, 1 when it is damaged (restore it from a backup), 2 when it cannot be
    checked (not a directory, or a server is running on it).
    """
    try:
        report = check_data_dir(data_dir, quick=quick)
    except StorageError as exc:
        click.echo(f"roost check: {exc}", err=True)
        raise SystemExit(2) from None
    for problem in report.problems:
        click.echo(str(problem))
    click.echo(report.summary())
    if not report.clean:
        raise SystemExit(1)
