"""A queued task with what is needed to run it, and the publisher of its state changes."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from .._core import codec
from .._core.models import (
    MAX_RESULT_BYTES,
    OutputChunk,
    ResultTooLarge,
    Task,
    TaskEvent,
    TaskState,
    check_result_size,
    event_type_for,
    utcnow,
)
from .._core.registry import RegisteredTask
from .._core.stats import HubStats
from .._core.text import short_text
from ..brokers import Broker

logger = logging.getLogger("sse_tasks")


@dataclass
class Job:
    """A task this process queued: its latest snapshot, function and checked params."""

    task: Task
    registered: RegisteredTask
    params: dict[str, Any]
    #: Cancelled before it started, without the broker (an outage): run as ``cancelled``.
    cancelled: bool = False


class Publisher:
    """Stores a task's state changes through the broker; the one place they are counted
    and logged. Every method is a compare-and-set: None when the task is already final."""

    def __init__(self, broker: Broker, stats: HubStats) -> None:
        self.broker = broker
        self.stats = stats
        self._started: dict[str, float] = {}  # monotonic start of tasks running here

    async def running(self, task: Task) -> TaskEvent | None:
        event = await self.broker.publish(
            task.evolve(state=TaskState.RUNNING, started_at=utcnow()), "task.running"
        )
        if event is not None:
            self._started[task.id] = time.monotonic()
            self.stats.tasks["running"] += 1
            logger.info("task started id=%s name=%s", task.id, task.name)
        return event

    async def progress(self, task: Task, progress: float | None, message: str | None) -> TaskEvent | None:
        return await self.broker.publish(task.evolve(progress=progress, message=message), "task.progress")

    async def output(self, task: Task, chunk: OutputChunk) -> TaskEvent | None:
        return await self.broker.publish_output(task, chunk)

    async def outputs(self, task: Task, chunks: Sequence[OutputChunk]) -> bool:
        """``chunks`` of one task, in order, in as few writes as the broker can; False if
        the task is finished (nothing kept)."""
        return await self.broker.keep_outputs(task, chunks)

    async def finish(self, task: Task, state: TaskState, **changes: Any) -> TaskEvent | None:
        """Publish the terminal ``state``, even while the caller is being cancelled."""
        final = task.evolve(state=state, finished_at=utcnow(), **changes)
        try:
            event = await self._finish(task, final)
        finally:
            started = self._started.pop(task.id, None)
        if event is not None:
            self._log_finished(event.task, started)
        return event

    async def _finish(self, task: Task, final: Task) -> TaskEvent | None:
        event: TaskEvent | None = None
        with anyio.CancelScope(shield=True):
            try:
                event = await self.broker.publish(final, event_type_for(final.state))
            except (TypeError, ValueError) as exc:
                # Text is cleaned where it enters, so this is a bug; still, a task must
                # never stay running because its final snapshot cannot be encoded.
                logger.error("task %s: final snapshot not encodable (%s); failing it", task.id, exc)
                error = {"type": "EncodingError", "message": "the task's final state could not be encoded"}
                final = task.evolve(
                    state=TaskState.FAILED, finished_at=utcnow(), error=error, message=None, result=None
                )
                event = await self.broker.publish(final, "task.failed")
        return event

    def _log_finished(self, task: Task, started: float | None) -> None:
        """Count and log a finished task (no payloads at INFO)."""
        state = task.state.value
        self.stats.tasks[state] += 1
        if started is None:  # never ran here (cancelled while queued, or runs elsewhere)
            logger.info("task %s id=%s name=%s", state, task.id, task.name)
            return
        duration = time.monotonic() - started
        self.stats.observe_duration(task.name, state, duration)
        if task.state is TaskState.FAILED:
            error_type = (task.error or {}).get("type", "")
            logger.warning(
                "task failed id=%s name=%s duration=%.3fs error=%s", task.id, task.name, duration, error_type
            )
            logger.debug("task failed id=%s error=%r", task.id, task.error)
        else:
            logger.info("task %s id=%s name=%s duration=%.3fs", state, task.id, task.name, duration)


def result_error(result: Any) -> dict[str, str] | None:
    """The error a task whose ``result`` is not JSON, or too large, ends ``failed`` with
    (see :func:`unencodable`), or None if it is JSON (as deep as a snapshot holds it)."""
    try:
        if len(codec.dumps({"result": result})) > MAX_RESULT_BYTES:
            check_result_size(result)
    except Exception as exc:  # a result's own methods may raise anything
        return unencodable(exc)
    return None


def unencodable(exc: BaseException) -> dict[str, str]:
    """The error of a task that ran but whose result could not be encoded as JSON (or is
    over ``MAX_RESULT_BYTES``): the error's type (``TypeError``, ``ValueError``,
    ``ResultTooLarge``) and a message saying so."""
    error = error_of(exc)
    cannot = "be stored" if isinstance(exc, ResultTooLarge) else "be encoded as JSON"
    message = f"the task ran, but its result could not {cannot}: {error['message']}"
    return {"type": error["type"], "message": message}


def error_of(exc: BaseException) -> dict[str, str]:
    """The public form of an exception: its type name and message, never a traceback."""
    try:
        message = str(exc)
    except (
        BaseException
    ):  # a broken __str__ (even one raising SystemExit) must not keep the task from finishing
        message = "(the exception's message could not be read)"
    return {"type": short_text(type(exc).__name__), "message": short_text(message)}
