"""The small interface every broker implements."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

from .._core.log import EventLog, OutputFollow
from .._core.models import OutputChunk, Task, TaskEvent, TaskState

EventObserver = Callable[[TaskEvent], None]


class Broker(abc.ABC):
    """Stores task snapshots and the totally ordered event log.

    Every event a broker accepts, from this process or another, ends up appended to
    :attr:`log` in order; streams read from there. :meth:`publish` is a
    compare-and-set: a task that is already terminal never changes again.
    """

    #: Local fan-out ring; brokers append every event here in order.
    log: EventLog

    async def start(self, observer: EventObserver) -> None:  # noqa: B027 - optional hook
        """Connect; from now on call ``observer(event)`` for each event appended to :attr:`log`."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the hub calls it once on shutdown."""

    async def read_back(self) -> None:  # noqa: B027 - optional hook
        """Return once :attr:`log` holds every event this process published (bounded).

        The hub closes the log on shutdown only after this, so that each stream still
        carries its task's final event. A broker that appends as it publishes (memory)
        has nothing to wait for; one whose log is filled by a reader waits for it."""

    @abc.abstractmethod
    def parse_event_id(self, event_id: str) -> Any | None:
        """The sortable key of ``event_id``, or None if it is malformed or not from this log."""

    @abc.abstractmethod
    async def cursor(self) -> str:
        """The id of the newest event (a position a stream can resume after)."""

    @abc.abstractmethod
    async def publish(self, task: Task, event_type: str) -> TaskEvent | None:
        """Store ``task`` and append its event.

        Returns None, changing nothing, if the stored task is terminal (or unknown and
        ``event_type`` is not ``task.queued``).
        """

    @abc.abstractmethod
    async def get(self, task_id: str) -> Task | None:
        """The current snapshot, or None if unknown or expired."""

    @abc.abstractmethod
    async def expired(self, task_id: str) -> bool:
        """True if ``task_id`` existed and has expired (the API answers 410)."""

    @abc.abstractmethod
    async def list_tasks(
        self,
        *,
        state: TaskState | None = None,
        name: str | None = None,
        tags: Sequence[str] = (),
        limit: int = 100,
    ) -> list[Task]:
        """Snapshots, newest first; with ``tags``, those carrying every one of them."""

    @abc.abstractmethod
    async def publish_output(self, task: Task, chunk: OutputChunk) -> TaskEvent | None:
        """Keep ``chunk`` with its task and append its ``task.output`` event; None, keeping
        nothing, if the task is unknown or terminal. ``task`` is the caller's latest
        snapshot of it (the returned event's ``task``)."""

    async def publish_outputs(self, task: Task, chunks: Sequence[OutputChunk]) -> list[TaskEvent] | None:
        """:meth:`publish_output` for each of ``chunks`` (one task's, in order), as one write
        where the broker can; None if the task is unknown or terminal (a broker that
        writes them one by one may have kept those before it ended)."""
        events = []
        for chunk in chunks:
            event = await self.publish_output(task, chunk)
            if event is None:
                return None
            events.append(event)
        return events

    async def keep_outputs(self, task: Task, chunks: Sequence[OutputChunk]) -> bool:
        """:meth:`publish_outputs` for a writer that needs no events back (a task's output
        pump): False if the task is unknown or terminal. A broker whose readers make
        the events (Redis) does not make them here too."""
        return await self.publish_outputs(task, chunks) is not None

    @abc.abstractmethod
    async def output(self, task_id: str) -> list[OutputChunk]:
        """The task's retained chunks in order (with their event ids); [] if none or unknown."""

    async def follow_output(self, task: Task | None) -> OutputFollow:
        """Have :attr:`log` carry ``task``'s output events (None: every task's) until the
        answer is closed. A broker whose log carries all output (the default) has
        nothing to do. Raises :class:`~sse_tasks.Unavailable` if it cannot."""
        return OutputFollow(None)

    async def events_after(self, key: Any) -> list[TaskEvent] | None:
        """History older than :attr:`log` holds; None when it does not reach back to ``key``."""
        return None
