"""The context handed to a task function: progress reporting and cancellation."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel

from .errors import TaskCancelled
from .text import clean_text


class TaskContext:
    """Passed as the first argument to every task function.

    ``progress()`` and ``check()`` work from async code and from the worker thread a
    plain ``def`` task runs in. Reporting is cheap: the hub publishes the latest value
    at most once per its ``progress_interval``.
    """

    def __init__(self, task_id: str, name: str, params: dict[str, Any]) -> None:
        self.task_id = task_id
        self.name = name
        self.params = params
        self._lock = threading.Lock()
        self._progress: float | None = None
        self._message: str | None = None
        self._cancelled = False
        self._dirty = anyio.Event()
        self._loop_thread = threading.get_ident()
        # Lets threads the task function starts itself report progress too.
        self._token = anyio.lowlevel.current_token()
        #: Set by the hub while the task runs: starts the task's progress publisher.
        self._start_pump: Callable[[], object] | None = None

    @property
    def cancelled(self) -> bool:
        """True once the task has been cancelled (by ``DELETE``, shutdown or timeout)."""
        return self._cancelled

    def check(self) -> None:
        """Raise :class:`TaskCancelled` if the task has been cancelled (sync tasks call this)."""
        if self._cancelled:
            raise TaskCancelled(f"task {self.task_id} was cancelled")

    def progress(self, fraction: float | None = None, message: str | None = None) -> None:
        """Report progress: ``fraction`` in [0, 1] (or None) and a short message.

        Raises ``ValueError`` for a fraction outside [0, 1] and :class:`TaskCancelled`
        once the task is cancelled.
        """
        self.check()
        if fraction is not None:
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
                raise ValueError("progress fraction must be a number in [0, 1] or None")
            if math.isnan(fraction) or not 0.0 <= fraction <= 1.0:
                raise ValueError(f"progress fraction must be in [0, 1], not {fraction!r}")
            fraction = float(fraction)
        with self._lock:
            self._progress = fraction
            self._message = None if message is None else clean_text(str(message))
        dirty = self._dirty
        if dirty.is_set():
            return  # the hub has not picked up the previous value yet; it reads the latest
        if threading.get_ident() == self._loop_thread:
            self._notify()
        else:
            anyio.from_thread.run_sync(self._notify, token=self._token)

    # -- used by the hub ---------------------------------------------------------

    def _notify(self) -> None:
        start, self._start_pump = self._start_pump, None
        if start is not None:
            start()  # the first report: most tasks never make one, so no publisher until now
        self._dirty.set()

    def _latest(self) -> tuple[float | None, str | None]:
        with self._lock:
            return self._progress, self._message

    async def _wait_dirty(self) -> tuple[float | None, str | None]:
        await self._dirty.wait()
        self._dirty = anyio.Event()
        return self._latest()

    def _cancel(self) -> None:
        self._cancelled = True
