"""What a worker lets run: tasks cancelled while they waited, and tasks the hub refused
(it answered 503, yet their message arrived), are discarded before they run, the way
Celery discards a revoked task (its ``Discarding revoked task`` log line follows)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from ..._core.models import TaskState
from ...engines import WorkerWriter
from .message import received_snapshot

logger = logging.getLogger("sse_tasks.celery")


def discard_cancelled(writer: WorkerWriter) -> None:
    """At a worker's start: discard the tasks cancelled while no worker heard the revoke."""
    try:
        cancelled = writer.cancelled_ids()
    except writer.unreachable as exc:
        logger.warning("could not read the tasks cancelled while they waited: %s", exc)
        return
    _discard(cancelled)


def admit_received(writer: WorkerWriter, task_id: str, name: str, headers: dict[str, Any]) -> None:
    """A message the hub sent reached this worker: store its task ``queued`` before it can
    run (one round trip), so the hub, whose send may yet fail, no longer refuses it (it
    answers 202). One the hub did refuse, or that was cancelled while it waited, is
    discarded. Without Redis it runs unchecked (a worker works on through an outage)."""
    try:
        state = writer.receive(received_snapshot(task_id, name, headers))
    except writer.unreachable as exc:
        logger.warning("task %s received; not stored as queued yet: Redis unreachable (%s)", task_id, exc)
        return
    if state == "refused":
        logger.warning("task %s was refused by the hub (503); discarded", task_id)
    elif state != TaskState.CANCELLED.value:
        return
    _discard([task_id])


def _discard(task_ids: Iterable[str]) -> None:
    from celery.worker import state as worker_state

    worker_state.revoked.update(task_ids)  # read before a task runs: it is discarded
