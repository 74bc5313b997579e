"""A task running in an asyncio engine's worker (arq, taskiq): the asyncio counterpart of
:class:`WorkerRun` and :class:`Keeper`, writing through an :class:`AsyncWorkerWriter` on
the worker's event loop. Engine-neutral: a hook makes an :class:`AsyncRun` per attempt and
keeps it in its :class:`AsyncKeeper`'s ``runs`` while it runs (see "Writing an engine
adapter" in ``docs/architecture.md``).

The task's context (``current_task()``) never blocks and never touches Redis: progress
keeps the latest value, output is queued in order, and the cancel flag is the one the
keeper last read. One :class:`AsyncKeeper` task per event loop publishes what falls due
(``running`` after ``start_delay``, progress at most every ``progress_interval`` per task,
output as written) and reads the stored state of running tasks every ``check_interval``
(in one round trip for all of them). A sync task (run in taskiq's thread pool) reports
through the same calls, which hand over to the loop thread-safely. A task that ends
within ``start_delay`` stores ``running`` and its outcome in one round trip.

The leases are kept off the loop: the keeper's thread renews them every quarter lease
through a blocking writer, and stores a ``running`` the loop has not stored in time. A
task that holds the loop (sync code in an ``async def``) is then neither presumed dead
while it runs nor left ``queued`` for good when its worker is killed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import math
import threading
import time
from collections.abc import Sequence
from typing import Any

from .._core.context import CURRENT, TaskContext
from .._core.models import MAX_METADATA_BYTES, OutputChunk, Task, TaskState, utcnow
from .._runner.job import unencodable
from .worker import _budget
from .writer import AsyncWorkerWriter, Started, WorkerWriter

logger = logging.getLogger("sse_tasks.worker")


class AsyncRun:
    """One attempt of a task in this worker's event loop; ``task`` is its latest snapshot.

    Made on the loop; kept in ``keeper.runs`` (by task id) while it runs. The output bounds
    are the task's (a retry goes on from ``earlier_output``, its stored output).
    """

    def __init__(
        self,
        task: Task,
        params: dict[str, Any],
        writer: AsyncWorkerWriter,
        keeper: AsyncKeeper,
        *,
        max_output_bytes: int = 1 << 20,
        max_output_chunks: int = 10_000,
        max_metadata_bytes: int = MAX_METADATA_BYTES,
        earlier_output: Sequence[OutputChunk] = (),
    ) -> None:
        self.task = task
        self.writer = writer
        self.keeper = keeper
        self.context = TaskContext(
            task.id, task.name, params, self, metadata=task.metadata, max_metadata_bytes=max_metadata_bytes
        )
        self.ended = False
        self._cancelled = False
        self._token: contextvars.Token[TaskContext | None] | None = None
        self._lock = threading.Lock()  # the fields a sync task's thread sets
        self._io = asyncio.Lock()  # one write at a time, in order
        self._budget = _budget(task, max_output_bytes, max_output_chunks, earlier_output)
        self._progress: float | None = task.progress
        self._message: str | None = task.message
        self._metadata: dict[str, Any] = task.metadata
        self._pending = False
        self._last = -math.inf
        self._outbox: list[OutputChunk] = []
        self._start: Started | None = None
        self._start_due = math.inf
        #: Set while the keeper's thread stores ``_start`` (the loop held it past its due).
        self._handed: concurrent.futures.Future[None] | None = None
        self._checked = time.monotonic()  # the worker read its state as it took the message

    @staticmethod
    def current(task_id: str | None = None) -> AsyncRun | None:
        """The unfinished run of the task executing in this context, if it is one (and
        ``task_id``'s, if given)."""
        context = CURRENT.get()
        run = None if context is None else context.sink
        if isinstance(run, AsyncRun) and not run.ended and task_id in (None, run.task.id):
            return run
        return None

    def enter(self) -> None:
        """Make this run's context ``current_task()`` here (the task's asyncio context)."""
        self._token = CURRENT.set(self.context)

    def leave(self) -> None:
        """Undo :meth:`enter`."""
        token, self._token = self._token, None
        if token is None:
            return
        try:
            CURRENT.reset(token)
        except ValueError:  # reset in another context than it was set in
            CURRENT.set(None)

    def begin(self, delay: float, create: Task | None = None, *, stored: bool = False) -> None:
        """``running`` is stored within ``delay`` seconds, or with this attempt's next write
        (``create``: the ``queued`` snapshot to store first if nobody stored the task;
        default: ``task``, unless the task is known to be stored: ``stored``, or a
        ``task`` read back, with an event id)."""
        running = self.task.evolve(state=TaskState.RUNNING, started_at=utcnow())
        queued = None if stored or self.task.event_id else (create or self.task)
        self._start, self._start_due = (running, queued), time.monotonic() + delay
        self.keeper.wake(self._start_due)

    # -- the sink (any thread, never blocks) -------------------------------------------

    @property
    def cancelled(self) -> bool:
        """True once the stored task is final (read by the keeper every ``check_interval``)."""
        return self._cancelled

    def report(self, progress: float | None, message: str | None) -> None:
        with self._lock:
            if self.ended:
                return
            self._progress, self._message, self._pending = progress, message, True
        self.keeper.wake(self._last + self.keeper.progress_interval)

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        with self._lock:
            if self.ended:
                return
            self._metadata, self._pending = metadata, True
        self.keeper.wake(self._last + self.keeper.progress_interval)

    def output(self, kind: str, text: str, level: str | None) -> None:
        with self._lock:
            if self.ended:
                return
            chunk = self._budget.take(kind, text, level)
            if chunk is None:
                return
            self._outbox.append(chunk)
        self.keeper.wake()

    # -- driven by the keeper and the middleware ------------------------------------------

    def due(self) -> float | None:
        """When pending work must be published (monotonic), or None."""
        if self.ended:
            return None
        if self._outbox:
            return -math.inf
        start = self._start_due if self._start is not None else math.inf
        progress = self._last + self.keeper.progress_interval if self._pending else math.inf
        due = min(start, progress)
        return None if due == math.inf else due

    async def flush(self) -> None:
        """Publish what is due: a pending ``running``, the output written, the latest progress."""
        if self._io.locked():
            return  # busy publishing: it takes the rest with it
        async with self._io:
            now = time.monotonic()
            if self.ended:
                return
            handed = self._handed is not None  # the thread is storing ``running``: wait for it
            if handed or (
                self._start is not None and (now >= self._start_due or self._outbox or self._pending)
            ):
                if not await self._started():
                    return
            await self._send_output()
            if self._pending and not self.ended and now >= self._last + self.keeper.progress_interval:
                await self._send_progress()

    async def _take_start(self) -> Started | None:
        """Take the pending ``running`` (None if stored), once the keeper's thread is done
        storing it: nothing of this run is written before its ``running``."""
        while True:
            with self._lock:
                handed = self._handed
                if handed is None:
                    start, self._start = self._start, None
                    return start
            # Shielded: a cancel of this wait (a job's timeout) must not cancel the future
            # the thread completes.
            await asyncio.shield(asyncio.wrap_future(handed))

    async def _last_start(self) -> Started | None:
        """Before this attempt's last writes: its pending ``running``, taken (None if
        stored), to store with them; stored first if output waits (output goes to a task
        that is stored, and runs)."""
        if self._outbox or self._handed is not None:
            await self._started()
        return await self._take_start()

    async def _output_then(self, start: Started | None) -> None:
        """Send the output written, giving ``start`` back if that fails."""
        try:
            await self._send_output()
        except BaseException:
            if start is not None:
                self._give_back(start)
            raise

    def _give_back(self, start: Started) -> None:
        """``start`` was not stored: stored later (in a second), or with the outcome."""
        with self._lock:
            self._start, self._start_due = start, time.monotonic() + 1.0

    async def _started(self) -> bool:
        start = await self._take_start()
        if start is None:
            return not self.ended
        running, queued = start
        try:
            stored = await self.writer.running(running, create=queued, retry_for=1.0)
        except self.writer.unreachable:
            logger.warning("task %s started; not stored as running yet: Redis unreachable", running.id)
            self._give_back(start)
            return False
        except BaseException:
            self._give_back(start)
            raise
        self._stored_running(stored)
        return not self.ended

    def _stored_running(self, stored: Task | None) -> None:
        with self._lock:
            if stored is None:  # finished while it waited (cancelled)
                self.ended = self._cancelled = True
            elif not self.ended:
                self.task = stored

    def overdue_start(self, now: float) -> Started | None:
        """For the keeper's thread: the pending ``running`` if its due passed by ``now``
        (the loop is held), taken so that the loop waits for the thread to store it; give
        the answer to :meth:`started_elsewhere`."""
        with self._lock:
            if self.ended or self._start is None or self._handed is not None or now < self._start_due:
                return None
            start, self._start, self._handed = self._start, None, concurrent.futures.Future()
            return start

    def started_elsewhere(self, start: Started, stored: Task | None, *, failed: bool = False) -> None:
        """The keeper's thread stored ``start`` (``stored``: the answer), or ``failed`` to."""
        if failed:  # tried again in a second, by whichever of the two comes first
            self._give_back(start)
        else:
            self._stored_running(stored)
        with self._lock:
            handed, self._handed = self._handed, None
        if handed is not None and not handed.done():
            handed.set_result(None)

    async def _send_output(self) -> None:
        while self._outbox and not self.ended:
            with self._lock:
                chunk = self._outbox.pop(0)
            try:
                stored = await self.writer.output(chunk, retry_for=self.writer.outage_grace)
            except self.writer.unreachable:
                logger.warning("task %s: output dropped, Redis unreachable", self.task.id)
                continue
            if stored is None:
                self._cancelled = True

    async def _send_progress(self) -> None:
        with self._lock:
            self._pending = False
            snapshot = self.task.evolve(
                progress=self._progress,
                message=self._message,
                metadata=self._metadata,
                output_chunks=self._budget.chunks,
            )
        self._last = time.monotonic()
        try:
            stored = await self.writer.progress(snapshot)
        except self.writer.unreachable:
            self._pending = True
            return
        if stored is None:
            self._cancelled = True
        else:
            self.task = stored

    def wants_check(self, now: float) -> bool:
        """True if the keeper should read the stored state now (a cancel): not for an
        ended run, one whose ``running`` is not stored yet, or one read a moment ago (a
        short task is never read again)."""
        if self.ended or self._cancelled or self._start is not None or self._handed is not None:
            return False
        if now - self._checked < self.keeper.check_interval:
            return False
        self._checked = now
        return True

    def finished_elsewhere(self) -> None:
        """The stored task is final (cancelled): the task stops at its next check()."""
        self._cancelled = True

    async def requeue(self, message: str) -> Task | None:
        """This attempt ends in a retry (its new message is being sent): back to ``queued``,
        unleased, until a worker takes it."""
        async with self._io:
            if self.ended:
                return None
            start = await self._last_start()
            if start is None and self.ended:
                return None
            await self._output_then(start)
            with self._lock:
                self.ended = True
                queued = self.task.evolve(
                    state=TaskState.QUEUED,
                    message=message,
                    progress=None,
                    started_at=None,
                    output_chunks=self._budget.chunks,
                )
            try:
                return await self.writer.requeue(queued, started=start, retry_for=self.writer.outage_grace)
            except self.writer.unreachable:
                logger.error("task %s: its retry not stored, Redis unreachable", queued.id)
                return None

    def continue_from(self, stored: Task) -> None:
        """A retry goes on from the stored task: its output keeps one numbering."""
        self._budget.chunks = max(self._budget.chunks, stored.output_chunks)

    async def finish(self, state: TaskState, **changes: Any) -> None:
        """Publish this attempt's final state, after its output (the latest progress with
        it), without waiting for Redis to store it (see ``AsyncWorkerWriter.final``)."""
        async with self._io:
            if self.ended:
                return
            start = await self._last_start()
            await self._output_then(start)
            with self._lock:
                if self.ended:
                    return
                self.ended = True
                changes.setdefault("progress", self._progress)
                changes.setdefault("message", self._message)
                changes.setdefault("metadata", self._metadata)
                final = self.task.evolve(
                    state=state, finished_at=utcnow(), output_chunks=self._budget.chunks, **changes
                )
            if start is not None:
                final = final.evolve(started_at=start[0].started_at)
            try:
                await self.writer.final(final, started=start, retry_for=self.writer.outage_grace, wait=False)
            except self.writer.unreachable:
                logger.error("task %s: %s not published, Redis unreachable", final.id, final.state.value)
            except Exception:
                # Not stored (its snapshot could not be encoded, most likely): the caller may
                # still end it otherwise.
                with self._lock:
                    self.ended, self._start = False, start
                raise

    async def succeed(self, result: Any) -> TaskState:
        """As :meth:`WorkerRun.succeed`, awaited."""
        try:
            await self.finish(TaskState.SUCCEEDED, progress=1.0, result=result)
            return TaskState.SUCCEEDED
        except Exception as exc:  # its snapshot could not be encoded: finish stored nothing
            error = unencodable(exc)
        logger.warning("task %s failed: %s (%s)", self.task.id, error["message"], error["type"])
        await self.finish(TaskState.FAILED, error=error)
        return TaskState.FAILED


class AsyncKeeper:
    """One task per event loop: publishes what is due and reads cancels; and one thread
    beside it that renews the leases and stores a ``running`` the held loop could not,
    through ``blocking`` (a writer to the same store, for that thread alone)."""

    def __init__(
        self,
        writer: AsyncWorkerWriter,
        blocking: WorkerWriter,
        *,
        progress_interval: float = 0.1,
        check_interval: float = 0.1,
    ) -> None:
        self.writer = writer
        self.blocking = blocking
        self.progress_interval = progress_interval
        self.check_interval = check_interval
        self.runs: dict[str, AsyncRun] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake_at = -math.inf  # when the keeper wakes by itself (-inf: it is awake)
        self._timer: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._complained_at = -math.inf

    def ensure_started(self) -> None:
        """Start the keeper's task on the running loop (again on another loop), and its thread."""
        loop = asyncio.get_running_loop()
        if self._thread is None or not self._thread.is_alive():
            self._stopping = threading.Event()
            self._thread = threading.Thread(
                target=self._guard, args=(self._stopping,), name="sse-tasks-leases", daemon=True
            )
            self._thread.start()
        if self._task is not None and self._loop is loop and not self._task.done():
            return
        self._loop, self._event = loop, asyncio.Event()
        self._task = loop.create_task(self._main(), name="sse-tasks-keeper")

    async def stop(self) -> None:
        """Cancel the keeper's task and end its thread (a worker shutting down)."""
        task, self._task = self._task, None
        thread, self._thread = self._thread, None
        self._stopping.set()
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if thread is not None:
            await asyncio.to_thread(thread.join, 5.0)

    def wake(self, due: float = -math.inf) -> None:
        """Work falls due at ``due`` (monotonic): make the keeper wake by then (from the loop
        or from a task's thread). On the loop this moves the keeper's timer, never switches
        to it: a task that ends within ``start_delay`` costs the keeper nothing."""
        loop, event = self._loop, self._event
        if loop is None or event is None or event.is_set():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not loop:
            loop.call_soon_threadsafe(event.set)  # a sync task's thread: no race with the loop
        elif due < self._wake_at:  # on the loop: an awake keeper looks at every run before it sleeps
            delay = due - time.monotonic()
            if delay <= 0:
                event.set()
                return
            self._wake_at = due
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_later(delay, event.set)

    async def _main(self) -> None:
        assert self._event is not None and self._loop is not None
        event, loop = self._event, self._loop
        next_check = time.monotonic() + self.check_interval
        # Outcomes sent without waiting are checked (and a lost one sent again) at every
        # turn, and at least every quarter lease, runs or none: an idle worker's last one too.
        settle_every = self.writer.lease / 4
        next_settle = time.monotonic() + settle_every
        while True:
            runs = list(self.runs.values())
            dues = [due for due in (run.due() for run in runs) if due is not None]
            wake_at = min([next_settle, next_check if runs else math.inf, *dues])
            timeout = max(wake_at - time.monotonic(), 0.005)
            self._wake_at = time.monotonic() + timeout
            # A timer rather than wait_for(): wake() moves it (no task per sleep).
            self._timer = None if timeout == math.inf else loop.call_later(timeout, event.set)
            try:
                await event.wait()
            finally:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = None
            self._wake_at = -math.inf
            event.clear()
            runs = list(self.runs.values())
            await self._each([run.flush() for run in runs if (run.due() or math.inf) <= time.monotonic()])
            next_settle = time.monotonic() + settle_every
            try:
                await self.writer.settle()  # outcomes sent without waiting: answered, or sent again
            except self.writer.unreachable:
                pass  # sent again at the next look, until their deadline
            except Exception:
                logger.exception("sse_tasks keeper: checking outcomes sent failed")
            now = time.monotonic()
            if now >= next_check:
                next_check = now + self.check_interval
                await self._check([run for run in runs if run.wants_check(now)])

    def _guard(self, stopping: threading.Event) -> None:
        """The keeper's thread: renews the leases of the runs every quarter lease, and
        stores the ``running`` of a run whose loop is held a tick past its due."""
        renew_every = self.blocking.lease / 4
        tick = min(renew_every / 2, 0.25)
        next_renewal = time.monotonic() + renew_every
        while not stopping.wait(tick):
            now = time.monotonic()
            runs = list(self.runs.values())
            try:
                if now >= next_renewal:  # first: a slow write of a start must not delay it
                    next_renewal = now + renew_every
                    self.blocking.renew([run.task.id for run in runs if not run.ended])
                for run in runs:
                    start = run.overdue_start(now - tick)
                    if start is not None:
                        self._store_start(run, start)
            except self.blocking.unreachable:
                pass
            except Exception:
                self._complain("sse_tasks keeper: its thread failed a turn")

    def _store_start(self, run: AsyncRun, start: Started) -> None:
        running, queued = start
        try:
            stored = self.blocking.running(running, create=queued)
        except BaseException as exc:
            run.started_elsewhere(start, None, failed=True)
            if not isinstance(exc, self.blocking.unreachable):
                raise
            return
        run.started_elsewhere(start, stored)
        logger.warning(
            "task %s: its running state was stored from the keeper's thread, the worker's event "
            "loop not having done it in time (blocking code in an async task?)",
            running.id,
        )

    def _complain(self, what: str) -> None:
        """Log the error being handled with ``what``, at most once a minute (a fault that
        lasts fails every turn of the thread)."""
        now = time.monotonic()
        if now - self._complained_at >= 60.0:
            self._complained_at = now
            logger.exception(what)

    async def _check(self, runs: list[AsyncRun]) -> None:
        """Read the stored state of ``runs`` in one round trip."""
        if not runs:
            return
        try:
            finished = await self.writer.finished_ids([run.task.id for run in runs])
        except self.writer.unreachable:
            return
        except Exception:
            logger.exception("sse_tasks keeper: reading cancels failed")
            return
        for run in runs:
            if run.task.id in finished:
                run.finished_elsewhere()

    async def _each(self, calls: list[Any]) -> None:
        if not calls:
            return
        for outcome in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(outcome, Exception) and not isinstance(outcome, self.writer.unreachable):
                logger.error("sse_tasks keeper: %r", outcome)
