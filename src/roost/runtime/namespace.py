"""Namespaces (``env.COUNTER``) and the ``env`` that holds them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import InvalidObjectId, UnknownBinding
from ..ids import IdFactory, ObjectId
from .router import Router
from .stubs import Stub

__all__ = ["Env", "Namespace"]


class Namespace:
    """The objects of one class, addressed by ID: ``env.COUNTER``."""

    __slots__ = ("_name", "_ids", "_router")

    def __init__(self, name: str, router: Router, *, id_secret: bytes = b"") -> None:
        self._name = name
        self._ids = IdFactory(name, secret=id_secret)
        self._router = router

    @property
    def name(self) -> str:
        """The binding name, e.g. ``"COUNTER"``."""
        return self._name

    def __repr__(self) -> str:
        return f"<Namespace {self._name}>"

    def id_from_name(self, name: str) -> ObjectId:
        """The ID for ``name``: always the same in this namespace, never another's."""
        return self._ids.from_name(name)

    def new_unique_id(self) -> ObjectId:
        """A new random ID."""
        return self._ids.unique()

    def id_from_string(self, text: str) -> ObjectId:
        """Parse the 64-hex form of an ID of this namespace.

        Raises :class:`~roost.InvalidObjectId` for a malformed string or an ID
        made by another namespace.
        """
        return self._ids.from_string(text)

    def get(self, object_id: ObjectId) -> Stub:
        """A stub for the object with ``object_id``."""
        if not isinstance(object_id, ObjectId):
            raise TypeError(
                f"get() takes an ObjectId, not {type(object_id).__name__}; "
                "use id_from_string() or id_from_name() first"
            )
        if not self._ids.owns(object_id):
            raise InvalidObjectId(
                f"ID {object_id.hex[:12]}… belongs to namespace {object_id.namespace!r}, "
                f"not {self._name!r}"
            )
        return Stub(self._name, object_id, self._router)

    def get_by_name(self, name: str) -> Stub:
        """A stub for the object named ``name`` (``get(id_from_name(name))``)."""
        return Stub(self._name, self._ids.from_name(name), self._router)


class Env(Mapping[str, Any]):
    """The app's bindings, seen by objects as ``self.env`` and by front code as ``env``.

    Namespaces and configuration values are reachable both as attributes
    (``env.COUNTER``) and as items (``env["COUNTER"]``).
    """

    __slots__ = ("_bindings", "__dict__")

    def __init__(self, bindings: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_bindings", dict(bindings))
        # Bindings also live as plain attributes, so ``env.COUNTER`` (once per
        # request in most fronts) is an ordinary lookup, not two Python calls
        # through __getattr__.  Names the class defines (get, keys, ...) keep
        # meaning the method, exactly as through __getattr__.
        for name, value in self._bindings.items():
            if not name.startswith("__") and not hasattr(type(self), name):
                self.__dict__[name] = value

    def __getitem__(self, name: str) -> Any:
        try:
            return self._bindings[name]
        except KeyError:
            raise UnknownBinding(self._unknown(name)) from None

    def _unknown(self, name: str) -> str:
        namespaces = sorted(k for k, v in self._bindings.items() if isinstance(v, Namespace))
        values = sorted(k for k, v in self._bindings.items() if not isinstance(v, Namespace))
        return (
            f"env has no binding named {name!r}: its namespaces are "
            f"{', '.join(namespaces) or 'none'}, its configuration values "
            f"{', '.join(values) or 'none'} (configuration is passed as env={{...}} "
            "to App or Runtime)"
        )

    def __contains__(self, name: object) -> bool:
        return name in self._bindings

    def get(self, name: str, default: Any = None) -> Any:
        """The binding ``name``, or ``default`` when there is none."""
        return self._bindings.get(name, default)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self[name]

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("env is read-only")

    def __iter__(self) -> Iterator[str]:
        return iter(self._bindings)

    def __len__(self) -> int:
        return len(self._bindings)

    def __repr__(self) -> str:
        return f"<Env {', '.join(sorted(self._bindings))}>"
