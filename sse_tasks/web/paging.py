"""``GET /tasks?before=``: the page of snapshots older than a cursor (the dashboard's
"load older"), worked out over the snapshots a broker lists, newest first."""

from __future__ import annotations

from collections.abc import Sequence

from .._core.models import Task


def older_than(tasks: Sequence[Task], before: str) -> Sequence[Task]:
    """The tasks of ``tasks`` (newest first) after the one whose id is ``before``; when no
    task has that id (it expired, or ``before`` is a ``created_at``), those created
    strictly before ``before`` (ISO 8601 timestamps compare as text)."""
    for index, task in enumerate(tasks):
        if task.id == before:
            return tasks[index + 1 :]
    return [task for task in tasks if task.created_at < before]
