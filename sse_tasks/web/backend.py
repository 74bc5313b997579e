"""What the web layer may ask of the runner: :class:`TaskBackend`, a ``typing.Protocol``.

The web layer never sees the :class:`~sse_tasks._runner.Runner` as such (nor its
broker): its endpoints, streams, gate and metrics are typed against this protocol, and
``tests/web/test_backend.py`` serves the API from a fake that implements only it. The
runner's lifecycle (``start``, ``shutdown``) is not part of it: the hub facade
(:class:`~sse_tasks.TaskHub`) runs the runner, and ends its tasks when the server exits.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Protocol

from .._core.log import EventLog, OutputFollow
from .._core.models import OutputChunk, Task, TaskEvent, TaskState
from .._core.stats import HubStats


class TaskBackend(Protocol):
    """The runner's read side, ``submit_json`` and ``cancel``: all the web layer uses.

    Reads raise :class:`~sse_tasks.NotFound` or :class:`~sse_tasks.TaskGone` for a
    missing task and :class:`~sse_tasks.Unavailable` while the broker is unreachable;
    the web layer answers each with its HTTP status.
    """

    # -- state the endpoints and streams read ---------------------------------------

    @property
    def log(self) -> EventLog:
        """The local, ordered event log every stream of this process reads."""
        ...

    @property
    def stats(self) -> HubStats:
        """The hub's counters (the web layer counts deliveries, refusals, denials)."""
        ...

    @property
    def registry(self) -> Collection[str]:
        """The names of the registered task functions (the web layer reads only names)."""
        ...

    @property
    def closing(self) -> bool:
        """True once shutdown has begun: new streams are refused."""
        ...

    @property
    def running(self) -> int:
        """Tasks executing in this process now (``/metrics``)."""
        ...

    @property
    def queued(self) -> int:
        """Tasks waiting to run in this process now (``/metrics``)."""
        ...

    # -- reads -----------------------------------------------------------------------

    async def get(self, task_id: str, /) -> Task:
        """The task's snapshot; raises :class:`NotFound` or :class:`TaskGone` (expired)."""
        ...

    async def find(self, task_id: str, /) -> Task | None:
        """The task's snapshot, or None if it is unknown or expired."""
        ...

    def local_task(self, task_id: str, /) -> Task | None:
        """A task queued or running in this process, as it knows it (no broker call)."""
        ...

    async def list_tasks(
        self,
        *,
        state: TaskState | None = None,
        name: str | None = None,
        tags: Sequence[str] = (),
        limit: int = 100,
    ) -> list[Task]:
        """Snapshots, newest first, optionally filtered by state and name."""
        ...

    async def cursor(self) -> str:
        """The id of the newest event (a position a stream can resume after)."""
        ...

    def parse_event_id(self, event_id: str, /) -> Any | None:
        """The sortable key of an event id, or None if it is malformed or from another history."""
        ...

    async def events_after(self, key: Any, /) -> list[TaskEvent] | None:
        """Events after ``key`` older than the log holds; None if history does not reach back."""
        ...

    async def output(self, task_id: str, /) -> list[OutputChunk]:
        """The task's retained output chunks, in order."""
        ...

    async def follow_output(self, task: Task | None, /) -> OutputFollow:
        """Have :attr:`log` carry ``task``'s output events (None: every task's) until the
        answer is closed; its ``since``: the key after which the log holds all of it."""
        ...

    # -- writes ------------------------------------------------------------------------

    async def submit_json(
        self, name: str, params: Any, /, *, owner: str | None = None, tags: Sequence[str] = ()
    ) -> Task:
        """Check ``params`` (decoded JSON) against the task ``name``, queue it, return its snapshot."""
        ...

    async def cancel(self, task_id: str, /) -> Task:
        """Cancel a queued or running task; returns the ``cancelled`` snapshot."""
        ...
