"""Compact JSON in one place: orjson when installed (the ``speed`` extra), else the stdlib.

Both paths accept and refuse the same documents: strict UTF-8, no NaN or Infinity, no
number that overflows a double, no lone surrogate (I-JSON, RFC 7493); integers are
kept exact. Text with a
lone surrogate cannot be encoded as UTF-8, so one accepted here would break every
answer that carries it.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

from .text import has_lone_surrogate

_orjson: Any
try:  # pragma: no cover - exercised in whichever environment has it
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None


class LoneSurrogate(ValueError):
    """A JSON string escapes half of a UTF-16 surrogate pair (``"\\ud800"``): not encodable."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


#: A run of 20 digits: an integer orjson would read past 64 bits as a float (or a long
#: decimal, or digits in a string): decoded by the stdlib instead, which keeps it exact.
_LONG_DIGITS = re.compile(rb"[0-9]{20}")
_LONG_DIGITS_TEXT = re.compile(r"[0-9]{20}")
_MAX_INTEGER = int(sys.float_info.max)


def _bounded_int(text: str) -> int:
    value = int(text)
    if abs(value) > _MAX_INTEGER:
        raise ValueError(f"integer {text[:20]}… overflows a double")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def dumps(value: Any) -> bytes:
    """Encode ``value`` as compact UTF-8 JSON; raises ``TypeError``/``ValueError`` if it is not JSON-able
    (including NaN, Infinity, strings with a lone surrogate, cycles and nesting too deep to encode)."""
    if _orjson is not None:
        try:
            encoded: bytes = _orjson.dumps(value)
        except _orjson.JSONEncodeError:
            pass  # answered as without orjson: it refuses integers past 64 bits, nesting past 255
        else:
            if b"null" in encoded and _has_nan(value):
                raise ValueError("NaN and Infinity are not valid JSON")
            return encoded
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    except RecursionError:
        raise ValueError("a value nested too deeply to encode as JSON") from None


def _has_nan(value: Any) -> bool:
    # orjson writes NaN and Infinity as null; the stdlib refuses them. Refuse them both ways.
    kind = type(value)
    if kind is float:
        return not math.isfinite(value)
    if kind is dict:
        return any(type(item) not in _PLAIN and _has_nan(item) for item in value.values())
    if kind is list or kind is tuple:
        return any(type(item) not in _PLAIN and _has_nan(item) for item in value)
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_nan(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_nan(item) for item in value)
    return False


# Types that hold no float; anything else (subclasses included) is looked into. orjson
# refuses nesting deeper than 255, so the recursion stays shallow.
_PLAIN = frozenset({str, int, bool, type(None)})


def loads(data: bytes | str) -> Any:
    """Decode strict JSON; raises :class:`LoneSurrogate` for a lone surrogate escape and
    ``ValueError`` for anything else malformed (invalid UTF-8, NaN, 1e400, 10**400, bad syntax)."""
    if _orjson is not None:
        digits = _LONG_DIGITS_TEXT.search(data) if isinstance(data, str) else _LONG_DIGITS.search(data)
        if digits is None:
            try:
                return _orjson.loads(data)
            except _orjson.JSONDecodeError:
                pass  # classify the error the same way as without orjson
    return _loads_stdlib(data)


def _loads_stdlib(data: bytes | str) -> Any:
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not valid UTF-8 at byte {exc.start}") from None
    else:
        text = data
    try:
        value = json.loads(
            text, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_bounded_int
        )
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    # Strict UTF-8 bytes hold no surrogate: only an escape (or text given as str) can.
    if (text is data or "\\u" in text) and has_lone_surrogate(value):
        raise LoneSurrogate("a string holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text")
    return value
