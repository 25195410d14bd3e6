"""Object IDs are keyed with a per-deployment secret: only its holder can make
IDs that ``id_from_string`` accepts, and stored objects keep their IDs."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

import roost
from roost.ids import IdFactory

DATA = Path(__file__).parent / "data"
SECRET = "a deployment secret shared by its processes"


class Counter(roost.DurableObject):
    async def add(self, by: int) -> int:
        value = (await self.ctx.storage.get("value") or 0) + by
        await self.ctx.storage.put("value", value)
        return value


def runtime(data_dir: Path, **options: object) -> roost.Runtime:
    return roost.Runtime({"COUNTER": Counter}, data_dir=data_dir, **options)  # type: ignore[arg-type]


async def test_a_new_data_directory_keys_its_ids_with_a_secret_of_its_own(tmp_path: Path) -> None:
    async with runtime(tmp_path) as rt:
        made = rt.env.COUNTER.id_from_name("apples")
        await rt.env.COUNTER.get(made).add(2)
        # What anyone could compute from the namespace's name alone is refused.
        forged = IdFactory("COUNTER").from_name("apples").hex
        assert forged != made.hex
        with pytest.raises(roost.InvalidObjectId, match="does not belong"):
            rt.env.COUNTER.id_from_string(forged)
        # So is an ID keyed with another secret.
        other = IdFactory("COUNTER", secret=b"x" * 32).unique().hex
        with pytest.raises(roost.InvalidObjectId):
            rt.env.COUNTER.id_from_string(other)
        unique = rt.env.COUNTER.new_unique_id()
        await rt.env.COUNTER.get(unique).add(5)
    kept = tmp_path / "ids.json"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert len(bytes.fromhex(json.loads(kept.read_text())["secret"])) == 32
    # Restarted, the same names give the same IDs and find their data.
    async with runtime(tmp_path) as rt:
        assert rt.env.COUNTER.id_from_name("apples") == made
        assert await rt.env.COUNTER.get_by_name("apples").add(1) == 3
        again = rt.env.COUNTER.id_from_string(unique.hex)
        assert await rt.env.COUNTER.get(again).add(1) == 6
        assert sorted(i.hex for i in rt.list_object_ids("COUNTER")) == sorted(
            [made.hex, unique.hex]
        )


async def test_two_directories_have_different_ids_for_one_name(tmp_path: Path) -> None:
    async with runtime(tmp_path / "a") as a, runtime(tmp_path / "b") as b:
        assert a.env.COUNTER.id_from_name("x").hex != b.env.COUNTER.id_from_name("x").hex
        with pytest.raises(roost.InvalidObjectId):
            b.env.COUNTER.id_from_string(a.env.COUNTER.new_unique_id().hex)


async def test_a_shared_secret_from_the_environment_is_kept_out_of_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROOST_ID_SECRET", SECRET)
    async with runtime(tmp_path / "a") as a, runtime(tmp_path / "b") as b:
        assert a.env.COUNTER.id_from_name("x") == b.env.COUNTER.id_from_name("x")
        shared = a.env.COUNTER.new_unique_id()
        assert b.env.COUNTER.id_from_string(shared.hex) == shared
        await a.env.COUNTER.get_by_name("x").add(4)
    recorded = (tmp_path / "a" / "ids.json").read_text()
    assert SECRET not in recorded and SECRET.encode().hex() not in recorded
    assert "fingerprint" in json.loads(recorded)

    # Without the secret, or with another one, the directory refuses to start.
    monkeypatch.delenv("ROOST_ID_SECRET")
    with pytest.raises(roost.StorageError, match="set ROOST_ID_SECRET"):
        runtime(tmp_path / "a")
    monkeypatch.setenv("ROOST_ID_SECRET", "another secret, as long as the first")
    with pytest.raises(roost.StorageError, match="not the one"):
        runtime(tmp_path / "a")
    # With it, as given to the runtime directly, everything is there.
    monkeypatch.delenv("ROOST_ID_SECRET")
    async with runtime(tmp_path / "a", id_secret=SECRET) as a:
        assert await a.env.COUNTER.get_by_name("x").add(1) == 5


async def test_a_secret_given_to_a_directory_that_made_its_own_is_refused(tmp_path: Path) -> None:
    async with runtime(tmp_path) as rt:
        await rt.env.COUNTER.get_by_name("x").add(1)
    with pytest.raises(roost.StorageError, match="not the one"):
        runtime(tmp_path, id_secret=SECRET)
    # The directory's own secret, given back, is accepted.
    own = bytes.fromhex(json.loads((tmp_path / "ids.json").read_text())["secret"])
    async with runtime(tmp_path, id_secret=own) as rt:
        assert await rt.env.COUNTER.get_by_name("x").add(1) == 2


def test_short_or_unusable_secrets_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="at least 16"):
        runtime(tmp_path, id_secret="short")
    monkeypatch.setenv("ROOST_ID_SECRET", "tiny")
    with pytest.raises(ValueError, match="ROOST_ID_SECRET is 4 bytes"):
        runtime(tmp_path)
    monkeypatch.delenv("ROOST_ID_SECRET")
    with pytest.raises(TypeError, match="str or bytes"):
        runtime(tmp_path, id_secret=12345678901234567890)
    assert not (tmp_path / "ids.json").exists()


def test_a_damaged_secret_file_is_a_storage_error(tmp_path: Path) -> None:
    tmp_path.joinpath("ids.json").write_text("{not json")
    with pytest.raises(roost.StorageError, match="restore it from a backup"):
        runtime(tmp_path)


async def test_a_directory_from_before_keyed_ids_keeps_its_objects_ids(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Written by the Roost before this change: "apples" was added 7, and a
    # unique ID's object 3.
    legacy = tmp_path / "data"
    shutil.copytree(DATA / "unkeyed-ids", legacy)
    unique = "760070e2435a360af9c3766a4d89d41598b5f9d3f9e1c71228d1ceb405ef1472"
    async with runtime(legacy) as rt:
        assert await rt.env.COUNTER.get_by_name("apples").add(1) == 8
        assert await rt.env.COUNTER.get(rt.env.COUNTER.id_from_string(unique)).add(1) == 4
    assert "not keyed with a secret" in caplog.text
    assert not (legacy / "ids.json").exists()
    with pytest.raises(roost.StorageError, match="before object IDs were keyed"):
        runtime(legacy, id_secret=SECRET)


def test_in_memory_runtimes_of_one_process_agree_on_ids() -> None:
    a = roost.Runtime({"COUNTER": Counter})
    b = roost.Runtime({"COUNTER": Counter})
    assert a.env.COUNTER.id_from_name("x") == b.env.COUNTER.id_from_name("x")
    assert a.env.COUNTER.id_from_name("x").hex != IdFactory("COUNTER").from_name("x").hex


async def test_a_lost_secret_file_refuses_to_start(tmp_path: Path) -> None:
    async with runtime(tmp_path) as rt:
        await rt.env.COUNTER.get_by_name("x").add(1)
    assert json.loads((tmp_path / "roost.json").read_text())["object_ids"] == "keyed"
    (tmp_path / "ids.json").unlink()
    # Taken for a directory from before keyed IDs, it would find no object.
    with pytest.raises(roost.StorageError, match="ids.json is missing"):
        runtime(tmp_path)
