"""The worker side's writer: how an engine's worker stores what its tasks do.

A worker hook (the engine's signals or middleware) reports each task through a writer:
received, running, progress, output, final, back to queued for a retry, lease renewal,
and the checks that tell it a task was refused (the hub answered 503) or cancelled.
Every write is the broker's compare-and-set: one to a task already final changes
nothing and answers None. Over the Redis broker, :class:`~sse_tasks.brokers.redis.sync.SyncWriter`
implements :class:`WorkerWriter` and :class:`~sse_tasks.brokers.redis.async_writer.AsyncWriter`
implements :class:`AsyncWorkerWriter`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from .._core.models import OutputChunk, Task

#: A ``running`` snapshot not stored yet and the ``queued`` one to create the task from
#: if nobody stored it: stored first, in the same round trip as the write it goes with.
Started = tuple[Task, "Task | None"]


class WorkerWriter(Protocol):
    """A blocking writer, for worker threads and processes without an event loop.

    Every method may raise one of :attr:`unreachable` when the store cannot be reached;
    a worker keeps working through an outage and tries again later. ``retry_for``: seconds
    a write is retried (with backoff, never applied twice) before that error is raised.
    """

    #: The exceptions that mean the store cannot be reached now.
    unreachable: tuple[type[BaseException], ...]
    #: Seconds a running task's lease lasts: renew it every quarter of that.
    lease: float
    #: Seconds a worker retries a state change while the store is unreachable.
    outage_grace: float

    def receive(self, queued: Task) -> str | None:
        """A worker received the message of a task the hub sent: store it ``queued``
        unless stored already. The stored state; ``"refused"`` if the hub refused it (the
        task must not run); None if it is gone (it ran and expired)."""
        ...

    def create(self, queued: Task) -> Task | None:
        """A sender (not the hub) sent ``queued``: store it, unleased."""
        ...

    def running(self, running: Task, *, create: Task | None = None, retry_for: float = 0.0) -> Task | None:
        """Store ``running`` and lease the task to this worker (``create``: its ``queued``
        snapshot, stored first if nobody stored it); None if the task is already final."""
        ...

    def progress(self, task: Task) -> Task | None:
        """Store a progress snapshot; None if the task is final (stop the work)."""
        ...

    def output(self, chunk: OutputChunk, *, retry_for: float = 0.0) -> str | None:
        """Keep one chunk of output; its event id, or None if the task is final."""
        ...

    def final(
        self,
        task: Task,
        *,
        started: Started | None = None,
        create: Task | None = None,
        retry_for: float = 0.0,
        wait: bool = True,
    ) -> Task | None:
        """Store the terminal snapshot (its lease ends); ``create``: the ``queued``
        snapshot of a task nobody stored. None if it was already final. ``wait=False``:
        sent, not waited for (None); :meth:`settle` sends it again if it was lost."""
        ...

    def requeue(self, task: Task, *, started: Started | None = None, retry_for: float = 0.0) -> Task | None:
        """Return an unfinished task to ``queued`` for a retry (its lease ends)."""
        ...

    def renew(self, task_ids: Iterable[str]) -> None:
        """Push the lease of each task running here (a task whose lease lapses ends
        ``failed``, ``WorkerLost``)."""
        ...

    def get(self, task_id: str) -> Task | None:
        """The stored snapshot, or None if unknown or expired."""
        ...

    def stored_output(self, task_id: str) -> list[OutputChunk]:
        """The task's stored output, in order (a retry goes on from it)."""
        ...

    def finished(self, task_id: str) -> bool:
        """True if the stored task is final: a running task that sees this stops."""
        ...

    def finished_ids(self, task_ids: Iterable[str]) -> set[str]:
        """Those of ``task_ids`` whose stored task is final, in one round trip."""
        ...

    def cancelled_ids(self) -> list[str]:
        """Ids of retained tasks that ended ``cancelled`` (discarded by a starting worker)."""
        ...

    def settle(self) -> None:
        """Check the writes sent without waiting, and send again those that were lost."""
        ...

    def close(self) -> None:
        """Release connections (what was sent without waiting is checked first)."""
        ...


class AsyncWorkerWriter(Protocol):
    """The same writer for asyncio engines (arq, taskiq): each method of
    :class:`WorkerWriter`, awaited, with the same arguments and answers. :class:`WorkerRun`
    and :class:`Keeper` are blocking; an asyncio hook drives the writer itself (one
    writer per event loop)."""

    unreachable: tuple[type[BaseException], ...]
    lease: float
    outage_grace: float

    async def receive(self, queued: Task) -> str | None: ...

    async def create(self, queued: Task) -> Task | None: ...

    async def running(
        self, running: Task, *, create: Task | None = None, retry_for: float = 0.0
    ) -> Task | None: ...

    async def progress(self, task: Task) -> Task | None: ...

    async def output(self, chunk: OutputChunk, *, retry_for: float = 0.0) -> str | None: ...

    async def final(
        self,
        task: Task,
        *,
        started: Started | None = None,
        create: Task | None = None,
        retry_for: float = 0.0,
        wait: bool = True,
    ) -> Task | None: ...

    async def requeue(
        self, task: Task, *, started: Started | None = None, retry_for: float = 0.0
    ) -> Task | None: ...

    async def renew(self, task_ids: Iterable[str]) -> None: ...

    async def get(self, task_id: str) -> Task | None: ...

    async def stored_output(self, task_id: str) -> list[OutputChunk]: ...

    async def finished(self, task_id: str) -> bool: ...

    async def finished_ids(self, task_ids: Iterable[str]) -> set[str]: ...

    async def cancelled_ids(self) -> list[str]: ...

    async def settle(self) -> None: ...

    async def close(self) -> None: ...
