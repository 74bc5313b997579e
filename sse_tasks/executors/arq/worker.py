"""The worker side: arq's ``WorkerSettings`` hooked to report its jobs to the hub's Redis.

:func:`hooked` wraps each of the settings' functions and chains ``on_startup`` /
``on_shutdown``. Each job runs as an :class:`~sse_tasks.engines.AsyncRun` on the worker's
event loop, with one :class:`~sse_tasks.engines.AsyncKeeper` per worker, through an
:class:`~sse_tasks.engines.AsyncWriter`: a job's ``progress()``, ``output()`` and
``check()`` never wait for Redis. Progress is kept as the latest value and published by
the keeper at most every ``progress_interval`` seconds per job (a burst from many jobs
costs one write per job per interval); output is written in order; the keeper also reads
cancels and renews the leases of the jobs running here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import time
from typing import Any

from arq.worker import Function, Retry, RetryJob

from ..._core.errors import TaskCancelled
from ..._core.models import MAX_METADATA_BYTES, TaskState, valid_task_id
from ...brokers import is_redis_url
from ...brokers.redis import RedisBroker
from ...engines import AsyncKeeper, AsyncRun, AsyncWriter, SyncWriter, error_of
from .message import HUB_KWARG, TAGS_KWARG, _setting, functions_of, queued_snapshot

logger = logging.getLogger("sse_tasks.arq")

#: The key of the worker's :class:`ArqHook` in arq's ``ctx``.
CTX_KEY = "sse_tasks"


class Cancelled(Exception):
    """What arq records for a job whose task was cancelled through sse_tasks."""


class ArqHook:
    """One per arq worker (in its ``ctx``): the writer and the keeper of its runs."""

    def __init__(
        self,
        writer: AsyncWriter,
        blocking: SyncWriter,
        *,
        job_timeout: float,
        max_tries: int,
        retry_jobs: bool = True,
        progress_interval: float,
        check_interval: float,
        max_output_bytes: int,
        max_output_chunks: int,
        max_metadata_bytes: int = MAX_METADATA_BYTES,
        start_delay: float = 0.05,
    ) -> None:
        self.writer = writer
        self.blocking = blocking
        self.job_timeout = job_timeout
        self.max_tries = max_tries
        self.retry_jobs = retry_jobs
        self.max_output_bytes = max_output_bytes
        self.max_output_chunks = max_output_chunks
        self.max_metadata_bytes = max_metadata_bytes
        self.start_delay = start_delay
        self.keeper = AsyncKeeper(
            writer, blocking, progress_interval=progress_interval, check_interval=check_interval
        )
        #: arq's main task (it runs ``on_startup``): cancelled when the worker is told to stop.
        self.main_task: asyncio.Task[Any] | None = None

    @property
    def runs(self) -> dict[str, AsyncRun]:
        """The attempts running in this worker, by task id."""
        return self.keeper.runs

    def start(self) -> None:
        """Start the keeper (from ``on_startup``, on arq's main task)."""
        self.main_task = asyncio.current_task()
        self.keeper.ensure_started()

    def stopping(self) -> bool:
        """True once the worker is stopping (SIGTERM, SIGINT): arq cancels its running
        jobs and then its main task, in one go."""
        task = self.main_task
        if task is None:
            return False
        cancelling = getattr(task, "cancelling", None)  # Python 3.11+
        return task.done() or (cancelling is not None and cancelling() > 0)

    async def stop(self) -> None:
        await self.keeper.stop()
        await self.writer.close()
        await asyncio.to_thread(self.blocking.close)

    async def run(
        self, function: Function, ctx: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run one arq job as a task: the wrapper every hooked function is."""
        hub = kwargs.pop(HUB_KWARG, None)
        tags = kwargs.pop(TAGS_KWARG, None)
        job_id = ctx.get("job_id")
        if not isinstance(job_id, str) or not valid_task_id(job_id):
            return await function.coroutine(ctx, *args, **kwargs)
        queued = queued_snapshot(job_id, function.name, hub, ctx.get("enqueue_time"), tags)
        job_try = ctx.get("job_try") or 1
        try:
            if hub is not None and await self.writer.receive(queued) != TaskState.QUEUED.value:
                return None  # refused (the hub answered 503), cancelled while it waited, or gone
            stored = await self.writer.get(job_id) if job_try > 1 else None
            if stored is not None and stored.terminal:
                return None  # ended while it waited for this try (cancelled, presumed dead)
            earlier = await self.writer.stored_output(job_id) if stored is not None else []
        except self.writer.unreachable:
            logger.warning("task %s: run unreported, Redis unreachable", job_id)
            return await function.coroutine(ctx, *args, **kwargs)
        run = AsyncRun(
            stored or queued,
            dict(kwargs),
            self.writer,
            self.keeper,
            max_output_bytes=self.max_output_bytes,
            max_output_chunks=self.max_output_chunks,
            max_metadata_bytes=self.max_metadata_bytes,
            earlier_output=earlier,
        )
        self.keeper.ensure_started()
        self.runs[job_id] = run
        run.begin(self.start_delay, create=queued, stored=hub is not None)  # the hub's: received
        begun = time.monotonic()
        run.enter()
        try:
            result = await function.coroutine(ctx, *args, **kwargs)
        except TaskCancelled:
            await run.finish(TaskState.CANCELLED)
            raise Cancelled(f"task {job_id} was cancelled") from None
        except (Retry, RetryJob):
            most = function.max_tries if function.max_tries is not None else self.max_tries
            await asyncio.shield(run.requeue(f"retry {job_try} of {most - 1}"))
            raise
        except asyncio.CancelledError as exc:
            if not _being_cancelled():  # the task's own (a future cancelled elsewhere): it failed
                await asyncio.shield(run.finish(TaskState.FAILED, error=error_of(exc)))
                raise
            # An abort (DELETE, arq's job.abort()), a timeout, or the worker stopping.
            timeout = function.timeout_s if function.timeout_s is not None else self.job_timeout
            if time.monotonic() - begun >= timeout:
                message = f"the job ran longer than {timeout:g} s"
                error: dict[str, str] | None = {"type": "TimeoutError", "message": message}
                await asyncio.shield(run.finish(TaskState.FAILED, error=error))
            elif self.stopping():
                most = function.max_tries if function.max_tries is not None else self.max_tries
                await asyncio.shield(self._stopped(run, job_try, most))
            else:
                await asyncio.shield(run.finish(TaskState.CANCELLED))
            raise
        except Exception as exc:
            await run.finish(TaskState.FAILED, error=error_of(exc))
            raise
        except BaseException as exc:
            # SystemExit, KeyboardInterrupt, its own: arq's worker stops on it, the task failed.
            await asyncio.shield(run.finish(TaskState.FAILED, error=error_of(exc)))
            raise
        finally:
            run.leave()
            self.runs.pop(job_id, None)
        await run.succeed(result)
        return result

    async def _stopped(self, run: AsyncRun, job_try: int, most: int) -> None:
        """The worker stopped mid-job: arq leaves the job in its queue (``retry_jobs``) and
        runs it again on the next worker while tries are left; otherwise it is over."""
        if self.retry_jobs and job_try < most:
            await run.requeue(f"the worker stopped; arq runs it again (try {job_try + 1} of {most})")
            return
        reason = "retry_jobs is off" if not self.retry_jobs else f"it was try {job_try} of {most}"
        message = f"the worker stopped while the job ran; arq will not run it again ({reason})"
        await run.finish(TaskState.FAILED, error={"type": "WorkerStopped", "message": message})


def hooked(
    settings: Any,
    hub_url: str | None = None,
    *,
    progress_interval: float = 0.1,
    check_interval: float = 0.1,
    max_output_bytes: int = 1 << 20,
    max_output_chunks: int = 10_000,
    max_metadata_bytes: int = MAX_METADATA_BYTES,
) -> Any:
    """Hook arq's ``WorkerSettings`` (a class or dict, changed in place and returned) to
    report every job to the hub's Redis broker ``hub_url`` (default: ``$SSE_TASKS_BROKER``
    when the worker starts, with the hub's options such as ``?lease=``).

    Each function is wrapped (the job runs as a task whose id is the arq job id;
    ``current_task()`` works inside it), ``on_startup``/``on_shutdown`` are chained to
    start and stop the writer, and ``allow_abort_jobs`` is turned on (``DELETE`` aborts).
    """
    if _setting(settings, "sse_tasks_hooked", False):
        return settings
    job_timeout = float(_setting(settings, "job_timeout", 300))
    max_tries = int(_setting(settings, "max_tries", 5))
    retry_jobs = bool(_setting(settings, "retry_jobs", True))
    wrapped = [_wrap(function) for function in functions_of(settings).values()]
    prior_startup = _setting(settings, "on_startup", None)
    prior_shutdown = _setting(settings, "on_shutdown", None)

    async def on_startup(ctx: dict[str, Any]) -> None:
        url = hub_url or os.environ.get("SSE_TASKS_BROKER") or ""
        if not is_redis_url(url):
            raise RuntimeError("sse_tasks.arq: SSE_TASKS_BROKER (or hub_url) must be the hub's Redis URL")
        broker = RedisBroker(url)
        hook = ArqHook(
            AsyncWriter(broker),
            SyncWriter(broker),
            job_timeout=job_timeout,
            max_tries=max_tries,
            retry_jobs=retry_jobs,
            progress_interval=progress_interval,
            check_interval=check_interval,
            max_output_bytes=max_output_bytes,
            max_output_chunks=max_output_chunks,
            max_metadata_bytes=max_metadata_bytes,
        )
        ctx[CTX_KEY] = hook
        hook.start()
        if prior_startup is not None:
            await prior_startup(ctx)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        try:
            if prior_shutdown is not None:
                await prior_shutdown(ctx)
        finally:
            hook = ctx.pop(CTX_KEY, None)
            if isinstance(hook, ArqHook):
                await hook.stop()

    changes = {
        "functions": wrapped,
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        "allow_abort_jobs": True,
        "sse_tasks_hooked": True,
    }
    for name, value in changes.items():
        if isinstance(settings, dict):
            settings[name] = value
        else:
            setattr(settings, name, value)
    return settings


def _being_cancelled() -> bool:
    """True if the job's asyncio task is being cancelled (an abort, a timeout, the worker
    stopping); False for a ``CancelledError`` the job's own code raised (a future
    cancelled elsewhere). Python 3.10 cannot tell them apart: every one is a cancel."""
    cancelling = getattr(asyncio.current_task(), "cancelling", None)
    return cancelling is None or bool(cancelling())


def _wrap(function: Function) -> Function:
    original = function.coroutine

    @functools.wraps(original)
    async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        hook = ctx.get(CTX_KEY)
        if not isinstance(hook, ArqHook):
            raise RuntimeError("sse_tasks.arq: the worker's on_startup did not run hooked()'s")
        return await hook.run(function, ctx, args, kwargs)

    return dataclasses.replace(function, coroutine=run)
