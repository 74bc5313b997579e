"""A blocking writer to a Redis broker's keys, for processes without an event loop.

Worker processes of another engine (Celery, RQ, …) report the tasks they run through it:
the same scripts, the same compare-and-set and the same leases as :class:`RedisBroker`,
whose options (URL, prefix, history, retention, lease, outage grace) it takes. It is the
Redis implementation of the worker side's writer (``sse_tasks.engines.WorkerWriter``).
Safe to share between threads; after a ``fork`` redis-py opens new connections in the child.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import redis

from ..._core.models import OutputChunk, Task, TaskState, event_type_for
from . import RedisBroker
from .keys import Keys
from .link import UNREACHABLE
from .reader import MAX_BACKOFF, MIN_BACKOFF, text
from .records import chunks_of, task_of
from .scripts import Scripts

logger = logging.getLogger("sse_tasks.redis")

_CANCELLED = TaskState.CANCELLED.value.encode()

#: ``(task, event type, publish options)``: one write of :meth:`SyncWriter.publish_many`.
Write = tuple[Task, str, dict[str, Any]]


class SyncWriter:
    """Publishes state changes and output of tasks run by this process, blocking.

    Writes are retried with backoff for up to ``retry_for`` seconds while Redis is
    unreachable (each carries a token, so a retry that had in fact succeeded is not
    applied twice); then the ``redis`` errors in :attr:`unreachable` propagate.
    """

    #: What a call raises while Redis cannot be reached.
    unreachable: tuple[type[BaseException], ...] = UNREACHABLE

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self.lease = broker.lease
        self.outage_grace = broker.outage_grace
        self._keys = Keys(broker.prefix)
        self._scripts = Scripts()
        self._lease_ms = max(1, round(broker.lease * 1000))
        self._client: redis.Redis | None = None

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(
                self.broker.url,
                socket_timeout=5.0,
                socket_connect_timeout=2.0,
                client_name=f"sse-tasks-{self.broker.worker_id}-sync",
            )
        return self._client

    # -- the worker side's writer ----------------------------------------------------

    def receive(self, queued: Task) -> str | None:
        """A worker received the message of ``queued``, a task the hub sent: store it
        ``queued`` unless it is stored already, in one round trip. Returns the stored state
        (``"queued"``, ``"cancelled"``, …); ``"refused"`` if the hub refused it (it
        answered 503: the task must not run); None if it is gone (it ran and expired).

        Once this has stored it, the hub no longer refuses it (``refuse.lua``), so the
        answer is final whichever of the two comes first."""
        keys = self._keys
        args = self.broker.publish_args(queued, "task.queued", lease="none")

        def queue(pipe: redis.client.Pipeline) -> None:
            self._scripts.publish.queue_sync(pipe, keys.publish(queued.id), args)
            pipe.hget(keys.task(queued.id), "s")
            pipe.exists(keys.refused(queued.id))

        created, state, refused = self._pipelined(queue)
        if created is not None:
            return "queued"
        if state is not None:
            return text(state)
        # Neither created nor stored: refused, or it finished and expired meanwhile.
        return "refused" if refused else None

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
        args = self.broker.output_args(chunk)
        keys = self._keys.publish_output(chunk.task_id)
        reply = self._retry(lambda: self._scripts.output.run_sync(self.client, keys, args), retry_for)
        return None if reply is None else text(reply[0]).partition(" ")[0]

    def final(
        self,
        task: Task,
        *,
        started: tuple[Task, Task | None] | None = None,
        create: Task | None = None,
        retry_for: float = 0.0,
    ) -> Task | None:
        """Store the terminal snapshot ``task`` (its lease ends), after ``started`` (a
        ``running`` not stored yet, and its ``queued``) in the same round trip; ``create``:
        the ``queued`` snapshot of a task nobody stored. None if it was already final."""
        item: Write = (task, event_type_for(task.state), {"lease": "xx", "create": create})
        return self.publish_many(_after(started, item), retry_for=retry_for)[-1]

    def requeue(
        self, task: Task, *, started: tuple[Task, Task | None] | None = None, retry_for: float = 0.0
    ) -> Task | None:
        """Return an unfinished task to ``queued`` (a retry): its lease ends until a worker
        takes it again. ``started`` as for :meth:`final`."""
        item: Write = (task, "task.queued", {"lease": "none", "requeue": True})
        return self.publish_many(_after(started, item), retry_for=retry_for)[-1]

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
        return chunks_of(self.client.lrange(self._keys.output(task_id), 0, -1))

    def finished(self, task_id: str) -> bool:
        """True if the stored task is terminal (cancelled by a client, failed as lost, …)."""
        state = self.state(task_id)
        return state is not None and TaskState(state).terminal

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
            found.extend(
                task_id for task_id, state in zip(batch, states, strict=True) if state == _CANCELLED
            )
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
        script = self._scripts.publish
        calls = [
            (self._keys.publish(task.id), self.broker.publish_args(task, event_type, **options))
            for task, event_type, options in items
        ]

        def queue(pipe: redis.client.Pipeline) -> None:
            for keys, args in calls:
                script.queue_sync(pipe, keys, args)

        replies = self._retry(lambda: self._pipelined(queue), retry_for)
        return [
            None if reply is None else task.evolve(event_id=text(reply[0]), event_type=event_type)
            for (task, event_type, _), reply in zip(items, replies, strict=True)
        ]

    def state(self, task_id: str) -> str | None:
        """The stored task's state (``queued``, …), or None if unknown or expired."""
        state = self.client.hget(self._keys.task(task_id), "s")
        return None if state is None else text(state)

    def _pipelined(self, queue: Any) -> list[Any]:
        """Run the commands ``queue(pipe)`` puts on a pipeline, in one round trip; loads the
        scripts Redis lost (restarted, flushed) and runs them again."""

        def run() -> list[Any]:
            with self.client.pipeline(transaction=False) as pipe:
                queue(pipe)
                return list(pipe.execute(raise_on_error=False))

        replies = run()
        if any(isinstance(reply, redis.exceptions.NoScriptError) for reply in replies):
            self._scripts.publish.load_sync(self.client)
            replies = run()
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _retry(self, write: Any, retry_for: float) -> Any:
        deadline = time.monotonic() + retry_for
        delay = MIN_BACKOFF
        while True:
            try:
                return write()
            except UNREACHABLE:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)


def _after(started: tuple[Task, Task | None] | None, item: Write) -> list[Write]:
    """``item``, after the pending ``running`` of ``started`` if there is one."""
    if started is None:
        return [item]
    running, queued = started
    return [(running, "task.running", {"lease": "add", "create": queued}), item]
