"""The kernel: activation table, per-object event path and gates, eviction, alarms.

Everything else in Roost (server, CLI, later the cluster) uses this package
through :class:`Runtime`, :class:`Namespace` and :class:`Stub`, and for
WebSockets through :class:`WebSocket`, :class:`SocketTransport` (what a server
implements) and :func:`deliver_message` / :func:`deliver_close`.
"""

from .alarms import AlarmInfo, AlarmScheduler, AlarmStatistics
from .clock import Clock, ManualClock, SystemClock
from .loopback import LoopbackRouter
from .namespace import Env, Namespace
from .router import LocalRouter, Router
from .runtime import Runtime, RuntimeStatistics
from .socketdelivery import deliver_close, deliver_message
from .socketregistry import SocketRegistry, SocketStatistics
from .stubs import Stub
from .websocket import SocketTransport, WebSocket

__all__ = [
    "AlarmInfo",
    "AlarmScheduler",
    "AlarmStatistics",
    "Clock",
    "Env",
    "LocalRouter",
    "LoopbackRouter",
    "ManualClock",
    "Namespace",
    "Router",
    "Runtime",
    "RuntimeStatistics",
    "SocketRegistry",
    "SocketStatistics",
    "SocketTransport",
    "Stub",
    "SystemClock",
    "WebSocket",
    "deliver_close",
    "deliver_message",
]
