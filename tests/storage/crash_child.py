"""Child process for the crash test: increments counters under load, forever.

Prints ``try NAME`` before each call and ``ack NAME VALUE`` once the call has
returned (the output gate has released it), flushing every line, until killed.
Arguments: data directory, objects, workers, and the engine's checkpoint
interval in seconds (a short one starts the WAL over many times before the kill).
"""

from __future__ import annotations

import asyncio
import random
import sys

import roost
from roost.storage import SqliteEngine


class Counter(roost.DurableObject):
    async def increment(self) -> int:
        value = (await self.ctx.storage.get("value") or 0) + 1
        await self.ctx.storage.put("value", value)
        await self.ctx.storage.put("log", {"last": value, "pad": "x" * random.randint(0, 2000)})
        return value


async def main(data_dir: str, objects: int, workers: int, interval: float) -> None:
    engine = SqliteEngine(data_dir, checkpoint_interval=interval)
    async with roost.Runtime({"COUNTER": Counter}, engine=engine) as rt:
        out = sys.stdout

        async def worker() -> None:
            while True:
                name = f"c{random.randrange(objects)}"
                out.write(f"try {name}\n")
                out.flush()
                value = await rt.env.COUNTER.get_by_name(name).increment()
                out.write(f"ack {name} {value}\n")
                out.flush()

        await asyncio.gather(*(worker() for _ in range(workers)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
