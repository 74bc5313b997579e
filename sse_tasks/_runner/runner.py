"""The runner: registry, submission, cancellation, reads, and the lifespan of the work.

It owns no HTTP: the web layer gets it as the hub's read and write side (``get``,
``list_tasks``, ``cursor``, ``log``, ``parse_event_id``, ``events_after``, ``submit``,
``cancel``), never the broker.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Sequence
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .._core.errors import InvalidRequest, NotFound, TaskFinished, TaskGone, Unavailable
from .._core.log import EventLog, OutputFollow
from .._core.models import (
    MAX_TASK_ID_LENGTH,
    OutputChunk,
    Task,
    TaskEvent,
    TaskState,
    check_tags,
    utcnow,
)
from .._core.registry import RegisteredTask, TaskFunction
from .._core.stats import HubStats
from .._core.text import clean_text
from ..brokers import Broker
from .engine import RemoteEngine, Sender
from .executor import LocalExecutor
from .inprocess import InProcessExecutor
from .job import Job, Publisher

logger = logging.getLogger("sse_tasks")


class _Here:
    """Where a task registered on the hub runs: the local executor."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    async def queue(self, job: Job) -> Task:
        if not self.runner.executor.accepting:  # it logged why it stopped
            raise Unavailable("the hub's executor has stopped (see the server's log)", code="not_running")
        event = await self.runner.broker.publish(job.task, "task.queued")
        if event is None:  # pragma: no cover - a fresh id cannot be terminal
            raise RuntimeError("broker refused a new task")
        return event.task

    def hand(self, job: Job) -> None:
        self.runner.executor.submit(job)

    async def abandon(self, job: Job) -> None:
        await self.runner.publisher.finish(job.task, TaskState.CANCELLED, message="server shutting down")

    async def revoke(self, task: Task) -> None:
        """Work running here stops when its ``cancelled`` event arrives (``_observe``)."""


class _There:
    """Where a task the remote engine defines runs: its workers."""

    def __init__(self, runner: Runner, sender: Sender) -> None:
        self.runner = runner
        self.sender = sender
        self.queue = sender.queue
        self.revoke = sender.revoke

    def hand(self, job: Job) -> None:
        self.runner._forget(job)  # sent already: it runs on a worker

    async def abandon(self, job: Job) -> None:
        """It is in the engine's queue: it runs there."""


