"""The context a task function may ask for: progress reporting and cancellation.

A context is a thin, checked view over a :class:`TaskSink`, which whoever runs the
task provides (the in-process executor's run, or a worker hook of another engine).
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import Any, Protocol

from .errors import TaskCancelled
from .models import MAX_METADATA_BYTES, check_metadata
from .text import clean_text, short_text

#: The levels of ``TaskContext.log``.
LOG_LEVELS = ("debug", "info", "warning", "error")


class TaskSink(Protocol):
    """Where a running task's reports go. Both members must work from any thread."""

    @property
    def cancelled(self) -> bool:
        """True once the task has been cancelled."""
        ...

    def report(self, progress: float | None, message: str | None) -> None:
        """Take the task's latest progress (already checked and cleaned)."""
        ...

    def output(self, kind: str, text: str, level: str | None) -> None:
        """Take one chunk of output, in order (already checked and cleaned)."""
        ...

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        """Take the task's whole latest metadata (already checked), published like progress."""
        ...


class TaskContext:
    """Handed to a task function that declares a parameter annotated ``TaskContext``.

    ``progress()`` and ``check()`` work from async code and from the worker thread a
    plain ``def`` task runs in. Reporting is cheap: the latest value is published at
    most once per the hub's ``progress_interval``.
    """

    def __init__(
        self,
        task_id: str,
        name: str,
        params: dict[str, Any],
        sink: TaskSink,
        *,
        metadata: Mapping[str, Any] | None = None,
        max_metadata_bytes: int = MAX_METADATA_BYTES,
    ) -> None:
        self.task_id = task_id
        self.name = name
        self.params = params
        self._sink = sink
        self._metadata: dict[str, Any] = dict(metadata or {})
        self.max_metadata_bytes = max_metadata_bytes

    @property
    def sink(self) -> TaskSink:
        """Where this context's reports go: the run of the task (the runner's, or a worker
        hook's), which finds its own run from ``current_task().sink``."""
        return self._sink

    @property
    def cancelled(self) -> bool:
        """True once the task has been cancelled (by ``DELETE``, shutdown or timeout)."""
        return self._sink.cancelled

    def check(self) -> None:
        """Raise :class:`TaskCancelled` if the task has been cancelled (sync tasks call this).

        It derives from ``BaseException``: an ``except Exception:`` around this call
        does not stop the task from ending ``cancelled``."""
        if self._sink.cancelled:
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
            if not 0.0 <= fraction <= 1.0:  # NaN too; an int beyond a double as well
                shown = (
                    repr(fraction) if isinstance(fraction, float) or abs(fraction) < 10**20 else "an integer"
                )
                raise ValueError(f"progress fraction must be in [0, 1], not {shown}")
            fraction = float(fraction)
        self._sink.report(fraction, None if message is None else short_text(message))

    def output(self, text: str) -> None:
        """Publish ``text`` as the next piece of the task's output (a ``task.output``
        event of kind ``output``; ``GET /tasks/<id>/output`` joins these).

        Ordered, never coalesced; beyond the hub's per-task bound the task says so once
        and further output is not kept. Raises :class:`TaskCancelled` once cancelled.
        """
        self.check()
        self._sink.output("output", clean_text(str(text)), None)

    def metadata(self, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into the task's metadata (top-level keys; a value of None
        removes its key) and return the result. Published like progress: on the snapshot's
        ``metadata`` and in a ``task.progress`` event, the latest value always.

        Raises ``ValueError`` (changing nothing) if the result is not strict JSON or is
        larger than the hub's ``max_metadata_bytes`` encoded, and :class:`TaskCancelled`
        once the task is cancelled. ``metadata()`` with no changes reads it.
        """
        if not changes:
            return dict(self._metadata)
        merged = {**self._metadata, **changes}
        return self.set_metadata({key: value for key, value in merged.items() if value is not None})

    def set_metadata(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the task's metadata with ``metadata`` (a JSON object); as :meth:`metadata`."""
        self.check()
        checked = check_metadata(metadata, self.max_metadata_bytes)
        self._metadata = checked
        self._sink.set_metadata(checked)
        return dict(checked)

    def log(self, text: str, level: str = "info") -> None:
        """Publish a log line (a ``task.output`` event of kind ``log`` with ``level``)."""
        self.check()
        if level not in LOG_LEVELS:
            raise ValueError(f"level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
        self._sink.output("log", clean_text(str(text)), level)


#: The context of the task running in this context (asyncio task, or the worker thread
#: of a plain ``def``, which anyio gives a copy of the caller's context variables).
CURRENT: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar("sse_tasks_task", default=None)


def current_task() -> TaskContext:
    """The :class:`TaskContext` of the task running here, from anywhere inside it.

    Works in an ``async def`` task and in the worker thread of a plain ``def``; a thread
    the task starts itself gets it only if started with a copy of the context
    (``contextvars.copy_context().run``). Raises ``RuntimeError`` outside a task.
    """
    context = CURRENT.get()
    if context is None:
        raise RuntimeError("current_task() was called outside a running task")
    return context
