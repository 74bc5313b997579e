"""The executor seam: "run this job, report through this publisher".

The runner creates a task (``queued``), hands its :class:`Job` to an executor and
asks it to stop jobs; the executor runs the work wherever it likes and reports every
state change through the :class:`Publisher` (or, for work in other processes, through
the broker directly). In-process is the first implementation; another engine is one
more small class.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable

from anyio.abc import TaskGroup

from .._core.models import Task
from .._core.registry import TaskFunction
from ..brokers import Broker
from .job import Job, Publisher


class Executor(abc.ABC):
    """Where the work of a queued task runs."""

    #: False for an engine whose own workers run the work (and report and lease it
    #: through the broker themselves): this process then neither leases nor retries it.
    runs_here: bool = True

    def bind(self, broker: Broker) -> None:  # noqa: B027 - optional hook
        """Called once with the hub's broker; raise ``ValueError`` if this executor cannot use it."""

    def registrations(self) -> Iterable[tuple[str, TaskFunction]]:
        """Tasks the engine defines, registered on the hub as ``(name, function)`` (the
        function's signature is what clients' params are checked against)."""
        return ()

    async def admit(self, job: Job) -> None:  # noqa: B027 - optional hook
        """Called before the job's ``task.queued`` is stored: an engine with its own queue
        sends the job here, and raises :class:`Unavailable` if it cannot (nothing is stored).
        That is a 503, which promises the job never runs: an engine whose failed send may
        have left all the same refuses the id first (``RedisBroker.refuse``), and its
        workers discard what was refused. Once ``admit`` returns the job is sent: the answer
        is 202 even if storing ``queued`` then fails. For such an engine (``runs_here``
        False) the runner first checks that the broker answers, so a broker outage refuses
        the job before it is sent."""

    async def cancelled(self, task: Task) -> None:  # noqa: B027 - optional hook
        """A client cancelled ``task`` (its ``cancelled`` event is stored): stop its work
        wherever it runs. Work running here is stopped through :meth:`cancel` instead."""

    @abc.abstractmethod
    async def start(self, publisher: Publisher, done: Callable[[Job], None], group: TaskGroup) -> None:
        """Begin taking jobs; call ``done(job)`` once a job is over here (run or handed on)."""

    @abc.abstractmethod
    def submit(self, job: Job) -> None:
        """Take a job whose ``task.queued`` event is stored; never blocks."""

    @abc.abstractmethod
    def cancel(self, task_id: str, reason: str | None = None) -> bool:
        """Stop the job's work if it runs here now; False if it does not (or is already ending)."""

    @abc.abstractmethod
    def running_task(self, task_id: str) -> Task | None:
        """The snapshot of a job running here, as this process knows it; None if not here."""

    @property
    @abc.abstractmethod
    def running(self) -> int:
        """Jobs running here now."""

    def begin_shutdown(self) -> None:  # noqa: B027 - optional hook
        """Jobs taken from now on are not run: they end ``cancelled``."""

    def cancel_all(self, reason: str) -> None:
        """Stop every job running here (the shutdown grace is over)."""
        for task_id in list(self.running_ids()):
            self.cancel(task_id, reason)

    def running_ids(self) -> list[str]:
        """Ids of the jobs running here."""
        return []
