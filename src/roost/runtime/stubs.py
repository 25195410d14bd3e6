"""Stubs: the caller's handle on one object."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from typing import Any

import starlette.requests

from .. import codec
from ..http import RequestMessage, Response
from ..ids import ObjectId
from .activation import current_activation
from .router import Router

__all__ = ["Stub"]


class Stub:
    """A handle on one object: ``await stub.method(*args)`` and ``await stub.fetch(...)``.

    Attribute access gives a callable for any public name; whether the object
    has such an async method is checked when it is called
    (:class:`~roost.RpcMethodNotFound`).  Arguments and results are copied by
    value with the storage codec, so neither side sees the other's mutations.
    """

    __slots__ = ("_namespace", "_id", "_router")

    def __init__(self, namespace: str, object_id: ObjectId, router: Router) -> None:
        self._namespace = namespace
        self._id = object_id
        self._router = router

    @property
    def id(self) -> ObjectId:
        """The ID of the object this stub calls."""
        return self._id

    @property
    def name(self) -> str | None:
        """The name the ID was made from, if any."""
        return self._id.name

    def __repr__(self) -> str:
        return f"<Stub {self._namespace} {self._id.hex[:12]}…>"

    def __getattr__(self, name: str) -> _RpcMethod:
        if name.startswith("_"):
            raise AttributeError(f"stubs do not expose private names ({name!r})")
        return _RpcMethod(self, name)

    async def fetch(
        self,
        request: str | starlette.requests.HTTPConnection,
        *,
        method: str = "GET",
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        body: bytes | str = b"",
    ) -> Response:
        """Send an HTTP request to the object's ``fetch`` handler.

        ``request`` is a Starlette/Roost ``Request`` (its body is read and sent),
        or a URL; with a URL, ``method``, ``headers`` and ``body`` describe the rest.

        A WebSocket upgrade (a Roost ``Request`` whose ``websocket`` is set, or a
        Starlette ``WebSocket`` not yet accepted) passes its connection to the
        object, which accepts it and answers status 101.
        """
        if isinstance(request, str):
            message = RequestMessage.build(request, method=method, headers=headers, body=body)
        elif isinstance(request, starlette.requests.HTTPConnection):
            message = await RequestMessage.from_request(request)
        else:
            raise TypeError(f"fetch() takes a URL or a Request, not {type(request).__name__}")
        barrier = _output_barrier()
        if barrier is not None:
            await barrier
        response = await self._router.fetch(self._namespace, self._id, message)
        return response.to_response()


class _RpcMethod:
    __slots__ = ("_stub", "_name")

    def __init__(self, stub: Stub, name: str) -> None:
        self._stub = stub
        self._name = name

    def __repr__(self) -> str:
        return f"<RPC method {self._name} of {self._stub!r}>"

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        copied = (
            args
            if all(map(codec.is_immutable_scalar, args))
            else tuple(map(codec.copy_value, args))
        )
        copied_kwargs = {k: codec.copy_value(v) for k, v in kwargs.items()} if kwargs else {}
        barrier = _output_barrier()
        if barrier is not None:
            await barrier
        stub = self._stub
        return await stub._router.call(stub._namespace, stub._id, self._name, copied, copied_kwargs)


def _output_barrier() -> Awaitable[None] | None:
    # A call made from inside an object is an output too: it leaves only once
    # the caller's earlier writes are durable (the output gate, docs/consistency.md).
    caller = current_activation.get()
    return None if caller is None else caller.storage._output_barrier()
