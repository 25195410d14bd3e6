"""Router messages as bytes: what a router that leaves the process sends.

Every message is one value of the project's codec (:mod:`roost.codec`, CBOR),
a list whose first item says what it is.  An event addressed to an object::

    ["call", namespace, id_hex, id_name, method, args, kwargs]
    ["fetch", namespace, id_hex, id_name, method, url, headers, body, client]

and its answer::

    ["ok", value]                       # an RPC result (already copied by value)
    ["ok", status, headers, body]       # a fetch response
    [failure...]                        # see :mod:`.failures`

The receiving side checks the ID it is given (:func:`object_id_of`): its MAC,
and that its name, if any, is the one it was made from, since a message from
another process is not trusted to carry an ID its own namespace made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from .. import codec
from ..errors import InvalidObjectId, RoostError
from ..http import RequestMessage, ResponseMessage
from ..ids import ObjectId
from . import failures

if TYPE_CHECKING:
    from .namespace import Env

__all__ = [
    "decode_reply",
    "encode_call",
    "encode_failure",
    "encode_fetch",
    "encode_fetch_reply",
    "encode_result",
    "object_id_of",
]

CALL: Final = "call"
FETCH: Final = "fetch"
_OK: Final = "ok"


def encode_call(
    namespace: str, object_id: ObjectId, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> bytes:
    return codec.encode([CALL, namespace, object_id.hex, object_id.name, method, args, kwargs])


def encode_fetch(namespace: str, object_id: ObjectId, request: RequestMessage) -> bytes:
    if request.websocket is not None:
        # The connection is a live handle; relaying its frames between
        # processes is the socket-forwarding part of the router (not built yet).
        raise RoostError("a WebSocket upgrade cannot cross a message router yet")
    headers = [[k, v] for k, v in request.headers]
    return codec.encode(
        [
            FETCH,
            namespace,
            object_id.hex,
            object_id.name,
            request.method,
            request.url,
            headers,
            request.body,
            request.client,
        ]
    )


def decode_request(fields: list[Any]) -> RequestMessage:
    """The request of a decoded ``fetch`` message (its fields after the ID)."""
    method, url, headers, body, client = fields
    return RequestMessage(method, url, [(k, v) for k, v in headers], body, client)


def object_id_of(env: Env, namespace: str, hex_id: str, name: str | None) -> ObjectId:
    """The ID a message names, checked by this process's namespace."""
    ns = env[namespace]
    if name is None:
        return ns.id_from_string(hex_id)  # type: ignore[no-any-return]
    made: ObjectId = ns.id_from_name(name)
    if made.hex != hex_id:
        raise InvalidObjectId(f"object ID {hex_id[:12]}… was not made from the name it came with")
    return made


def encode_result(value: Any) -> bytes:
    return codec.encode([_OK, value])


def encode_fetch_reply(response: ResponseMessage) -> bytes:
    headers = [[k, v] for k, v in response.headers]
    return codec.encode([_OK, response.status, headers, response.body])


def encode_failure(failure: failures.Failure) -> bytes:
    return codec.encode(failure)


def decode_reply(data: bytes) -> list[Any]:
    """An answer's fields after ``"ok"``; raises the failure it describes instead."""
    reply: list[Any] = codec.decode(data)
    if reply[0] != _OK:
        raise failures.rebuild(reply)
    return reply[1:]


def decode_response(fields: list[Any]) -> ResponseMessage:
    status, headers, body = fields
    return ResponseMessage(status, [(k, v) for k, v in headers], body)
