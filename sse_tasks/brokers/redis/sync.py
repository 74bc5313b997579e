"""A blocking writer to a Redis broker's keys, for processes without an event loop.

Worker processes of another engine (Celery, RQ, …) report the tasks they run through it:
the same scripts, the same compare-and-set and the same leases as :class:`RedisBroker`,
whose options (URL, prefix, history, retention, lease, outage grace) it takes. It is the
Redis implementation of the worker side's writer (``sse_tasks.engines.WorkerWriter``).
Safe to share between threads; after a ``fork`` redis-py opens new connections in the child.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import redis

from ..._core.models import OutputChunk, Task
from .reader import MAX_BACKOFF, MIN_BACKOFF
from .records import chunks_of, task_of, text
from .writing import CANCELLED, Started, Write, Writing, after, final_write, pack_with_hiredis, requeue_write

T = TypeVar("T")


class SyncWriter(Writing):
    """Publishes state changes and output of tasks run by this process, blocking.

    Writes are retried with backoff for up to ``retry_for`` seconds while Redis is
    unreachable (each carries a token, so a retry that had in fact succeeded is not
    applied twice); then the ``redis`` errors in :attr:`unreachable` propagate.
    """

    _client: redis.Redis | None = None

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            url, extra = self.broker.pool_arguments(asyncio=False)
            self._client = redis.Redis.from_url(
                url, **extra, socket_timeout=5.0, socket_connect_timeout=2.0, client_name=self._client_name
            )
            pack_with_hiredis(self._client.connection_pool)
        return self._client

    # -- the worker side's writer ----------------------------------------------------

    def receive(self, queued: Task) -> str | None:
        """A worker received the message of ``queued``, a task the hub sent: store it
        ``queued`` unless it is stored already, in one round trip. Returns the stored state
        (``"queued"``, ``"cancelled"``, …); ``"refused"`` if the hub refused it (it
        answered 503: the task must not run); None if it is gone (it ran and expired).

        Once this has stored it, the hub no longer refuses it (``refuse.lua``), so the
        answer is final whichever of the two comes first."""
        return self._received(self._pipelined(lambda pipe: self._queue_receive(pipe, queued)))

    def create(self, queued: Task) -> Task | None:
        """A sender sent ``queued``: store it, unleased (it waits in the engine's queue);
        None if it is stored already."""
        return self.publish(queued, "task.queued", lease="none")

    def running(self, running: Task, *, create: Task | None = None, retry_for: float = 0.0) -> Task | None:
        """Store ``running`` and lease the task to this worker (``create``: its ``queued``
        snapshot, stored first if nobody stored it); None if it is already final."""
        return self.publish(running, "task.running", lease="add", create=create, retry_for=retry_for)

    def progress(self, task: Task) -> Task | None:
        """Store a progress snapshot (and push the lease); None if the task is final."""
        return self.publish(task, "task.progress", lease="xx")

    def output(self, chunk: OutputChunk, *, retry_for: float = 0.0) -> str | None:
        """Keep ``chunk`` and append its ``task.output`` event; its event id, or None if
        the task is unknown or terminal."""
        keys, args = self._output_call(chunk)
        script = self._scripts.output
        return self._event_id(self._retry(lambda: script.run_sync(self.client, keys, args), retry_for))

    def final(
        self,
        task: Task,
        *,
        started: Started | None = None,
        create: Task | None = None,
        retry_for: float = 0.0,
    ) -> Task | None:
        """Store the terminal snapshot ``task`` (its lease ends), after ``started`` (a
        ``running`` not stored yet, and its ``queued``) in the same round trip; ``create``:
        the ``queued`` snapshot of a task nobody stored. None if it was already final."""
        return self.publish_many(after(started, final_write(task, create)), retry_for=retry_for)[-1]

    def requeue(self, task: Task, *, started: Started | None = None, retry_for: float = 0.0) -> Task | None:
        """Return an unfinished task to ``queued`` (a retry): its lease ends until a worker
        takes it again. ``started`` as for :meth:`final`."""
        return self.publish_many(after(started, requeue_write(task)), retry_for=retry_for)[-1]

    def renew(self, task_ids: Iterable[str]) -> None:
        """Push the lease deadline of each task (those still leased)."""
        ids = list(task_ids)
        if ids:
            leases = {"leases": self._keys.leases}
            self._scripts.renew.run_sync(self.client, leases, {"lease_ms": self._lease_ms}, ids)

    def get(self, task_id: str) -> Task | None:
        """The stored snapshot, or None if unknown or expired."""
        return task_of(self.client.hmget(self._keys.task(task_id), ["d", "i", "t"]))

    def stored_output(self, task_id: str) -> list[OutputChunk]:
        """The task's stored output chunks, in order."""
        return chunks_of(self._scripts.chunks.run_sync(self.client, self._keys.chunks(task_id), {}))

    def finished(self, task_id: str) -> bool:
        """True if the stored task is terminal (cancelled by a client, failed as lost, …)."""
        return self._finished(self.client.hget(self._keys.task(task_id), "s"))

    def finished_ids(self, task_ids: Iterable[str]) -> set[str]:
        """Those of ``task_ids`` whose stored task is terminal, in one round trip."""
        ids = list(task_ids)
        if not ids:
            return set()
        with self.client.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hget(self._keys.task(task_id), "s")
            states = pipe.execute()
        return {task_id for task_id, state in zip(ids, states, strict=True) if self._finished(state)}

    def cancelled_ids(self) -> list[str]:
        """Ids of the retained tasks that ended ``cancelled`` (at most ``max_tasks``)."""
        keys = self._keys
        ids = [text(raw) for raw in self.client.zrange(keys.finished, 0, -1)]
        found: list[str] = []
        for start in range(0, len(ids), 1000):
            batch = ids[start : start + 1000]
            with self.client.pipeline(transaction=False) as pipe:
                for task_id in batch:
                    pipe.hget(keys.task(task_id), "s")
                states = pipe.execute()
            found.extend(task_id for task_id, state in zip(batch, states, strict=True) if state == CANCELLED)
        return found

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- Redis-level writes ------------------------------------------------------------

    def publish(
        self,
        task: Task,
        event_type: str,
        *,
        lease: str,
        requeue: bool = False,
        create: Task | None = None,
        retry_for: float = 0.0,
    ) -> Task | None:
        """Store ``task`` with its event (``publish.lua``; ``lease`` is ``add``, ``xx`` or
        ``none``); the stored snapshot, or None when the compare-and-set refused it (the
        task is terminal, or unknown and neither queued nor given its ``create`` snapshot,
        stored with a ``task.queued`` event first)."""
        options = {"lease": lease, "requeue": requeue, "create": create}
        return self.publish_many([(task, event_type, options)], retry_for=retry_for)[0]

    def publish_many(self, items: Sequence[Write], *, retry_for: float = 0.0) -> list[Task | None]:
        """Publish several events in one round trip, in order (each its own compare-and-set;
        ``items`` are ``(task, event_type, publish options)``); the stored snapshots."""
        calls = self._publish_calls(items)

        def queue(pipe: Any) -> None:
            self._queue_publishes(pipe, calls)

        replies = self._retry(lambda: self._pipelined(queue), retry_for)
        return self._stored(items, replies)

    def state(self, task_id: str) -> str | None:
        """The stored task's state (``queued``, …), or None if unknown or expired."""
        state = self.client.hget(self._keys.task(task_id), "s")
        return None if state is None else text(state)

    def _pipelined(self, queue: Callable[[Any], None]) -> list[Any]:
        """Run the commands ``queue(pipe)`` puts on a pipeline, in one round trip; loads the
        scripts Redis lost (restarted, flushed) and runs them again."""

        def run() -> list[Any]:
            with self.client.pipeline(transaction=False) as pipe:
                queue(pipe)
                return list(pipe.execute(raise_on_error=False))

        replies = run()
        if self._failed_on(replies):
            self._scripts.publish.load_sync(self.client)
            replies = run()
        return self._raise_errors(replies)

    def _retry(self, write: Callable[[], T], retry_for: float) -> T:
        deadline = time.monotonic() + retry_for
        delay = MIN_BACKOFF
        while True:
            try:
                return write()
            except self.unreachable:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