class Runner:
    """Creates tasks, hands them to a local executor or a remote engine, and keeps their
    state in a broker.

    The tasks a remote ``engine`` defines run on its workers; every other registered
    task runs in this process, on ``executor`` (an :class:`InProcessExecutor` by
    default). An engine given as ``executor`` is taken as ``engine``.

    Enter it (``async with runner``) to run; on exit it shuts down: stops accepting,
    gives running tasks ``shutdown_grace`` seconds, cancels the rest.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        executor: LocalExecutor | RemoteEngine | None = None,
        engine: RemoteEngine | None = None,
        max_queued: int = 1000,
        shutdown_grace: float = 5.0,
        stats: HubStats | None = None,
    ) -> None:
        if max_queued < 0 or shutdown_grace < 0:
            raise ValueError("max_queued and shutdown_grace must be >= 0")
        if isinstance(executor, RemoteEngine):
            if engine is not None:
                raise ValueError("give one remote engine")
            executor, engine = None, executor
        self.broker = broker
        self.executor: LocalExecutor = executor or InProcessExecutor()
        self.engine = engine
        sender = None if engine is None else Sender(engine, broker)
        self.max_queued = max_queued
        self.shutdown_grace = shutdown_grace
        self.stats = stats or HubStats()
        self.publisher = Publisher(broker, self.stats)
        self.registry: dict[str, RegisteredTask] = {}
        # Jobs not finished here: waiting for their response to be sent, queued or running.
        self._jobs: dict[str, Job] = {}
        self._idle = anyio.Event()
        self._idle.set()
        self._running = False
        self._closing = False
        self._closed: anyio.Event | None = None
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self.group: TaskGroup | None = None
        self._here = _Here(self)
        self._there = None if sender is None else _There(self, sender)
        for name, func in () if sender is None else sender.registrations:
            self.register(func, name=name)

    # -- registration ------------------------------------------------------------

    def register(
        self, func: TaskFunction, *, name: str | None = None, timeout: float | None = None
    ) -> RegisteredTask:
        """Register ``func`` under ``name`` (default: its ``__name__``); ``ValueError`` on a duplicate."""
        registered = RegisteredTask.build(func, name, timeout)
        if registered.name in self.registry:
            raise ValueError(f"a task named {registered.name!r} is already registered")
        self.registry[registered.name] = registered
        return registered

    def resolve(self, func_or_name: TaskFunction | str) -> RegisteredTask:
        """The registered task of that name or function (an unregistered function is used as is)."""
        if isinstance(func_or_name, str):
            registered = self.registry.get(func_or_name)
            if registered is None:
                raise NotFound(f"no task named {func_or_name!r} is registered")
            return registered
        for registered in self.registry.values():
            if registered.func is func_or_name:
                return registered
        return RegisteredTask.build(func_or_name, None, None)

    # -- submitting ----------------------------------------------------------------

    async def submit_json(
        self,
        func_or_name: TaskFunction | str,
        params: Any,
        *,
        owner: str | None = None,
        tags: Sequence[str] = (),
    ) -> Task:
        """Check ``params`` (decoded JSON) and ``tags``, queue the run and return its snapshot at once."""
        registered = self.resolve(func_or_name)
        try:
            checked_tags = check_tags(tags)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        job = await self.create(registered, registered.validate(params), owner, checked_tags)
        self.start(job)
        return job.task

    async def create(
        self,
        registered: RegisteredTask,
        params: dict[str, Any],
        owner: str | None = None,
        tags: tuple[str, ...] = (),
    ) -> Job:
        """Store a new ``queued`` task; :meth:`start` hands it to the executor."""
        if not self._running or self._closing:
            raise Unavailable(
                "the hub is shutting down"
                if self._closing
                else "the hub is not running (enter it in the app's lifespan)",
                code="shutting_down" if self._closing else "not_running",
            )
        if self.queued >= self.max_queued:
            raise Unavailable(f"the queue is full ({self.max_queued} tasks)", code="queue_full")
        if owner is not None:
            owner = clean_text(str(owner))
        task = Task(id=secrets.token_urlsafe(12), name=registered.name, owner=owner, tags=tags)
        job = Job(task, registered, params)
        self._add(job)
        try:
            job.task = await self._place(task.name).queue(job)
        except BaseException:
            self._forget(job)
            raise
        self.stats.tasks["queued"] += 1
        logger.info("task queued id=%s name=%s", task.id, task.name)
        return job

    def _place(self, name: str) -> _Here | _There:
        """Where the task named ``name`` runs: on the engine that defines it, else here."""
        there = self._there
        return there if there is not None and name in there.sender.names else self._here

    def start(self, job: Job) -> None:
        """Hand a created job to the executor (at once, or after the response is sent)."""
        if self._closing:
            return  # shutdown cancels it
        self._place(job.task.name).hand(job)

    def _add(self, job: Job) -> None:
        self._jobs[job.task.id] = job
        if self._idle.is_set():
            self._idle = anyio.Event()

    def _forget(self, job: Job) -> None:
        if self._jobs.pop(job.task.id, None) is not None and not self._jobs:
            self._idle.set()

    # -- reading and cancelling ----------------------------------------------------

    async def get(self, task_id: str) -> Task:
        """The task's snapshot; raises :class:`NotFound` or :class:`TaskGone` (expired)."""
        known = len(task_id) <= MAX_TASK_ID_LENGTH
        task = await self.broker.get(task_id) if known else None
        if task is None:
            if known and await self.broker.expired(task_id):
                raise TaskGone(f"task {task_id!r} has finished and expired")
            raise NotFound(f"no task with id {task_id!r}")
        return task

    async def find(self, task_id: str) -> Task | None:
        """The task's snapshot, or None if it is unknown or expired."""
        return await self.broker.get(task_id) if len(task_id) <= MAX_TASK_ID_LENGTH else None

    async def list_tasks(
        self,
        *,
        state: TaskState | None = None,
        name: str | None = None,
        tags: Sequence[str] = (),
        limit: int = 100,
    ) -> list[Task]:
        """Snapshots, newest first, optionally filtered by state, name and tags (every one)."""
        return await self.broker.list_tasks(state=state, name=name, tags=tags, limit=limit)

    def local_task(self, task_id: str) -> Task | None:
        """The snapshot of a task queued or running here, as this process knows it (no broker call)."""
        job = self._jobs.get(task_id)
        if job is None:
            return None
        return self.executor.running_task(task_id) or job.task

    async def cancel(self, task_id: str) -> Task:
        """Cancel a queued or running task; returns the ``cancelled`` snapshot.

        Raises :class:`NotFound`/:class:`TaskGone`, :class:`TaskFinished` if it already
        reached a terminal state, :class:`Unavailable` if the broker is unreachable and
        the task does not run here.
        """
        try:
            task = await self.get(task_id)
        except Unavailable:
            # A task this process runs is still cancelled here, at once; its final
            # event is retried until the broker answers.
            local = self._cancel_locally(task_id)
            if local is None:
                raise
            return local
        while not task.terminal:
            event = await self.publisher.finish(task, TaskState.CANCELLED)
            if event is not None:
                # A run of this process stops now, not once a broker that reads its writes
                # back (Redis) has: its next progress() raises TaskCancelled.
                self.executor.cancel(task_id)
                if self.group is not None:  # stopping the work elsewhere must not delay the answer
                    self.group.start_soon(self._stop_elsewhere, event.task)
                return event.task
            task = await self.get(task_id)
        raise TaskFinished(f"task {task_id!r} already {task.state.value}")

    async def _stop_elsewhere(self, task: Task) -> None:
        await self._place(task.name).revoke(task)

    def _cancel_locally(self, task_id: str) -> Task | None:
        task = self.local_task(task_id)
        if task is None:
            return None
        if self.executor.running_task(task_id) is not None:
            if not self.executor.cancel(task_id):
                return None  # its outcome is already decided
        else:
            self._jobs[task_id].cancelled = True  # the executor publishes `cancelled` instead
        return task.evolve(state=TaskState.CANCELLED, finished_at=utcnow())

    # -- the broker's history, for streams ------------------------------------------

    @property
    def log(self) -> EventLog:
        """The local, ordered event log every stream of this process reads."""
        return self.broker.log

    def parse_event_id(self, event_id: str) -> Any | None:
        """The sortable key of an event id, or None if it is malformed or from another history."""
        return self.broker.parse_event_id(event_id)

    async def events_after(self, key: Any) -> list[TaskEvent] | None:
        """Events after ``key`` older than the log holds; None if history does not reach back."""
        return await self.broker.events_after(key)

    async def output(self, task_id: str) -> list[OutputChunk]:
        """The task's retained output chunks, in order."""
        return await self.broker.output(task_id)

    async def follow_output(self, task: Task | None) -> OutputFollow:
        """Have :attr:`log` carry ``task``'s output (None: every task's) until the answer
        is closed."""
        return await self.broker.follow_output(task)

    async def cursor(self) -> str:
        """The id of the newest event (a position a stream can resume after)."""
        return await self.broker.cursor()

    def _observe(self, event: TaskEvent) -> None:
        """Every event reaches here; a task finished elsewhere (cancelled from another
        worker, or failed as ``WorkerLost``) stops its local run."""
        self.stats.events_published[event.type] += 1
        if event.terminal:
            self.executor.cancel(event.task_id)

    # -- lifespan ----------------------------------------------------------------------

    async def __aenter__(self) -> Runner:
        if self._running:
            raise RuntimeError("this TaskHub is already running")
        stack = self._exit_stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            self.group = await stack.enter_async_context(anyio.create_task_group())
            self._closing = False
            self._closed = anyio.Event()
            self.broker.log.reopen()
            await self.broker.start(self._observe)
            stack.push_async_callback(self.broker.close)
            if self.engine is not None:
                stack.push_async_callback(self.engine.aclose)
            await self.executor.start(self.publisher, self._forget, self.group)
            self._running = True
        except BaseException:
            await stack.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.shutdown()
        finally:
            assert self.group is not None and self._exit_stack is not None
            self.group.cancel_scope.cancel()
            self._running = False
            await self._exit_stack.__aexit__(None, None, None)

    async def shutdown(self) -> None:
        """Stop accepting (503), give running tasks ``shutdown_grace`` seconds, cancel the
        rest (and everything still queued), publish their final events. Idempotent."""
        if self._closed is None:
            return
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        self.executor.begin_shutdown()
        logger.info("shutting down: %d tasks active", len(self._jobs))
        for job in list(self._jobs.values()):
            if self.executor.running_task(job.task.id) is None:
                self._forget(job)
                await self._place(job.task.name).abandon(job)
        with anyio.move_on_after(self.shutdown_grace):
            await self._idle.wait()
        self.executor.cancel_all("server shutting down")
        with anyio.move_on_after(max(self.shutdown_grace, 5.0)):
            await self._idle.wait()
        # The final events just published reach the streams through the log: a broker
        # that reads its writes back (Redis) may not hold them yet. A stream ends once the
        # log is closed and it has read all the log holds, so close it only after that.
        await self.broker.read_back()
        self.broker.log.close()
        self._closed.set()

    @property
    def closing(self) -> bool:
        """True once shutdown has begun: submissions are refused and streams end."""
        return self._closing

    @property
    def running(self) -> int:
        """Tasks executing in this process now."""
        return self.executor.running

    @property
    def queued(self) -> int:
        """Tasks waiting to run in this process now."""
        return len(self._jobs) - self.executor.running
