"""The web side: a hub whose tasks are a Huey app's, enqueued for its consumer (a remote engine)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import anyio.to_thread
from huey import Huey
from huey.api import TaskWrapper

from ..._core.models import Task
from ..._core.registry import RegisteredTask, TaskFunction
from ..._runner.engine import NotSent, RemoteEngine
from ..._runner.job import Job
from ...engines.tags import TAGS_KEY
from .tasks import FROM_HUB, OWNER_KEY, function_of, task_classes, task_name

logger = logging.getLogger("sse_tasks.huey")


class HueyEngine(RemoteEngine):
    """Runs the hub's tasks on the consumer of the Huey app ``huey`` (a ``RedisHuey``).

    The hub offers the app's tasks by their Huey names (``tasks`` chooses some, as task
    wrappers; default all but periodic tasks and those with ``context=True``), checks
    params against each function's signature, enqueues it with the sse_tasks id as the
    Huey task id, and answers 503
    ``executor_unavailable`` if Huey's Redis cannot take it within ``send_timeout``
    seconds (the id is refused first: a consumer that gets it later discards it unrun).
    The consumer reports through :func:`sse_tasks.huey.connect`, on the hub's Redis broker.

    ``DELETE`` stores ``cancelled`` and revokes the task in Huey (``revoke_by_id``): a
    waiting one is skipped by the consumer; a running one stops at its next
    ``progress()``/``check()`` (Huey cannot stop a running task).
    """

    name = "Huey"

    def __init__(
        self, huey: Huey, tasks: Iterable[TaskWrapper] | None = None, *, send_timeout: float = 10.0
    ) -> None:
        if send_timeout <= 0:
            raise ValueError("send_timeout must be positive")
        super().__init__()
        self.huey = huey
        self.send_timeout = send_timeout
        self._chosen = None if tasks is None else tuple(tasks)

    def registrations(self) -> Iterable[tuple[str, TaskFunction]]:
        if self._chosen is not None:
            chosen = []
            for wrapper in self._chosen:
                if wrapper.huey is not self.huey:
                    raise ValueError(f"the task {task_name(wrapper.task_class)!r} is not this Huey app's")
                if wrapper.context:
                    raise ValueError(
                        f"the task {task_name(wrapper.task_class)!r} takes Huey's task (context=True): "
                        "the hub cannot offer it"
                    )
                chosen.append((task_name(wrapper.task_class), wrapper.func))
            return chosen
        offered = []
        for name, cls in sorted(task_classes(self.huey).items()):
            func = function_of(cls)
            if getattr(cls, "context", False):
                logger.warning("Huey task %r is not offered by the hub: it takes Huey's task", name)
                continue
            if func is None:
                logger.warning("Huey task %r is not offered by the hub: its function is unknown", name)
                continue
            try:
                RegisteredTask.build(func, name, None)
            except (TypeError, ValueError) as exc:
                logger.warning("Huey task %r is not offered by the hub: %s", name, exc)
                continue
            offered.append((name, func))
        return offered

    async def send(self, job: Job) -> None:
        cls = task_classes(self.huey)[job.task.name]
        kwargs = dict(job.params)
        if job.task.tags:
            kwargs[TAGS_KEY] = list(job.task.tags)  # the hook takes it out
        if job.task.owner:
            kwargs[OWNER_KEY] = job.task.owner  # so is this: a worker may store the task first
        task = cls(kwargs=kwargs, id=job.task.id)
        setattr(task, FROM_HUB, True)
        try:
            await self._bounded(lambda: self.huey.enqueue(task))
        except Exception as exc:
            if not _unreachable(exc):
                raise
            raise NotSent(f"Huey's Redis is unreachable: {exc}") from exc

    async def revoke(self, task: Task) -> None:
        try:
            # revoke_once: the consumer clears the flag as it skips the task.
            await self._bounded(lambda: self.huey.revoke_by_id(task.id, revoke_once=True))
        except Exception as exc:
            if not _unreachable(exc):
                raise
            # Stored as cancelled: the consumer's hook discards it when it takes it.
            logger.warning("task %s cancelled; revoking it in Huey failed: %s", task.id, exc)

    async def _bounded(self, call: Callable[[], Any]) -> None:
        """``call()`` in a thread, given up after ``send_timeout`` seconds."""
        with anyio.fail_after(self.send_timeout):
            await anyio.to_thread.run_sync(call, abandon_on_cancel=True)


def _unreachable(exc: BaseException) -> bool:
    """True for what Huey's Redis raises when it cannot be reached."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError))
