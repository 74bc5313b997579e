"""The worker side's writer for asyncio engines (arq, taskiq): :class:`SyncWriter`'s
commands, awaited (``sse_tasks.engines.AsyncWorkerWriter``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from ..._core.models import OutputChunk, Task
from .reader import MAX_BACKOFF, MIN_BACKOFF
from .records import chunks_of, task_or_none, text
from .wire import AsyncWire, Command
from .writing import Routes, Started, Write, Writing, each_async, final_write, requeue_write

if TYPE_CHECKING:
    from . import RedisBroker

T = TypeVar("T")


class AsyncWriter(Writing):
    """Publishes state changes and output of tasks run by this process, on its event loop.

    Each method is :class:`~.sync.SyncWriter`'s, awaited, with the same answers; writes
    are retried with backoff for up to ``retry_for`` seconds while Redis is unreachable.
    One writer per event loop (its connections belong to the loop that opened them).
    """

    def __new__(cls, broker: RedisBroker) -> AsyncWriter:
        if cls is AsyncWriter and broker.partitions > 1:
            cls = PartitionedAsyncWriter
        return super().__new__(cls)

    def __init__(self, broker: RedisBroker) -> None:
        super().__init__(broker)
        url, extra = broker.pool_arguments(asyncio=True)
        #: The connections to the broker's Redis (opened at first use).
        self.wire = AsyncWire(url, extra, self._client_name)

    async def receive(self, queued: Task) -> str | None:
        """As :meth:`SyncWriter.receive`: the stored state, ``"refused"``, or None if gone."""
        return self._received(await self._send(self._receive(queued)))

    async def create(self, queued: Task) -> Task | None:
        """A sender sent ``queued``: store it, unleased."""
        return await self._publish([(queued, "task.queued", {"lease": "none"})])

    async def running(
        self, running: Task, *, create: Task | None = None, retry_for: float = 0.0
    ) -> Task | None:
        """Store ``running`` and lease the task to this worker."""
        return await self._publish([(running, "task.running", {"lease": "add", "create": create})], retry_for)

    async def progress(self, task: Task) -> Task | None:
        """Store a progress snapshot (and push the lease)."""
        return await self._publish([(task, "task.progress", {"lease": "xx"})])

    async def output(self, chunk: OutputChunk, *, retry_for: float = 0.0) -> str | None:
        """Keep ``chunk``; its event id, or None if the task is unknown or terminal."""
        return self._event_id((await self._send([self._output(chunk)], retry_for))[0])

    async def final(
        self,
        task: Task,
        *,
        started: Started | None = None,
        create: Task | None = None,
        retry_for: float = 0.0,
        wait: bool = True,
    ) -> Task | None:
        """Store the terminal snapshot (after ``started``, in the same round trip);
        ``wait=False`` as for :meth:`SyncWriter.final`."""
        item = final_write(task, create, started)
        if wait:
            return await self._publish([item], retry_for)
        commands = self._publishes([item])
        try:
            await self.wire.post(commands, self._sources, retry_for=retry_for)
        except self.unreachable:
            await self._send(commands, retry_for)  # the same write (its token) once Redis answers
        return None

    async def requeue(
        self, task: Task, *, started: Started | None = None, retry_for: float = 0.0
    ) -> Task | None:
        """Return an unfinished task to ``queued`` for a retry (its lease ends)."""
        return await self._publish([requeue_write(task, started)], retry_for)

    async def renew(self, task_ids: Iterable[str]) -> None:
        """Push the lease deadline of each task (those still leased)."""
        ids = list(task_ids)
        if ids:
            await self._send([self._renew(ids)])

    async def get(self, task_id: str) -> Task | None:
        """The stored snapshot, or None if unknown or expired."""
        return task_or_none((await self._send([self._get(task_id)]))[0], task_id, self._malformed)

    async def stored_output(self, task_id: str) -> list[OutputChunk]:
        """The task's stored output chunks, in order."""
        return chunks_of((await self._send([self._chunks(task_id)]))[0])

    async def finished(self, task_id: str) -> bool:
        """True if the stored task is terminal."""
        return self._finished((await self._send([self._state(task_id)]))[0])

    async def finished_ids(self, task_ids: Iterable[str]) -> set[str]:
        """Those of ``task_ids`` whose stored task is terminal, in one round trip."""
        ids = list(task_ids)
        return self._finished_of(ids, await self._send([self._state(i) for i in ids])) if ids else set()

    async def cancelled_ids(self) -> list[str]:
        """Ids of the retained tasks that ended ``cancelled``."""
        ids = [text(raw) for raw in (await self._send([("ZRANGE", self._keys.finished, 0, -1)]))[0]]
        found: list[str] = []
        for start in range(0, len(ids), 1000):
            batch = ids[start : start + 1000]
            found.extend(self._cancelled_of(batch, await self._send([self._state(i) for i in batch])))
        return found

    async def settle(self) -> None:
        """As :meth:`SyncWriter.settle`."""
        await self.wire.settle()

    async def close(self) -> None:
        """Close the connections (a later call opens new ones), once what was sent without
        waiting is answered."""
        await self.wire.close()

    async def _publish(self, items: Sequence[Write], retry_for: float = 0.0) -> Task | None:
        return self._stored(items, await self._send(self._publishes(items), retry_for))[-1]

    async def _send(self, commands: Sequence[Command], retry_for: float = 0.0) -> list[Any]:
        """As :meth:`SyncWriter._send`, awaited."""

        async def send() -> list[Any]:
            return self._raise_errors(await self.wire.send(commands, self._sources))

        return await self._retry(send, retry_for)

    async def _retry(self, write: Callable[[], Awaitable[T]], retry_for: float) -> T:
        deadline = anyio.current_time() + retry_for
        delay = MIN_BACKOFF
        while True:
            try:
                return await write()
            except self.unreachable:
                if anyio.current_time() + delay > deadline:
                    raise
                await anyio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)


