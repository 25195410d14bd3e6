"""kill -9 under load: acknowledged SQL rows survive, acknowledged alarms fire or were deleted."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import scaled

pytestmark = pytest.mark.integration  # a child process, killed

WORKER = Path(__file__).with_name("crash_worker.py")


def run_round(data_dir: Path, seed: int, rng: random.Random) -> dict[str, int]:
    child = subprocess.Popen(
        [sys.executable, str(WORKER), "load", str(data_dir), str(seed)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "READY"
    stdout = child.stdout
    raw: list[str] = []
    reader = threading.Thread(target=lambda: raw.extend(iter(stdout.readline, "")))
    reader.start()
    time.sleep(rng.uniform(0.3, 1.5))
    child.send_signal(signal.SIGKILL)
    child.wait()
    reader.join()
    stdout.close()
    # A line cut by the kill is not an acknowledgement.
    lines = [line for line in raw if line.endswith("\n")]

    rows: dict[int, set[int]] = {}
    last_alarm_op: dict[int, tuple[str, int | None]] = {}
    pending: set[int] = set()  # objects with an operation issued but not acknowledged
    for line in lines:
        words = line.split()
        if len(words) < 2:
            continue
        kind, index = words[0], int(words[1])
        if kind == "ISSUE":
            pending.add(index)
            continue
        pending.discard(index)
        if kind == "ROW":
            rows.setdefault(index, set()).add(int(words[2]))
        elif kind == "ARM":
            last_alarm_op[index] = ("ARM", int(words[2]))
        elif kind == "DISARM":
            last_alarm_op[index] = ("DISARM", None)

    latest_due = max((due for op, due in last_alarm_op.values() if due), default=0)
    check = subprocess.run(
        [sys.executable, str(WORKER), "check", str(data_dir), str(latest_due + 300)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr
    reports = {int(k): v for k, v in json.loads(check.stdout.splitlines()[-1]).items()}

    for index, acked in rows.items():
        missing = acked - set(reports[index]["rows"])
        assert not missing, f"object {index} lost acknowledged rows {sorted(missing)[:5]}"
    checked = 0
    for index, (op, due) in last_alarm_op.items():
        if index in pending:
            continue  # a later operation may or may not have committed
        report = reports[index]
        if op == "ARM":
            assert due in report["fired"], f"object {index}: alarm {due} never fired"
            assert report["alarm"] is None
        else:
            assert report["alarm"] is None, f"object {index}: deleted alarm still set"
        checked += 1
    return {"rows": sum(map(len, rows.values())), "alarms": checked}


def crash_rounds(tmp_path: Path, rounds: int) -> None:
    rng = random.Random()
    totals = {"rows": 0, "alarms": 0}
    for n in range(rounds):
        got = run_round(tmp_path / "data", n + 1, rng)
        for key in totals:
            totals[key] += got[key]
    assert totals["rows"] > 0 and totals["alarms"] > 0, totals


@pytest.mark.slow
def test_sql_rows_and_alarms_survive_kill_9(tmp_path: Path) -> None:
    crash_rounds(tmp_path, scaled(3, 25))
