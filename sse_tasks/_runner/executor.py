"""The local seam: "run this job in this process, report through this publisher".

The runner creates a task (``queued``), hands its :class:`Job` to the local executor and
asks it to stop jobs it runs; the executor reports every state change through the
:class:`Publisher`. :class:`InProcessExecutor` is the implementation. Work that runs in
another engine's workers goes through the other seam, :class:`RemoteEngine`
(``engine.py``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from anyio.abc import TaskGroup

from .._core.models import Task
from .job import Job, Publisher


class LocalExecutor(abc.ABC):
    """Runs the work of queued tasks in this process."""

    @abc.abstractmethod
    async def start(self, publisher: Publisher, done: Callable[[Job], None], group: TaskGroup) -> None:
        """Begin taking jobs; call ``done(job)`` once a job is over here."""

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

    @property
    def accepting(self) -> bool:
        """True while :meth:`submit` takes jobs (an executor whose workers stopped does not):
        the hub then answers 503 and stores nothing."""
        return True

    def begin_shutdown(self) -> None:  # noqa: B027 - optional hook
        """Jobs taken from now on are not run: they end ``cancelled``."""

    def cancel_all(self, reason: str) -> None:
        """Stop every job running here (the shutdown grace is over)."""
        for task_id in list(self.running_ids()):
            self.cancel(task_id, reason)

    def running_ids(self) -> list[str]:
        """Ids of the jobs running here."""
        return []


#: Deprecated name of :class:`LocalExecutor`, kept for code that subclasses it (an engine
#: whose own workers run the work is now a :class:`RemoteEngine`).
Executor = LocalExecutor
