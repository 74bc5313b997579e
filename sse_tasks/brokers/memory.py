"""``memory://``: everything in this process. The default; nothing to install."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from .._core.log import EventLog
from .._core.models import OUTPUT_EVENT, OutputChunk, Task, TaskEvent, TaskState
from .._core.text import ascii_int
from .base import Broker, EventObserver


class MemoryBroker(Broker):
    """Task snapshots in a dict, the event log in a bounded ring.

    Event ids look like ``<epoch>-<n>``: the epoch is random per broker, so an id
    from an earlier server process is recognised as unknown and resyncs instead of
    continuing a different history.

    Args:
        history: events the log keeps for resuming streams.
        retention: seconds a finished task is kept.
        max_tasks: finished tasks kept at most (oldest expire first).
    """

    def __init__(self, *, history: int = 10_000, retention: float = 3600.0, max_tasks: int = 10_000) -> None:
        if retention < 0 or max_tasks < 1:
            raise ValueError("retention must be >= 0 and max_tasks >= 1")
        self.log = EventLog(history)
        self.retention = retention
        self.max_tasks = max_tasks
        self._epoch = secrets.token_hex(3)
        self._seq = 0
        self._tasks: dict[str, Task] = {}
        self._output: dict[str, list[OutputChunk]] = {}
        self._finished: OrderedDict[str, float] = OrderedDict()  # id -> monotonic finish time
        self._expired: OrderedDict[str, None] = OrderedDict()
        self._observer: EventObserver | None = None

    async def start(self, observer: EventObserver) -> None:
        self._observer = observer

    def parse_event_id(self, event_id: str) -> Any | None:
        epoch, _, seq = event_id.partition("-")
        return ascii_int(seq) if epoch == self._epoch else None

    async def cursor(self) -> str:
        return f"{self._epoch}-{self._seq}"

    async def publish(self, task: Task, event_type: str) -> TaskEvent | None:
        current = self._tasks.get(task.id)
        if current is None:
            if event_type != "task.queued":
                return None
        elif current.terminal:
            return None
        self._seq += 1
        event_id = f"{self._epoch}-{self._seq}"
        task = task.evolve(event_id=event_id, event_type=event_type)
        self._tasks[task.id] = task
        if task.terminal:
            self._finished[task.id] = time.monotonic()
        self._expire()
        event = TaskEvent(event_id, self._seq, event_type, task)
        self.log.append(event)
        if self._observer is not None:
            self._observer(event)
        return event

    async def publish_output(self, task: Task, chunk: OutputChunk) -> TaskEvent | None:
        current = self._tasks.get(chunk.task_id)
        if current is None or current.terminal:
            return None
        self._seq += 1
        event_id = f"{self._epoch}-{self._seq}"
        stored = OutputChunk(chunk.task_id, chunk.seq, chunk.kind, chunk.text, chunk.level, event_id)
        self._output.setdefault(chunk.task_id, []).append(stored)
        event = TaskEvent(event_id, self._seq, OUTPUT_EVENT, current, stored)
        self.log.append(event)
        if self._observer is not None:
            self._observer(event)
        return event

    async def output(self, task_id: str) -> list[OutputChunk]:
        self._expire()
        return list(self._output.get(task_id, ()))

    async def get(self, task_id: str) -> Task | None:
        self._expire()
        return self._tasks.get(task_id)

    async def expired(self, task_id: str) -> bool:
        self._expire()
        return task_id in self._expired

    async def list_tasks(
        self,
        *,
        state: TaskState | None = None,
        name: str | None = None,
        tags: Sequence[str] = (),
        limit: int = 100,
    ) -> list[Task]:
        self._expire()
        found: list[Task] = []
        for task in reversed(self._tasks.values()):
            if (
                (state is None or task.state is state)
                and (name is None or task.name == name)
                and all(tag in task.tags for tag in tags)
            ):
                found.append(task)
                if len(found) >= limit:
                    break
        return found

    def _expire(self) -> None:
        deadline = time.monotonic() - self.retention
        finished = self._finished
        while finished:
            task_id, finished_at = next(iter(finished.items()))
            if finished_at > deadline and len(finished) <= self.max_tasks:
                break
            del finished[task_id]
            del self._tasks[task_id]
            self._output.pop(task_id, None)
            self._expired[task_id] = None
            if len(self._expired) > self.max_tasks:
                self._expired.popitem(last=False)
