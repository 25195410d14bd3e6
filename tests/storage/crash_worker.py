"""Child process of the crash test: SQL rows and alarms under load, or a check after.

``load DATA_DIR SEED``: objects write SQL rows and set/delete alarms, each
object's operations one after another; a line is printed once an operation is
acknowledged (its RPC returned, so its writes are durable).  Runs until killed.

``check DATA_DIR WAIT_UNTIL_MS``: restarts on the same data, waits (real time)
until WAIT_UNTIL_MS so that every alarm due by then has fired, then prints each
object's rows, fired alarms and current alarm as JSON.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

import roost

OBJECTS = 24


class Ledger(roost.DurableObject, sql=True):
    def __init__(self, ctx: roost.ObjectState, env: roost.Env) -> None:
        super().__init__(ctx, env)
        ctx.storage.sql.exec(
            "CREATE TABLE IF NOT EXISTS rows (n INTEGER PRIMARY KEY, body TEXT);"
            "CREATE TABLE IF NOT EXISTS fired (due INTEGER)"
        )

    async def add(self, n: int) -> None:
        self.ctx.storage.sql.exec("INSERT INTO rows VALUES (?, ?)", n, "x" * (n % 200))
        await self.ctx.storage.put("last", n)

    async def arm(self, due: int) -> None:
        await self.ctx.storage.put("armed", due)
        await self.ctx.storage.set_alarm(due)

    async def disarm(self) -> None:
        await self.ctx.storage.delete_alarm()

    async def alarm(self) -> None:
        due = await self.ctx.storage.get("armed")
        self.ctx.storage.sql.exec("INSERT INTO fired VALUES (?)", due)

    async def report(self) -> dict[str, object]:
        sql = self.ctx.storage.sql
        return {
            "rows": [r[0] for r in sql.exec("SELECT n FROM rows").raw()],
            "fired": [r[0] for r in sql.exec("SELECT due FROM fired").raw()],
            "alarm": await self.ctx.storage.get_alarm(),
            "last": await self.ctx.storage.get("last"),
        }


def say(*words: object) -> None:
    sys.stdout.write(" ".join(map(str, words)) + "\n")
    sys.stdout.flush()


async def load(data_dir: str, seed: int) -> None:
    rng = random.Random(seed)
    async with roost.Runtime({"LEDGER": Ledger}, data_dir=data_dir) as runtime:
        ns = runtime.env.LEDGER

        async def work(index: int) -> None:
            stub = ns.get_by_name(f"o{index}")
            n = seed * 1_000_000 + index * 10_000
            while True:
                roll = rng.random()
                if roll < 0.6:
                    n += 1
                    say("ISSUE", index)
                    await stub.add(n)
                    say("ROW", index, n)
                elif roll < 0.9:
                    due = int(time.time() * 1000) + rng.randrange(0, 1000)
                    say("ISSUE", index)
                    await stub.arm(due)
                    say("ARM", index, due)
                else:
                    say("ISSUE", index)
                    await stub.disarm()
                    say("DISARM", index)
                # Pauses leave objects idle at the moment of the kill, so that
                # their last acknowledged alarm operation is the final word.
                await asyncio.sleep(rng.random() * 0.05)

        say("READY")
        await asyncio.gather(*(work(i) for i in range(OBJECTS)))


async def check(data_dir: str, wait_until_ms: int) -> None:
    async with roost.Runtime({"LEDGER": Ledger}, data_dir=data_dir) as runtime:
        delay = wait_until_ms / 1000 - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await runtime.alarms.settle(limit=30)
        ns = runtime.env.LEDGER
        reports = {i: await ns.get_by_name(f"o{i}").report() for i in range(OBJECTS)}
    say(json.dumps(reports))


if __name__ == "__main__":
    mode, data = sys.argv[1], sys.argv[2]
    if mode == "load":
        asyncio.run(load(data, int(sys.argv[3])))
    else:
        asyncio.run(check(data, int(sys.argv[3])))
