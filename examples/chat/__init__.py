"""A multi-room chat on the wire protocol of Cloudflare's workers-chat-demo.

    roost dev examples/chat       (then open http://127.0.0.1:8787/)

``app.py`` is the front (Starlette routes), ``room.py`` the ChatRoom object
(hibernation API), ``ratelimit.py`` the per-IP RateLimiter object, ``js.py``
the JavaScript reading of frames the demo relies on.  ``README.md`` describes
the protocol and the deliberate differences from the demo.
"""

from .app import create_app

app = create_app()

__all__ = ["app", "create_app"]
