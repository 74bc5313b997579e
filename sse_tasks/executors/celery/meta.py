"""Celery's ``update_state``, routed through the hook: progress from its ``meta``, with our
keys or celery-progress's."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from celery.backends.base import DisabledBackend

from ...engines.meta import progress_of

__all__ = ["PROGRESS_KEYS", "metadata_of", "progress_of", "route_update_state"]

#: The keys of ``update_state``'s meta read as progress; the others are the task's metadata.
PROGRESS_KEYS = frozenset({"progress", "message", "current", "total", "percent", "description"})


def metadata_of(meta: Any) -> dict[str, Any]:
    """The keys of ``meta`` that are not progress (:data:`PROGRESS_KEYS`): the task's metadata."""
    if not isinstance(meta, Mapping):
        return {}
    return {key: value for key, value in meta.items() if key not in PROGRESS_KEYS}


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
