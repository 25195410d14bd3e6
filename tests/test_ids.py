from __future__ import annotations

import copy
import pickle

import pytest

import roost
from roost.ids import MAX_NAME_BYTES, IdFactory, ObjectId


def test_name_ids_are_deterministic_64_hex_and_remember_the_name() -> None:
    ids = IdFactory("COUNTER")
    a, b = ids.from_name("alice"), ids.from_name("alice")
    assert a == b and str(a) == str(b)
    assert len(str(a)) == 64 and str(a) == str(a).lower()
    int(str(a), 16)
    assert a.name == "alice"
    assert ids.from_name("bob") != a


def test_namespaces_never_share_ids() -> None:
    assert str(IdFactory("A").from_name("x")) != str(IdFactory("B").from_name("x"))


def test_unique_ids_differ_and_parse_back() -> None:
    ids = IdFactory("ROOM")
    made = {str(ids.unique()) for _ in range(1000)}
    assert len(made) == 1000
    for text in list(made)[:20]:
        parsed = ids.from_string(text)
        assert str(parsed) == text and parsed.name is None


@pytest.mark.parametrize(
    "text",
    ["", "abc", "g" * 64, "A" * 64, "0" * 63, "0" * 65, " " + "0" * 63, "0" * 64 + "\n"],
)
def test_malformed_strings_are_refused(text: str) -> None:
    with pytest.raises(roost.InvalidObjectId) as info:
        IdFactory("ROOM").from_string(text)
    assert isinstance(info.value, ValueError)
    assert "64 lowercase hex" in str(info.value)


def test_ids_of_another_namespace_are_refused() -> None:
    other = str(IdFactory("OTHER").unique())
    with pytest.raises(roost.InvalidObjectId, match="does not belong to namespace 'ROOM'"):
        IdFactory("ROOM").from_string(other)


def test_non_str_is_refused() -> None:
    with pytest.raises(roost.InvalidObjectId):
        IdFactory("ROOM").from_string(123)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        IdFactory("ROOM").from_name(b"x")  # type: ignore[arg-type]


async def test_copies_and_pickles_of_an_id_carry_the_identity_only() -> None:
    class Thing(roost.DurableObject):
        async def ping(self) -> int:
            return 1

    async with roost.Runtime({"THING": Thing}) as rt:
        stub = rt.env.THING.get_by_name("a")
        assert await stub.ping() == 1
        for twin in (
            copy.copy(stub.id),
            copy.deepcopy(stub.id),
            pickle.loads(pickle.dumps(stub.id)),
        ):
            assert twin == stub.id and twin.name == "a" and hash(twin) == hash(stub.id)
            assert await rt.env.THING.get(twin).ping() == 1  # the same live object
        assert rt.statistics().activations == 1


def test_names_longer_than_the_limit_are_refused() -> None:
    factory = IdFactory("NS")
    assert factory.from_name("é" * (MAX_NAME_BYTES // 2)).name is not None  # exactly the limit
    with pytest.raises(roost.InvalidObjectId, match="over the limit of 2,048") as info:
        factory.from_name("é" * (MAX_NAME_BYTES // 2) + "x")
    assert isinstance(info.value, ValueError)


def test_the_name_cache_is_bounded_by_the_characters_it_holds() -> None:
    factory = IdFactory("NS")
    for i in range(5_000):  # 10 MB of names, were they all kept
        factory.from_name(f"{i:06d}" + "n" * (MAX_NAME_BYTES - 6))
    held = sum(len(name) for name in factory._names)
    assert held <= 2 * 1024 * 1024 + MAX_NAME_BYTES
    assert factory.from_name("short") is factory.from_name("short")  # still a cache


def test_an_id_is_a_plain_value_that_holds_only_its_identity() -> None:
    # Nothing live rides on an ID (no cached activation): it can be sent
    # anywhere, compared, pickled and used by any runtime.
    made = IdFactory("NS").from_name("a")
    assert {slot: getattr(made, slot) for slot in ObjectId.__slots__} == {
        "_hex": made.hex,
        "_namespace": "NS",
        "_name": "a",
    }
    assert pickle.loads(pickle.dumps(made)) == made
