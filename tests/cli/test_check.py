"""``roost check DATA_DIR``: exit 0 when intact, 1 when damaged, 2 when it cannot check."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import roost
from roost.cli import main
from roost.storage.sqlite import lock_data_dir

# Real servers or processes: an integration test.
pytestmark = pytest.mark.integration


class Bag(roost.DurableObject):
    async def fill(self) -> None:
        await self.ctx.storage.put({f"k{i:05}": "v" * 60 for i in range(2000)})


async def filled(data_dir: Path) -> Path:
    async with roost.Runtime({"BAG": Bag}, data_dir=data_dir) as runtime:
        await runtime.env.BAG.get_by_name("a").fill()
    return data_dir / "objects.sqlite3"


async def test_a_clean_directory_exits_0(tmp_path: Path) -> None:
    await filled(tmp_path)
    result = CliRunner().invoke(main, ["check", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output == "ok: 1 databases checked, no problems\n"


def test_a_damaged_directory_prints_each_problem_and_exits_1(tmp_path: Path) -> None:
    shared = asyncio.run(filled(tmp_path))
    size = shared.stat().st_size
    with shared.open("r+b") as f:
        f.seek(size // 2 // 4096 * 4096)
        f.write(b"\xa5" * 8 * 4096)
    # As an operator runs it: the installed command, in a process of its own.
    result = subprocess.run(
        [sys.executable, "-m", "roost", "check", "--quick", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) >= 2
    assert all(line.startswith(f"{shared}: ") for line in lines[:-1])
    assert lines[-1].startswith("damaged: ") and "in 1 databases checked" in lines[-1]


async def test_a_lost_shared_database_is_reported(tmp_path: Path) -> None:
    (await filled(tmp_path)).unlink()
    result = CliRunner().invoke(main, ["check", str(tmp_path)])
    assert result.exit_code == 1
    assert "is missing" in result.output


def test_a_directory_in_use_or_absent_exits_2(tmp_path: Path) -> None:
    fd = lock_data_dir(tmp_path)
    try:
        result = CliRunner().invoke(main, ["check", str(tmp_path)])
    finally:
        os.close(fd)
    assert result.exit_code == 2
    assert "in use by another Roost process" in result.output
    result = CliRunner().invoke(main, ["check", str(tmp_path / "absent")])
    assert result.exit_code == 2
    assert "is not a directory" in result.output
