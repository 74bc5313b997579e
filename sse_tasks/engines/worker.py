"""A task running in an engine's worker process: the sink behind its :class:`TaskContext`.

Engine-neutral: a worker hook makes a :class:`WorkerRun` per attempt and drives it from
the engine's signals (begin, then finish, requeue or end), and one :class:`Keeper` per
process. Everything here blocks (a worker thread has no event loop): progress is published from
the task's own thread when it is due and otherwise by the :class:`Keeper` thread once it
is, always the latest value; output is published in order as it is written; the final
event carries the latest progress. A first attempt's ``running`` waits ``start_delay``
seconds (or until the task reports): a task that ends sooner stores ``running`` and its
outcome in one round trip. Every publish is the broker's compare-and-set, so
a late one (a progress report racing the task's end) cannot change a finished task.
"""

from __future__ import annotations

import contextvars
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .._core.budget import OutputBudget
from .._core.context import CURRENT, TaskContext
from .._core.errors import TaskCancelled
from .._core.models import MAX_METADATA_BYTES, OutputChunk, Task, TaskState, utcnow
from .._runner.job import error_of, unencodable
from .writer import Started, WorkerWriter

logger = logging.getLogger("sse_tasks.worker")

#: Seconds between a busy keeper's looks (at most a run's ``start_delay``, 0.05 s by default).
IDLE_TICK = 0.04


