"""A blocking writer to a Redis broker's keys, for processes without an event loop.

Worker processes of another engine (Celery, RQ, …) report the tasks they run through it:
the same scripts, the same compare-and-set and the same leases as :class:`RedisBroker`,
whose options (URL, prefix, history, retention, lease, outage grace) it takes. It is the
Redis implementation of the worker side's writer (``sse_tasks.engines.WorkerWriter``).
Safe to share between threads; after a ``fork`` the child opens connections of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..._core.models import OutputChunk, Task
from .reader import MAX_BACKOFF, MIN_BACKOFF
from .records import chunks_of, task_or_none, text
from .wire import Command, Wire
from .writing import Routes, Started, Write, Writing, each, final_write, requeue_write

if TYPE_CHECKING:
    from . import RedisBroker

T = TypeVar("T")


class SyncWriter(Writing):
    """Publishes state changes and output of tasks run by this process, blocking.

    Writes are retried with backoff for up to ``retry_for`` seconds while Redis is
    unreachable (each carries a token, so a retry that had in fact succeeded is not
    applied twice); then the ``redis`` errors in :attr:`unreachable` propagate.
    """

    def __new__(cls, broker: RedisBroker) -> SyncWriter:
        if cls is SyncWriter and broker.partitions > 1:
            cls = PartitionedSyncWriter
        return super().__new__(cls)

    def __init__(self, broker: RedisBroker) -> None:
        super().__init__(broker)
        url, extra = broker.pool_arguments(asyncio=False)
        #: The connections to the broker's Redis (opened at first use).
        self.wire = Wire(url, extra, self._client_name)

    # -- the worker side's writer ----------------------------------------------------

    def receive(self, queued: Task) -> str | None:
        """A worker received the message of ``queued``, a task the hub sent: store it
        ``queued`` unless it is stored already, in one round trip. Returns the stored state
        (``"queued"``, ``"cancelled"``, …); ``"refused"`` if the hub refused it (it
        answered 503: the task must not run); None if it is gone (it ran and expired).

        Once this has stored it, the hub no longer refuses it (``refuse.lua``), so the
        answer is final whichever of the two comes first."""
        return self._received(self._send(self._receive(queued)))

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
        return self._event_id(self._send([self._output(chunk)], retry_for)[0])

    def final(
        self,
        task: Task,
        *,
        started: Started | None = None,
        create: Task | None = None,
        retry_for: float = 0.0,
        wait: bool = True,
    ) -> Task | None:
        """Store the terminal snapshot ``task`` (its lease ends), after ``started`` (a
        ``running`` not stored yet, and its ``queued``) in the same round trip; ``create``:
        the ``queued`` snapshot of a task nobody stored. None if it was already final.

        ``wait=False`` sends it and returns None without waiting for Redis to store it
        (the worker goes on to its next task); the answer is read later, and a write
        its lost connection never answered is sent again by :meth:`settle`, within
        ``retry_for`` seconds. It raises as with ``wait`` only if it cannot be sent at all
        for that long."""
        item = final_write(task, create, started)
        if wait:
            return self.publish_many([item], retry_for=retry_for)[0]
        commands = self._publishes([item])
        try:
            self.wire.post(commands, self._sources, retry_for=retry_for)
        except self.unreachable:
            self._send(commands, retry_for)  # the same write (its token) once Redis answers
        return None

    def requeue(self, task: Task, *, started: Started | None = None, retry_for: float = 0.0) -> Task | None:
        """Return an unfinished task to ``queued`` (a retry): its lease ends until a worker
        takes it again. ``started`` as for :meth:`final`."""
        return self.publish_many([requeue_write(task, started)], retry_for=retry_for)[0]

    def renew(self, task_ids: Iterable[str]) -> None:
        """Push the lease deadline of each task (those still leased)."""
        ids = list(task_ids)
        if ids:
            self._send([self._renew(ids)])

    def get(self, task_id: str) -> Task | None:
        """The stored snapshot, or None if unknown or expired."""
        return task_or_none(self._send([self._get(task_id)])[0], task_id, self._malformed)

    def stored_output(self, task_id: str) -> list[OutputChunk]:
        """The task's stored output chunks, in order."""
        return chunks_of(self._send([self._chunks(task_id)])[0])

    def finished(self, task_id: str) -> bool:
        """True if the stored task is terminal (cancelled by a client, failed as lost, …)."""
        return self._finished(self._send([self._state(task_id)])[0])

    def finished_ids(self, task_ids: Iterable[str]) -> set[str]:
        """Those of ``task_ids`` whose stored task is terminal, in one round trip."""
        ids = list(task_ids)
        return self._finished_of(ids, self._send([self._state(i) for i in ids])) if ids else set()

    def cancelled_ids(self) -> list[str]:
        """Ids of the retained tasks that ended ``cancelled`` (at most ``max_tasks``)."""
        ids = [text(raw) for raw in self._send([("ZRANGE", self._keys.finished, 0, -1)])[0]]
        found: list[str] = []
        for start in range(0, len(ids), 1000):
            batch = ids[start : start + 1000]
            found.extend(self._cancelled_of(batch, self._send([self._state(i) for i in batch])))
        return found

    def state(self, task_id: str) -> str | None:
        """The stored task's state (``queued``, …), or None if unknown or expired."""
        state = self._send([self._state(task_id)])[0]
        return None if state is None else text(state)

    def lend(self) -> bool:
        """Before a ``fork``: offer the child a connection of this process's (see
        :meth:`.wire.Wire.lend`); :meth:`reclaim` once the child has ended."""
        return self.wire.lend()

    def adopt(self) -> None:
        """In the child forked after :meth:`lend`: the lent connection is its own."""
        self.wire.adopt()

    def reclaim(self, *, child_alive: bool = False) -> None:
        """The child forked after :meth:`lend` has ended (``child_alive``: it may still run)."""
        self.wire.reclaim(child_alive=child_alive)

    def settle(self) -> None:
        """Read what Redis answered writes sent without waiting (``final(wait=False)``),
        and send again those a lost connection never answered; raises one of
        :attr:`unreachable` while they cannot be sent (they are kept until their deadline)."""
        self.wire.settle()

    def close(self) -> None:
        """Close the connections (a later call opens new ones), once what was sent without
        waiting is answered."""
        self.wire.close()

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
        return self._stored(items, self._send(self._publishes(items), retry_for))

    def _send(self, commands: Sequence[Command], retry_for: float = 0.0) -> list[Any]:
        """The replies of ``commands``, sent in one round trip (retried while Redis is
        unreachable, for up to ``retry_for`` seconds); an error reply raises."""

        return self._retry(lambda: self._raise_errors(self.wire.send(commands, self._sources)), retry_for)

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


