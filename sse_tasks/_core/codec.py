"""Compact JSON in one place: orjson when installed (the ``speed`` extra), else the stdlib.

Both paths accept and refuse the same documents: strict UTF-8, no NaN or Infinity, no
number that overflows a double, no lone surrogate (I-JSON, RFC 7493), no nesting deeper
than :data:`MAX_DEPTH` (orjson's limit); integers are kept exact. Text with a
lone surrogate cannot be encoded as UTF-8, so one accepted here would break every
answer that carries it. What orjson refuses is encoded again by the stdlib, so both
refuse it with the same error (and accept what only orjson refuses: integers past 64
bits, keys that are numbers).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
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


#: A run of 19 digits: an integer orjson may read as a float (one below -2**63 has 19
#: digits, one past 2**64 has 20), or a long decimal, or digits in a string: decoded by
#: the stdlib instead, which keeps it exact.
_LONG_DIGITS_TEXT = re.compile(r"[0-9]{19}")
#: Bytes with every digit made a "9": 19 digits in a row are then 19 nines, which
#: ``bytes.find`` finds several times faster than a regular expression's search.
_DIGITS_AS_NINES = bytes.maketrans(b"012345678", b"999999999")
_NINETEEN_NINES = b"9" * 19

_MAX_INTEGER = int(sys.float_info.max)
_MAX_INTEGER_DIGITS = len(str(_MAX_INTEGER))


def _has_long_digits(data: bytes | str) -> bool:
    if isinstance(data, str):
        return _LONG_DIGITS_TEXT.search(data) is not None
    return _NINETEEN_NINES in bytes(data).translate(_DIGITS_AS_NINES)


def _bounded_int(text: str) -> int:
    # Past 309 digits it overflows a double whatever the digits; past 4,300 int() itself
    # refuses it, naming Python's setting (sys.set_int_max_str_digits) to the client.
    if len(text) > _MAX_INTEGER_DIGITS + 1 or abs(value := int(text)) > _MAX_INTEGER:
        raise ValueError(f"integer {text[:20]}… overflows a double")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


#: Containers nested in one another that a document may hold (orjson refuses deeper ones).
MAX_DEPTH = 254
#: Nesting :func:`loads` decodes at most (orjson's own limit): Python's json module stops
#: near the recursion limit before 3.12 and goes far deeper from 3.12 on.
MAX_DECODE_DEPTH = 1024


def dumps(value: Any) -> bytes:
    """Encode ``value`` as compact UTF-8 JSON.

    Raises ``TypeError`` for a value of a type JSON does not have (bytes, a set, an
    object; a key that is not a string or a number) and ``ValueError`` for one JSON
    cannot hold: NaN, Infinity, an integer beyond a double, a string with a lone
    surrogate, containers nested deeper than :data:`MAX_DEPTH` or holding themselves.
    Never ``RecursionError``.
    """
    return _dumps(value, _has_nan)


def dumps_record(record: dict[str, Any], free: tuple[str, ...]) -> bytes:
    """:func:`dumps` for a record whose fields other than ``free`` hold only text,
    integers, None and lists of text: NaN and Infinity are looked for in ``free`` alone
    (a task snapshot: its progress, result, error and metadata), not through it all."""

    def has_nan(record: dict[str, Any]) -> bool:
        for name in free:  # a loop, not any(): this runs on every snapshot a worker writes
            value = record[name]
            if type(value) not in _PLAIN and _has_nan(value):
                return True
        return False

    return _dumps(record, has_nan)


def _dumps(value: Any, has_nan: Callable[[Any], bool]) -> bytes:
    if _orjson is not None:
        try:
            encoded: bytes = _orjson.dumps(value)
        except _orjson.JSONEncodeError:
            return _dumps_stdlib(value)  # the same answer as without orjson
        # orjson writes NaN and Infinity as null: a document with none holds neither.
        if b"null" in encoded and has_nan(value):
            raise ValueError(_NAN)
        return encoded
    return _dumps_stdlib(value)


_NAN = "NaN and Infinity are not valid JSON"
_TOO_DEEP = f"containers are nested deeper than {MAX_DEPTH} levels"
_HUGE = re.compile(r"[0-9]{309}")  # a run of digits that may be an integer beyond a double
# A key JSON writes as text though it was not (1, 2.5, True, None): it may now be the
# same name as another key of its object, which I-JSON forbids (and decoders keep one).
_WRITTEN_KEY = re.compile(r'[{,]"(?:-?[0-9][^"]*|true|false|null)":')


def _dumps_stdlib(value: Any) -> bytes:
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except RecursionError:
        raise ValueError(_TOO_DEEP) from None
    except ValueError as exc:
        if "Circular reference" in str(exc):
            raise ValueError("a container holds itself (a cycle)") from None
        raise ValueError(_NAN) from None
    # A document can only nest that deep with that many brackets: most never look.
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        raise ValueError(_TOO_DEEP)
    if _HUGE.search(text) and _has_huge_int(value):
        raise ValueError("an integer is out of a double's range")
    if _WRITTEN_KEY.search(text) and (twice := _key_written_twice(value)) is not None:
        raise ValueError(f"an object has two keys written as the same text ({twice!r})")
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise ValueError(
            "a string holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text"
        ) from None


def _containers(value: Any) -> Any:
    if isinstance(value, dict):
        return value.values()
    if isinstance(value, (list, tuple)):
        return value
    return None


def _depth(value: Any) -> int:
    """How deeply containers nest in ``value`` (one that encoded or was decoded, so it holds
    no cycle)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = _containers(item)
        if children is not None:
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _key_written_twice(value: Any) -> str | None:
    """A name two keys of one object of ``value`` are written as ({1: …, "1": …}), if any."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if not all(type(key) is str for key in item):
                names = [_key_text(key) for key in item]
                if len(set(names)) < len(names):
                    return next(name for name in names if names.count(name) > 1)
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return None


def _key_text(key: Any) -> str:
    """A key as Python's json module writes it (it refused any other kind)."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool) or key is None:
        return {True: "true", False: "false", None: "null"}[key]
    return float.__repr__(key) if isinstance(key, float) else int.__repr__(key)


