"""The web side: a hub whose tasks are a Dramatiq broker's actors, sent to its workers."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import anyio
import anyio.to_thread
import dramatiq

from ..._core.models import Task
from ..._core.registry import RegisteredTask, TaskFunction
from ..._runner.engine import NotSent, RemoteEngine
from ..._runner.job import Job
from .message import HUB_OPTION, OWNER_OPTION, TAGS_OPTION

logger = logging.getLogger("sse_tasks.dramatiq")


class DramatiqEngine(RemoteEngine):
    """Runs the hub's tasks as messages to the actors of the Dramatiq ``broker``
    (default: ``dramatiq.get_broker()``).

    The hub offers the broker's actors by their actor names (``actors`` chooses some),
    checks params against each actor's function, enqueues a message whose id is the
    sse_tasks id (with the params as keyword arguments) and answers 503
    ``executor_unavailable`` if Dramatiq's broker cannot take it within ``send_timeout``
    seconds: that task never runs (its id is refused; a worker skips a late message).
    The workers report through :class:`~sse_tasks.dramatiq.StatusMiddleware`.

    Dramatiq has no revoke: ``DELETE`` stores ``cancelled``; a worker skips the message
    when it takes it, and a running task stops at its next ``progress()``/``check()``.
    """

    name = "Dramatiq"

    def __init__(
        self,
        broker: dramatiq.Broker | None = None,
        actors: Iterable[str] | None = None,
        *,
        send_timeout: float = 10.0,
    ) -> None:
        if send_timeout <= 0:
            raise ValueError("send_timeout must be positive")
        super().__init__()
        self.dramatiq = broker if broker is not None else dramatiq.get_broker()
        self.send_timeout = send_timeout
        self._chosen = None if actors is None else tuple(actors)

    def registrations(self) -> Iterable[tuple[str, TaskFunction]]:
        declared = self.dramatiq.get_declared_actors()
        if self._chosen is not None:
            unknown = [name for name in self._chosen if name not in declared]
            if unknown:
                raise ValueError(f"the Dramatiq broker has no actor named {', '.join(map(repr, unknown))}")
            return [(name, self._actor(name).fn) for name in self._chosen]
        offered = []
        for name in sorted(declared):
            fn = self._actor(name).fn
            try:
                RegisteredTask.build(fn, name, None)
            except (TypeError, ValueError) as exc:
                logger.warning("Dramatiq actor %r is not offered by the hub: %s", name, exc)
                continue
            offered.append((name, fn))
        return offered

    def _actor(self, name: str) -> Any:
        return self.dramatiq.get_actor(name)

    async def send(self, job: Job) -> None:
        actor = self._actor(job.task.name)
        options: dict[str, Any] = {HUB_OPTION: True, OWNER_OPTION: job.task.owner or ""}
        if job.task.tags:
            options[TAGS_OPTION] = list(job.task.tags)
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=actor.queue_name,
            actor_name=actor.actor_name,
            args=(),
            kwargs=job.params,
            options=options,
            message_id=job.task.id,
        )

        def enqueue() -> None:
            self.dramatiq.enqueue(message)

        try:
            with anyio.fail_after(self.send_timeout):
                await anyio.to_thread.run_sync(enqueue, abandon_on_cancel=True)
        except Exception as exc:
            if not _unreachable(exc):
                raise
            raise NotSent(f"the Dramatiq broker is unreachable: {exc!r}") from exc

    async def revoke(self, task: Task) -> None:
        """Abort the message with ``dramatiq-abort``'s ``Abortable`` middleware if the broker
        has one (a running task is interrupted at once). Without it the stored ``cancelled``
        is what stops it: a waiting message is skipped, a running task's next ``check()``
        raises."""
        abortable = _abortable(self.dramatiq)
        if abortable is None:
            return

        def abort() -> None:
            abortable.abort(task.id)

        with anyio.fail_after(self.send_timeout):
            await anyio.to_thread.run_sync(abort, abandon_on_cancel=True)


def _abortable(broker: dramatiq.Broker) -> Any:
    """The broker's ``dramatiq_abort.Abortable`` middleware, if it has one."""
    for middleware in broker.middleware:
        if type(middleware).__name__ == "Abortable" and hasattr(middleware, "abort"):
            return middleware
    return None


def _unreachable(exc: BaseException) -> bool:
    """True for what a Dramatiq broker that cannot be reached raises."""
    import redis
    from dramatiq import errors as dramatiq_errors

    # BrokerConnectionError since Dramatiq 2 (ConnectionError, deprecated, before).
    name = "BrokerConnectionError" if hasattr(dramatiq_errors, "BrokerConnectionError") else "ConnectionError"
    connection: type[Exception] = getattr(dramatiq_errors, name)
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError, connection, OSError, TimeoutError))
