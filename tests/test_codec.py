"""Round trips of every value type docs/guide.md lists, and refusal of the rest."""

from __future__ import annotations

import datetime as dt
import fractions
import uuid
from decimal import Decimal
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost import codec

VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**64,
    -(2**200),
    1.5,
    float("inf"),
    "",
    "héllo ✓",
    b"",
    b"\x00\xff",
    [1, "a", [None]],
    (1, (2, 3), ()),
    {"a": 1, 2: "two", (1, 2): {"nested": [set()]}},
    {1, "x", (2, 3)},
    dt.datetime(2024, 2, 29, 12, 30, 1, 123456),
    dt.datetime(2024, 2, 29, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
    Decimal("3.14159265358979323846264338327950288"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_round_trip_keeps_value_and_type(value: Any) -> None:
    back = codec.decode(codec.encode(value))
    assert back == value
    assert type(back) is type(value)


def test_nan_round_trips() -> None:
    back = codec.decode(codec.encode(float("nan")))
    assert back != back


def test_nested_types_survive() -> None:
    value = {"t": (1, [2, (3,)]), "s": {(1, 2)}, "when": [dt.datetime(2020, 1, 1)]}
    back = codec.decode(codec.encode(value))
    assert back == value
    assert type(back["t"]) is tuple and type(back["t"][1]) is list
    assert type(back["t"][1][1]) is tuple


class Custom:
    pass


@pytest.mark.parametrize(
    "value",
    [
        Custom(),
        frozenset({1}),
        bytearray(b"x"),
        dt.date(2020, 1, 1),
        1j,
        fractions.Fraction(1, 3),
        print,
        [1, Custom()],
        {"k": {"deep": Custom()}},
    ],
    ids=repr,
)
def test_unsupported_values_are_refused_naming_the_type(value: Any) -> None:
    with pytest.raises(TypeError) as info:
        codec.encode(value)
    bad = value
    while isinstance(bad, (list, dict)):
        bad = bad[-1] if isinstance(bad, list) else next(iter(bad.values()))
    assert type(bad).__qualname__ in str(info.value)


def test_cycles_are_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="contains itself"):
        codec.encode(loop)


def test_unknown_format_version_is_refused() -> None:
    with pytest.raises(ValueError, match="format version"):
        codec.decode(b"\x02\x00")


def test_copy_is_deep() -> None:
    original = {"list": [1, 2]}
    copy = codec.copy_value(original)
    copy["list"].append(3)
    assert original == {"list": [1, 2]}


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
    st.decimals(allow_nan=False),
    st.uuids(),
    st.datetimes(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=5), inner, max_size=4),
    ),
    max_leaves=20,
)


@given(values)
def test_any_accepted_value_round_trips(value: Any) -> None:
    assert codec.decode(codec.encode(value)) == value


class MyDatetime(dt.datetime):
    pass


def test_datetime_subclasses_are_stored_as_datetimes() -> None:
    for value in (MyDatetime(2020, 1, 2, 3, 4, 5), MyDatetime(2020, 1, 2, tzinfo=dt.UTC)):
        back = codec.decode(codec.encode(value))
        assert back == value and type(back) is dt.datetime


@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(), st.binary()))
def test_scalars_encode_to_the_same_bytes_as_through_the_general_path(value: Any) -> None:
    # encode() takes a shorter path for scalars; stored bytes must not depend on it.
    general = codec._PREFIX + cbor2.dumps(value, encoders=codec._ENCODERS, default=codec._refuse)
    assert codec.encode(value) == general


def test_a_lone_surrogate_is_refused_on_the_scalar_path_too() -> None:
    with pytest.raises(ValueError, match="surrogates"):
        codec.encode("\ud800")