def _has_huge_int(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, int) and not isinstance(item, bool):
            if abs(item) > _MAX_INTEGER:
                return True
        elif (children := _containers(item)) is not None:
            stack.extend(children)  # keys are written as strings
    return False


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
        if not _has_long_digits(data):
            try:
                return _orjson.loads(data)
            except _orjson.JSONDecodeError:
                pass  # classify the error the same way as without orjson
    return _loads_stdlib(data)


#: Values whose decoding no number can make inexact.
_EXACT = frozenset({str, int, bool, type(None)})


def loads_record(data: bytes) -> Any:
    """:func:`loads`, faster for what is mostly a flat object of text and integers (a
    stored output chunk): orjson's answer holding no float and no container is
    :func:`loads`'s (its integers are exact, or they would be floats), so the search for
    long runs of digits, which only decides how numbers are read, is skipped. Anything
    else is decoded by :func:`loads`: the same answer and the same errors."""
    if _orjson is not None:
        try:
            value = _orjson.loads(data)
        except _orjson.JSONDecodeError:
            return _loads_stdlib(data)  # what loads does once orjson refused it
        if type(value) is dict and all(type(item) in _EXACT for item in value.values()):
            return value
    return loads(data)


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
    if text.count("[") + text.count("{") > MAX_DECODE_DEPTH and _depth(value) > MAX_DECODE_DEPTH:
        raise ValueError("JSON nested too deeply")
    # Strict UTF-8 bytes hold no surrogate: only an escape (or text given as str) can.
    if (text is data or "\\u" in text) and has_lone_surrogate(value):
        raise LoneSurrogate("a string holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text")
    return value
