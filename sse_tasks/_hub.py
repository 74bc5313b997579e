"""TaskHub: the registry, submission, cancellation, the runner and its lifespan."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, overload

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask

from ._core import codec
from ._core.context import TaskContext
from ._core.errors import NotFound, SSETasksError, TaskCancelled, TaskFinished, TaskGone, Unavailable
from ._core.models import Task, TaskEvent, TaskState, utcnow
from ._core.registry import RegisteredTask, TaskFunction
from ._core.text import clean_text
from .brokers import Broker, broker_from_url
from .web.auth import Authorizer, Identify, TaskTokens
from .web.cors import check_cors
from .web.limits import ClientSlots
from .web.metrics import HubStats
from .web.sse import StreamMonitor

if TYPE_CHECKING:
    from starlette.routing import BaseRoute
    from starlette.types import ASGIApp

logger = logging.getLogger("sse_tasks")

F = TypeVar("F", bound=TaskFunction)

_MAX_ID_LENGTH = 128


@dataclass
class _Job:
    task: Task
    registered: RegisteredTask
    params: dict[str, Any]
    cancelled: bool = False  # cancelled while queued, without the broker (an outage)


class _Run:
    """A task executing in this process."""

    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx
        self.scope = anyio.CancelScope()
        self.started = time.monotonic()
        self.cancelled = False
        self.cancel_reason: str | None = None
        self.task: Task | None = None  # the running snapshot, once published
        self.ended = False  # its outcome is decided: too late to cancel

    def cancel(self, reason: str | None = None) -> None:
        if not self.cancelled:
            self.cancelled = True
            self.cancel_reason = reason
        self.ctx._cancel()
        self.scope.cancel()


class TrackedTask(BackgroundTask):
    """A Starlette ``BackgroundTask`` that hands its work to the hub when called.

    Made by :meth:`TaskHub.background`; the task exists (``queued``) from the start,
    so the response can carry its id, and it runs after the response is sent.
    """

    def __init__(self, hub: TaskHub, job: _Job) -> None:
        super().__init__(hub._start_job_async, job)
        self.task = job.task

    @property
    def id(self) -> str:
        return self.task.id


class TaskHub:
    """Runs registered task functions after the response and streams their changes.

    Args:
        broker: a broker URL (``memory://``, ``redis://host:port/db``) or instance;
            default ``$SSE_TASKS_BROKER`` or ``memory://``.
        concurrency: tasks run at once in this process.
        max_queued: tasks waiting to run before submissions get 503.
        max_streams: open SSE streams before new ones get 503.
        max_body_size: largest ``POST /tasks`` body in bytes (413 beyond).
        heartbeat: seconds a stream may stay quiet before it gets a ``: ping``
            comment (0: never).
        progress_interval: minimum seconds between two published progress events of
            one task (0 publishes every call); the latest value is always published.
        shutdown_grace: seconds running tasks get to finish on shutdown before they
            are cancelled.
        send_timeout: seconds a stream may block on a client that does not read
            before it is closed (None: never).
        retry: reconnection delay in milliseconds sent to clients (``retry:``).
        coalesce_after: a stream this many events behind merges each task's pending
            progress events into the latest.
        max_streams_per_client: open SSE streams per client address (``request.client``;
            behind a proxy run uvicorn with ``--forwarded-allow-ips``); None (default):
            no limit, since a misconfigured proxy makes every client one address.
        max_stream_lifetime: seconds after which the server ends a stream (spread
            by up to 10 %); the client resumes with ``Last-Event-ID``. None: never.
        body_timeout: seconds a ``POST /tasks`` body may take to arrive (408 after).
        authorize: the authorization hook (see :mod:`sse_tasks._auth`): called with an
            :class:`Access` on every request; returns a bool or a ``Task -> bool`` filter.
        identify: ``request -> caller id``; the caller who submits becomes ``task.owner``.
        tokens: per-task capability tokens; a string is taken as the secret of
            ``TaskTokens(secret)``. Without ``authorize``, a task is then visible only
            with its token.
        cors_origins: exact origins allowed cross-origin access to :attr:`app`.
        cors_credentials: allow those origins cookies and ``Authorization``.
        metrics: serve ``GET /metrics`` (Prometheus; needs the ``metrics`` extra).
        broker_options: passed to the broker when ``broker`` is a URL (e.g.
            ``history``, ``retention``, ``max_tasks``).
    """

    def __init__(
        self,
        broker: str | Broker | None = None,
        *,
        concurrency: int = 16,
        max_queued: int = 1000,
        max_streams: int = 10_000,
        max_body_size: int = 64 * 1024,
        heartbeat: float = 15.0,
        progress_interval: float = 0.1,
        shutdown_grace: float = 5.0,
        send_timeout: float | None = 30.0,
        retry: int = 2000,
        coalesce_after: int = 256,
        max_streams_per_client: int | None = None,
        max_stream_lifetime: float | None = None,
        body_timeout: float | None = 10.0,
        authorize: Authorizer | None = None,
        identify: Identify | None = None,
        tokens: TaskTokens | str | None = None,
        cors_origins: tuple[str, ...] | list[str] = (),
        cors_credentials: bool = False,
        metrics: bool = False,
        **broker_options: Any,
    ) -> None:
        if concurrency < 1 or max_queued < 0 or max_streams < 0 or max_body_size < 1:
            raise ValueError("concurrency, max_queued, max_streams and max_body_size must be positive")
        if max_streams_per_client is not None and max_streams_per_client < 1:
            raise ValueError("max_streams_per_client must be positive or None")
        if (max_stream_lifetime is not None and max_stream_lifetime <= 0) or (
            body_timeout is not None and body_timeout <= 0
        ):
            raise ValueError("max_stream_lifetime and body_timeout must be positive or None")
        if heartbeat < 0 or progress_interval < 0 or shutdown_grace < 0 or retry < 0:
            raise ValueError("heartbeat, progress_interval, shutdown_grace and retry must be >= 0")
        self.broker: Broker = (
            broker if isinstance(broker, Broker) else broker_from_url(broker, **broker_options)
        )
        self.concurrency = concurrency
        self.max_queued = max_queued
        self.max_streams = max_streams
        self.max_body_size = max_body_size
        self.heartbeat = heartbeat
        self.progress_interval = progress_interval
        self.shutdown_grace = shutdown_grace
        self.send_timeout = send_timeout
        self.retry = retry
        self.coalesce_after = coalesce_after
        self.max_stream_lifetime = max_stream_lifetime
        self.body_timeout = body_timeout
        self.authorize = authorize
        self.identify = identify
        self.tokens = TaskTokens(tokens) if isinstance(tokens, str) else tokens
        self.cors_origins = tuple(check_cors(cors_origins, cors_credentials))
        self.cors_credentials = cors_credentials
        self.metrics = metrics
        self.registry: dict[str, RegisteredTask] = {}
        #: Open SSE streams per client address.
        self.client_streams = ClientSlots(max_streams_per_client)
        #: Counters for ``/metrics`` (see :class:`sse_tasks._metrics.HubStats`).
        self.stats = HubStats()
        self._task_group: TaskGroup | None = None
        self._send: MemoryObjectSendStream[_Job] | None = None
        self._receive: MemoryObjectReceiveStream[_Job] | None = None
        self._runs: dict[str, _Run] = {}
        # Jobs not finished: queued, running, or waiting for their response to be sent.
        self._jobs: dict[str, _Job] = {}
        self._active = 0
        self._idle = anyio.Event()
        self._idle.set()
        self._closing = False
        self._closed: anyio.Event | None = None
        #: Heartbeats and send timeouts of this process's open streams.
        self.stream_monitor = StreamMonitor(self)
        self._routes: list[BaseRoute] | None = None

    # -- registration ----------------------------------------------------------

    @overload
    def task(self, func: F) -> F: ...
    @overload
    def task(self, *, name: str | None = None, timeout: float | None = None) -> Callable[[F], F]: ...
    def task(
        self,
        func: TaskFunction | None = None,
        *,
        name: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Register a task function (decorator): ``@hub.task`` or ``@hub.task(name=…, timeout=…)``.

        The function takes a :class:`TaskContext` first, then keyword params that
        clients send as JSON. Raises ``TypeError``/``ValueError`` for a bad function
        or a duplicate name.
        """

        def register(func: TaskFunction) -> TaskFunction:
            self.register(func, name=name, timeout=timeout)
            return func

        return register(func) if func is not None else register

    def register(
        self, func: TaskFunction, *, name: str | None = None, timeout: float | None = None
    ) -> RegisteredTask:
        """Register ``func`` under ``name`` (default: its ``__name__``)."""
        registered = RegisteredTask.build(func, name, timeout)
        if registered.name in self.registry:
            raise ValueError(f"a task named {registered.name!r} is already registered")
        self.registry[registered.name] = registered
        return registered

    def _resolve(self, func_or_name: TaskFunction | str) -> RegisteredTask:
        if isinstance(func_or_name, str):
            registered = self.registry.get(func_or_name)
            if registered is None:
                raise NotFound(f"no task named {func_or_name!r} is registered")
            return registered
        for registered in self.registry.values():
            if registered.func is func_or_name:
                return registered
        return RegisteredTask.build(func_or_name, None, None)

    # -- submitting --------------------------------------------------------------

    async def submit(self, func_or_name: TaskFunction | str, /, **params: Any) -> Task:
        """Queue a run and return its snapshot at once; the work runs in the hub.

        Raises :class:`NotFound` (unknown name), :class:`InvalidRequest` (params do
        not fit the signature) or :class:`Unavailable` (queue full, shutting down).
        """
        return await self.submit_json(func_or_name, params)

    async def submit_json(
        self, func_or_name: TaskFunction | str, params: Any, *, owner: str | None = None
    ) -> Task:
        """Like :meth:`submit`, with ``params`` as decoded JSON (checked before anything is
        queued); ``owner`` is recorded as ``task.owner`` for the authorization hook."""
        registered = self._resolve(func_or_name)
        job = await self._create(registered, registered.validate(params), owner)
        self._start_job(job)
        return job.task

    async def background(self, func_or_name: TaskFunction | str, /, *args: Any, **kwargs: Any) -> TrackedTask:
        """A tracked ``BackgroundTask``: the task is created now and runs after the response.

        The tracked form of ``background_tasks.add_task(fn, *args)``::

            tracked = await hub.background(print_msg, "Ithome")
            background_tasks.add_task(tracked)      # or Response(background=tracked)
            return JSONResponse(tracked.task.to_dict(), status_code=202)
        """
        registered = self._resolve(func_or_name)
        params = registered.bind(args, kwargs)
        return TrackedTask(self, await self._create(registered, params))

    async def _create(
        self, registered: RegisteredTask, params: dict[str, Any], owner: str | None = None
    ) -> _Job:
        if self._send is None or self._closing:
            raise Unavailable(
                "the hub is shutting down"
                if self._closing
                else "the hub is not running (enter it in the app's lifespan)",
                code="shutting_down" if self._closing else "not_running",
            )
        if len(self._jobs) - len(self._runs) >= self.max_queued:
            raise Unavailable(f"the queue is full ({self.max_queued} tasks)", code="queue_full")
        if owner is not None:
            owner = clean_text(str(owner))
        task = Task(id=secrets.token_urlsafe(12), name=registered.name, owner=owner)
        job = _Job(task, registered, params)
        self._jobs[task.id] = job
        self._job_added()
        try:
            event = await self.broker.publish(task, "task.queued")
        except BaseException:
            self._forget(job)
            raise
        if event is None:  # pragma: no cover - a fresh id cannot be terminal
            self._forget(job)
            raise RuntimeError("broker refused a new task")
        job.task = event.task
        self.stats.tasks["queued"] += 1
        logger.info("task queued id=%s name=%s", task.id, task.name)
        return job

    def _start_job(self, job: _Job) -> None:
        assert self._send is not None
        if self._closing:
            return  # cancelled by shutdown already
        self._send.send_nowait(job)

    async def _start_job_async(self, job: _Job) -> None:
        # Async so Starlette calls it on the loop, not in a worker thread.
        self._start_job(job)

    def _forget(self, job: _Job) -> None:
        if self._jobs.pop(job.task.id, None) is not None:
            self._job_done()

    def _job_added(self) -> None:
        self._active += 1
        if self._idle.is_set():
            self._idle = anyio.Event()

    def _job_done(self) -> None:
        self._active -= 1
        if self._active == 0:
            self._idle.set()

    # -- reading and cancelling ------------------------------------------------------

    async def get(self, task_id: str) -> Task:
        """The task's snapshot; raises :class:`NotFound` or :class:`TaskGone` (expired)."""
        task = await self.broker.get(task_id) if len(task_id) <= _MAX_ID_LENGTH else None
        if task is None:
            if len(task_id) <= _MAX_ID_LENGTH and await self.broker.expired(task_id):
                raise TaskGone(f"task {task_id!r} has finished and expired")
            raise NotFound(f"no task with id {task_id!r}")
        return task

    async def list_tasks(
        self, *, state: TaskState | None = None, name: str | None = None, limit: int = 100
    ) -> list[Task]:
        """Snapshots, newest first, optionally filtered by state and name."""
        return await self.broker.list_tasks(state=state, name=name, limit=limit)

    async def cancel(self, task_id: str) -> Task:
        """Cancel a queued or running task; returns the ``cancelled`` snapshot.

        Raises :class:`NotFound`/:class:`TaskGone`, or :class:`TaskFinished` if it
        already reached a terminal state.
        """
        try:
            task = await self.get(task_id)
        except Unavailable:
            # The broker is unreachable: a task this process runs is still cancelled
            # here, at once; its final event is retried until the broker answers.
            local = self._cancel_locally(task_id)
            if local is None:
                raise
            return local
        while not task.terminal:
            event = await self._finish(task, TaskState.CANCELLED)
            if event is not None:
                return event.task
            task = await self.get(task_id)
        raise TaskFinished(f"task {task_id!r} already {task.state.value}")

    def local_task(self, task_id: str) -> Task | None:
        """The snapshot of a task queued or running in this process, as it knows it
        (no broker call); None if it is not here."""
        job = self._jobs.get(task_id)
        if job is None:
            return None
        run = self._runs.get(task_id)
        return run.task if run is not None and run.task is not None else job.task

    def _cancel_locally(self, task_id: str) -> Task | None:
        """Cancel a task queued or running in this process without asking the broker;
        its ``cancelled`` snapshot as this process knows it, or None if it is not here."""
        task = self.local_task(task_id)
        if task is None:
            return None
        run = self._runs.get(task_id)
        if run is not None:
            if run.ended:
                return None
            run.cancel()
        else:
            self._jobs[task_id].cancelled = True  # its worker publishes `cancelled` instead
        return task.evolve(state=TaskState.CANCELLED, finished_at=utcnow())

    async def _finish(self, task: Task, state: TaskState, **changes: Any) -> TaskEvent | None:
        final = task.evolve(state=state, finished_at=utcnow(), **changes)
        # A terminal event must be published even while the caller is being cancelled.
        with anyio.CancelScope(shield=True):
            try:
                event = await self.broker.publish(final, f"task.{state.value}")
            except (TypeError, ValueError) as exc:
                # Text is cleaned where it enters, so this is a bug; still, a task must
                # never stay running because its final snapshot cannot be encoded.
                logger.error("task %s: final snapshot not encodable (%s); failing it", task.id, exc)
                error = {"type": "EncodingError", "message": "the task's final state could not be encoded"}
                final = task.evolve(
                    state=TaskState.FAILED, finished_at=utcnow(), error=error, message=None, result=None
                )
                event = await self.broker.publish(final, "task.failed")
        if event is not None:
            self._log_finished(final)
        return event

    def _log_finished(self, task: Task) -> None:
        """Count and log a task that reached its terminal state (no payloads at INFO)."""
        state = task.state.value
        self.stats.tasks[state] += 1
        run = self._runs.get(task.id)
        if run is None:  # never ran here (cancelled while queued, or runs on another worker)
            logger.info("task %s id=%s name=%s", state, task.id, task.name)
            return
        duration = time.monotonic() - run.started
        self.stats.observe_duration(task.name, state, duration)
        if task.state is TaskState.FAILED:
            error_type = (task.error or {}).get("type", "")
            logger.warning(
                "task failed id=%s name=%s duration=%.3fs error=%s", task.id, task.name, duration, error_type
            )
            logger.debug("task failed id=%s error=%r", task.id, task.error)
        else:
            logger.info("task %s id=%s name=%s duration=%.3fs", state, task.id, task.name, duration)

    def _observe(self, event: TaskEvent) -> None:
        """Every event reaches here; a task finished elsewhere (cancelled from another
        worker, or failed as ``WorkerLost`` after a missed lease) stops its local run."""
        self.stats.events_published[event.type] += 1
        if event.task.terminal:
            run = self._runs.get(event.task.id)
            if run is not None:
                run.cancel()

    # -- running ---------------------------------------------------------------------

    async def _worker(self) -> None:
        assert self._receive is not None
        async for job in self._receive:
            try:
                if job.cancelled:
                    await self._finish(job.task, TaskState.CANCELLED)
                elif self._closing:
                    await self._finish(job.task, TaskState.CANCELLED, message="server shutting down")
                else:
                    await self._execute(job)
            except Exception:  # the broker failed: log it, keep the worker alive
                logger.exception("task %s could not be run", job.task.id)
            finally:
                self._forget(job)

    async def _execute(self, job: _Job) -> None:
        task = job.task.evolve(state=TaskState.RUNNING, started_at=utcnow())
        ctx = TaskContext(task.id, task.name, job.params)
        run = _Run(ctx)
        self._runs[task.id] = run
        try:
            started = await self.broker.publish(task, "task.running")
            if started is None:
                return  # cancelled while queued
            run.started = time.monotonic()
            run.task = started.task
            self.stats.tasks["running"] += 1
            logger.info("task started id=%s name=%s", task.id, task.name)
            await self._run(job, started.task, run)
        finally:
            del self._runs[task.id]

    async def _run(self, job: _Job, task: Task, run: _Run) -> None:
        registered = job.registered
        outcome = TaskState.FAILED
        changes: dict[str, Any] = {}
        result: Any = None
        with run.scope:
            async with anyio.create_task_group() as pump_group:
                # Started by the first progress(): spawning and cancelling a publisher
                # was half the cost of running a task that never reports progress.
                run.ctx._start_pump = functools.partial(pump_group.start_soon, self._pump, task, run)
                try:
                    with anyio.move_on_after(registered.timeout or math.inf) as deadline:
                        result = await self._call(registered, run.ctx, job.params)
                    if deadline.cancelled_caught:
                        raise TimeoutError(f"task exceeded its {registered.timeout:g} s timeout")
                    outcome = TaskState.SUCCEEDED
                except TaskCancelled:
                    outcome = TaskState.CANCELLED
                except Exception as exc:
                    changes["error"] = _error(exc)
                finally:
                    if run.ctx._start_pump is None:  # the publisher was started
                        pump_group.cancel_scope.cancel()
                    run.ctx._start_pump = None
        run.ended = True
        if run.cancelled:
            outcome, changes = TaskState.CANCELLED, {}
            if run.cancel_reason:
                changes["message"] = run.cancel_reason
        elif outcome is TaskState.SUCCEEDED:
            try:
                codec.dumps(result)
            except (TypeError, ValueError) as exc:
                outcome = TaskState.FAILED
                changes["error"] = _error(TypeError(f"result is not JSON-serialisable: {exc}"))
            else:
                changes = {"result": result, "progress": 1.0}
        progress, message = run.ctx._latest()
        changes.setdefault("progress", progress)
        if message is not None:
            changes.setdefault("message", message)
        await self._finish(task, outcome, **changes)

    async def _call(self, registered: RegisteredTask, ctx: TaskContext, params: dict[str, Any]) -> Any:
        if registered.is_async:
            return await registered.func(ctx, **params)
        call = functools.partial(registered.func, ctx, **params)
        try:
            return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        except anyio.get_cancelled_exc_class():
            ctx._cancel()  # the thread stops at its next progress()/check()
            raise

    async def _pump(self, task: Task, run: _Run) -> None:
        """Publish the latest progress, at most once per ``progress_interval``."""
        while True:
            progress, message = await run.ctx._wait_dirty()
            event = await self.broker.publish(
                task.evolve(progress=progress, message=message), "task.progress"
            )
            if event is None:  # finished elsewhere (cancelled from another worker)
                run.cancel()
                return
            if self.progress_interval:
                await anyio.sleep(self.progress_interval)

    # -- lifespan --------------------------------------------------------------------

    async def __aenter__(self) -> TaskHub:
        if self._send is not None:
            raise RuntimeError("this TaskHub is already running")
        self._exit_stack = contextlib.AsyncExitStack()
        await self._exit_stack.__aenter__()
        try:
            self._task_group = await self._exit_stack.enter_async_context(anyio.create_task_group())
            self._closing = False
            self._closed = anyio.Event()
            self.broker.log.reopen()
            await self.broker.start(self._observe)
            self._exit_stack.push_async_callback(self.broker.close)
            self._send, self._receive = anyio.create_memory_object_stream[_Job](math.inf)
            for _ in range(self.concurrency):
                self._task_group.start_soon(self._worker)
            self._task_group.start_soon(self.stream_monitor.run)
            self._task_group.start_soon(self._watch_server_exit)
        except BaseException:
            await self._exit_stack.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.shutdown()
        finally:
            assert self._task_group is not None
            self._task_group.cancel_scope.cancel()
            await self._exit_stack.__aexit__(None, None, None)
            if self._send is not None and self._receive is not None:
                self._send.close()
                self._receive.close()
            self._send = self._receive = None

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Use as the app's lifespan (``Starlette(lifespan=hub.lifespan)``) or inside yours."""
        async with self:
            yield

    async def _watch_server_exit(self) -> None:
        # sse-starlette sees the server begin to exit (SIGTERM) before the server
        # waits for open connections: end the tasks first, so the streams carry their
        # final events and then close; cut whatever stream is still open 5 s later.
        await EventSourceResponse._listen_for_exit_signal()
        await self.shutdown()
        with anyio.move_on_after(5.0):
            await self.stream_monitor.wait_empty()
        self.stream_monitor.abort_all()

    async def shutdown(self) -> None:
        """Stop accepting (503), give running tasks ``shutdown_grace`` seconds, cancel
        the rest (and everything still queued), publish their final events, then end
        every stream. Idempotent; returns when done."""
        if self._closed is None:
            return
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        logger.info("shutting down: %d tasks active", self._active)
        for job in list(self._jobs.values()):
            if job.task.id not in self._runs:
                self._forget(job)
                await self._finish(job.task, TaskState.CANCELLED, message="server shutting down")
        with anyio.move_on_after(self.shutdown_grace):
            await self._idle.wait()
        for run in list(self._runs.values()):
            run.cancel("server shutting down")
        with anyio.move_on_after(max(self.shutdown_grace, 5.0)):
            await self._idle.wait()
        self.broker.log.close()
        self._closed.set()

    @property
    def closing(self) -> bool:
        """True once shutdown has begun: submissions are refused and streams end."""
        return self._closing

    @property
    def open_streams(self) -> int:
        """Open SSE streams in this process."""
        return len(self.stream_monitor)

    @property
    def running(self) -> int:
        """Tasks executing in this process now."""
        return len(self._runs)

    @property
    def queued(self) -> int:
        """Tasks waiting to run in this process now."""
        return len(self._jobs) - len(self._runs)

    # -- HTTP ------------------------------------------------------------------------

    @property
    def routes(self) -> list[BaseRoute]:
        """The hub's Starlette routes (``/tasks``, ``/tasks/{id}``, …, ``/events``)."""
        if self._routes is None:
            from .web.routes import build_routes

            self._routes = build_routes(self)
        return self._routes

    @property
    def app(self) -> ASGIApp:
        """An ASGI app serving :attr:`routes`, to ``Mount`` under any prefix.

        It does not run the hub: enter the hub in the outer app's lifespan.
        """
        from .web.routes import build_app

        return build_app(self)


def _error(exc: BaseException) -> dict[str, str]:
    """The public form of an exception: its type name and message, never a traceback."""
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not keep the task from finishing
        message = "(the exception's message could not be read)"
    return {"type": clean_text(type(exc).__name__), "message": clean_text(message)}


__all__ = ["SSETasksError", "TaskHub", "TrackedTask"]
