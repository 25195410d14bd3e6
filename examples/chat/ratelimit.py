"""RateLimiter: one object per client IP, shared by every room that IP talks in."""

from __future__ import annotations

from time import monotonic
from typing import Any

from roost import DurableObject, Env, ObjectState


class RateLimiter(DurableObject):
    """Allows ``burst`` actions at once, then one per ``interval`` seconds.

    The demo's limiter adds 5 s per action and refuses once more than 20 s are
    owed; interval 5 with a burst of 5 refuses exactly the same frames.

    The state is one number kept in memory: the time when the bucket is full
    again ("theoretical arrival time").  Losing it on eviction only forgives a
    client, so it is not worth a write per message.
    """

    def __init__(self, ctx: ObjectState, env: Env) -> None:
        super().__init__(ctx, env)
        config: dict[str, Any] = dict(env.get("RATE_LIMIT") or {})
        self.interval = float(config.get("interval", 5.0))
        self.burst = int(config.get("burst", 5))
        self.next_free = 0.0

    async def take(self) -> float:
        """Use up one action; return 0 when allowed, else seconds to wait."""
        now = monotonic()
        start = max(self.next_free, now)
        wait = start - now - (self.burst - 1) * self.interval
        if wait > 0:
            return wait
        self.next_free = start + self.interval
        return 0.0
