"""The remote seam: an engine whose own workers run the work (Celery, RQ, arq, …).

The hub sends each job to the engine (:meth:`RemoteEngine.send`) and revokes cancelled
ones (:meth:`RemoteEngine.revoke`); the engine's workers report through the worker side
(:mod:`sse_tasks.engines`) on the hub's Redis broker. Everything else is here, once for
every engine: the broker is checked before a send, a failed send refuses the id so a
503 means the task never runs, and ``queued`` is stored unleased once the job is sent.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .._core.errors import Unavailable
from .._core.models import Task
from .._core.registry import TaskFunction
from ..brokers import Broker
from .job import Job

if TYPE_CHECKING:  # the redis extra: imported when an engine is bound
    from ..brokers.redis import RedisBroker

logger = logging.getLogger("sse_tasks")


class NotSent(Exception):
    """Raised by :meth:`RemoteEngine.send` when the engine's queue cannot be reached. The
    message may have left all the same (a lost reply, a client that retries): the hub
    refuses the id before it answers 503, and workers discard a refused task."""


class RemoteEngine(abc.ABC):
    """An engine whose workers run the hub's tasks; the hub sends and revokes them."""

    #: The engine's name, in messages (``the Celery broker is unreachable``).
    name = "engine"

    def __init__(self) -> None:
        self.broker: RedisBroker | None = None

    def bind(self, broker: Broker) -> None:
        """Called once with the hub's broker: workers report through it, so it is Redis."""
        from ..brokers.redis import RedisBroker

        if not isinstance(broker, RedisBroker):
            raise ValueError(
                f"the {self.name} engine needs the hub on the Redis broker (redis://…): "
                "its workers report through it"
            )
        self.broker = broker

    def registrations(self) -> Iterable[tuple[str, TaskFunction]]:
        """Tasks the engine defines, registered on the hub as ``(name, function)`` (the
        function's signature is what clients' params are checked against)."""
        return ()

    @abc.abstractmethod
    async def send(self, job: Job) -> None:
        """Put the job on the engine's queue under its task id (``job.task.id``), with
        ``job.params`` as keyword arguments; raise :class:`NotSent` if the queue cannot be
        reached. It returns once the job is sent: it then runs, whatever happens here."""

    async def aclose(self) -> None:
        """The hub is closing: release the engine's connections (by default, nothing)."""
        return None

    @abc.abstractmethod
    async def revoke(self, task: Task) -> None:
        """A client cancelled ``task`` (its ``cancelled`` is stored): stop it on the
        engine, if it can (a worker that checks the stored state stops it anyway)."""


class Sender:
    """The runner's side of a remote engine: admission, refusal, and ``queued`` unleased."""

    def __init__(self, engine: RemoteEngine, broker: Broker) -> None:
        engine.bind(broker)
        if engine.broker is None:
            raise RuntimeError("a RemoteEngine's bind() must call super().bind()")
        self.engine = engine
        self.broker = engine.broker
        self.registrations = list(engine.registrations())
        self.names = frozenset(name for name, _ in self.registrations)

    async def queue(self, job: Job) -> Task:
        """Send the job and store it ``queued``. Raises :class:`Unavailable` (503) only
        when the job is never run: the broker is down (nothing sent), or the send failed
        and the id is refused (a late message is discarded)."""
        task = job.task
        # The engine's queue takes the job before `queued` is stored: see that the broker
        # answers first, so an outage refuses it (503) with nothing sent.
        await self.broker.get(task.id)
        try:
            await self.engine.send(job)
        except NotSent as exc:
            if await self._refuse(task.id):
                raise Unavailable(str(exc), code="executor_unavailable", retry_after=2) from None
            logger.warning("task %s: its send failed (%s), but a worker has it already", task.id, exc)
        return await self._store_sent(task)

    async def _refuse(self, task_id: str) -> bool:
        """Refuse the task for good before answering 503 (its message may have left); False
        if a worker has already stored it."""
        try:
            return await self.broker.refuse(task_id)
        except Unavailable:
            logger.error(
                "task %s: the %s and the hub's Redis are unreachable: the refusal is not stored, "
                "and a late delivery of its message would run it",
                task_id,
                self.engine.name,
            )
            raise

    async def _store_sent(self, task: Task) -> Task:
        """Store ``queued`` for a task the engine has taken. It was sent, so it runs whatever
        the broker answers now: the answer is never a 503 (that says it never runs)."""
        try:
            event = await self.broker.publish_sent(task)
            if event is not None:
                return event.task
            # A worker stored it first (or it already ran and expired).
            return await self.broker.get(task.id) or task
        except Unavailable as exc:
            logger.warning("task %s sent; not stored as queued (its worker stores it): %s", task.id, exc)
            return task

    async def revoke(self, task: Task) -> None:
        try:
            await self.engine.revoke(task)
        except Exception:
            logger.exception("task %s cancelled; stopping its work failed", task.id)
