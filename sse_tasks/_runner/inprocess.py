"""The default executor: task functions run in this process, in the hub's task group."""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._core.context import CURRENT
from .._core.errors import TaskCancelled
from .._core.models import MAX_METADATA_BYTES, OutputChunk, Task, TaskState
from .executor import LocalExecutor
from .job import Job, Publisher, error_of, result_error
from .run import Run

logger = logging.getLogger("sse_tasks")

_OUTPUT_BATCH = 256  # output chunks per write: bounds one write's time in the broker
_OUTPUT_BATCH_BYTES = 256 * 1024
_OUTPUT_DRAIN = 30.0  # seconds a finished task waits for its output to be published


class InProcessExecutor(LocalExecutor):
    """Runs ``concurrency`` jobs at once on this event loop (plain ``def`` in worker threads).

    Progress is published at most once per ``progress_interval`` seconds per task (the
    latest value always); a job's ``timeout`` fails it with ``TimeoutError``.
    """

    def __init__(
        self,
        concurrency: int = 16,
        progress_interval: float = 0.1,
        *,
        max_output_bytes: int = 1 << 20,
        max_output_chunks: int = 10_000,
        max_metadata_bytes: int = MAX_METADATA_BYTES,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be positive")
        if progress_interval < 0:
            raise ValueError("progress_interval must be >= 0")
        if max_output_bytes < 0 or max_output_chunks < 0:
            raise ValueError("max_output_bytes and max_output_chunks must be >= 0")
        if max_metadata_bytes < 2:
            raise ValueError("max_metadata_bytes must be at least 2 (the empty object)")
        self.max_metadata_bytes = max_metadata_bytes
        self.concurrency = concurrency
        self.progress_interval = progress_interval
        self.max_output_bytes = max_output_bytes
        self.max_output_chunks = max_output_chunks
        self._runs: dict[str, Run] = {}
        self._publisher: Publisher | None = None
        self._done: Callable[[Job], None] = lambda job: None
        self._send: MemoryObjectSendStream[Job] | None = None
        self._closing = False

    async def start(self, publisher: Publisher, done: Callable[[Job], None], group: TaskGroup) -> None:
        self._publisher, self._done, self._closing = publisher, done, False
        send, receive = anyio.create_memory_object_stream[Job](math.inf)
        self._send = send
        group.start_soon(self._serve, receive)

    @property
    def accepting(self) -> bool:
        return self._send is not None

    def submit(self, job: Job) -> None:
        if self._send is None:
            raise RuntimeError("the executor is not running")
        self._send.send_nowait(job)

    def begin_shutdown(self) -> None:
        self._closing = True

    def cancel(self, task_id: str, reason: str | None = None) -> bool:
        run = self._runs.get(task_id)
        if run is None or run.ended:
            return False
        run.cancel(reason)
        return True

    def running_task(self, task_id: str) -> Task | None:
        run = self._runs.get(task_id)
        return None if run is None else (run.task or run.job.task)

    def running_ids(self) -> list[str]:
        return list(self._runs)

    @property
    def running(self) -> int:
        return len(self._runs)

    async def _serve(self, receive: MemoryObjectReceiveStream[Job]) -> None:
        try:
            with receive:
                clones = [receive.clone() for _ in range(self.concurrency)]
            async with anyio.create_task_group() as workers:
                for clone in clones:
                    workers.start_soon(self._worker, clone)
        finally:
            if self._send is not None:
                self._send.close()
                self._send = None

    async def _worker(self, receive: MemoryObjectReceiveStream[Job]) -> None:
        publisher = self._publisher
        assert publisher is not None
        async with receive:
            async for job in receive:
                try:
                    if job.cancelled:
                        await publisher.finish(job.task, TaskState.CANCELLED)
                    elif self._closing:
                        await publisher.finish(job.task, TaskState.CANCELLED, message="server shutting down")
                    else:
                        await self._execute(job, publisher)
                except Exception:  # the broker failed: log it, keep the worker alive
                    logger.exception("task %s could not be run", job.task.id)
                finally:
                    self._done(job)

    async def _execute(self, job: Job, publisher: Publisher) -> None:
        run = Run(job, self.max_output_bytes, self.max_output_chunks, self.max_metadata_bytes)
        self._runs[job.task.id] = run
        try:
            started = await publisher.running(job.task)
            if started is None:
                return  # cancelled while queued
            run.task = started.task
            await self._run(run, started.task, publisher)
        finally:
            del self._runs[job.task.id]

    async def _run(self, run: Run, task: Task, publisher: Publisher) -> None:
        registered = run.job.registered
        outcome = TaskState.FAILED
        changes: dict[str, Any] = {}
        result: Any = None
        with run.scope:
            async with anyio.create_task_group() as pump_group:
                # Started by the first progress(): spawning and cancelling a publisher
                # was half the cost of running a task that never reports progress.
                run.start_publisher = functools.partial(pump_group.start_soon, self._pump, task, run)
                run.start_output = functools.partial(pump_group.start_soon, self._output_pump, run, publisher)
                try:
                    with anyio.move_on_after(registered.timeout or math.inf) as deadline:
                        result = await self._call(run)
                    if deadline.cancelled_caught:
                        raise TimeoutError(f"task exceeded its {registered.timeout:g} s timeout")
                    outcome = TaskState.SUCCEEDED
                except TaskCancelled:
                    outcome = TaskState.CANCELLED
                except Exception as exc:
                    changes["error"] = error_of(exc.exception if isinstance(exc, _Escaped) else exc)
                except BaseException as exc:
                    # SystemExit, KeyboardInterrupt, GeneratorExit, or a cancellation the
                    # task's own code raised (a future cancelled elsewhere) fail the task;
                    # the hub goes on. Its own cancellation (DELETE, the shutdown) goes up.
                    if await _being_cancelled(exc):
                        raise
                    changes["error"] = error_of(exc)
                finally:
                    if run.start_output is None:  # output was reported: publish all of it first
                        with anyio.CancelScope(shield=True), anyio.move_on_after(_OUTPUT_DRAIN):
                            await run.output_drained()
                    if run.start_publisher is None or run.start_output is None:
                        pump_group.cancel_scope.cancel()
                    run.start_publisher = run.start_output = None
        run.ended = True
        if run.cancel_requested:
            outcome, changes = TaskState.CANCELLED, {}
            if run.cancel_reason:
                changes["message"] = run.cancel_reason
        elif outcome is TaskState.SUCCEEDED:
            error = result_error(result)
            if error is None:
                changes = {"result": result, "progress": 1.0}
            else:
                outcome, changes = TaskState.FAILED, {"error": error}
        progress, message = run.latest()
        changes["output_chunks"] = run.output_chunks
        changes["metadata"] = run.metadata
        changes.setdefault("progress", progress)
        if message is not None:
            changes.setdefault("message", message)
        await publisher.finish(task, outcome, **changes)

    async def _call(self, run: Run) -> Any:
        registered = run.job.registered
        call = registered.call_with(run.context, run.job.params)
        token = CURRENT.set(run.context)  # current_task(), here and in the worker thread
        try:
            if registered.is_async:
                return await call()
            try:
                return await anyio.to_thread.run_sync(
                    functools.partial(_in_thread, call), abandon_on_cancel=True
                )
            except anyio.get_cancelled_exc_class():
                run.halt()  # the thread stops at its next progress()/check()
                raise
        finally:
            CURRENT.reset(token)

    async def _pump(self, task: Task, run: Run) -> None:
        """Publish the latest progress, at most once per ``progress_interval``."""
        publisher = self._publisher
        assert publisher is not None
        while True:
            progress, message = await run.next_report()
            latest = task.evolve(output_chunks=run.output_chunks, metadata=run.metadata)
            if await publisher.progress(latest, progress, message) is None:
                run.cancel()  # finished elsewhere (cancelled from another worker)
                return
            if self.progress_interval:
                await anyio.sleep(self.progress_interval)

    async def _output_pump(self, run: Run, publisher: Publisher) -> None:
        """Publish the task's output chunks in order, each exactly once."""
        try:
            while True:
                chunks = await run.next_output()
                # What the task wrote while the previous write was under way goes out
                # together: one write per batch, never a wait for more.
                for batch in output_batches(chunks):
                    if not await publisher.outputs(run.task or run.job.task, batch):
                        run.cancel()  # finished elsewhere: nothing more is kept
                        return
                run.output_published()
        except Exception:  # the broker gave up (a long outage): the rest cannot be kept
            logger.exception("task %s: output could not be published", run.job.task.id)
        finally:
            run.output_abandoned()


class _Escaped(Exception):
    """A ``BaseException`` a task raised in its worker thread (``SystemExit``, …), carried
    to the event loop as an ``Exception``: a ``GeneratorExit`` raised there through the
    thread's future would break the awaiting coroutine."""

    def __init__(self, exception: BaseException) -> None:
        super().__init__(exception)
        self.exception = exception


def _in_thread(call: Callable[[], Any]) -> Any:
    """``call()`` in a worker thread, its ``BaseException`` (but a cancel) as :class:`_Escaped`."""
    try:
        return call()
    except (Exception, TaskCancelled):
        raise
    except BaseException as exc:
        raise _Escaped(exc) from exc


async def _being_cancelled(exc: BaseException) -> bool:
    """True if ``exc`` is this task being cancelled (a cancel scope around it, the hub's
    shutdown); False for anything else, such as a ``CancelledError`` that the task's own
    code raised by awaiting a future cancelled elsewhere."""
    if not isinstance(exc, anyio.get_cancelled_exc_class()):
        return False
    try:
        current = asyncio.current_task()
    except RuntimeError:  # not on asyncio
        current = None
    if current is not None and sys.version_info >= (3, 11) and current.cancelling():
        return True
    try:  # a cancelled scope cancels again at every checkpoint inside it
        await anyio.lowlevel.checkpoint()
    except anyio.get_cancelled_exc_class():
        return True
    return False


def output_batches(chunks: list[OutputChunk]) -> Iterator[list[OutputChunk]]:
    """``chunks`` in order, cut into batches of at most ``_OUTPUT_BATCH`` chunks and
    (unless one chunk is larger) ``_OUTPUT_BATCH_BYTES`` characters of text."""
    batch: list[OutputChunk] = []
    size = 0
    for chunk in chunks:
        if batch and (len(batch) >= _OUTPUT_BATCH or size + len(chunk.text) > _OUTPUT_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(chunk)
        size += len(chunk.text)
    if batch:
        yield batch
