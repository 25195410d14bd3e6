"""``roost export`` and ``roost import``: all of a storage's objects in one archive file.

The archive is read and written through the storage seam
(:class:`~roost.storage.engine.StorageSnapshot`, :meth:`StorageEngine.import_objects
<roost.storage.engine.StorageEngine.import_objects>`), never through an
engine's files, so that it can move objects between engines as well as between
data directories.  The format (version 1, documented for users in
``docs/backup.md``)::

    archive  := MAGIC frame* end-frame
    MAGIC    := b"\\x89ROOST-ARCHIVE\\r\\n\\x1a\\n"  (16 bytes; catches text-mode mangling)
    frame    := length (4 bytes, big-endian) | payload (a CBOR map) | CRC-32 of payload (4 bytes)

Frames, in order: one ``header``; then per KV-only object a ``kv`` frame
(namespace, ID, alarm, entries) and as many ``kv+`` frames as its entries need;
per SQL object a ``sql`` frame (namespace, ID, alarm, size and SHA-256 of its
database) and ``data`` frames holding that database; last, ``end``: the
counts of everything before it and the SHA-256 of every byte before it.  A
file that stops before ``end``, or holds anything after it, is truncated.

Values are the codec's bytes, copied without decoding, so every type comes back
exactly.  Import checks the whole archive (every checksum, the structure, the
counts, the hash, every object ID against the ID secret) before it writes
anything, writes into a new directory beside the target, and renames it into
place only once everything is durable: a bad archive, or a failure half-way,
leaves the target as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import os
import re
import shutil
import struct
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Protocol

import cbor2

from .. import __version__
from ..errors import InvalidObjectId, StorageError
from ..ids import IdFactory
from ..storage import datadir
from ..storage.engine import ExportedObject, IdScheme, StorageEngine, StorageSnapshot
from ..storage.sqlite import COPY_WAIT, SqliteEngine, SqliteSnapshot, lock_holder

__all__ = [
    "FORMAT",
    "MAGIC",
    "ArchiveError",
    "ArchiveInfo",
    "Progress",
    "Summary",
    "export_archive",
    "import_archive",
    "verify_archive",
]

MAGIC: Final = b"\x89ROOST-ARCHIVE\r\n\x1a\n"
#: The archive format this Roost writes and reads.
FORMAT: Final = 1
#: No frame is larger: a damaged length must not make import allocate gigabytes.
MAX_FRAME: Final = 64 * 1024 * 1024
#: A KV object's entries are split into frames of about this many bytes.
KV_FRAME_BYTES: Final = 4 * 1024 * 1024
#: A SQL object's database is carried in frames of this many bytes.
DATA_FRAME_BYTES: Final = 1024 * 1024
#: KV objects written per group of batches on import.
IMPORT_GROUP: Final = 1000
#: SQL objects' databases handed to the engine together on import.
SQL_IMPORT_GROUP: Final = 100
_HEX_ID: Final = re.compile(r"[0-9a-f]{64}")
_FRAME_HEAD: Final = struct.Struct(">I")


class ArchiveError(Exception):
    """The archive is not one Roost can import: not an archive, damaged, truncated, newer."""


class Progress(Protocol):
    """What export and import report as they go (the CLI draws it)."""

    def start(self, what: str, total: int | None, unit: str) -> None:
        """A phase begins: ``total`` ``unit``s (``None``: unknown)."""

    def advance(self, count: int) -> None:
        """``count`` more of the phase's units are done."""

    def finish(self) -> None:
        """The phase is over."""


