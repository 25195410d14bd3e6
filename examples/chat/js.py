"""How the demo's JavaScript reads a client's frame, so Roost reads it the same way.

The demo parses each frame with ``JSON.parse`` and turns fields into text with
``"" + value``; a client that sends a number as its name, or no message at all,
gets what JavaScript would make of it ("42", "undefined").  Lengths are counted
in UTF-16 code units, as ``String.length`` does.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any, Final


class Invalid(Exception):
    """A frame the room cannot read; the message is what the client is told."""


class _Undefined:
    """JavaScript's ``undefined``: what reading a missing property gives."""

    def __repr__(self) -> str:
        return "undefined"


UNDEFINED: Final = _Undefined()
NESTED: Final = "Message is nested too deeply."


def _refuse_constant(name: str) -> Any:
    # Python accepts NaN and Infinity; JSON (and so the demo) does not.
    raise Invalid(f"Invalid JSON: {name} is not a JSON value.")


def parse(frame: str | bytes) -> Any:
    """The frame's JSON value, numbers as floats (JavaScript has no other)."""
    if isinstance(frame, bytes):
        raise Invalid("Binary frames are not accepted; send JSON text.")
    try:
        return json.loads(frame, parse_int=float, parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        raise Invalid(f"Invalid JSON: {error.msg} at position {error.pos}.") from None
    except RecursionError:
        raise Invalid(NESTED) from None


def field(data: Any, key: str) -> Any:
    """``data[key]`` as JavaScript reads it: ``undefined`` on anything but an
    object that has it, and an error on ``null``."""
    if isinstance(data, dict):
        return data.get(key, UNDEFINED)
    if data is None:
        raise Invalid(f"Cannot read {key!r} of null.")
    return UNDEFINED


def truthy(value: Any) -> bool:
    if value is None or value is UNDEFINED:
        return False
    if isinstance(value, (bool, str)):
        return bool(value)
    if isinstance(value, (int, float)):
        return value == value and value != 0  # NaN is falsy
    return True  # arrays and objects, even empty ones


def to_string(value: Any) -> str:
    """``"" + value``."""
    try:
        return _to_string(value)
    except RecursionError:
        raise Invalid(NESTED) from None


def _to_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is UNDEFINED:
        return "undefined"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return number_to_string(float(value))
    if isinstance(value, list):
        # Array.prototype.join: null and undefined elements become "".
        return ",".join("" if v is None or v is UNDEFINED else _to_string(v) for v in value)
    return "[object Object]"


def number_to_string(x: float) -> str:
    """ECMAScript's Number::toString for radix 10 (e.g. 2.0 → "2", 1e21 → "1e+21")."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "0"  # -0 too
    if x < 0:
        return "-" + number_to_string(-x)
    # repr() gives the shortest digits that round-trip, which ECMAScript asks for too.
    _, digit_tuple, exponent = Decimal(repr(x)).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    assert isinstance(exponent, int)
    exponent += len(digit_tuple) - len(digits)
    k = len(digits)
    n = exponent + k  # x = 0.DIGITS × 10^n
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{mantissa}e{'+' if n >= 1 else '-'}{abs(n - 1)}"


def length(text: str) -> int:
    """``text.length``: UTF-16 code units, so an emoji counts 2."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2
