"""What the server bounds in what clients send (``docs/limits.md``).

A client the server cannot trust must not make it hold unbounded memory, file
descriptors or time: every request head, body, idle connection and WebSocket
message is bounded here, and a request beyond a bound is refused with a status
that says which one (414, 431, 413, 408, 503) before the app sees it.

:class:`ServerLimits` is the set the protocols read; :class:`ServerConfig` is
the ``uvicorn.Config`` that carries it to them (``make_config`` builds one).
A plain ``uvicorn.Config`` gets the defaults.
"""

from __future__ import annotations

import dataclasses
import resource
from typing import Any, Final

import uvicorn

__all__ = [
    "DEFAULT_LIMITS",
    "FragmentBudget",
    "ServerConfig",
    "ServerLimits",
    "default_max_connections",
    "limits_of",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerLimits:
    """Bounds on what one client may send; each has a ``make_config`` option.

    The defaults follow what uvicorn/h11 and common proxies allow, so that an
    honest client never meets them (see ``docs/limits.md`` for why each).
    """

    #: Longest request target (URL), in bytes; beyond it: 414.
    max_url_bytes: int = 64 * 1024
    #: Bytes in one request's header block (names and values); beyond it: 431.
    max_header_bytes: int = 64 * 1024
    #: Header fields in one request; beyond it: 431.
    max_headers: int = 100
    #: Seconds from accept (or from a request's first byte on a kept-alive
    #: connection) to the end of its headers; beyond it: 408 and close.
    header_timeout: float = 10.0
    #: Request body bytes; beyond it: 413 (up-front for a Content-Length).
    max_body_bytes: int = 16 * 1024 * 1024
    #: Bytes held in unfinished WebSocket messages (the fragments received of
    #: a fragmented message, and the part of a frame still arriving), all
    #: connections together; the connection that goes beyond it is closed (1009).
    max_fragmented_bytes: int = 64 * 1024 * 1024
    #: Outgoing WebSocket bytes a connection may have waiting for a client that
    #: does not read; beyond them it is dropped (1008).
    max_send_buffer_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{field.name} must be a positive number, not {value!r}")


DEFAULT_LIMITS: Final = ServerLimits()

#: Descriptors kept for storage (the shared database, SQL objects), logs and
#: the listening socket when the connection cap is derived from the limit.
_RESERVED_FRACTION: Final = 8
_RESERVED_MIN: Final = 256


def default_max_connections() -> int | None:
    """A connection cap that refuses (503) before the process runs out of
    descriptors: the open-files limit less a reserve (an eighth, at least 256).

    ``None`` when the limit is infinite.  Read when the config is made, so
    raise the limit first (``roost serve`` does).
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(64, soft - max(_RESERVED_MIN, soft // _RESERVED_FRACTION))


class FragmentBudget:
    """Bytes of unfinished WebSocket messages, across the server's
    connections: each connection's bound (``ws_max_size``) times many
    connections is too much to hold at once."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        """Count ``size`` more bytes held; False (and nothing counted) beyond the limit."""
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give_back(self, size: int) -> None:
        self.used = max(0, self.used - size)


class ServerConfig(uvicorn.Config):
    """``uvicorn.Config`` carrying Roost's :class:`ServerLimits` to its protocols."""

    def __init__(self, app: Any, *, limits: ServerLimits = DEFAULT_LIMITS, **options: Any) -> None:
        super().__init__(app, **options)
        self.limits = limits
        self.fragment_budget = FragmentBudget(limits.max_fragmented_bytes)


#: For protocols run under a plain ``uvicorn.Config`` (no Roost limits given).
_DEFAULT_BUDGET: Final = FragmentBudget(DEFAULT_LIMITS.max_fragmented_bytes)


def limits_of(config: uvicorn.Config) -> tuple[ServerLimits, FragmentBudget]:
    """The limits (and the shared fragment budget) a protocol under ``config`` enforces."""
    if isinstance(config, ServerConfig):
        return config.limits, config.fragment_budget
    return DEFAULT_LIMITS, _DEFAULT_BUDGET
