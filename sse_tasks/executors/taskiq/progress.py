"""taskiq's own progress (``ProgressTracker.set_progress``), routed to the running task.

taskiq stores progress through its result backend's ``set_progress``: the hook wraps it
(once per backend object) so a report of the task running in this context also becomes
its sse_tasks progress; the backend stores it as before.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

from ..._core.context import CURRENT
from ..._core.text import clean_text

_WRAPPED = "__sse_tasks_progress__"


def route_set_progress(backend: Any) -> None:
    """Wrap ``backend.set_progress`` (once) to report to the task running in its context."""
    original = getattr(backend, "set_progress", None)
    if original is None or getattr(original, _WRAPPED, False):
        return

    @functools.wraps(original)
    async def set_progress(task_id: str, progress: Any) -> None:
        context = CURRENT.get()
        if context is not None and context.task_id == task_id:
            reported = progress_of(getattr(progress, "meta", None))
            if reported is not None:
                context.sink.report(*reported)
        await original(task_id, progress)

    setattr(set_progress, _WRAPPED, True)
    backend.set_progress = set_progress


def progress_of(meta: Any) -> tuple[float | None, str | None] | None:
    """``(progress, message)`` from a progress ``meta``: a fraction, or a mapping with
    ``progress`` and ``message`` (or celery-progress's ``current``/``total``, ``percent``
    and ``description``); None if it says neither. A fraction is clamped to [0, 1]."""
    if _number(meta) is not None:
        return min(1.0, max(0.0, float(meta))), None
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
    return (None if fraction is None else min(1.0, max(0.0, fraction))), text


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