class PartitionedAsyncWriter(AsyncWriter):
    """:class:`AsyncWriter` over a partitioned broker (``AsyncWriter(broker)`` makes one)."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self.lease = broker.lease
        self.outage_grace = broker.outage_grace
        self._routes: Routes[AsyncWriter] = Routes(broker, AsyncWriter)

    async def receive(self, queued: Task) -> str | None:
        return await self._routes.of(queued.id).receive(queued)

    async def create(self, queued: Task) -> Task | None:
        return await self._routes.of(queued.id).create(queued)

    async def running(
        self, running: Task, *, create: Task | None = None, retry_for: float = 0.0
    ) -> Task | None:
        return await self._routes.of(running.id).running(running, create=create, retry_for=retry_for)

    async def progress(self, task: Task) -> Task | None:
        return await self._routes.of(task.id).progress(task)

    async def output(self, chunk: OutputChunk, *, retry_for: float = 0.0) -> str | None:
        return await self._routes.of(chunk.task_id).output(chunk, retry_for=retry_for)

    async def final(
        self,
        task: Task,
        *,
        started: Started | None = None,
        create: Task | None = None,
        retry_for: float = 0.0,
        wait: bool = True,
    ) -> Task | None:
        writer = self._routes.of(task.id)
        return await writer.final(task, started=started, create=create, retry_for=retry_for, wait=wait)

    async def requeue(
        self, task: Task, *, started: Started | None = None, retry_for: float = 0.0
    ) -> Task | None:
        return await self._routes.of(task.id).requeue(task, started=started, retry_for=retry_for)

    async def renew(self, task_ids: Iterable[str]) -> None:
        for writer, ids in self._routes.split(task_ids):
            await writer.renew(ids)

    async def get(self, task_id: str) -> Task | None:
        return await self._routes.of(task_id).get(task_id)

    async def stored_output(self, task_id: str) -> list[OutputChunk]:
        return await self._routes.of(task_id).stored_output(task_id)

    async def finished(self, task_id: str) -> bool:
        return await self._routes.of(task_id).finished(task_id)

    async def finished_ids(self, task_ids: Iterable[str]) -> set[str]:
        found: set[str] = set()
        for writer, ids in self._routes.split(task_ids):
            found |= await writer.finished_ids(ids)
        return found

    async def cancelled_ids(self) -> list[str]:
        return [task_id for writer in self._routes.writers for task_id in await writer.cancelled_ids()]

    async def settle(self) -> None:
        await each_async(self._routes.writers, lambda writer: writer.settle())

    async def close(self) -> None:
        await each_async(self._routes.writers, lambda writer: writer.close())
