"""Durability (rule 5 of docs/consistency.md): kill -9 under load loses no acknowledged write."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter as Tally
from pathlib import Path

import pytest

import roost
from tests.conftest import scaled
from tests.storage.shared_file import stored

pytestmark = pytest.mark.integration  # a child process, killed

CHILD = Path(__file__).with_name("crash_child.py")


class Counter(roost.DurableObject):
    async def read(self) -> tuple[int, int | None]:
        """The count, and the count its log entry (a value stored out of line when
        its padding is long) was written with: the same batch, so the same."""
        log = await self.ctx.storage.get("log")
        return int(await self.ctx.storage.get("value") or 0), None if log is None else log["last"]


def run_and_kill(data_dir: str, seconds: float, checkpoint_interval: float) -> list[str]:
    lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, str(CHILD), data_dir, "20", "16", str(checkpoint_interval)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        stdout = child.stdout
        thread = threading.Thread(target=lambda: lines.extend(stdout))
        thread.start()
        time.sleep(seconds)
        child.send_signal(signal.SIGKILL)
        child.wait()
        thread.join()
        assert child.returncode == -signal.SIGKILL, child.stderr.read()
    # A line cut by the kill has no newline: it was never a complete report.
    return [line for line in lines if line.endswith("\n")]


@pytest.mark.slow
async def test_kill_9_under_load_loses_no_acknowledged_write(data_dir: str) -> None:
    attempts: Tally[str] = Tally()
    acked: dict[str, int] = {}
    rounds = scaled(4, 20)
    total_acks = 0
    for round_ in range(rounds):
        # Every other round checkpoints (and starts the WAL over) every 20 ms.
        interval = 0.02 if round_ % 2 else 1.0
        seconds = random.uniform(0.8, 2.0)
        for line in await asyncio.to_thread(run_and_kill, data_dir, seconds, interval):
            parts = line.split()
            if parts[0] == "try":
                attempts[parts[1]] += 1
            else:
                acked[parts[1]] = max(acked.get(parts[1], 0), int(parts[2]))
                total_acks += 1
        async with roost.Runtime({"COUNTER": Counter}, data_dir=data_dir) as rt:
            for name in set(attempts) | set(acked):
                value, logged = await rt.env.COUNTER.get_by_name(name).read()
                assert value >= acked.get(name, 0), f"{name}: acknowledged write lost"
                assert value <= attempts[name], f"{name}: more increments than attempts"
                assert logged == (value or None), f"{name}: half a batch survived"
        large, pointers, _ = stored(data_dir)
        assert large == pointers, "a large value leaked"
    assert total_acks > 100 * rounds, "the child made too little progress to prove anything"
