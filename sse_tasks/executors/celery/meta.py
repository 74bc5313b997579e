"""Celery's ``update_state``, routed through the hook: progress from its ``meta``, with our
keys or celery-progress's."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

from celery.backends.base import DisabledBackend

from ..._core.text import clean_text


def progress_of(meta: Any) -> tuple[float | None, str | None] | None:
    """``(progress, message)`` from ``meta``, or None if it says neither.

    Reads ``progress`` (a fraction) and ``message``; else celery-progress's ``current``
    and ``total`` (or ``percent``, 0 to 100) and ``description``. A fraction that is
    not a finite number is left out; one outside [0, 1] is clamped.
    """
    if not isinstance(meta, Mapping):
        return None
    fraction = _number(meta.get("progress"))
    if fraction is None:
        current, total = _number(meta.get("current")), _number(meta.get("total"))
        if current is not None and total:
            fraction = current / total
        else:
            percent = _number(meta.get("percent"))
            fraction = None if percent is None else percent / 100
    message = meta.get("message", meta.get("description"))
    text = None if message is None else clean_text(str(message))
    if fraction is None and text is None:
        return None
    if fraction is not None:
        fraction = min(1.0, max(0.0, fraction))
    return fraction, text


#: The keys of ``update_state``'s meta read as progress; the others are the task's metadata.
PROGRESS_KEYS = frozenset({"progress", "message", "current", "total", "percent", "description"})


def metadata_of(meta: Any) -> dict[str, Any]:
    """The keys of ``meta`` that are not progress (:data:`PROGRESS_KEYS`): the task's metadata."""
    if not isinstance(meta, Mapping):
        return {}
    return {key: value for key, value in meta.items() if key not in PROGRESS_KEYS}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond a float
        return None
    return number if math.isfinite(number) else None


def route_update_state(task: Any, report: Callable[[Any, Any], None]) -> None:
    """Route the task's ``update_state`` of its own state through ``report(state, meta)``
    (once per task object); Celery's own store is skipped when it has no result backend.

    This replaces the task object's ``update_state``, the only place Celery offers: no
    signal carries its meta, a custom ``Task`` base class would reach only the tasks
    declared with it, and wrapping the result backend would miss apps without one."""
    if "update_state" in vars(task):
        return
    original = type(task).update_state

    @functools.wraps(original)
    def update_state(task_id: str | None = None, state: Any = None, meta: Any = None, **kwargs: Any) -> None:
        own = task_id is None or task_id == getattr(task.request, "id", None)
        if own:
            report(state, meta)
        if not (own and isinstance(task.backend, DisabledBackend)):
            original(task, task_id, state, meta, **kwargs)

    task.update_state = update_state
