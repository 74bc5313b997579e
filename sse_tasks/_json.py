"""Compact JSON in one place: orjson when installed (the ``speed`` extra), else the stdlib."""

from __future__ import annotations

import json
from typing import Any

_orjson: Any
try:  # pragma: no cover - exercised in whichever environment has it
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def dumps(value: Any) -> bytes:
    """Encode ``value`` as compact UTF-8 JSON; raises ``TypeError``/``ValueError`` if it is not JSON-able."""
    if _orjson is not None:
        try:
            encoded: bytes = _orjson.dumps(value)
            return encoded
        except _orjson.JSONEncodeError as exc:
            raise TypeError(str(exc)) from None
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def loads(data: bytes | str) -> Any:
    """Decode strict JSON (no NaN/Infinity); raises ``ValueError`` on anything malformed."""
    if _orjson is not None:
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError as exc:
            raise ValueError(str(exc)) from None
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
