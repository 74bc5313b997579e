"""``update_state`` meta read as progress: our keys, celery-progress's, and odd values."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("celery")

from sse_tasks.executors.celery.meta import progress_of


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"progress": 0.25, "message": "a quarter"}, (0.25, "a quarter")),
        ({"current": 3, "total": 4, "description": "3/4"}, (0.75, "3/4")),
        ({"pending": False, "current": 1, "total": 2, "percent": 50.0, "description": None}, (0.5, None)),
        ({"percent": 20}, (0.2, None)),
        ({"message": "only words"}, (None, "only words")),
        ({"progress": 7}, (1.0, None)),  # clamped
        ({"progress": -1}, (0.0, None)),
        ({"progress": float("nan"), "message": "m"}, (None, "m")),
        ({"current": 1, "total": 0, "message": "m"}, (None, "m")),  # no division by zero
        ({"current": 10**400, "total": 1, "message": "m"}, (None, "m")),  # beyond a float
        ({"progress": True, "message": "m"}, (None, "m")),  # a bool is not a number here
        ({"progress": "0.5", "message": "\ud800"}, (None, "\ufffd")),  # no strings; text cleaned
    ],
)
def test_meta_keys_become_progress_and_message(meta: dict[str, Any], expected: tuple[Any, Any]) -> None:
    assert progress_of(meta) == expected


@pytest.mark.parametrize("meta", [None, "PROGRESS", 3, [], {}, {"other": 1}])
def test_meta_without_progress_or_message_reports_nothing(meta: Any) -> None:
    assert progress_of(meta) is None