class WorkerRun:
    """One attempt of a task in this worker; ``task`` is its latest stored snapshot.

    ``progress_interval``: seconds between progress publishes (the latest value always);
    ``check_interval``: seconds between reads of the stored state (a cancel); the output
    bounds are the task's (a retry goes on from ``earlier_output``); ``wake(due)`` tells
    the process's :class:`Keeper` when pending work falls due.
    """

    def __init__(
        self,
        task: Task,
        params: dict[str, Any],
        writer: WorkerWriter,
        *,
        progress_interval: float = 0.1,
        check_interval: float = 0.1,
        max_output_bytes: int = 1 << 20,
        max_output_chunks: int = 10_000,
        earlier_output: Sequence[OutputChunk] = (),
        wake: Callable[[float], None] = lambda due: None,
        max_metadata_bytes: int = MAX_METADATA_BYTES,
    ) -> None:
        self.task = task
        self._wake = wake
        self.writer = writer
        self.progress_interval = progress_interval
        self.check_interval = check_interval
        self.outage_grace = writer.outage_grace
        self._unreachable = writer.unreachable
        #: What the task function gets (and ``current_task()`` returns while it runs).
        self.context = TaskContext(
            task.id, task.name, params, self, metadata=task.metadata, max_metadata_bytes=max_metadata_bytes
        )
        self._token: contextvars.Token[TaskContext | None] | None = None
        self.ended = False  # this attempt's outcome is published (or retried): nothing more
        self.requeued = False  # it ended in a retry: back to queued, the new message sent
        self._cancelled = False
        self._checked = 0.0
        self._lock = threading.Lock()
        self._budget = _budget(task, max_output_bytes, max_output_chunks, earlier_output)
        self._progress: float | None = task.progress
        self._message: str | None = task.message
        self._metadata: dict[str, Any] = task.metadata
        self._pending = False
        self._last = -math.inf  # monotonic time of the last progress publish
        self._start: Started | None = None  # (running, queued) not yet published
        self._start_due = math.inf

    @staticmethod
    def current(task_id: str | None = None) -> WorkerRun | None:
        """The unfinished run of the task executing in this context (``current_task()``'s),
        if it is one (and ``task_id``'s, if given)."""
        context = CURRENT.get()
        run = None if context is None else context.sink
        if isinstance(run, WorkerRun) and not run.ended and task_id in (None, run.task.id):
            return run
        return None

    def enter(self) -> None:
        """Make this run's context ``current_task()`` here, until :meth:`leave`."""
        self._token = CURRENT.set(self.context)

    def leave(self) -> None:
        """Undo :meth:`enter` (from any context: an engine may end a task elsewhere)."""
        token, self._token = self._token, None
        if token is None:
            return
        try:
            CURRENT.reset(token)
        except ValueError:  # reset in another context than it was set in
            CURRENT.set(None)

    def start(self, delay: float = 0.0, *, stored: bool = False) -> None:
        """This attempt starts: :meth:`begin` with its ``running`` snapshot, now. ``stored``:
        the task is known to be stored (received, or read back: a ``task`` with an event
        id is), so ``running`` need not carry a ``queued`` snapshot to create it from."""
        create = None if stored or self.task.event_id else self.task
        self.begin(self.task.evolve(state=TaskState.RUNNING, started_at=utcnow()), create, delay)

    def execute(self, func: Callable[..., Any]) -> TaskState:
        """Run ``func(**params)`` as this attempt, with its context current, and publish
        its outcome: ``succeeded`` with its result (``failed`` if that is not JSON),
        ``failed`` with the exception's ``{type, message}``, ``cancelled`` on a cancel.
        For an engine whose worker hook calls the task itself (middleware, a wrapper);
        one driven by signals calls :meth:`finish` from them instead."""
        changes: dict[str, Any] = {}
        self.enter()
        try:
            result = func(**self.context.params)
        except TaskCancelled:
            state = TaskState.CANCELLED
        except Exception as exc:
            state, changes = TaskState.FAILED, {"error": error_of(exc)}
        else:
            state = TaskState.SUCCEEDED
        finally:
            self.leave()
        if state is TaskState.SUCCEEDED:
            return self.succeed(result)
        self.finish(state, **changes)
        return state

    def succeed(self, result: Any) -> TaskState:
        """Publish ``succeeded`` with ``result``, or ``failed`` if ``result`` is not JSON
        (the task ran: it never ends cancelled); the state published."""
        try:
            self.finish(TaskState.SUCCEEDED, progress=1.0, result=result)
            return TaskState.SUCCEEDED
        except Exception as exc:  # its snapshot could not be encoded: finish stored nothing
            error = unencodable(exc)
        logger.warning("task %s failed: %s (%s)", self.task.id, error["message"], error["type"])
        self.finish(TaskState.FAILED, error=error)
        return TaskState.FAILED

    def begin(self, running: Task, queued: Task | None, delay: float) -> None:
        """Publish ``running`` within ``delay`` seconds (creating the task from ``queued``
        if nobody stored it; None: it is stored), or with the next event of this attempt
        if that comes first."""
        with self._lock:
            self._start = (running, queued)
            self._start_due = due = time.monotonic() + delay
        self._wake(due)

    def _started(self) -> bool:
        """Publish the pending ``running`` now (lock held); False if the task is already final."""
        if self._start is None:
            return not self.ended
        running, queued = self._start
        try:
            stored = self.writer.running(running, create=queued, retry_for=1.0)
        except self._unreachable:
            # Kept: it goes out with the next event of this attempt, once Redis answers.
            logger.warning("task %s started; not stored as running yet: Redis unreachable", running.id)
            self._start_due = time.monotonic() + 1.0
            return True
        self._start = None
        if stored is None:  # finished while it waited (cancelled)
            self.ended = self._cancelled = True
            return False
        self.task = stored
        return True

    def _take_start(self) -> Started | None:
        """The pending ``running``, to store with the next write (lock held)."""
        start, self._start = self._start, None
        return start

    # -- the sink ------------------------------------------------------------------

    @property
    def cancelled(self) -> bool:
        """True once the stored task is terminal (a client cancelled it); read from Redis
        at most every ``check_interval`` seconds."""
        if self._cancelled or self.ended:
            return self._cancelled
        now = time.monotonic()
        if now - self._checked >= self.check_interval:
            self._checked = now
            try:
                self._cancelled = self.writer.finished(self.task.id)
            except self._unreachable:
                pass  # unknown: keep working
        return self._cancelled

    def report(self, progress: float | None, message: str | None) -> None:
        with self._lock:
            if not self._started():
                return
            self._progress, self._message = progress, message
        self._changed()

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        with self._lock:
            if not self._started():
                return
            self._metadata = metadata
        self._changed()

    def _changed(self) -> None:
        """Publish the latest progress and metadata now if due, else wake the keeper for it."""
        with self._lock:
            if self.ended:
                return
            was_pending, self._pending = self._pending, True
            if time.monotonic() >= self._last + self.progress_interval:
                self._publish_progress()
                return
        if not was_pending:
            self._wake(self._last + self.progress_interval)

    def output(self, kind: str, text: str, level: str | None) -> None:
        with self._lock:
            if not self._started():
                return
            chunk = self._budget.take(kind, text, level)
            if chunk is None or self.ended:
                return
            try:
                stored = self.writer.output(chunk, retry_for=self.outage_grace)
            except self._unreachable:
                logger.warning("task %s: output dropped, Redis unreachable", self.task.id)
                return
            if stored is None:
                self._cancelled = True  # terminal: the next check() raises

    # -- driven by the keeper and the signals ----------------------------------------

    def end(self, *, cancelled: bool) -> None:
        """The stored task is already final: publish nothing more for this attempt."""
        with self._lock:
            self.ended, self._cancelled, self._start = True, cancelled, None

    def due(self) -> float | None:
        """When pending ``running`` or progress must be published (monotonic), or None."""
        if self.ended:
            return None
        start = self._start_due if self._start is not None else math.inf
        progress = self._last + self.progress_interval if self._pending else math.inf
        due = min(start, progress)
        return None if due == math.inf else due

    def flush(self) -> None:
        """Publish the pending ``running`` and progress that are due (the keeper calls this).
        A run busy publishing (its lock held) is skipped: it publishes what it has itself."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            now = time.monotonic()
            if self._start is not None and now >= self._start_due and not self._started():
                return
            if self._pending and not self.ended and now >= self._last + self.progress_interval:
                self._publish_progress()
        finally:
            self._lock.release()

    def _publish_progress(self) -> None:
        self._pending = False
        self._last = time.monotonic()
        if self.ended:
            return
        if self._start is not None:  # running is not stored yet (Redis unreachable): later
            self._pending = True
            return
        snapshot = self.task.evolve(
            progress=self._progress,
            message=self._message,
            metadata=self._metadata,
            output_chunks=self._budget.chunks,
        )
        try:
            stored = self.writer.progress(snapshot)
        except self._unreachable:
            self._pending = True  # the latest value goes out once Redis answers
            return
        if stored is None:
            self._cancelled = True
        else:
            self.task = stored

    def finish(self, state: TaskState, **changes: Any) -> None:
        """Publish this attempt's final state (the latest progress with it), without
        waiting for Redis to store it (see ``WorkerWriter.final``)."""
        with self._lock:
            if self.ended:
                return
            self.ended = True
            self._pending = False
            changes.setdefault("progress", self._progress)
            changes.setdefault("message", self._message)
            changes.setdefault("metadata", self._metadata)
            start = self._start
            if start is not None:
                changes["started_at"] = start[0].started_at
            final = self.task.evolve(
                state=state, finished_at=utcnow(), output_chunks=self._budget.chunks, **changes
            )
            start, grace = self._take_start(), self.outage_grace
            try:
                # Not waited for: the worker goes on to its next task as Redis stores this.
                write = lambda: self.writer.final(final, started=start, retry_for=grace, wait=False)  # noqa: E731
                self._write(final, write)
            except Exception:
                # Not stored (its snapshot could not be encoded, most likely): the caller may
                # still end it otherwise.
                self.ended, self._start = False, start
                raise

    def requeue(self, message: str) -> Task | None:
        """This attempt ends in a retry: back to ``queued``, unleased, until a worker takes it."""
        with self._lock:
            if self.ended:
                return None
            self.ended = self.requeued = True
            self._pending = False
            queued = self.task.evolve(
                state=TaskState.QUEUED,
                message=message,
                progress=None,
                started_at=None,
                output_chunks=self._budget.chunks,
            )
            start, grace = self._take_start(), self.outage_grace
            stored = self._write(queued, lambda: self.writer.requeue(queued, started=start, retry_for=grace))
            if stored is not None:
                self.task = stored
            return stored

    def hand_off(self) -> None:
        """The task replaced itself (``self.replace``): its new message carries it on, so this
        attempt publishes nothing more (the next one stores ``running``)."""
        with self._lock:
            if self._start is not None and not self.ended:
                self._started()  # its start happened: store it
            self.ended = True
            self._start = None

    def fail_requeued(self, reason: str) -> Task | None:
        """The retry this attempt stored ``queued`` for was never sent: the task is over."""
        with self._lock:
            self.requeued = False
            failed = self.task.evolve(
                state=TaskState.FAILED,
                finished_at=utcnow(),
                error={"type": "RetryFailed", "message": reason},
                output_chunks=self._budget.chunks,
            )
            return self._write(failed, lambda: self.writer.final(failed, retry_for=self.outage_grace))

    def _write(self, last: Task, write: Callable[[], Task | None]) -> Task | None:
        """Publish the attempt's last event (after its pending ``running``, in one round trip)."""
        try:
            return write()
        except self._unreachable:
            # Its lease is no longer renewed: it ends failed (WorkerLost) once Redis answers.
            logger.error("task %s: %s not published, Redis unreachable", last.id, last.state.value)
            return None


