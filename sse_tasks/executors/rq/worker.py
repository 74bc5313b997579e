"""The worker side: ``rq worker --worker-class sse_tasks.rq.Worker`` reports every job to the hub.

The worker forks a work horse per job (RQ's ``Worker``); the horse runs the job through a
:class:`~sse_tasks.engines.WorkerRun` (its context is ``current_task()``), with one
:class:`~sse_tasks.engines.Keeper` per horse renewing its lease.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from datetime import datetime
from typing import Any

import rq
from rq.command import parse_payload
from rq.job import Retry
from rq.utils import import_job_class

from ..._core.errors import TaskCancelled
from ..._core.models import OutputChunk, Task, TaskState, utc_time, utcnow, valid_task_id
from ..._core.text import short_text
from ...brokers import is_redis_url
from ...brokers.redis import RedisBroker
from ...engines import Keeper, SyncWriter, WorkerRun, error_of
from ...engines.meta import progress_of
from ...engines.tags import TAGS_KEY, sent_tags

logger = logging.getLogger("sse_tasks.rq")

#: ``job.meta`` key the hub sets on the jobs it sends: ``{"name", "owner", "created_at"}``.
META_KEY = "sse_tasks"
#: ``job.meta`` key set when a job is retried: the next attempt goes on from the stored task.
RETRIED_KEY = "sse_tasks_retried"


class Job(rq.job.Job):
    """RQ's job, reporting through the attempt running it: ``save_meta()`` reports
    ``progress``/``message`` (or ``current``/``total``/``description``) from ``job.meta``,
    and ``perform()`` publishes the outcome."""

    #: The attempt running this job in this horse (set by :class:`Worker`).
    run: WorkerRun | None = None
    #: True if the hub refused the task or it was cancelled while it waited: not run.
    discard: bool = False

    def save_meta(self) -> None:
        super().save_meta()  # type: ignore[no-untyped-call]
        run = self.run
        if run is not None and not run.ended:
            reported = progress_of(self.meta)
            if reported is not None:
                run.report(*reported)
            run.context.check()  # a cancelled task stops at its next report

    def perform(self) -> Any:
        run = self.run
        if self.discard:
            return None
        if run is None:
            return super().perform()
        run.enter()
        try:
            result = super().perform()
        except TaskCancelled:
            self.retries_left = 0  # never retried
            run.finish(TaskState.CANCELLED)
            raise
        except BaseException as exc:
            if self.should_retry:
                self.meta[RETRIED_KEY] = True
                left = (self.retries_left or 1) - 1
                run.requeue(f"retrying after {type(exc).__name__}: {left} retries left")
            else:
                run.finish(TaskState.FAILED, error=error_of(exc))
            raise
        finally:
            run.leave()
        if isinstance(result, Retry):
            self.meta[RETRIED_KEY] = True
            run.requeue("retrying (the job returned Retry)")
            return result
        run.succeed(result)
        return result


class Worker(rq.Worker):
    """RQ's forking worker, reporting every job it runs to the hub's Redis broker
    (``$SSE_TASKS_BROKER``): ``rq worker --worker-class sse_tasks.rq.Worker``.

    A job the hub sent (its ``job.meta`` says so) is discarded unrun if the hub refused
    it (a 503) or it was cancelled while it waited; a job enqueued by other code is stored
    ``queued`` when a worker picks it up, its ``created_at`` RQ's ``enqueued_at``. A
    ``stop-job`` command (``send_stop_job_command``, what ``DELETE`` sends) lets the job
    stop at its next ``progress()``/``check()`` for ``stop_grace`` seconds, then kills its
    work horse as RQ does. Subclass to change ``hub_url``, ``stop_grace`` or the intervals.
    """

    job_class = Job
    #: The hub's Redis broker URL (default ``$SSE_TASKS_BROKER``).
    hub_url: str | None = None
    #: Seconds a stopped job has to stop by itself before its horse is killed.
    stop_grace = 1.0
    progress_interval = 0.1
    check_interval = 0.1
    start_delay = 0.05

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        given = kwargs.get("job_class")
        if isinstance(given, str):
            given = import_job_class(given)
        if given is None or given is rq.job.Job:  # `rq worker` passes RQ's own by default
            kwargs["job_class"] = Job
        elif not (isinstance(given, type) and issubclass(given, Job)):
            raise TypeError(f"sse_tasks.rq.Worker runs jobs of sse_tasks.rq.Job or a subclass, not {given!r}")
        super().__init__(*args, **kwargs)
        url = self.hub_url or os.environ.get("SSE_TASKS_BROKER") or ""
        if not is_redis_url(url):
            raise ValueError(f"Worker needs the hub's Redis URL ($SSE_TASKS_BROKER): not {url!r}")
        self.writer = SyncWriter(RedisBroker(url))
        self.runs: dict[int, WorkerRun] = {}
        self.keeper = Keeper(self.runs, self.writer)

    # -- the worker process ------------------------------------------------------------

    def execute_job(self, job: rq.job.Job, queue: rq.Queue) -> None:
        reaped = False
        try:
            try:
                self._admit(job)
                self.writer.lend()  # the horse writes on this process's connection
            except self.writer.unreachable:
                logger.warning("job %s: the hub's Redis is unreachable; run unreported", job.id)
            super().execute_job(job, queue)
            reaped = not self.horse_pid  # RQ waited for the horse to end
        finally:
            self.writer.reclaim(child_alive=not reaped)

    def _admit(self, job: rq.job.Job) -> None:
        """Find a task the hub sent refused (or store it ``queued``) and set up its attempt,
        which the forked horse inherits. A job enqueued by other code is created ``queued``
        with the attempt's first write (``running``, or its outcome), in one round trip."""
        if not isinstance(job, Job) or not valid_task_id(job.id):
            return
        queued = self._snapshot(job)
        retried = bool(job.meta.get(RETRIED_KEY))
        if isinstance(job.meta.get(META_KEY), dict):
            if self.writer.receive(queued) != TaskState.QUEUED.value:
                job.discard = True  # refused (a 503), cancelled while it waited, or gone
                return
        earlier: tuple[OutputChunk, ...] = ()
        if retried:
            stored = self.writer.get(job.id)
            if stored is None or stored.state.terminal:
                job.discard = True
                return
            queued = stored
            earlier = tuple(self.writer.stored_output(job.id)) if stored.output_chunks else ()
        job.run = WorkerRun(
            queued,
            dict(job.kwargs),
            self.writer,
            progress_interval=self.progress_interval,
            check_interval=self.check_interval,
            earlier_output=earlier,
            wake=self.keeper.wake,
        )

    @staticmethod
    def _snapshot(job: rq.job.Job) -> Task:
        sent = job.meta.get(META_KEY)
        tags = sent_tags(job.meta.get(TAGS_KEY), job.id)
        if isinstance(sent, dict):  # written by the hub or sse_tasks.rq.Queue, or by anyone
            name, owner, created = sent.get("name"), sent.get("owner"), sent.get("created_at")
            return Task(
                id=job.id,
                name=short_text(name) if isinstance(name, str) and name else name_of(job),
                owner=short_text(owner) if owner else None,
                created_at=utc_time(created) or iso_time(job.enqueued_at),
                tags=tags,
            )
        return Task(id=job.id, name=name_of(job), created_at=iso_time(job.enqueued_at), tags=tags)

    def handle_payload(self, message: Any) -> None:
        payload = parse_payload(message)
        if payload.get("command") == "stop-job" and self.stop_grace > 0 and self.horse_pid:
            horse = self.horse_pid
            timer = threading.Timer(self.stop_grace, self._stop_if_running, (message, horse))
            timer.daemon = True
            timer.start()
            return
        super().handle_payload(message)  # type: ignore[no-untyped-call]

    def _stop_if_running(self, message: Any, horse: int) -> None:
        """The grace is over: RQ's own stop-job (it kills the horse) if the same horse runs."""
        if self.horse_pid == horse:
            super().handle_payload(message)  # type: ignore[no-untyped-call]

    def unsubscribe(self) -> None:
        """RQ's, with its one-second bound on the wait for the pub/sub thread kept.

        RQ unsubscribes, then stops its thread and waits for it a second. redis-py 8.2's
        ``stop()`` waits on its own, without a bound, while the thread may already be in
        a wait of up to 60 s for a new subscription: a stopped worker could hang that long.
        """
        thread = self.pubsub_thread
        if thread is None:
            return
        self.pubsub.unsubscribe()
        if "timeout" in inspect.signature(thread.stop).parameters:
            thread.stop(timeout=1.0)
        else:  # an older redis-py: stop() does not wait
            thread.stop()
            thread.join(timeout=1.0)

    def teardown(self) -> None:
        super().teardown()  # type: ignore[no-untyped-call]
        if not self.is_horse:
            self.keeper.stop()
            self.writer.close()

    # -- the work horse --------------------------------------------------------------

    def main_work_horse(self, job: rq.job.Job, queue: rq.Queue) -> None:
        self.writer.adopt()  # before any thread of the horse writes
        super().main_work_horse(job, queue)

    def perform_job(self, job: rq.job.Job, queue: rq.Queue, execution: Any) -> bool:
        run = job.run if isinstance(job, Job) else None
        if run is None:
            return bool(super().perform_job(job, queue, execution))
        self.runs[id(run)] = run
        self.keeper.ensure_started()
        run.start(self.start_delay)
        try:
            return bool(super().perform_job(job, queue, execution))
        finally:
            self.runs.pop(id(run), None)
            if not run.ended:  # RQ ended it another way (a timeout in its own code)
                error = {"type": "WorkerError", "message": "the job did not finish"}
                run.finish(TaskState.FAILED, error=error)


def name_of(job: rq.job.Job) -> str:
    """A task's name: its function's (``examples.rq_app.count`` is ``count``)."""
    return str(job.func_name).rsplit(".", 1)[-1]


def iso_time(moment: datetime | None) -> str:
    """``moment`` (RQ's naive UTC, or now) in the snapshot's ISO 8601 form."""
    return utc_time(moment) or utcnow()
