"""One execution of a job in this process: the sink behind its :class:`TaskContext`."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel

from .._core.budget import OutputBudget
from .._core.context import TaskContext
from .._core.models import MAX_METADATA_BYTES, OutputChunk, Task
from .job import Job


class Run:
    """A job running here: its cancel scope, its latest progress and whether it was cancelled.

    ``report()`` may be called from any thread; the progress publisher is woken on the
    event loop, and started by the first report (most tasks never make one).
    """

    def __init__(
        self,
        job: Job,
        max_output_bytes: int = 1 << 20,
        max_output_chunks: int = 10_000,
        max_metadata_bytes: int = MAX_METADATA_BYTES,
    ) -> None:
        self.job = job
        self.max_output_bytes = max_output_bytes
        self.max_output_chunks = max_output_chunks
        self.scope = anyio.CancelScope()
        self.task: Task | None = None  # the running snapshot, once published
        self.cancel_reason: str | None = None
        self.ended = False  # its outcome is decided: too late to cancel
        self.context = TaskContext(
            job.task.id,
            job.task.name,
            job.params,
            self,
            metadata=job.task.metadata,
            max_metadata_bytes=max_metadata_bytes,
        )
        self.cancel_requested = False  # cancelled (DELETE, shutdown, finished elsewhere)
        self._halted = False
        self._lock = threading.Lock()
        self._progress: float | None = None
        self._message: str | None = None
        #: The latest metadata the task set (published with its progress).
        self.metadata: dict[str, Any] = dict(job.task.metadata)
        self._dirty = anyio.Event()
        self._loop_thread = threading.get_ident()
        self._token = anyio.lowlevel.current_token()
        #: Starts the progress publisher; set while the task runs, None once started.
        self.start_publisher: Callable[[], object] | None = None
        #: Starts the output publisher, likewise.
        self.start_output: Callable[[], object] | None = None
        self._budget = OutputBudget(job.task.id, max_output_bytes, max_output_chunks)
        self._pending: deque[OutputChunk] = deque()
        self._output_waiting = False  # the publisher has been told about pending chunks
        self._output_ready = anyio.Event()
        self._output_drained = anyio.Event()
        self._output_drained.set()

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
        self._changed()

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        with self._lock:
            self.metadata = metadata
        self._changed()

    def _changed(self) -> None:
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

    @property
    def output_chunks(self) -> int:
        """Chunks kept (numbered 0 on), the limit warning included."""
        return self._budget.chunks

    # -- output ------------------------------------------------------------------------

    def output(self, kind: str, text: str, level: str | None) -> None:
        with self._lock:
            chunk = self._budget.take(kind, text, level)
            if chunk is None:
                return
            self._pending.append(chunk)
            notify, self._output_waiting = not self._output_waiting, True
        if notify:
            if threading.get_ident() == self._loop_thread:
                self._notify_output()
            else:
                anyio.from_thread.run_sync(self._notify_output, token=self._token)

    def _notify_output(self) -> None:
        start, self.start_output = self.start_output, None
        if start is not None:
            start()
        self._output_drained = anyio.Event()
        self._output_ready.set()

    async def next_output(self) -> list[OutputChunk]:
        """Wait for chunks not yet taken; all of them, in order."""
        await self._output_ready.wait()
        self._output_ready = anyio.Event()
        with self._lock:
            chunks = list(self._pending)
            self._pending.clear()
            self._output_waiting = False
        return chunks

    def output_published(self) -> None:
        """The publisher has stored every chunk it took; drained if none are pending."""
        with self._lock:
            if not self._pending:
                self._output_drained.set()

    def output_abandoned(self) -> None:
        """The publisher stopped: nothing more will be published, so nothing to wait for."""
        self._output_drained.set()

    async def output_drained(self) -> None:
        """Return once every chunk reported so far has been published."""
        await self._output_drained.wait()