class PartitionedSyncWriter(SyncWriter):
    """:class:`SyncWriter` over a partitioned broker (``SyncWriter(broker)`` makes one)."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self.lease = broker.lease
        self.outage_grace = broker.outage_grace
        self._routes: Routes[SyncWriter] = Routes(broker, SyncWriter)

    def receive(self, queued: Task) -> str | None:
        return self._routes.of(queued.id).receive(queued)

    def create(self, queued: Task) -> Task | None:
        return self._routes.of(queued.id).create(queued)

    def running(self, running: Task, *, create: Task | None = None, retry_for: float = 0.0) -> Task | None:
        return self._routes.of(running.id).running(running, create=create, retry_for=retry_for)

    def progress(self, task: Task) -> Task | None:
        return self._routes.of(task.id).progress(task)

    def output(self, chunk: OutputChunk, *, retry_for: float = 0.0) -> str | None:
        return self._routes.of(chunk.task_id).output(chunk, retry_for=retry_for)

    def final(
        self,
        task: Task,
        *,
        started: Started | None = None,
        create: Task | None = None,
        retry_for: float = 0.0,
        wait: bool = True,
    ) -> Task | None:
        writer = self._routes.of(task.id)
        return writer.final(task, started=started, create=create, retry_for=retry_for, wait=wait)

    def requeue(self, task: Task, *, started: Started | None = None, retry_for: float = 0.0) -> Task | None:
        return self._routes.of(task.id).requeue(task, started=started, retry_for=retry_for)

    def renew(self, task_ids: Iterable[str]) -> None:
        for writer, ids in self._routes.split(task_ids):
            writer.renew(ids)

    def get(self, task_id: str) -> Task | None:
        return self._routes.of(task_id).get(task_id)

    def stored_output(self, task_id: str) -> list[OutputChunk]:
        return self._routes.of(task_id).stored_output(task_id)

    def finished(self, task_id: str) -> bool:
        return self._routes.of(task_id).finished(task_id)

    def finished_ids(self, task_ids: Iterable[str]) -> set[str]:
        return {found for writer, ids in self._routes.split(task_ids) for found in writer.finished_ids(ids)}

    def cancelled_ids(self) -> list[str]:
        return [task_id for writer in self._routes.writers for task_id in writer.cancelled_ids()]

    def state(self, task_id: str) -> str | None:
        return self._routes.of(task_id).state(task_id)

    def lend(self) -> bool:
        return any([writer.lend() for writer in self._routes.writers])  # (every one of them)

    def adopt(self) -> None:
        each(self._routes.writers, lambda writer: writer.adopt())

    def reclaim(self, *, child_alive: bool = False) -> None:
        each(self._routes.writers, lambda writer: writer.reclaim(child_alive=child_alive))

    def settle(self) -> None:
        each(self._routes.writers, lambda writer: writer.settle())

    def close(self) -> None:
        each(self._routes.writers, lambda writer: writer.close())

    def publish_many(self, items: Sequence[Write], *, retry_for: float = 0.0) -> list[Task | None]:
        stored: list[Task | None] = [None] * len(items)
        for writer, positions in self._routes.split_items(items):
            answers = writer.publish_many([items[p] for p in positions], retry_for=retry_for)
            for position, answer in zip(positions, answers, strict=True):
                stored[position] = answer
        return stored
