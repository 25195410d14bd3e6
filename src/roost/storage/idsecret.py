"""The secret that keys a deployment's object IDs, and where it is kept.

An ID's check (``roost.ids``) is a MAC keyed with this secret, so only the
deployment that holds it can make IDs that ``id_from_string`` accepts.  A data
directory records its secret in ``ids.json`` when it is created::

    {"roost_ids": 1, "secret": "<64 hex>"}            # made by Roost
    {"roost_ids": 1, "fingerprint": "<32 hex>"}       # given by the deployer

A secret given by the deployer (``ROOST_ID_SECRET`` or ``Runtime(id_secret=)``)
is not written down, only its fingerprint, so that processes sharing it can
keep it out of the directory and its backups; every later start must then be
given the same secret.  The secret decides every ID, names' included, so a
start with another secret would find none of the objects: it is refused.

A data directory written before IDs were keyed has data but no ``ids.json``:
its IDs stay unkeyed (made from the namespace's name alone) so that every
stored object keeps its ID, and a warning says so once per start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Final

from ..errors import StorageError
from . import datadir

__all__ = ["ENV_VAR", "ID_FILE", "MIN_SECRET_BYTES", "fingerprint", "process_secret", "resolve"]

log = logging.getLogger("roost.storage")

ID_FILE: Final = datadir.ID_FILE
#: The environment variable a deployment sets to share one secret.
ENV_VAR: Final = "ROOST_ID_SECRET"
#: A shorter secret could be guessed; 32 hex characters are 128 bits.
MIN_SECRET_BYTES: Final = 16
_FORMAT: Final = 1
#: Storage without a directory (in memory) lives as long as its process, and so
#: does its secret: runtimes of one process that share an engine agree on IDs.
_PROCESS_SECRET: Final = secrets.token_bytes(32)


def process_secret() -> bytes:
    """The secret of storage that lives in this process only."""
    return _PROCESS_SECRET


def fingerprint(secret: bytes) -> str:
    """A digest that tells secrets apart without revealing them."""
    return hashlib.blake2b(secret, digest_size=16, person=b"roost-fp").hexdigest()


def check_secret(secret: object, source: str) -> bytes:
    """``secret`` as bytes, or a ``ValueError`` naming ``source`` if it is unusable."""
    if isinstance(secret, str):
        secret = secret.encode()
    if not isinstance(secret, bytes):
        raise TypeError(f"{source} must be str or bytes, not {type(secret).__name__}")
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"{source} is {len(secret)} bytes; an ID secret needs at least {MIN_SECRET_BYTES} "
            "(make one with: python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    return secret


def resolve(directory: Path, given: bytes | None, *, has_data: bool) -> bytes:
    """The ID secret of the data directory ``directory`` (``b""``: unkeyed IDs).

    ``given`` is the deployer's secret, if any; ``has_data`` says whether the
    directory already holds objects.  Creates ``ids.json`` for a new directory;
    raises :class:`StorageError` when ``given`` disagrees with what the
    directory records.
    """
    path = directory / ID_FILE
    recorded = _read(path)
    if recorded is None:
        if has_data:
            if datadir.ids_keyed(directory):
                raise StorageError(
                    f"{path} is missing, but {directory / datadir.MARKER} says this "
                    "directory's object IDs are keyed with the secret it held: without it "
                    "no stored object can be found. Restore it from a backup of the data "
                    "directory"
                )
            if given is not None:
                raise StorageError(
                    f"{directory} was created before object IDs were keyed with a secret; "
                    f"its IDs stay unkeyed so that its objects keep them. Unset {ENV_VAR} "
                    "(or id_secret=) for it (docs/storage.md, 'Object IDs')"
                )
            log.warning(
                "object IDs of %s are not keyed with a secret (the directory predates "
                "keyed IDs): anyone who knows a namespace's name can make IDs it accepts",
                directory,
            )
            return b""
        secret = given if given is not None else secrets.token_bytes(32)
        content = (
            {"roost_ids": _FORMAT, "fingerprint": fingerprint(secret)}
            if given is not None
            else {"roost_ids": _FORMAT, "secret": secret.hex()}
        )
        if _create(path, content):
            return secret
        recorded = _read(path)  # another process created it first
        assert recorded is not None
    kept_secret, kept_print = recorded
    if given is not None:
        if fingerprint(given) != (kept_print or fingerprint(kept_secret or b"")):
            raise StorageError(
                f"the ID secret given ({ENV_VAR} or id_secret=) is not the one {path} "
                "records: every object ID would change and no stored object would be "
                "found. Give the secret this directory was created with, or unset it"
            )
        return given
    if kept_secret is None:
        raise StorageError(
            f"{path} says this directory's object IDs are keyed with a secret kept outside "
            f"it: set {ENV_VAR} to that secret"
        )
    return kept_secret


def _read(path: Path) -> tuple[bytes | None, str | None] | None:
    """(secret, fingerprint) as ``path`` records them; None if it does not exist."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from None
    try:
        content = json.loads(text)
        version = content["roost_ids"]
        if version != _FORMAT:
            raise ValueError(f"format {version!r}, this Roost reads {_FORMAT}")
        secret, printed = content.get("secret"), content.get("fingerprint")
        if isinstance(secret, str):
            return bytes.fromhex(secret), None
        if isinstance(printed, str):
            return None, printed
        raise ValueError("neither a secret nor a fingerprint")
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise StorageError(
            f"{path} is damaged or not Roost's ({exc}): restore it from a backup of the "
            "data directory; without it no stored object can be found by its ID"
        ) from None


def _create(path: Path, content: dict[str, object]) -> bool:
    """Write ``path`` durably unless it exists; False if another process won."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (json.dumps(content) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, path)  # fails if it exists: the first process's secret wins
    except FileExistsError:
        return False
    finally:
        os.unlink(temporary)
    datadir.sync_directory(path.parent)
    return True
