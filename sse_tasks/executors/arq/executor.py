"""The web side: a hub whose tasks are an arq worker's functions, enqueued on its Redis."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import anyio
from arq.connections import ArqRedis, RedisSettings
from arq.constants import abort_jobs_ss, default_queue_name, expires_extra_ms, job_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..._core.models import Task
from ..._core.registry import TaskFunction
from ..._runner.engine import NotSent, RemoteEngine
from ..._runner.job import Job
from .message import HUB_KWARG, TAGS_KWARG, _setting, functions_of, names, signature_of

logger = logging.getLogger("sse_tasks.arq")

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)


class ArqExecutor(RemoteEngine):
    """Runs the hub's tasks on the arq workers of ``settings`` (the ``WorkerSettings``
    class, or dict, that ``arq`` runs, hooked with :func:`sse_tasks.arq.hooked`).

    The hub offers its ``functions`` by their arq names (``tasks`` chooses some), checks
    params against each function's signature (without arq's ``ctx``), and enqueues with
    ``enqueue_job`` on its ``redis_settings`` and ``queue_name`` (the sse_tasks id is the
    arq job id); if that Redis cannot be reached within ``send_timeout`` seconds, 503
    ``executor_unavailable`` and the id is refused (a late job is discarded unrun).
    ``DELETE`` stores ``cancelled`` and aborts the job (``Job.abort``; the hook turns
    ``allow_abort_jobs`` on): a waiting one is never run, a running one is cancelled
    at its next ``await``, or at its next ``progress()``/``check()``.
    """

    name = "arq Redis"

    def __init__(
        self,
        settings: Any,
        tasks: Iterable[str] | None = None,
        *,
        redis_settings: RedisSettings | None = None,
        send_timeout: float = 10.0,
    ) -> None:
        if send_timeout <= 0:
            raise ValueError("send_timeout must be positive")
        super().__init__()
        self.functions = functions_of(settings)
        if tasks is not None:
            chosen = tuple(tasks)
            unknown = [name for name in chosen if name not in self.functions]
            if unknown:
                raise ValueError(f"the arq settings have no function named {names(unknown)}")
            self.functions = {name: self.functions[name] for name in chosen}
        self.redis_settings = redis_settings or _setting(settings, "redis_settings", None) or RedisSettings()
        self.queue_name = _setting(settings, "queue_name", default_queue_name)
        self.job_serializer = _setting(settings, "job_serializer", None)
        self.send_timeout = send_timeout

    def registrations(self) -> Iterable[tuple[str, TaskFunction]]:
        return [(name, signature_of(function.coroutine)) for name, function in self.functions.items()]

    def pool(self) -> ArqRedis:
        """A client of arq's Redis for one send or revoke (closed with it on every redis-py),
        every socket operation bounded (arq's ``create_pool`` retries a refused connection
        for seconds: a 503 should not wait)."""
        s = self.redis_settings
        bound = self.send_timeout / 5
        return ArqRedis(
            host=s.host,
            port=s.port,
            db=s.database,
            username=s.username,
            password=s.password,
            ssl=s.ssl,
            socket_timeout=bound,
            socket_connect_timeout=bound,
            job_serializer=self.job_serializer,
            default_queue_name=self.queue_name,
        )

    async def send(self, job: Job) -> None:
        hub = {"owner": job.task.owner or "", "created_at": job.task.created_at}
        kwargs = {**job.params, HUB_KWARG: hub}
        if job.task.tags:
            kwargs[TAGS_KWARG] = list(job.task.tags)
        try:
            with anyio.fail_after(self.send_timeout):
                await self._enqueue(job.task.id, job.task.name, kwargs)
        except _UNREACHABLE as exc:
            raise NotSent(f"the arq Redis is unreachable: {exc}") from exc

    async def _enqueue(self, job_id: str, name: str, kwargs: dict[str, Any]) -> None:
        """``enqueue_job``'s writes, in one transaction. Its ``WATCH`` (a guard against an
        id taken twice; the hub's ids are new) holds a connection that redis-py 6+ does
        not give back to the pool with arq 0.25, the arq that installs beside it."""
        now = timestamp_ms()
        body = serialize_job(name, (), kwargs, None, now, serializer=self.job_serializer)
        async with self.pool() as pool, pool.pipeline(transaction=True) as pipe:
            pipe.psetex(job_key_prefix + job_id, expires_extra_ms, body)
            pipe.zadd(self.queue_name, {job_id: now})
            await pipe.execute()

    async def revoke(self, task: Task) -> None:
        # Job.abort's writes, without waiting for the job's result.
        try:
            with anyio.fail_after(self.send_timeout):
                async with self.pool() as pool:
                    score = await pool.zscore(self.queue_name, task.id)
                    if score is not None and score > timestamp_ms():  # deferred: taken (and aborted) now
                        await pool.zadd(self.queue_name, {task.id: 1})
                    await pool.zadd(abort_jobs_ss, {task.id: timestamp_ms()})
        except _UNREACHABLE as exc:
            # Stored as cancelled: the hook discards it when a worker takes it.
            logger.warning("task %s cancelled; aborting it in arq failed: %s", task.id, exc)
