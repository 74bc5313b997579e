"""A blocking writer to a Redis broker's keys, for processes without an event loop.

Worker processes of another engine (Celery) report the tasks they run through it: the
same scripts, the same compare-and-set and the same leases as :class:`RedisBroker`,
whose options (URL, prefix, history, retention, lease) it takes. Safe to share between
threads; after a ``fork`` redis-py opens new connections in the child.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import redis

from ..._core import codec
from ..._core.models import OutputChunk, Task
from . import RedisBroker
from .link import UNREACHABLE
from .reader import MAX_BACKOFF, MIN_BACKOFF, text
from .records import task_of

logger = logging.getLogger("sse_tasks.redis")

_TERMINAL = {"succeeded", "failed", "cancelled"}


class SyncWriter:
    """Publishes state changes and output of tasks run by this process, blocking.

    Writes are retried with backoff for up to ``retry_for`` seconds while Redis is
    unreachable (each carries a token, so a retry that had in fact succeeded is not
    applied twice); then ``redis`` errors propagate.
    """

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
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
        """Store ``task`` with its event (``publish.lua``); the stored snapshot, or None when
        the compare-and-set refused it (the task is terminal, or unknown and neither queued
        nor given its ``create`` snapshot, stored with a ``task.queued`` event first)."""
        options = {"lease": lease, "requeue": requeue, "create": create}
        return self.publish_many([(task, event_type, options)], retry_for=retry_for)[0]

    def publish_many(
        self, items: Sequence[tuple[Task, str, dict[str, Any]]], *, retry_for: float = 0.0
    ) -> list[Task | None]:
        """Publish several events in one round trip, in order (each its own compare-and-set;
        ``items`` are ``(task, event_type, publish options)``); the stored snapshots."""
        broker = self.broker
        script = broker._scripts.publish
        calls = [
            (broker._keys.publish(task.id), broker.publish_args(task, event_type, **options))
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

    def receive(self, queued: Task) -> str | None:
        """A worker received the message of ``queued``, a task the hub sent: store it
        ``queued`` unless it is stored already, in one round trip. Returns the stored state
        (``"queued"``, ``"cancelled"``, …); ``"refused"`` if the hub refused it (it
        answered 503: the task must not run); None if it is gone (it ran and expired).

        Once this has stored it, the hub no longer refuses it (``refuse.lua``), so the
        answer is final whichever of the two comes first."""
        broker = self.broker
        keys = broker._keys
        args = broker.publish_args(queued, "task.queued", lease="none")

        def queue(pipe: redis.client.Pipeline) -> None:
            broker._scripts.publish.queue_sync(pipe, keys.publish(queued.id), args)
            pipe.hget(keys.task(queued.id), "s")
            pipe.exists(keys.refused(queued.id))

        created, state, refused = self._pipelined(queue)
        if created is not None:
            return "queued"
        if state is not None:
            return text(state)
        # Neither created nor stored: refused, or it finished and expired meanwhile.
        return "refused" if refused else None

    def _pipelined(self, queue: Any) -> list[Any]:
        """Run the commands ``queue(pipe)`` puts on a pipeline, in one round trip; loads the
        scripts Redis lost (restarted, flushed) and runs them again."""

        def run() -> list[Any]:
            with self.client.pipeline(transaction=False) as pipe:
                queue(pipe)
                return list(pipe.execute(raise_on_error=False))

        replies = run()
        if any(isinstance(reply, redis.exceptions.NoScriptError) for reply in replies):
            self.broker._scripts.publish.load_sync(self.client)
            replies = run()
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def publish_output(self, chunk: OutputChunk, *, retry_for: float = 0.0) -> str | None:
        """Keep ``chunk`` and append its ``task.output`` event; its event id, or None if
        the task is unknown or terminal."""
        broker = self.broker
        args = broker.output_args(chunk)
        keys = broker._keys.publish_output(chunk.task_id)
        reply = self._retry(lambda: broker._scripts.output.run_sync(self.client, keys, args), retry_for)
        return None if reply is None else text(reply[0]).partition(" ")[0]

    def get(self, task_id: str) -> Task | None:
        """The stored snapshot, or None if unknown or expired."""
        return task_of(self.client.hmget(self.broker._keys.task(task_id), ["d", "i", "t"]))

    def output(self, task_id: str) -> list[OutputChunk]:
        """The task's stored output chunks, in order."""
        rows: list[Any] = self.client.lrange(self.broker._keys.output(task_id), 0, -1)
        chunks = []
        for row in rows:
            event_id, _, data = text(row).partition(" ")
            chunks.append(OutputChunk.from_record({**codec.loads(data), "event_id": event_id}))
        return chunks

    def state(self, task_id: str) -> str | None:
        """The stored task's state (``queued``, …), or None if unknown or expired."""
        state = self.client.hget(self.broker._keys.task(task_id), "s")
        return None if state is None else text(state)

    def cancelled_ids(self) -> list[str]:
        """Ids of the retained tasks that ended ``cancelled`` (at most ``max_tasks``)."""
        keys = self.broker._keys
        ids = [text(raw) for raw in self.client.zrange(keys.finished, 0, -1)]
        found: list[str] = []
        for start in range(0, len(ids), 1000):
            batch = ids[start : start + 1000]
            with self.client.pipeline(transaction=False) as pipe:
                for task_id in batch:
                    pipe.hget(keys.task(task_id), "s")
                states = pipe.execute()
            found.extend(
                task_id for task_id, state in zip(batch, states, strict=True) if state == b"cancelled"
            )
        return found

    def finished(self, task_id: str) -> bool:
        """True if the stored task is terminal (cancelled by a client, failed as lost, …)."""
        return self.state(task_id) in _TERMINAL

    def renew(self, task_ids: Iterable[str]) -> None:
        """Push the lease deadline of each task (those still leased)."""
        ids = list(task_ids)
        if ids:
            leases = self.broker._keys.leases
            lease_ms = self.broker._leases.lease_ms
            self.broker._scripts.renew.run_sync(self.client, {"leases": leases}, {"lease_ms": lease_ms}, ids)

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

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
