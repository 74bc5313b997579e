"""One execution of a job in this process: the sink behind its :class:`TaskContext`."""

from __future__ import annotations

import threading
from collections.abc import Callable

import anyio
import anyio.from_thread
import anyio.lowlevel

from .._core.context import TaskContext
from .._core.models import Task
from .job import Job


class Run:
    """A job running here: its cancel scope, its latest progress and whether it was cancelled.

    ``report()`` may be called from any thread; the progress publisher is woken on the
    event loop, and started by the first report (most tasks never make one).
    """

    def __init__(self, job: Job) -> None:
        self.job = job
        self.scope = anyio.CancelScope()
        self.task: Task | None = None  # the running snapshot, once published
        self.cancel_reason: str | None = None
        self.ended = False  # its outcome is decided: too late to cancel
        self.context = TaskContext(job.task.id, job.task.name, job.params, self)
        self.cancel_requested = False  # cancelled (DELETE, shutdown, finished elsewhere)
        self._halted = False
        self._lock = threading.Lock()
        self._progress: float | None = None
        self._message: str | None = None
        self._dirty = anyio.Event()
        self._loop_thread = threading.get_ident()
        self._token = anyio.lowlevel.current_token()
        #: Starts the progress publisher; set while the task runs, None once started.
        self.start_publisher: Callable[[], object] | None = None

    @property
    def cancelled(self) -> bool:
        """What the task's context sees: True once its work should stop."""
        return self._halted

    def cancel(self, reason: str | None = None) -> None:
        """Cancel the task (it ends ``cancelled``): async code stops at once, a worker
        thread at its next ``progress()``/``check()``."""
        if not self.cancel_requested:
            self.cancel_requested = True
            self.cancel_reason = reason
        self._halted = True
        self.scope.cancel()

    def halt(self) -> None:
        """Make a worker thread stop at its next ``progress()``/``check()`` (e.g. after a
        timeout), without deciding the task's outcome."""
        self._halted = True

    def report(self, progress: float | None, message: str | None) -> None:
        with self._lock:
            self._progress, self._message = progress, message
        if self._dirty.is_set():
            return  # not picked up yet: the publisher reads the latest value
        if threading.get_ident() == self._loop_thread:
            self._notify()
        else:
            anyio.from_thread.run_sync(self._notify, token=self._token)

    def _notify(self) -> None:
        start, self.start_publisher = self.start_publisher, None
        if start is not None:
            start()
        self._dirty.set()

    def latest(self) -> tuple[float | None, str | None]:
        with self._lock:
            return self._progress, self._message

    async def next_report(self) -> tuple[float | None, str | None]:
        """Wait for a report newer than the last one taken; the latest value."""
        await self._dirty.wait()
        self._dirty = anyio.Event()
        return self.latest()
