"""The tags a sender attaches to an engine's message, read back by the worker hook.

Every engine carries them under one name, :data:`TAGS_KEY` (``sse_tasks_tags``): a
Celery header, an RQ ``job.meta`` key, a Dramatiq message option, a taskiq label, a
reserved keyword argument of arq and Huey jobs (the hook takes it out before the
function is called). The hub puts a task's tags there when it sends it; any other
sender may too.
"""

from __future__ import annotations

import logging
from typing import Any

from .._core.models import check_tags

logger = logging.getLogger("sse_tasks.worker")

#: The name a message carries its tags under, on every engine.
TAGS_KEY = "sse_tasks_tags"


def sent_tags(value: Any, task_id: object = None) -> tuple[str, ...]:
    """The tags of a task's message: ``value`` is a list of tags, or one string of tags
    separated by commas (for a carrier that keeps only strings: a taskiq label on some
    brokers). None or empty: no tags. Tags the hub would refuse (not a list, more than
    16, a bad tag) are dropped, all of them, with a warning: a sender's mistake never
    keeps its task from running."""
    if value is None or value == "" or value == []:
        return ()
    if isinstance(value, str):
        value = [tag.strip() for tag in value.split(",")]
    try:
        if not isinstance(value, (list, tuple)):
            raise ValueError("tags must be a list of strings")
        return check_tags(value)
    except ValueError as exc:
        logger.warning("task %s: its tags are dropped (%s); it runs without them", task_id, exc)
        return ()


def tags_value(tags: tuple[str, ...]) -> str:
    """``tags`` as one string, for a carrier that keeps only strings (read by :func:`sent_tags`)."""
    return ",".join(tags)
