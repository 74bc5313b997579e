"""The web side: a hub whose tasks are a taskiq broker's, kicked to its workers."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Iterable
from typing import Any

import anyio
from taskiq import AsyncBroker
from taskiq.exceptions import SendTaskError
from taskiq.kicker import AsyncKicker
from taskiq_dependencies.dependency import Dependency

from ..._core.models import Task
from ..._core.registry import RegisteredTask, TaskFunction
from ..._runner.engine import NotSent, RemoteEngine
from ..._runner.job import Job
from ...engines.tags import tags_value
from .middleware import CREATED_LABEL, HUB_LABEL, OWNER_LABEL, TAGS_LABEL

logger = logging.getLogger("sse_tasks.taskiq")


class TaskiqExecutor(RemoteEngine):
    """Runs the hub's tasks on the workers of the taskiq ``broker``.

    The hub offers the broker's tasks by their taskiq names (``tasks`` chooses some),
    checks params against each function's signature, kicks it with the sse_tasks id as
    taskiq's ``task_id``, and answers 503 ``executor_unavailable`` if the broker's queue
    cannot take it within ``send_timeout`` seconds (the id is refused first: a message
    that left all the same is discarded by the worker). The workers report through
    :class:`sse_tasks.taskiq.StatusMiddleware`. ``DELETE`` is cooperative: taskiq has no
    revoke; the task's next ``progress()``/``check()`` raises, a queued one is discarded.
    """

    name = "taskiq"

    def __init__(
        self, broker: AsyncBroker, tasks: Iterable[str] | None = None, *, send_timeout: float = 10.0
    ) -> None:
        if send_timeout <= 0:
            raise ValueError("send_timeout must be positive")
        super().__init__()
        self.taskiq_broker = broker
        self.send_timeout = send_timeout
        self._chosen = None if tasks is None else tuple(tasks)

    def registrations(self) -> Iterable[tuple[str, TaskFunction]]:
        tasks = self.taskiq_broker.get_all_tasks()
        if self._chosen is not None:
            unknown = [name for name in self._chosen if name not in tasks]
            if unknown:
                raise ValueError(f"the taskiq broker has no task named {', '.join(map(repr, unknown))}")
            return [(name, _func(tasks[name].original_func)) for name in self._chosen]
        offered = []
        for name in sorted(tasks):
            func = _func(tasks[name].original_func)
            try:
                RegisteredTask.build(func, name, None)
            except (TypeError, ValueError) as exc:
                logger.warning("taskiq task %r is not offered by the hub: %s", name, exc)
                continue
            offered.append((name, func))
        return offered

    async def send(self, job: Job) -> None:
        task = self.taskiq_broker.find_task(job.task.name)
        ours = {HUB_LABEL: "1", OWNER_LABEL: job.task.owner or "", CREATED_LABEL: job.task.created_at}
        if job.task.tags:
            ours[TAGS_LABEL] = tags_value(job.task.tags)
        labels = {**(task.labels if task is not None else {}), **ours}  # the task's own: retries, timeout
        kicker: AsyncKicker[..., object] = AsyncKicker(
            task_name=job.task.name, broker=self.taskiq_broker, labels=labels
        )
        try:
            with anyio.fail_after(self.send_timeout):
                await kicker.with_task_id(job.task.id).kiq(**job.params)
        except (OSError, TimeoutError, SendTaskError) as exc:
            cause = exc.__cause__ or exc
            raise NotSent(f"the taskiq broker is unreachable: {cause}") from exc

    async def aclose(self) -> None:
        """Shut the broker down in the hub's process (its connections belong to the hub's loop)."""
        with anyio.CancelScope(shield=True):  # the hub closes in a cancelled task group
            await self.taskiq_broker.shutdown()

    async def revoke(self, task: Task) -> None:
        """taskiq has no revoke: the worker reads the stored ``cancelled`` (see the class)."""


def _func(func: TaskFunction) -> TaskFunction:
    """The task's own function (the middleware may have wrapped it in this process), as
    clients call it: its taskiq dependencies (``TaskiqDepends()`` defaults) are the
    worker's to fill, so they are left out of the signature params are checked against."""
    func = getattr(func, "__wrapped__", func)
    signature = inspect.signature(func)
    params = [p for p in signature.parameters.values() if not isinstance(p.default, Dependency)]
    if len(params) == len(signature.parameters):
        return func

    @functools.wraps(func)
    def offered(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    offered.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return offered