def _budget(task: Task, max_bytes: int, max_chunks: int, earlier: Sequence[OutputChunk]) -> OutputBudget:
    """The output budget of an attempt: a retry goes on from the output its earlier attempts
    stored, so chunks keep one numbering and the bounds hold for the task, not per attempt."""
    budget = OutputBudget(task.id, max_bytes, max_chunks)
    for chunk in earlier:
        budget.take(chunk.kind, chunk.text, chunk.level)
    last = earlier[-1] if earlier else None
    if last and last.level == "warning" and last.text.startswith("output limit reached"):
        budget.full = True  # an earlier attempt said so: nothing more is kept
    # Chunks an outage dropped were numbered all the same.
    budget.chunks = max(budget.chunks, task.output_chunks, last.seq + 1 if last else 0)
    return budget


class Keeper:
    """One thread per worker process: publishes progress when it falls due and renews the
    leases of the tasks running here every ``writer.lease / 4`` seconds.

    ``runs`` are the attempts running in this process (the hook adds and removes them).
    Started on first use in each process (:meth:`ensure_started`; a forked pool child
    starts its own).
    """

    def __init__(self, runs: dict[int, WorkerRun], writer: WorkerWriter) -> None:
        self.runs = runs
        self.writer = writer
        self.renew_every = writer.lease / 4
        self._cond = threading.Condition()
        self._woken = False
        self._wake_at = -math.inf  # when the keeper wakes by itself (-inf: it is awake)
        self._pid: int | None = None
        self._starting = threading.Lock()
        self._stopped = False

    def ensure_started(self) -> None:
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._starting:  # pool threads start tasks at once
            if self._pid != pid:
                self._cond = threading.Condition()
                thread = threading.Thread(target=self._loop, name="sse-tasks-keeper", daemon=True)
                thread.start()
                self._pid = pid

    def stop(self) -> None:
        """End the thread (a worker shutting down): nothing more is flushed or renewed."""
        with self._cond:
            self._stopped = True
            self._woken = True
            self._cond.notify()

    def wake(self, due: float) -> None:
        """Work falls due at ``due`` (monotonic): wake the keeper if it would sleep past it.
        Most calls cost no thread switch: under load the keeper wakes often by itself."""
        with self._cond:
            if due < self._wake_at:
                self._woken = True
                self._cond.notify()
            elif self._wake_at == -math.inf:
                self._woken = True  # awake: it looks again before it sleeps

    def _loop(self) -> None:
        next_renewal = time.monotonic() + self.renew_every
        busy_until = -math.inf
        while not self._stopped:
            runs = list(self.runs.values())
            dues = [due for due in (run.due() for run in runs) if due is not None]
            now = time.monotonic()
            if runs:
                busy_until = now + 1.0
            # Busy, it looks every IDLE_TICK even with nothing due: a run that starts then
            # is due later than that, so wake() needs no thread switch for it.
            tick = now + IDLE_TICK if now < busy_until else math.inf
            wake_at = min([next_renewal, tick, *dues])
            with self._cond:
                # At least a moment: a run busy publishing is due, but skipped, until it is done.
                timeout = max(wake_at - time.monotonic(), 0.005)
                if not self._woken:
                    self._wake_at = wake_at
                    self._cond.wait(timeout)
                self._woken = False
                self._wake_at = -math.inf
                if self._stopped:
                    return
            for run in runs:
                try:
                    run.flush()
                except self.writer.unreachable:
                    pass  # stays pending: published once Redis answers
                except Exception:
                    logger.exception("sse_tasks keeper: publishing task %s failed", run.task.id)
            try:
                self.writer.settle()  # outcomes sent without waiting: answered, or sent again
            except self.writer.unreachable:
                pass  # sent again at the next look, until their deadline
            except Exception:
                logger.exception("sse_tasks keeper: checking outcomes sent failed")
            if time.monotonic() >= next_renewal:
                next_renewal = time.monotonic() + self.renew_every
                try:
                    self.writer.renew(run.task.id for run in runs if not run.ended)
                except self.writer.unreachable:
                    pass  # renewed once Redis answers
                except Exception:
                    logger.exception("sse_tasks keeper: renewing leases failed")
