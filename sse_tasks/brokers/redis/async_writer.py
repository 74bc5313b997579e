"""The worker side's writer for asyncio engines (arq, taskiq): :class:`SyncWriter`'s
commands, awaited (``sse_tasks.engines.AsyncWorkerWriter``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import anyio
from redis.asyncio import Redis

from ..._core.models import OutputChunk, Task
from .reader import MAX_BACKOFF, MIN_BACKOFF
from .records import chunks_of, task_of, text
from .writing import CANCELLED, Started, Write, Writing, after, final_write, pack_with_hiredis, requeue_write

T = TypeVar("T")


class AsyncWriter(Writing):
    """Publishes state changes and output of tasks run by this process, on its event loop.

    Each method is :class:`~.sync.SyncWriter`'s, awaited, with the same answers; writes
    are retried with backoff for up to ``retry_for`` seconds while Redis is unreachable.
    One writer per event loop (its connections belong to the loop that opened them).
    """

    _client: Redis | None = None

    @property
    def client(self) -> Redis:
        if self._client is None:
            url, extra = self.broker.pool_arguments(asyncio=True)
            self._client = Redis.from_url(
                url, **extra, socket_timeout=5.0, socket_connect_timeout=2.0, client_name=self._client_name
            )
            pack_with_hiredis(self._client.connection_pool)
        return self._client

    async def receive(self, queued: Task) -> str | None:
        """As :meth:`SyncWriter.receive`: the stored state, ``"refused"``, or None if gone."""
        return self._received(await self._pipelined(lambda pipe: self._queue_receive(pipe, queued)))

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
        keys, args = self._output_call(chunk)
        reply = await self._retry(lambda: self._scripts.output(self.client, keys, args), retry_for)
        return self._event_id(reply)

    async def final(
        self,
        task: Task,
        *,
        started: Started | None = None,
        create: Task | None = None,
        retry_for: float = 0.0,
    ) -> Task | None:
        """Store the terminal snapshot (after ``started``, in the same round trip)."""
        return await self._publish(after(started, final_write(task, create)), retry_for)

    async def requeue(
        self, task: Task, *, started: Started | None = None, retry_for: float = 0.0
    ) -> Task | None:
        """Return an unfinished task to ``queued`` for a retry (its lease ends)."""
        return await self._publish(after(started, requeue_write(task)), retry_for)

    async def renew(self, task_ids: Iterable[str]) -> None:
        """Push the lease deadline of each task (those still leased)."""
        ids = list(task_ids)
        if ids:
            leases = {"leases": self._keys.leases}
            await self._scripts.renew(self.client, leases, {"lease_ms": self._lease_ms}, ids)

    async def get(self, task_id: str) -> Task | None:
        """The stored snapshot, or None if unknown or expired."""
        return task_of(await self.client.hmget(self._keys.task(task_id), ["d", "i", "t"]))

    async def stored_output(self, task_id: str) -> list[OutputChunk]:
        """The task's stored output chunks, in order."""
        return chunks_of(await self._scripts.chunks(self.client, self._keys.chunks(task_id), {}))

    async def finished(self, task_id: str) -> bool:
        """True if the stored task is terminal."""
        return self._finished(await self.client.hget(self._keys.task(task_id), "s"))

    async def finished_ids(self, task_ids: Iterable[str]) -> set[str]:
        """Those of ``task_ids`` whose stored task is terminal, in one round trip."""
        ids = list(task_ids)
        if not ids:
            return set()
        async with self.client.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hget(self._keys.task(task_id), "s")
            states = await pipe.execute()
        return {task_id for task_id, state in zip(ids, states, strict=True) if self._finished(state)}

    async def cancelled_ids(self) -> list[str]:
        """Ids of the retained tasks that ended ``cancelled``."""
        keys = self._keys
        ids = [text(raw) for raw in await self.client.zrange(keys.finished, 0, -1)]
        found: list[str] = []
        for start in range(0, len(ids), 1000):
            batch = ids[start : start + 1000]
            async with self.client.pipeline(transaction=False) as pipe:
                for task_id in batch:
                    pipe.hget(keys.task(task_id), "s")
                states = await pipe.execute()
            found.extend(task_id for task_id, state in zip(batch, states, strict=True) if state == CANCELLED)
        return found

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _publish(self, items: Sequence[Write], retry_for: float = 0.0) -> Task | None:
        calls = self._publish_calls(items)

        def queue(pipe: Any) -> None:
            self._queue_publishes(pipe, calls)

        replies = await self._retry(lambda: self._pipelined(queue), retry_for)
        return self._stored(items, replies)[-1]

    async def _pipelined(self, queue: Callable[[Any], None]) -> list[Any]:
        async def run() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                queue(pipe)
                return list(await pipe.execute(raise_on_error=False))

        replies = await run()
        if self._failed_on(replies):
            await self.client.script_load(self._scripts.publish.source)
            replies = await run()
        return self._raise_errors(replies)

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
