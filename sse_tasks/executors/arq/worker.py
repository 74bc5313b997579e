"""The worker side: arq's ``WorkerSettings`` hooked to report its jobs to the hub's Redis.

:func:`hooked` wraps each of the settings' functions and chains ``on_startup`` /
``on_shutdown``. Everything runs on the worker's event loop through an
:class:`~sse_tasks.engines.AsyncWriter`: a job's ``progress()``, ``output()`` and
``check()`` never wait for Redis. Progress is kept as the latest value and published by
one keeper task per worker at most every ``progress_interval`` seconds per job (a burst
from many jobs costs one write per job per interval); output is written in order by a
task of its own; the keeper also renews the leases of the jobs running here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
import os
import time
from collections.abc import Sequence
from typing import Any

from arq.worker import Function, Retry, RetryJob

from ..._core.budget import OutputBudget
from ..._core.context import CURRENT, TaskContext
from ..._core.errors import TaskCancelled
from ..._core.models import MAX_METADATA_BYTES, OutputChunk, Task, TaskState, utcnow
from ..._runner.job import error_of, result_error
from ...brokers.redis import RedisBroker
from ...brokers.redis.async_writer import AsyncWriter
from .message import HUB_KWARG, TAGS_KWARG, _setting, functions_of, queued_snapshot, valid_id

logger = logging.getLogger("sse_tasks.arq")

#: The key of the worker's :class:`ArqHook` in arq's ``ctx``.
CTX_KEY = "sse_tasks"


class Cancelled(Exception):
    """What arq records for a job whose task was cancelled through sse_tasks."""


class AsyncRun:
    """One attempt of a task in this worker: the sink of its :class:`TaskContext`."""

    def __init__(
        self, task: Task, params: dict[str, Any], hook: ArqHook, earlier: Sequence[OutputChunk]
    ) -> None:
        self.task = task
        self.hook = hook
        self.writer = hook.writer
        limit = hook.max_metadata_bytes
        self.context = TaskContext(
            task.id, task.name, params, self, metadata=task.metadata, max_metadata_bytes=limit
        )
        self.ended = False
        self._cancelled = False
        self._checked = time.monotonic()
        self._checking: asyncio.Task[None] | None = None
        self._progress, self._message = task.progress, task.message
        self._metadata: dict[str, Any] = task.metadata
        self._pending = False
        self._last = -math.inf
        self._budget = _budget(task, hook.max_output_bytes, hook.max_output_chunks, earlier)
        self._chunks: list[OutputChunk] = []
        self._writing: asyncio.Task[None] | None = None
        #: (running, queued) not stored yet: stored within ``start_delay`` seconds, or with
        #: this attempt's first write (a short job stores running and its end in one round trip).
        self._start: tuple[Task, Task] | None = None
        self._start_due = math.inf
        self._starting = asyncio.Lock()

    def defer_start(self, running: Task, queued: Task, delay: float) -> None:
        self._start = (running, queued)
        self._start_due = time.monotonic() + delay
        self.hook.wake(self._start_due)

    async def started(self) -> bool:
        """Store the deferred ``running`` now; False if the task is already final."""
        async with self._starting:
            if self._start is None:
                return not self._cancelled
            running, queued = self._start
            try:
                stored = await self.writer.running(running, create=queued, retry_for=1.0)
            except self.writer.unreachable:
                logger.warning("task %s started; not stored as running yet: Redis unreachable", running.id)
                self._start_due = time.monotonic() + 1.0
                return True
            self._start = None
            if stored is None:
                self._cancelled = True
                return False
            self.task = stored
            return True

    # -- the sink: called from the task, never waits ---------------------------------

    @property
    def cancelled(self) -> bool:
        """The stored task is final; read in the background at most every ``check_interval``."""
        if self._cancelled or self.ended:
            return self._cancelled
        now = time.monotonic()
        if now - self._checked >= self.hook.check_interval and self._checking is None:
            self._checked = now
            self._checking = asyncio.get_running_loop().create_task(self._check())
        return self._cancelled

    async def _check(self) -> None:
        try:
            if await self.writer.finished(self.task.id):
                self._cancelled = True
        except self.writer.unreachable:
            pass  # unknown: keep working
        finally:
            self._checking = None

    def report(self, progress: float | None, message: str | None) -> None:
        if self.ended:
            return
        self._progress, self._message = progress, message
        if not self._pending:
            self._pending = True
            self.hook.wake(self._last + self.hook.progress_interval)

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        if self.ended:
            return
        self._metadata = metadata
        if not self._pending:
            self._pending = True
            self.hook.wake(self._last + self.hook.progress_interval)

    def output(self, kind: str, text: str, level: str | None) -> None:
        if self.ended:
            return
        chunk = self._budget.take(kind, text, level)
        if chunk is None:
            return
        self._chunks.append(chunk)
        if self._writing is None:
            self._writing = asyncio.get_running_loop().create_task(self._write_output())

    async def _write_output(self) -> None:
        try:
            while self._chunks:
                if self._start is not None and not await self.started():
                    return
                chunk = self._chunks.pop(0)
                try:
                    stored = await self.writer.output(chunk, retry_for=self.writer.outage_grace)
                except self.writer.unreachable:
                    logger.warning("task %s: output dropped, Redis unreachable", self.task.id)
                    continue
                if stored is None:
                    self._cancelled = True  # terminal: the next check() raises
        finally:
            self._writing = None

    # -- driven by the keeper and the wrapper ------------------------------------------

    def due(self) -> float | None:
        """When the pending progress is due (monotonic), or None."""
        if self.ended:
            return None
        start = self._start_due if self._start is not None else math.inf
        progress = self._last + self.hook.progress_interval if self._pending else math.inf
        due = min(start, progress)
        return None if due == math.inf else due

    async def flush(self) -> None:
        """Publish the deferred ``running`` and the latest progress if due."""
        if self._start is not None and not self.ended and time.monotonic() >= self._start_due:
            await self.started()
        if not self._pending or self.ended or time.monotonic() < self._last + self.hook.progress_interval:
            return
        if self._start is not None and not await self.started():
            return
        self._pending = False
        self._last = time.monotonic()
        snapshot = self.task.evolve(
            progress=self._progress,
            message=self._message,
            metadata=self._metadata,
            output_chunks=self._budget.chunks,
        )
        try:
            stored = await self.writer.progress(snapshot)
        except self.writer.unreachable:
            self._pending = True  # the latest value goes out once Redis answers
            return
        if stored is None:
            self._cancelled = True
        elif not self.ended:
            self.task = stored

    async def _settle(self) -> None:
        """Wait for the output written so far."""
        while self._writing is not None:
            await asyncio.shield(self._writing)

    async def finish(self, state: TaskState, **changes: Any) -> Task | None:
        """Publish this attempt's final state (the latest progress and all output before it)."""
        if self.ended:
            return None
        self.ended = True
        await self._settle()
        changes.setdefault("progress", self._progress)
        changes.setdefault("message", self._message)
        changes.setdefault("metadata", self._metadata)
        chunks = self._budget.chunks
        final = self.task.evolve(state=state, finished_at=utcnow(), output_chunks=chunks, **changes)
        async with self._starting:
            start, self._start = self._start, None
        if start is not None:
            final = final.evolve(started_at=start[0].started_at)
        try:
            return await self.writer.final(final, started=start, retry_for=self.writer.outage_grace)
        except self.writer.unreachable:
            # Its lease is no longer renewed: it ends failed (WorkerLost) once Redis answers.
            logger.error("task %s: %s not published, Redis unreachable", final.id, state.value)
            return None

    async def requeue(self, message: str) -> Task | None:
        """This attempt ends in a retry: back to ``queued``, unleased, until a worker takes it."""
        if self.ended:
            return None
        self.ended = True
        await self._settle()
        queued = self.task.evolve(
            state=TaskState.QUEUED,
            message=message,
            progress=None,
            started_at=None,
            output_chunks=self._budget.chunks,
        )
        async with self._starting:
            start, self._start = self._start, None
        try:
            return await self.writer.requeue(queued, started=start, retry_for=self.writer.outage_grace)
        except self.writer.unreachable:
            logger.error("task %s: retry not published, Redis unreachable", queued.id)
            return None


