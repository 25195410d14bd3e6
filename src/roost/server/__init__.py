"""Serving: the ASGI :class:`App`, WebSocket connections, uvicorn with graceful shutdown.

Uses only the kernel's public interface (``roost.runtime``): requests and
WebSocket upgrades reach objects through the front code and stubs.
"""

from ._http1 import HttpProtocol
from .app import App, FetchHandler
from .connection import Connection
from .serving import Server, bind, find_app, make_config, running

__all__ = [
    "App",
    "Connection",
    "FetchHandler",
    "HttpProtocol",
    "Server",
    "bind",
    "find_app",
    "make_config",
    "running",
]
