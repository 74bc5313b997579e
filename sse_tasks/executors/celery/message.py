"""What a Celery task's message tells the hook: its headers, and the snapshot built from them."""

from __future__ import annotations

from typing import Any

from celery import Celery

from ..._core.models import Task, utc_time, utcnow, valid_task_id
from ..._core.text import clean_text
from ...engines.tags import TAGS_KEY, sent_tags

#: Message headers the hub sets on the tasks it sends.
HUB_HEADER = "sse_tasks_hub"  # the hub stores `queued` itself
OWNER_HEADER = "sse_tasks_owner"  # who submitted it, for the authorization hook
CREATED_HEADER = "sse_tasks_created"  # when it was sent: the worker builds its snapshot from it
#: The task's tags (a list of strings), set by the hub or by ``apply_async(headers=…)``.
TAGS_HEADER = TAGS_KEY


def valid_task(task_id: Any, name: Any) -> bool:
    """A task the hook reports: an id the hub takes and a name not Celery's own."""
    return valid_task_id(task_id) and isinstance(name, str) and not name.startswith("celery.")


def created_at_of(headers: Any) -> str:
    """When the message was sent (its header), else now."""
    created = headers.get(CREATED_HEADER) if isinstance(headers, dict) else None
    return utc_time(created) or utcnow()


def sent_snapshot(task_id: str, name: str, request: Any) -> Task:
    """The ``queued`` snapshot of a task as its sender stored it, from its request."""
    names = (CREATED_HEADER, OWNER_HEADER, TAGS_HEADER)
    headers = {header: getattr(request, header, None) for header in names}
    return received_snapshot(task_id, name, headers)


def received_snapshot(task_id: str, name: str, headers: dict[str, Any]) -> Task:
    """The ``queued`` snapshot of a task as its sender stored it, from its message's headers."""
    return Task(
        id=task_id,
        name=name,
        owner=owner_of(headers.get(OWNER_HEADER)),
        created_at=created_at_of(headers),
        tags=tags_of(headers.get(TAGS_HEADER), task_id),
    )


def tags_of(value: Any, task_id: object = None) -> tuple[str, ...]:
    """The tags header's tags; none, with a warning, if they are not valid tags (a
    sender's mistake must not keep its task from running)."""
    return sent_tags(value, task_id)


def owner_of(value: Any) -> str | None:
    """Who submitted the task (the owner header), as clean text."""
    return clean_text(str(value)) if value else None


def retry_message(app: Celery, name: Any, retry: int) -> str:
    """``retry 2 of 3``: the ``queued`` message of a task that retries."""
    task = app.tasks.get(name) if isinstance(name, str) else None
    most = getattr(task, "max_retries", None)
    return f"retry {retry} of {most}" if most is not None else f"retry {retry}"