def _budget(task: Task, max_bytes: int, max_chunks: int, earlier: Sequence[OutputChunk]) -> OutputBudget:
    """An attempt's output budget: a retry goes on from the output stored before it."""
    budget = OutputBudget(task.id, max_bytes, max_chunks)
    for chunk in earlier:
        budget.take(chunk.kind, chunk.text, chunk.level)
    last = earlier[-1] if earlier else None
    if last and last.level == "warning" and last.text.startswith("output limit reached"):
        budget.full = True
    budget.chunks = max(budget.chunks, task.output_chunks, last.seq + 1 if last else 0)
    return budget


class ArqHook:
    """One per arq worker (in its ``ctx``): the writer, the runs, and the keeper task."""

    def __init__(
        self,
        writer: AsyncWriter,
        *,
        job_timeout: float,
        max_tries: int,
        progress_interval: float,
        check_interval: float,
        max_output_bytes: int,
        max_output_chunks: int,
        max_metadata_bytes: int = MAX_METADATA_BYTES,
        start_delay: float = 0.05,
    ) -> None:
        self.writer = writer
        self.job_timeout = job_timeout
        self.max_tries = max_tries
        self.progress_interval = progress_interval
        self.check_interval = check_interval
        self.max_output_bytes = max_output_bytes
        self.max_output_chunks = max_output_chunks
        self.max_metadata_bytes = max_metadata_bytes
        self.start_delay = start_delay
        self.runs: dict[str, AsyncRun] = {}
        self._woken = asyncio.Event()
        self._wake_at = -math.inf
        self._keeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._keeper = asyncio.get_running_loop().create_task(self._keep(), name="sse-tasks-keeper")

    async def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        await self.writer.close()

    def wake(self, due: float) -> None:
        if due < self._wake_at:
            self._woken.set()

    async def _keep(self) -> None:
        renew_every = self.writer.lease / 4
        next_renewal = time.monotonic() + renew_every
        while True:
            dues = [due for due in (run.due() for run in self.runs.values()) if due is not None]
            self._wake_at = wake_at = min([next_renewal, *dues])
            try:
                await asyncio.wait_for(self._woken.wait(), max(wake_at - time.monotonic(), 0.005))
            except TimeoutError:
                pass
            self._woken.clear()
            self._wake_at = -math.inf
            for run in list(self.runs.values()):
                try:
                    await run.flush()
                except Exception:
                    logger.exception("sse_tasks keeper: publishing task %s failed", run.task.id)
            if time.monotonic() >= next_renewal:
                next_renewal = time.monotonic() + renew_every
                try:
                    await self.writer.renew([run.task.id for run in self.runs.values() if not run.ended])
                except self.writer.unreachable:
                    pass  # renewed once Redis answers
                except Exception:
                    logger.exception("sse_tasks keeper: renewing leases failed")

    async def run(
        self, function: Function, ctx: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run one arq job as a task: the wrapper every hooked function is."""
        hub = kwargs.pop(HUB_KWARG, None)
        tags = kwargs.pop(TAGS_KWARG, None)
        job_id = ctx.get("job_id")
        if not isinstance(job_id, str) or not valid_id(job_id):
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
        base = stored or queued
        run = AsyncRun(base, dict(kwargs), self, earlier)
        run.defer_start(base.evolve(state=TaskState.RUNNING, started_at=utcnow()), queued, self.start_delay)
        self.runs[job_id] = run
        begun = time.monotonic()
        token = CURRENT.set(run.context)
        try:
            result = await function.coroutine(ctx, *args, **kwargs)
        except TaskCancelled:
            await run.finish(TaskState.CANCELLED)
            raise Cancelled(f"task {job_id} was cancelled") from None
        except (Retry, RetryJob):
            most = function.max_tries if function.max_tries is not None else self.max_tries
            await asyncio.shield(run.requeue(f"retry {job_try} of {most - 1}"))
            raise
        except asyncio.CancelledError:
            # An abort (DELETE, arq's job.abort()), a timeout, or the worker stopping.
            timeout = function.timeout_s if function.timeout_s is not None else self.job_timeout
            if time.monotonic() - begun >= timeout:
                message = f"the job ran longer than {timeout:g} s"
                error: dict[str, str] | None = {"type": "TimeoutError", "message": message}
                await asyncio.shield(run.finish(TaskState.FAILED, error=error))
            else:
                await asyncio.shield(run.finish(TaskState.CANCELLED))
            raise
        except Exception as exc:
            await run.finish(TaskState.FAILED, error=error_of(exc))
            raise
        finally:
            CURRENT.reset(token)
            self.runs.pop(job_id, None)
        error = result_error(result)
        if error is None:
            await run.finish(TaskState.SUCCEEDED, result=result, progress=1.0)
        else:
            await run.finish(TaskState.FAILED, error=error)
        return result


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
    wrapped = [_wrap(function) for function in functions_of(settings).values()]
    prior_startup = _setting(settings, "on_startup", None)
    prior_shutdown = _setting(settings, "on_shutdown", None)

    async def on_startup(ctx: dict[str, Any]) -> None:
        url = hub_url or os.environ.get("SSE_TASKS_BROKER") or ""
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise RuntimeError("sse_tasks.arq: SSE_TASKS_BROKER (or hub_url) must be the hub's Redis URL")
        hook = ArqHook(
            AsyncWriter(RedisBroker(url)),
            job_timeout=job_timeout,
            max_tries=max_tries,
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


def _wrap(function: Function) -> Function:
    original = function.coroutine

    @functools.wraps(original)
    async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        hook = ctx.get(CTX_KEY)
        if not isinstance(hook, ArqHook):
            raise RuntimeError("sse_tasks.arq: the worker's on_startup did not run hooked()'s")
        return await hook.run(function, ctx, args, kwargs)

    return dataclasses.replace(function, coroutine=run)
