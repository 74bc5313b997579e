"""The web side: a hub whose tasks are functions run by RQ workers (a remote engine)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio
import anyio.to_thread
import redis
import rq
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import JobStatus

from ..._core.models import Task
from ..._core.registry import TaskFunction
from ..._runner.engine import NotSent, RemoteEngine
from ..._runner.job import Job
from ...engines.tags import TAGS_KEY
from .worker import META_KEY

logger = logging.getLogger("sse_tasks.rq")

_WAITING = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


class RQEngine(RemoteEngine):
    """Runs the hub's tasks, plain functions, on the RQ workers of ``queue``.

    ``tasks``: the functions offered (by their ``__name__``) or a mapping of name to
    function; each must be importable by the workers. ``POST /tasks`` checks params
    against the function's signature and enqueues it on ``queue`` under the sse_tasks id
    as the job id; 503 ``executor_unavailable`` if RQ's Redis cannot take it within
    ``send_timeout`` seconds (the hub refuses the id first: a worker that gets it later
    discards it unrun). ``DELETE`` stores ``cancelled``, then ``job.cancel()`` for a
    waiting job and RQ's ``send_stop_job_command`` for a running one (the job stops at
    its next ``progress()``/``check()``, else its horse is killed; see ``Worker``).
    ``job_timeout``, ``result_ttl`` and ``retry`` (an ``rq.Retry``) go to every enqueue.
    """

    name = "RQ"

    def __init__(
        self,
        queue: rq.Queue,
        tasks: Iterable[Callable[..., Any]] | Mapping[str, Callable[..., Any]],
        *,
        send_timeout: float = 10.0,
        job_timeout: int | None = None,
        result_ttl: int | None = None,
        retry: rq.Retry | None = None,
    ) -> None:
        if send_timeout <= 0:
            raise ValueError("send_timeout must be positive")
        super().__init__()
        self.tasks = dict(tasks) if isinstance(tasks, Mapping) else {f.__name__: f for f in tasks}
        self.send_timeout = send_timeout
        self.options: dict[str, Any] = {"job_timeout": job_timeout, "result_ttl": result_ttl, "retry": retry}
        pool = queue.connection.connection_pool
        bound = send_timeout / 5
        kwargs = {**pool.connection_kwargs, "socket_timeout": bound, "socket_connect_timeout": bound}
        bounded = redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
        connection = redis.Redis(connection_pool=bounded)
        #: The hub's own handle on the queue: every socket operation bounded.
        self.queue = rq.Queue(queue.name, connection=connection, serializer=queue.serializer)

    def registrations(self) -> Iterable[tuple[str, TaskFunction]]:
        return list(self.tasks.items())

    async def send(self, job: Job) -> None:
        task = job.task
        meta: dict[str, Any] = {
            META_KEY: {"name": task.name, "owner": task.owner or "", "created_at": task.created_at}
        }
        if task.tags:
            meta[TAGS_KEY] = list(task.tags)

        def enqueue() -> None:
            self.queue.enqueue_call(
                self.tasks[task.name],
                kwargs=job.params,
                job_id=task.id,
                meta=meta,
                timeout=self.options["job_timeout"],
                result_ttl=self.options["result_ttl"],
                retry=self.options["retry"],
            )

        try:
            await self._bounded(enqueue)
        except Exception as exc:
            if not _unreachable(exc):
                raise
            raise NotSent(f"RQ's Redis is unreachable: {exc}") from exc

    async def revoke(self, task: Task) -> None:
        def stop() -> None:
            connection = self.queue.connection
            try:
                job = rq.job.Job.fetch(task.id, connection=connection, serializer=self.queue.serializer)
            except NoSuchJobError:
                return
            status = job.get_status(refresh=False)
            if status in _WAITING:
                try:
                    job.cancel()
                except InvalidJobOperation:
                    pass  # cancelled already
            elif status == JobStatus.STARTED:
                try:
                    send_stop_job_command(connection, task.id, serializer=self.queue.serializer)
                except InvalidJobOperation:
                    pass  # it ended meanwhile

        try:
            await self._bounded(stop)
        except Exception as exc:
            if not _unreachable(exc):
                raise
            # Stored as cancelled: a worker that takes it later discards it.
            logger.warning("task %s cancelled; stopping it in RQ failed: %s", task.id, exc)

    async def _bounded(self, call: Callable[[], None]) -> None:
        with anyio.fail_after(self.send_timeout):
            await anyio.to_thread.run_sync(call, abandon_on_cancel=True)


def _unreachable(exc: BaseException) -> bool:
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError, TimeoutError))