class _Quiet:
    def start(self, what: str, total: int | None, unit: str) -> None:
        return None

    def advance(self, count: int) -> None:
        return None

    def finish(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Summary:
    """What an export or import moved."""

    kv_objects: int
    sql_objects: int
    #: KV entries of KV-only objects (a SQL object's live in its database).
    entries: int
    #: Bytes of the archive file.
    archive_bytes: int
    seconds: float

    @property
    def objects(self) -> int:
        return self.kv_objects + self.sql_objects

    def line(self, verb: str) -> str:
        """One line for the end of a command's output."""
        rate = self.objects / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{verb} {self.objects} objects ({self.kv_objects} KV, {self.sql_objects} SQL; "
            f"{self.entries} KV entries; {self.archive_bytes} bytes) in {self.seconds:.1f} s "
            f"({rate:,.0f} objects/s)"
        )


@dataclass(frozen=True, slots=True)
class ArchiveInfo:
    """An archive's header and manifest, once :func:`verify_archive` checked it whole."""

    created_at: str
    roost_version: str
    source: str
    ids: IdScheme
    namespaces: list[str]
    kv_objects: int
    sql_objects: int
    entries: int
    size: int
    #: Namespaces holding KV-only objects, and those holding SQL objects.
    kv_namespaces: list[str]
    sql_namespaces: list[str]


# -- writing -------------------------------------------------------------------------


class _Writer:
    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._hash = hashlib.sha256(MAGIC)
        self.frames = 0
        self.size = len(MAGIC)
        out.write(MAGIC)

    def frame(self, payload: dict[str, Any], *, last: bool = False) -> None:
        body = cbor2.dumps(payload)
        if len(body) > MAX_FRAME:
            raise StorageError(f"a record of the export is {len(body)} bytes, over {MAX_FRAME}")
        data = _FRAME_HEAD.pack(len(body)) + body + _FRAME_HEAD.pack(zlib.crc32(body))
        if not last:
            self._hash.update(data)
        self._out.write(data)
        self.frames += 1
        self.size += len(data)

    def digest(self) -> bytes:
        return self._hash.digest()


def export_archive(
    data_dir: str | Path,
    output: str | Path,
    *,
    namespaces: list[str] | None = None,
    id_secret: bytes | None = None,
    progress: Progress | None = None,
    wait: float = COPY_WAIT,
    engine: StorageEngine | None = None,
) -> Summary:
    """Write every object of ``data_dir`` (or of ``namespaces``) to the archive ``output``.

    Safe while a server serves the directory: KV-only objects are read as of one
    moment, each SQL object as of its own copy (see
    :class:`~roost.storage.sqlite.SqliteSnapshot`; ``wait`` bounds how long a
    copy waits for a SQL object that is live in the server).  ``id_secret`` is
    ``ROOST_ID_SECRET`` if the directory's IDs are keyed with one.  The file is
    written beside ``output`` and renamed into place when complete.
    """
    progress = progress or _Quiet()
    began = time.monotonic()
    output = Path(output)
    source = engine if engine is not None else SqliteEngine(data_dir)
    partial = output.with_name(f".{output.name}.{os.getpid()}.part")
    kv_objects = sql_objects = entries = 0
    try:
        with _snapshot(source, wait) as snapshot, _create(partial) as out:
            scheme = snapshot.id_scheme(id_secret)
            chosen = snapshot.namespaces() if namespaces is None else sorted(set(namespaces))
            total = sum(snapshot.count_objects(ns) for ns in chosen)
            writer = _Writer(out)
            writer.frame(
                {
                    "type": "header",
                    "format": FORMAT,
                    "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    "roost": __version__,
                    "source": str(Path(data_dir).resolve()),
                    "ids": {
                        "scheme": scheme.kind,
                        "fingerprint": scheme.fingerprint,
                        "secret": scheme.secret,
                    },
                    "namespaces": chosen,
                    "objects": total,
                }
            )
            progress.start("exporting", total, "objects")
            scratch = partial.with_name(partial.name + ".sql")
            for ns in chosen:
                for obj in snapshot.objects(ns):
                    if obj.sql:
                        _write_sql(writer, snapshot, obj, scratch)
                        sql_objects += 1
                    else:
                        _write_kv(writer, obj)
                        kv_objects += 1
                        entries += len(obj.entries)
                    progress.advance(1)
            writer.frame(
                {
                    "type": "end",
                    "kv_objects": kv_objects,
                    "sql_objects": sql_objects,
                    "entries": entries,
                    "frames": writer.frames,
                    "sha256": writer.digest(),
                },
                last=True,
            )
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, output)
        datadir.sync_directory(output.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    finally:
        progress.finish()
    return Summary(kv_objects, sql_objects, entries, writer.size, time.monotonic() - began)


def _snapshot(engine: StorageEngine, wait: float) -> StorageSnapshot:
    """The engine's snapshot, its wait for live SQL objects set where it has one."""
    snapshot = engine.snapshot()
    if isinstance(snapshot, SqliteSnapshot):
        snapshot.wait = wait
    return snapshot


def _create(path: Path) -> IO[bytes]:
    # 0600: an archive holds every object's data, and may hold the ID secret.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return os.fdopen(fd, "wb")


def _write_kv(writer: _Writer, obj: ExportedObject) -> None:
    first = True
    chunk: list[list[Any]] = []
    size = 0
    pairs = iter(obj.entries)
    while True:
        pair = next(pairs, None)
        if pair is not None:
            chunk.append([pair[0], pair[1]])
            size += len(pair[0]) + len(pair[1]) + 16
        if pair is None or size >= KV_FRAME_BYTES:
            if first:
                writer.frame(
                    {
                        "type": "kv",
                        "ns": obj.namespace,
                        "id": obj.object_id,
                        "alarm": obj.alarm_ms,
                        "name": obj.name,
                        "entries": chunk,
                    }
                )
                first = False
            elif chunk:
                writer.frame({"type": "kv+", "entries": chunk})
            chunk, size = [], 0
        if pair is None:
            return


def _write_sql(
    writer: _Writer, snapshot: StorageSnapshot, obj: ExportedObject, scratch: Path
) -> None:
    with contextlib.suppress(FileNotFoundError):
        scratch.unlink()
    try:
        alarm = snapshot.copy_database(obj.namespace, obj.object_id, scratch)
        digest = hashlib.sha256()
        with scratch.open("rb") as f:
            while block := f.read(DATA_FRAME_BYTES):
                digest.update(block)
            size = f.tell()
            writer.frame(
                {
                    "type": "sql",
                    "ns": obj.namespace,
                    "id": obj.object_id,
                    "alarm": alarm,
                    "name": obj.name,
                    "size": size,
                    "sha256": digest.digest(),
                }
            )
            f.seek(0)
            while block := f.read(DATA_FRAME_BYTES):
                writer.frame({"type": "data", "bytes": block})
    finally:
        with contextlib.suppress(FileNotFoundError):
            scratch.unlink()


# -- reading -------------------------------------------------------------------------


def _frames(path: Path, progress: Progress) -> Iterator[tuple[int, int, dict[str, Any], bytes]]:
    """(index, offset, payload, raw bytes) of each frame, each one's checksum checked."""
    try:
        f = path.open("rb")
    except OSError as exc:
        raise ArchiveError(f"cannot read {path}: {exc.strerror or exc}") from None
    with f:
        magic = f.read(len(MAGIC))
        if magic != MAGIC and MAGIC.startswith(magic):
            raise _truncated(path, len(magic), 0)
        if magic != MAGIC:
            raise ArchiveError(f"{path} is not a Roost archive (it does not begin as one)")
        progress.advance(len(magic))
        offset, index = len(MAGIC), 0
        while True:
            head = f.read(4)
            if not head:
                return
            if len(head) < 4:
                raise _truncated(path, offset, index)
            (length,) = _FRAME_HEAD.unpack(head)
            if length > MAX_FRAME:
                raise ArchiveError(
                    f"{path} is damaged: record {index} at byte {offset} claims {length} bytes"
                )
            body = f.read(length)
            tail = f.read(4)
            if len(body) < length or len(tail) < 4:
                raise _truncated(path, offset, index)
            if zlib.crc32(body) != _FRAME_HEAD.unpack(tail)[0]:
                raise ArchiveError(
                    f"{path} is damaged: record {index} at byte {offset} fails its checksum"
                )
            try:
                payload = cbor2.loads(body)
            except Exception as exc:  # cbor2 raises several kinds for bad input
                raise ArchiveError(
                    f"{path} is damaged: record {index} at byte {offset} is unreadable ({exc})"
                ) from None
            if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
                raise ArchiveError(f"{path} is damaged: record {index} at byte {offset} is not one")
            yield index, offset, payload, head + body + tail
            offset += len(head) + length + 4
            index += 1
            progress.advance(len(head) + length + 4)


def _truncated(path: Path, offset: int, index: int) -> ArchiveError:
    return ArchiveError(
        f"{path} is truncated: it ends inside record {index} (byte {offset}), before the "
        "manifest that ends an archive. Copy it again, or export again"
    )


#: What :func:`_events` yields: ("header", info), ("kv", object), ("sql", object, size),
#: ("data", bytes), ("sql-end", object), ("end", info).
_Event = tuple[Any, ...]


def _events(path: Path, progress: Progress, secret: bytes | None = None) -> Iterator[_Event]:
    """The archive's contents, every rule of the format checked on the way.

    ``secret``: also check each object ID against it (the ID secret the target
    will use).  Raises :class:`ArchiveError` at the first thing wrong.
    """
    digest = hashlib.sha256(MAGIC)
    header: dict[str, Any] | None = None
    pending: ExportedObject | None = None  # a KV object whose kv+ frames may follow
    sql: tuple[ExportedObject, int, bytes] | None = None
    sql_seen = 0
    sql_hash = hashlib.sha256()
    kv_objects = sql_objects = entries = 0
    factories: dict[str, IdFactory] = {}
    end: dict[str, Any] | None = None

    def bad(index: int, offset: int, why: str) -> ArchiveError:
        return ArchiveError(f"{path} is damaged: record {index} at byte {offset} {why}")

    def check_object(
        index: int, offset: int, payload: dict[str, Any]
    ) -> tuple[str, str, int | None, str | None]:
        ns, object_id, alarm = payload.get("ns"), payload.get("id"), payload.get("alarm")
        if (
            not isinstance(ns, str)
            or not isinstance(object_id, str)
            or not _HEX_ID.fullmatch(object_id)
        ):
            raise bad(index, offset, "names no object")
        if alarm is not None and (not isinstance(alarm, int) or isinstance(alarm, bool)):
            raise bad(index, offset, "has an alarm that is not a time")
        if secret is not None:
            factory = factories.get(ns)
            if factory is None:
                factory = factories[ns] = IdFactory(ns, secret=secret)
            try:
                factory.from_string(object_id)
            except InvalidObjectId:
                raise ArchiveError(
                    f"{path}: object {object_id[:12]}… of {ns!r} was not made with the ID "
                    "secret the target would use, so it could never be reached there"
                ) from None
        name = payload.get("name")
        if name is not None and not isinstance(name, str):
            raise bad(index, offset, "has a name that is not a string")
        return ns, object_id, alarm, name

    def check_entries(index: int, offset: int, raw: object) -> list[tuple[str, bytes]]:
        if not isinstance(raw, list):
            raise bad(index, offset, "has no entries")
        pairs: list[tuple[str, bytes]] = []
        for pair in raw:
            if not (
                isinstance(pair, list)
                and len(pair) == 2
                and isinstance(pair[0], str)
                and isinstance(pair[1], bytes)
            ):
                raise bad(index, offset, "holds an entry that is not a key and a value")
            pairs.append((pair[0], pair[1]))
        return pairs

    for index, offset, payload, raw in _frames(path, progress):
        kind = payload["type"]
        if end is not None:
            raise bad(index, offset, "follows the manifest (the end of the archive)")
        if header is None:
            if kind != "header":
                raise bad(index, offset, "comes before the archive's header")
            version = payload.get("format")
            if not isinstance(version, int) or version > FORMAT:
                raise ArchiveError(
                    f"{path} is an archive of format {version!r}; this Roost reads format "
                    f"{FORMAT}: import it with a newer Roost"
                )
            header = payload
            digest.update(raw)
            yield ("header", payload)
            continue
        if kind == "kv+":
            if pending is None:
                raise bad(index, offset, "continues no object")
            more = check_entries(index, offset, payload.get("entries"))
            pending.entries.extend(more)
            entries += len(more)
            digest.update(raw)
            continue
        if pending is not None:
            yield ("kv", pending)
            pending = None
        if sql is not None and kind != "data":
            raise bad(index, offset, "interrupts a SQL object's database")
        if kind == "kv":
            ns, object_id, alarm, name = check_object(index, offset, payload)
            pairs = check_entries(index, offset, payload.get("entries"))
            pending = ExportedObject(ns, object_id, False, pairs, alarm, name)
            kv_objects += 1
            entries += len(pairs)
        elif kind == "sql":
            ns, object_id, alarm, name = check_object(index, offset, payload)
            size, expected = payload.get("size"), payload.get("sha256")
            if not isinstance(size, int) or size <= 0 or not isinstance(expected, bytes):
                raise bad(index, offset, "describes no database")
            sql = (ExportedObject(ns, object_id, True, [], alarm, name), size, expected)
            sql_seen, sql_hash = 0, hashlib.sha256()
            sql_objects += 1
            digest.update(raw)
            yield ("sql", sql[0], size)
            continue
        elif kind == "data":
            block = payload.get("bytes")
            if sql is None or not isinstance(block, bytes):
                raise bad(index, offset, "holds data of no SQL object")
            sql_seen += len(block)
            if sql_seen > sql[1]:
                raise bad(index, offset, "holds more of a database than its size")
            sql_hash.update(block)
            digest.update(raw)
            yield ("data", block)
            if sql_seen == sql[1]:
                if sql_hash.digest() != sql[2]:
                    raise bad(index, offset, "ends a database whose checksum is wrong")
                yield ("sql-end", sql[0])
                sql = None
            continue
        elif kind == "end":
            counts = (kv_objects, sql_objects, entries, index)
            got = tuple(payload.get(k) for k in ("kv_objects", "sql_objects", "entries", "frames"))
            if got != counts:
                raise bad(index, offset, f"is a manifest that counts {got}, not {counts}")
            if payload.get("sha256") != digest.digest():
                raise ArchiveError(
                    f"{path} is damaged: its contents do not match the manifest's SHA-256"
                )
            end = payload
            progress.advance(len(raw))  # the frames' generator is not resumed after this
            extra = _file_size(path) - (offset + len(raw))
            if extra:
                raise ArchiveError(
                    f"{path} is damaged: {extra} bytes follow its manifest (the end of an archive)"
                )
            break
        else:
            raise bad(index, offset, f"is of a kind this Roost does not know ({kind!r})")
        digest.update(raw)
    if pending is not None:
        yield ("kv", pending)
    if header is None or end is None:
        raise ArchiveError(
            f"{path} is truncated: it ends before the manifest that ends an archive. "
            "Copy it again, or export again"
        )
    yield ("end", end)


def _scheme(path: Path, header: dict[str, Any]) -> IdScheme:
    ids = header.get("ids")
    kind = ids.get("scheme") if isinstance(ids, dict) else None
    if not isinstance(ids, dict) or kind not in ("stored", "given", "unkeyed"):
        raise ArchiveError(f"{path} is damaged: its header does not say how IDs are keyed")
    secret, printed = ids.get("secret"), ids.get("fingerprint")
    return IdScheme(
        kind,
        printed if isinstance(printed, str) else None,
        secret if isinstance(secret, bytes) else None,
    )


def verify_archive(
    path: str | Path, *, id_secret: bytes | None = None, progress: Progress | None = None
) -> ArchiveInfo:
    """Check the whole archive at ``path``; raise :class:`ArchiveError` if anything is wrong.

    ``id_secret``: also check every object ID against this secret.
    """
    path = Path(path)
    progress = progress or _Quiet()
    header: dict[str, Any] = {}
    end: dict[str, Any] = {}
    kinds: dict[bool, set[str]] = {False: set(), True: set()}
    progress.start("checking", _file_size(path), "bytes")
    try:
        for event in _events(path, progress, id_secret):
            if event[0] == "header":
                header = event[1]
            elif event[0] == "end":
                end = event[1]
            elif event[0] in ("kv", "sql"):
                kinds[event[1].sql].add(event[1].namespace)
    finally:
        progress.finish()
    names = header.get("namespaces")
    return ArchiveInfo(
        created_at=str(header.get("created_at")),
        roost_version=str(header.get("roost")),
        source=str(header.get("source")),
        ids=_scheme(path, header),
        namespaces=[n for n in names if isinstance(n, str)] if isinstance(names, list) else [],
        kv_objects=int(end["kv_objects"]),
        sql_objects=int(end["sql_objects"]),
        entries=int(end["entries"]),
        size=_file_size(path),
        kv_namespaces=sorted(kinds[False]),
        sql_namespaces=sorted(kinds[True]),
    )


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise ArchiveError(f"cannot read {path}: {exc.strerror or exc}") from None


# -- importing -----------------------------------------------------------------------


def _target_secret(scheme: IdScheme, given: bytes | None) -> bytes | None:
    """The secret the target will key IDs with, to check the archive's IDs against
    (``None``: not known yet; adopting the scheme says why)."""
    if scheme.kind == "unkeyed":
        return b""
    if given is not None:
        return given
    return scheme.secret


def import_archive(
    archive: str | Path,
    data_dir: str | Path,
    *,
    id_secret: bytes | None = None,
    progress: Progress | None = None,
    bindings: Mapping[str, bool] | None = None,
) -> Summary:
    """Import the archive into the new data directory ``data_dir``.

    ``bindings``: the namespaces the app binds, each with whether its class is a
    SQL class; an archive holding any other namespace, or SQL objects where the
    class is not a SQL class (or the reverse), is refused: it is another app's.

    ``data_dir`` must not exist, or be an empty directory; it takes the
    archive's ID secret (see ``docs/backup.md``).  The archive is checked whole
    first; then everything is written into a directory beside ``data_dir`` and
    renamed into place once durable, so on any error ``data_dir`` is as it was.
    """
    archive, target = Path(archive), Path(data_dir).resolve()
    progress = progress or _Quiet()
    began = time.monotonic()
    _check_target(target)
    header = next(_events(archive, _Quiet()))[1]  # the header alone, for the ID scheme
    scheme = _scheme(archive, header)
    staging = target.with_name(f".{target.name}.import-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        engine = SqliteEngine(staging)
        engine.adopt_id_scheme(scheme, id_secret)  # refuses a secret that does not match
        info = verify_archive(
            archive, id_secret=_target_secret(scheme, id_secret), progress=progress
        )
        if bindings is not None:
            _check_bindings(archive, info, bindings)
        incoming = staging / ".incoming.sqlite3"
        total = asyncio.run(_write(engine, archive, id_secret, scheme, incoming, progress))
        _sync_tree(staging)
        _check_target(target)  # nothing may have appeared there meanwhile
        if target.exists():
            target.rmdir()  # empty (checked); rename cannot replace it otherwise on every OS
        os.rename(staging, target)
        datadir.sync_directory(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    kv_objects, sql_objects, entries = total
    return Summary(kv_objects, sql_objects, entries, _file_size(archive), time.monotonic() - began)


def _check_bindings(archive: Path, info: ArchiveInfo, bindings: Mapping[str, bool]) -> None:
    foreign = sorted(set(info.namespaces) - set(bindings))
    if foreign:
        raise StorageError(
            f"{archive} holds objects of {', '.join(map(repr, foreign))}, which the app "
            "does not bind: is it another app's archive?"
        )
    for sql, namespaces in ((True, info.sql_namespaces), (False, info.kv_namespaces)):
        wrong = [ns for ns in namespaces if bindings[ns] != sql]
        if wrong:
            held, declared = ("SQL", "not") if sql else ("KV-only", "")
            raise StorageError(
                f"{archive} holds {held} objects of {', '.join(map(repr, wrong))}, whose "
                f"class in the app is {declared} declared with sql=True: they would not be "
                "found. Is it another app's archive?".replace("  ", " ")
            )


def _check_target(target: Path) -> None:
    if not target.exists():
        return
    if not target.is_dir():
        raise StorageError(f"{target} exists and is not a directory")
    holder = lock_holder(target)
    if holder is not None:
        raise StorageError(
            f"the data directory {target} is in use by a Roost process (pid {holder})"
        )
    if any(target.iterdir()):
        raise StorageError(
            f"{target} is not empty: import writes only into a new data directory. Give "
            "another --data directory, or move this one away first"
        )


async def _write(
    engine: StorageEngine,
    archive: Path,
    given: bytes | None,
    scheme: IdScheme,
    incoming: Path,
    progress: Progress,
) -> tuple[int, int, int]:
    engine.start(asyncio.get_running_loop())
    kv_objects = sql_objects = entries = 0
    try:
        secret = engine.id_secret(given)
        expected = _target_secret(scheme, given)
        if expected is not None and secret != expected:
            raise StorageError("the imported directory's ID secret is not the archive's")
        info_objects = None
        group: list[ExportedObject] = []
        sink: IO[bytes] | None = None
        databases: list[tuple[ExportedObject, Path]] = []
        for event in _events(archive, _Quiet(), secret):
            kind = event[0]
            if kind == "header":
                count = event[1].get("objects")
                info_objects = count if isinstance(count, int) else None
                progress.start("importing", info_objects, "objects")
            elif kind == "kv":
                group.append(event[1])
                kv_objects += 1
                entries += len(event[1].entries)
                if len(group) >= IMPORT_GROUP:
                    await engine.import_objects(group)
                    progress.advance(len(group))
                    group = []
            elif kind == "sql":
                sink = incoming.with_name(f"{incoming.name}.{len(databases)}").open("wb")
            elif kind == "data":
                assert sink is not None
                sink.write(event[1])
            elif kind == "sql-end":
                assert sink is not None
                sink.close()
                databases.append((event[1], Path(sink.name)))
                sink = None
                sql_objects += 1
                if len(databases) >= SQL_IMPORT_GROUP:
                    await _import_databases(engine, databases)
                    progress.advance(len(databases))
                    databases = []
        if group:
            await engine.import_objects(group)
            progress.advance(len(group))
        if databases:
            await _import_databases(engine, databases)
            progress.advance(len(databases))
    finally:
        progress.finish()
        await engine.close()
    return kv_objects, sql_objects, entries


async def _import_databases(
    engine: StorageEngine, databases: list[tuple[ExportedObject, Path]]
) -> None:
    """Hand SQL objects' databases to the engine together: their catalogue and
    alarm index entries then share group commits (one each per object cost
    2.5 ms, most of it waiting for the shared database's fsync)."""
    await asyncio.gather(
        *(
            engine.import_database(obj.namespace, obj.object_id, path, obj.alarm_ms, obj.name)
            for obj, path in databases
        )
    )


def _sync_tree(root: Path) -> None:
    """``fsync`` every file and directory under ``root`` (the import before its rename)."""
    for directory, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        datadir.sync_directory(Path(directory))
