"""What the adapter reads of a Huey app: its tasks, their names and functions."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from huey import Huey
from huey.api import PeriodicTask, TaskWrapper

#: Set on a task instance the hub enqueues (never serialized): the hub stores it itself.
FROM_HUB = "_sse_tasks_from_hub"
#: The keyword argument the hub adds to the tasks it enqueues for their submitter (Huey's
#: messages carry nothing but arguments); the hook takes it out before the call.
OWNER_KEY = "sse_tasks_owner"


def task_name(task: Any) -> str:
    """The sse_tasks name of a Huey task instance or class: Huey's own (``name=``, else the
    function's name)."""
    cls = task if isinstance(task, type) else type(task)
    return str(cls.__name__)


def task_classes(huey: Huey) -> dict[str, type]:
    """The app's task classes by name, periodic tasks left out (nobody enqueues them)."""
    # Huey offers no public listing of its registry.
    registry: dict[str, type] = getattr(getattr(huey, "_registry", None), "_registry", {})
    return {
        task_name(cls): cls
        for cls in registry.values()
        if not (isinstance(cls, type) and issubclass(cls, PeriodicTask))
    }


def function_of(task: TaskWrapper | type) -> Callable[..., Any] | None:
    """The function a task runs (a ``TaskWrapper``'s ``func``; for a registered class, the
    one its ``execute`` calls), or None."""
    if isinstance(task, TaskWrapper):
        return task.func  # type: ignore[no-any-return]
    execute = getattr(task, "execute", None)
    if execute is None:
        return None
    try:
        func = inspect.getclosurevars(execute).nonlocals.get("func")
    except (TypeError, ValueError):
        return None
    return func if callable(func) else None
