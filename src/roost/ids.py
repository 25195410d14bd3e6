"""Object IDs: 256 bits, written as 64 lowercase hex characters.

An ID is 24 bytes of identity followed by an 8-byte check, both keyed BLAKE2b
under a key made from the deployment's secret and the namespace
(``roost.storage.idsecret`` keeps the secret).  So an ID made in one namespace
is refused by another, IDs of different namespaces never collide, and only a
holder of the secret can make an ID that ``id_from_string`` accepts: guessing
one takes about 2**64 tries, each a request the server sees.  Names are hashed
under the same key, so ``id_from_name`` is deterministic within a deployment,
and random IDs carry 192 random bits.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Final

from .errors import InvalidObjectId

__all__ = ["MAX_NAME_BYTES", "ObjectId", "IdFactory"]

#: The longest object name ``id_from_name`` accepts, in bytes of UTF-8.
MAX_NAME_BYTES: Final = 2048

_BODY_BYTES = 24
_MAX_KEY_BYTES = 64
_CHECK_BYTES = 8
_HEX_ID = re.compile(r"[0-9a-f]{64}")
#: Names seen recently, per namespace: hot objects are looked up by name on
#: every request, and the two keyed hashes are most of that cost.  Sized past
#: the runtime's default cap of live objects (10,000): a smaller cache, emptied
#: when full, missed on nearly every request once that many objects were busy.
_NAME_CACHE_SIZE: Final = 16384
#: ... and bounded by the characters of the names it holds, so that long names
#: (up to MAX_NAME_BYTES each) cannot make it hold hundreds of MiB.
_NAME_CACHE_CHARS: Final = 2 * 1024 * 1024


class ObjectId:
    """The identity of one durable object within a namespace.

    ``str(object_id)`` gives the 64-hex form that ``id_from_string`` accepts.
    ``name`` is the name an ID was derived from with ``id_from_name``, else None.
    """

    __slots__ = ("_hex", "_namespace", "_name")

    def __init__(self, hex_id: str, namespace: str, name: str | None = None) -> None:
        self._hex = hex_id
        self._namespace = namespace
        self._name = name

    @property
    def hex(self) -> str:
        """The 64-character lowercase hex form."""
        return self._hex

    @property
    def namespace(self) -> str:
        """The binding name of the namespace this ID belongs to."""
        return self._namespace

    @property
    def name(self) -> str | None:
        """The name this ID was made from, when it came from ``id_from_name``."""
        return self._name

    def __str__(self) -> str:
        return self._hex

    def __reduce__(self) -> tuple[type[ObjectId], tuple[str, str, str | None]]:
        return (ObjectId, (self._hex, self._namespace, self._name))

    def __repr__(self) -> str:
        label = f" name={self._name!r}" if self._name is not None else ""
        return f"<ObjectId {self._namespace}:{self._hex[:12]}…{label}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ObjectId):
            return NotImplemented
        return self._hex == other._hex and self._namespace == other._namespace

    def __hash__(self) -> int:
        return hash(self._hex)


class IdFactory:
    """Makes and checks the IDs of one namespace.

    Both derivations are keyed BLAKE2b (a MAC by construction) under a key
    derived from ``secret`` and the namespace: the name hash makes ``from_name``
    deterministic and namespace-private; the 8-byte check lets ``from_string``
    refuse IDs made elsewhere.  An empty ``secret`` gives the unkeyed IDs of
    data directories made before IDs were keyed.
    """

    __slots__ = ("_namespace", "_key", "_names", "_name_chars")

    def __init__(self, namespace: str, *, secret: bytes = b"") -> None:
        self._namespace = namespace
        if len(secret) > _MAX_KEY_BYTES:
            # BLAKE2b takes a key of 64 bytes at most; a longer secret is hashed,
            # not cut, so secrets that differ past byte 64 still differ.
            secret = hashlib.blake2b(secret, person=b"roost-sk").digest()
        self._key = hashlib.blake2b(namespace.encode(), key=secret, person=b"roost-ns").digest()
        self._names: dict[str, ObjectId] = {}
        self._name_chars = 0

    def _check(self, body: bytes) -> bytes:
        return hashlib.blake2b(
            body, key=self._key, digest_size=_CHECK_BYTES, person=b"roost-ck"
        ).digest()

    def _make(self, body: bytes, name: str | None) -> ObjectId:
        return ObjectId((body + self._check(body)).hex(), self._namespace, name)

    def from_name(self, name: str) -> ObjectId:
        if not isinstance(name, str):
            raise TypeError(f"object names are str, not {type(name).__name__}")
        known = self._names.get(name)
        if known is not None:
            return known
        encoded = name.encode("utf-8", "surrogatepass")
        if len(encoded) > MAX_NAME_BYTES:
            raise InvalidObjectId(
                f"object name {name[:40]!r}... is {len(encoded):,} bytes of UTF-8, over the "
                f"limit of {MAX_NAME_BYTES:,}"
            )
        body = hashlib.blake2b(
            encoded, key=self._key, digest_size=_BODY_BYTES, person=b"roost-nm"
        ).digest()
        made = self._make(body, name)
        if len(self._names) >= _NAME_CACHE_SIZE or self._name_chars >= _NAME_CACHE_CHARS:
            self._names.clear()
            self._name_chars = 0
        self._names[name] = made
        self._name_chars += len(name)
        return made

    def unique(self) -> ObjectId:
        return self._make(secrets.token_bytes(_BODY_BYTES), None)

    def from_string(self, text: str) -> ObjectId:
        if not isinstance(text, str):
            raise InvalidObjectId(f"an object ID is a str, not {type(text).__name__}")
        if not _HEX_ID.fullmatch(text):
            shown = text if len(text) <= 80 else text[:77] + "..."
            raise InvalidObjectId(
                f"invalid object ID {shown!r}: expected 64 lowercase hex characters"
            )
        if not self._valid(bytes.fromhex(text)):
            raise InvalidObjectId(
                f"object ID {text[:12]}… does not belong to namespace {self._namespace!r}"
            )
        return ObjectId(text, self._namespace, None)

    def _valid(self, raw: bytes) -> bool:
        return hmac.compare_digest(raw[_BODY_BYTES:], self._check(raw[:_BODY_BYTES]))

    def owns(self, object_id: ObjectId) -> bool:
        return object_id.namespace == self._namespace and self._valid(bytes.fromhex(object_id.hex))
