"""Progress an engine's own mechanism reports (Celery's ``update_state`` meta, RQ's
``job.meta``): our keys or celery-progress's."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .._core.text import short_text


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
    text = None if message is None else short_text(message)
    if fraction is None and text is None:
        return None
    if fraction is not None:
        fraction = min(1.0, max(0.0, fraction))
    return fraction, text


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond a float
        return None
    return number if math.isfinite(number) else None
