"""``roost backup``: an online, consistent copy of a data directory.

The copy is made with SQLite's backup API while a server may keep serving the
directory: the shared database in one step under one read transaction (WAL
mode lets the server's commits go on meanwhile), so every KV-only object and
the alarm index are copied as of one moment; each SQL object's file under a
read transaction of its own (:meth:`SqliteSnapshot.copy_database
<roost.storage.sqlite.SqliteSnapshot.copy_database>`), so each is consistent as
of its own copy.  ``ids.json`` comes along (mode 0600) and the marker
``roost.json`` last, once every database is durable, as a new data directory
gets it.  The copy is built beside ``DIR`` and renamed to it when complete.
Restoring is moving the copy into place (``docs/backup.md``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import apsw

from ..errors import StorageError
from ..storage import datadir
from ..storage.sqlite import COPY_WAIT, SqliteSnapshot
from .archive import Progress, _Quiet, _sync_tree

__all__ = ["BackupSummary", "backup_data_dir"]


@dataclass(frozen=True, slots=True)
class BackupSummary:
    """What :func:`backup_data_dir` copied."""

    #: Databases copied: the shared one and each SQL object's.
    databases: int
    bytes: int
    seconds: float

    def line(self) -> str:
        return f"backed up {self.databases} databases ({self.bytes} bytes) in {self.seconds:.1f} s"


def backup_data_dir(
    source: str | Path,
    target: str | Path,
    *,
    progress: Progress | None = None,
    wait: float = COPY_WAIT,
) -> BackupSummary:
    """Copy the data directory ``source`` to the new directory ``target``.

    ``target`` must not exist, or be empty.  ``wait`` bounds how long the copy
    of a SQL object that is live in a running server waits for it to be evicted.
    """
    source, target = Path(source).resolve(), Path(target).resolve()
    progress = progress or _Quiet()
    began = time.monotonic()
    if target == source or source in target.parents:
        raise StorageError(f"the backup {target} cannot be inside the data directory {source}")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise StorageError(f"{target} exists and is not an empty directory")
    staging = target.with_name(f".{target.name}.backup-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        snapshot = SqliteSnapshot(source, wait=wait)
        with snapshot:
            ids = source / datadir.ID_FILE
            if ids.exists():
                copied = staging / datadir.ID_FILE
                shutil.copyfile(ids, copied)
                os.chmod(copied, 0o600)
            namespaces = snapshot.namespaces()
            sql = [
                (ns, obj.object_id) for ns in namespaces for obj in snapshot.objects(ns) if obj.sql
            ]
            progress.start("backing up", 1 + len(sql), "databases")
            _copy_shared(source / datadir.SHARED_DATABASE, staging / datadir.SHARED_DATABASE)
            progress.advance(1)
            for ns, object_id in sql:
                relative = snapshot.files.path(ns, object_id).relative_to(source)
                destination = staging / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                snapshot.copy_database(ns, object_id, destination)
                progress.advance(1)
        _sync_tree(staging)
        datadir.write_marker(staging)  # last: the databases it vouches for are durable
        if target.exists():
            target.rmdir()
        os.rename(staging, target)
        datadir.sync_directory(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        progress.finish()
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    return BackupSummary(1 + len(sql), size, time.monotonic() - began)


def _copy_shared(path: Path, destination: Path) -> None:
    """Copy the shared database with SQLite's backup API, in one step."""
    try:
        source = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE)
    except apsw.Error as exc:
        raise StorageError(f"cannot open {path}: {exc}") from exc
    try:
        source.set_busy_timeout(30_000)
        copy = apsw.Connection(str(destination))
        try:
            # One step (-1 pages) copies everything under one read lock: the
            # copy is the database as of one commit.
            with copy.backup("main", source, "main") as step:
                step.step(-1)
            copy.execute("PRAGMA journal_mode=WAL").fetchall()
        finally:
            copy.close()
    except apsw.Error as exc:
        raise StorageError(f"copying {path} failed: {exc}") from exc
    finally:
        with contextlib.suppress(apsw.Error):
            source.close()
