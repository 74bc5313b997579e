"""Task results that are not JSON, and the ``error.type`` each ends its task ``failed`` with:
one rule for every executor (the in-process tests and the Celery worker both import it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sse_tasks._core.models import MAX_RESULT_BYTES


def nested(depth: int) -> list[Any]:
    """Lists ``depth`` deep."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def cycle() -> dict[str, Any]:
    """A dict that holds itself."""
    value: dict[str, Any] = {"name": "loop"}
    value["self"] = value
    return value


#: name → (makes the result, the ``error.type`` of the task that returns it)
ODD_RESULTS: dict[str, tuple[Callable[[], Any], str]] = {
    "bytes": (lambda: b"\x00\xff", "TypeError"),
    "set": (lambda: {"a": {1, 2, 3}}, "TypeError"),
    "object": (object, "TypeError"),
    "nan": (lambda: {"mean": float("nan")}, "ValueError"),
    "infinity": (lambda: [float("1e400")], "ValueError"),
    "huge_integer": (lambda: 10**400, "ValueError"),
    "lone_surrogate": (lambda: {"text": "a\ud800b"}, "ValueError"),
    "nested_300": (lambda: nested(300), "ValueError"),
    "nested_1000": (lambda: nested(1000), "ValueError"),
    "cycle": (cycle, "ValueError"),
    "keys_written_alike": (lambda: {1: "a", "1": "b"}, "ValueError"),
    "too_large": (lambda: "x" * MAX_RESULT_BYTES, "ResultTooLarge"),  # (and its two quotes)
}


def odd_message(kind: str) -> str:
    """How the error message of the task whose result is ``ODD_RESULTS[kind]`` begins."""
    cannot = "be stored" if kind == "too_large" else "be encoded as JSON"
    return f"the task ran, but its result could not {cannot}: "
