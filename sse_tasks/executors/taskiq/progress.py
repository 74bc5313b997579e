"""taskiq's own progress (``ProgressTracker.set_progress``), routed to the running task.

taskiq stores progress through its result backend's ``set_progress``: the hook wraps it
(once per backend object) so a report of the task running in this context also becomes
its sse_tasks progress, and raises :class:`~sse_tasks.TaskCancelled` in a cancelled task
(as ``progress()`` does); the backend stores it as before.
"""

from __future__ import annotations

import functools
from typing import Any

from ..._core.context import CURRENT
from ...engines.meta import progress_of as shared_progress_of

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
            context.check()  # a cancelled task stops at its next report, as at progress()
        await original(task_id, progress)

    setattr(set_progress, _WRAPPED, True)
    backend.set_progress = set_progress


def progress_of(meta: Any) -> tuple[float | None, str | None] | None:
    """``(progress, message)`` from a progress ``meta``: a bare fraction (taskiq's own
    trackers report one), else what :func:`sse_tasks.engines.meta.progress_of` reads from a
    mapping; None if it says neither. A fraction is clamped to [0, 1]."""
    if isinstance(meta, (int, float)) and not isinstance(meta, bool):
        meta = {"progress": meta}
    return shared_progress_of(meta)
