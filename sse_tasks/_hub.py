"""TaskHub: the facade users know — the runner and the web layer behind one object.

The runner (:mod:`sse_tasks._runner`) creates, runs and stops tasks; the web layer
(:mod:`sse_tasks.web`) serves them. A hub builds both from its arguments, validated
once, and enters both in one lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar, overload
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.routing import BaseRoute

from ._core.models import MAX_METADATA_BYTES, Task, TaskState
from ._core.registry import RegisteredTask, TaskFunction
from ._core.stats import HubStats
from ._runner import InProcessExecutor, Job, LocalExecutor, RemoteEngine, Runner
from .brokers import ENV_VAR as BROKER_ENV_VAR
from .brokers import Broker, broker_from_url
from .web.auth import Authorizer, Identify, TaskTokens
from .web.limits import ClientSlots
from .web.render import HtmlRenderer
from .web.server_exit import ExitingServer, ServerExit
from .web.service import WebService
from .web.settings import WebSettings

F = TypeVar("F", bound=TaskFunction)


class TrackedTask(BackgroundTask):
    """A Starlette ``BackgroundTask`` that hands its work to the hub when called.

    Made by :meth:`TaskHub.background`; the task exists (``queued``) from the start,
    so the response can carry its id, and it runs after the response is sent.
    """

    def __init__(self, runner: Runner, job: Job) -> None:
        super().__init__(_start, runner, job)
        self.task = job.task

    @property
    def id(self) -> str:
        return self.task.id


async def _start(runner: Runner, job: Job) -> None:
    # Async so Starlette calls it on the loop, not in a worker thread.
    runner.start(job)


#: The broker options ``memory://`` takes; the Redis broker takes them all.
_MEMORY_OPTIONS = frozenset({"history", "retention", "max_tasks"})


def _broker(broker: str | Broker | None, options: dict[str, Any]) -> Broker:
    """The hub's broker: ``broker`` itself, or the one its URL names, built with ``options``."""
    names = ", ".join(options)
    if isinstance(broker, Broker):
        if options:
            raise ValueError(f"{names}: options of a broker built from a URL; configure the instance given")
        return broker
    url = broker or os.environ.get(BROKER_ENV_VAR) or "memory://"
    if urlsplit(url).scheme == "memory":
        redis_only = [name for name in options if name not in _MEMORY_OPTIONS]
        if redis_only:
            raise ValueError(f"{', '.join(redis_only)}: options of the redis:// broker, not of {url}")
    return broker_from_url(url, **options)


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
        authorize: the authorization hook (see :mod:`sse_tasks.web.auth`): called with an
            :class:`Access` on every request; returns a bool or a ``Task -> bool`` filter.
        identify: ``request -> caller id`` (may be async); the caller who submits becomes ``task.owner``.
        tokens: per-task capability tokens; a string is taken as the secret of
            ``TaskTokens(secret)``. Without ``authorize``, a task is then visible only
            with its token.
        cors_origins: exact origins allowed cross-origin access to :attr:`app`.
        cors_credentials: allow those origins cookies and ``Authorization``.
        metrics: serve ``GET /metrics`` (Prometheus; needs the ``metrics`` extra).
        dashboard: serve the live operations page at ``<mount>/dashboard`` (see
            docs/dashboard.md); with a hook, only for callers it allows ``operate``.
        html_renderer: what the HTML streams (``/tasks/{id}/htmx``, ``/tasks/{id}/datastar``)
            render a task's card and output with (an :class:`HtmlRenderer`; None: the default card).
        executor: where the work runs: a local executor (default: :class:`InProcessExecutor`
            with ``concurrency``, ``progress_interval`` and the output bounds, which do
            not apply to an executor given here), or a remote engine
            (``sse_tasks.celery.CeleryExecutor(app)``), whose tasks run on its workers
            while the tasks registered here run in an :class:`InProcessExecutor`.
        max_output_bytes, max_output_chunks: output kept per task (1 MiB, 10,000
            chunks); beyond either the task says so once and further output is dropped.
        max_metadata_bytes: the bound of a task's encoded metadata (4096); past it
            ``ctx.metadata(…)`` raises ``ValueError``.
        history: events kept for resuming streams (10,000).
        retention: seconds a finished task is kept (3600).
        max_tasks: finished tasks kept at most, oldest expire first (10,000).
        lease: ``redis://`` only: seconds after its process stops renewing that an
            unfinished task is marked failed (``WorkerLost``) (10).
        outage_grace: ``redis://`` only: seconds a state change is retried while Redis
            is unreachable (30).
        prefix: ``redis://`` only: namespace of every key (``sse_tasks``).
        max_connections: ``redis://`` only: connections for reads, and as many for writes (8).

    ``history`` to ``max_connections`` configure the broker built from a URL (None: a
    ``redis://`` URL's query string, else the default in brackets); with a ``Broker`` instance,
    configure the instance instead. A keyword that is none of these is a ``TypeError``;
    a value out of range, or a broker option where it does not apply, a ``ValueError``.
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
        dashboard: bool = False,
        html_renderer: HtmlRenderer | None = None,
        executor: LocalExecutor | RemoteEngine | None = None,
        max_output_bytes: int = 1 << 20,
        max_output_chunks: int = 10_000,
        max_metadata_bytes: int = MAX_METADATA_BYTES,
        history: int | None = None,
        retention: float | None = None,
        max_tasks: int | None = None,
        lease: float | None = None,
        outage_grace: float | None = None,
        prefix: str | None = None,
        max_connections: int | None = None,
    ) -> None:
        settings = WebSettings(
            max_streams=max_streams,
            max_body_size=max_body_size,
            heartbeat=heartbeat,
            send_timeout=send_timeout,
            retry=retry,
            coalesce_after=coalesce_after,
            max_streams_per_client=max_streams_per_client,
            max_stream_lifetime=max_stream_lifetime,
            body_timeout=body_timeout,
            authorize=authorize,
            identify=identify,
            tokens=TaskTokens(tokens) if isinstance(tokens, str) else tokens,
            cors_origins=tuple(cors_origins),
            cors_credentials=cors_credentials,
            metrics=metrics,
            dashboard=dashboard,
            html_renderer=html_renderer,
        )
        engine = executor if isinstance(executor, RemoteEngine) else None
        if executor is None or engine is not None:
            executor = InProcessExecutor(
                concurrency,
                progress_interval,
                max_output_bytes=max_output_bytes,
                max_output_chunks=max_output_chunks,
                max_metadata_bytes=max_metadata_bytes,
            )
        broker_options = {
            "history": history,
            "retention": retention,
            "max_tasks": max_tasks,
            "lease": lease,
            "outage_grace": outage_grace,
            "prefix": prefix,
            "max_connections": max_connections,
        }
        self.broker: Broker = _broker(broker, {k: v for k, v in broker_options.items() if v is not None})
        #: Counters for ``/metrics`` (see :class:`sse_tasks._core.stats.HubStats`).
        self.stats = HubStats()
        self._runner = Runner(
            self.broker,
            executor=executor,
            engine=engine,
            max_queued=max_queued,
            shutdown_grace=shutdown_grace,
            stats=self.stats,
        )
        self._web = WebService(self._runner, settings)
        #: The servers this hub runs under (see :mod:`sse_tasks.web.server_exit`).
        self._server_exit = ServerExit()

    # -- settings ------------------------------------------------------------------

    @property
    def settings(self) -> WebSettings:
        """The web layer's settings (frozen); change them with :meth:`configure`."""
        return self._web.settings

    def configure(self, **changes: Any) -> None:
        """Change web settings (``heartbeat=…``, ``cors_origins=…``, …) before the hub runs
        and before its routes are built; validated like the constructor's arguments.

        Raises ``TypeError`` for an unknown name, ``ValueError`` for a bad value and
        ``RuntimeError`` once the hub runs or its routes exist.
        """
        if self._runner.group is not None or self._web.built:
            raise RuntimeError("configure() a hub before it runs and before its routes are built")
        self._web = WebService(self._runner, self._web.settings.replace(**changes))

    # -- registration ----------------------------------------------------------------

    @property
    def registry(self) -> dict[str, RegisteredTask]:
        """Registered task functions by name."""
        return self._runner.registry

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

        ``name`` (default: the function's ``__name__``) is what clients send;
        ``timeout`` (seconds) fails a run that takes longer with ``TimeoutError``.
        The function gets a :class:`TaskContext` where it declares a parameter
        annotated ``TaskContext``; its other parameters are the params clients send
        as JSON. Raises ``TypeError``/``ValueError`` for a bad function or a duplicate name.
        """

        def register(func: TaskFunction) -> TaskFunction:
            self.register(func, name=name, timeout=timeout)
            return func

        return register(func) if func is not None else register

    def register(
        self, func: TaskFunction, *, name: str | None = None, timeout: float | None = None
    ) -> RegisteredTask:
        """Register ``func`` under ``name`` (default: its ``__name__``)."""
        return self._runner.register(func, name=name, timeout=timeout)

    # -- submitting, reading, cancelling ------------------------------------------------

    async def submit(
        self, func_or_name: TaskFunction | str, /, *, tags: Sequence[str] = (), **params: Any
    ) -> Task:
        """Queue a run and return its snapshot at once; the work runs in the hub.

        ``tags`` (at most 16, each 1-64 letters, digits and ``:_-./@``) are kept on the
        snapshot and select it in ``GET /tasks?tag=`` and ``/events?tag=`` (a task whose
        function takes a ``tags`` parameter is submitted with :meth:`submit_json`).
        Raises :class:`NotFound` (unknown name), :class:`InvalidRequest` (params do
        not fit the signature, bad tags) or :class:`Unavailable` (queue full, shutting down).
        """
        return await self._runner.submit_json(func_or_name, params, tags=tags)

    async def submit_json(
        self,
        func_or_name: TaskFunction | str,
        params: Any,
        *,
        owner: str | None = None,
        tags: Sequence[str] = (),
    ) -> Task:
        """Like :meth:`submit`, with ``params`` as decoded JSON (checked before anything is
        queued); ``owner`` is recorded as ``task.owner`` for the authorization hook."""
        return await self._runner.submit_json(func_or_name, params, owner=owner, tags=tags)

    async def background(self, func_or_name: TaskFunction | str, /, *args: Any, **kwargs: Any) -> TrackedTask:
        """A tracked ``BackgroundTask``: the task is created now and runs after the response.

        The tracked form of ``background_tasks.add_task(fn, *args)``::

            tracked = await hub.background(print_msg, "Ithome")
            background_tasks.add_task(tracked)      # or Response(background=tracked)
            return JSONResponse(tracked.task.to_dict(), status_code=202)
        """
        registered = self._runner.resolve(func_or_name)
        params = registered.bind(args, kwargs)
        return TrackedTask(self._runner, await self._runner.create(registered, params))

    async def get(self, task_id: str) -> Task:
        """The task's snapshot; raises :class:`NotFound` or :class:`TaskGone` (expired)."""
        return await self._runner.get(task_id)

    async def list_tasks(
        self,
        *,
        state: TaskState | None = None,
        name: str | None = None,
        tags: Sequence[str] = (),
        limit: int = 100,
    ) -> list[Task]:
        """Snapshots, newest first, optionally filtered by state, name and tags (those
        carrying every one of ``tags``)."""
        return await self._runner.list_tasks(state=state, name=name, tags=tags, limit=limit)

    async def cancel(self, task_id: str) -> Task:
        """Cancel a queued or running task; returns the ``cancelled`` snapshot.

        Raises :class:`NotFound`/:class:`TaskGone`, :class:`TaskFinished` if it already
        reached a terminal state, or :class:`Unavailable` if the broker is unreachable
        and the task does not run in this process.
        """
        return await self._runner.cancel(task_id)

    # -- lifespan ------------------------------------------------------------------------

    async def __aenter__(self) -> TaskHub:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            # The stream path is asyncio's (see sse_tasks.web.sse): say so, not fail later.
            raise RuntimeError("a TaskHub runs on asyncio (uvicorn's event loop), not on trio") from None
        await self._runner.__aenter__()
        assert self._runner.group is not None
        self._runner.group.start_soon(self._web.run)
        self._runner.group.start_soon(self._stop_on_server_exit)
        return self

    async def _stop_on_server_exit(self) -> None:
        # The server begins to exit before it waits for open connections (and long
        # before the lifespan's shutdown): end the tasks first, so the streams carry
        # their final events and then close; cut whatever stream is still open 5 s later.
        await self._server_exit.wait()
        await self._runner.shutdown()
        await self._web.end_streams(grace=5.0)

    async def __aexit__(self, *exc_info: object) -> None:
        await self._runner.__aexit__(*exc_info)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Use as the app's lifespan (``Starlette(lifespan=hub.lifespan)``) or inside yours."""
        async with self:
            yield

    def stop_with(self, server: ExitingServer) -> None:
        """End the hub's tasks and streams as soon as ``server`` begins to exit.

        ``server`` is a ``uvicorn.Server`` (or anything with its ``should_exit`` flag) that
        runs this hub: once the flag is set (SIGTERM, Ctrl-C, or your program), the hub
        shuts down (see :meth:`shutdown`) and ends every stream, so the server, which waits
        for open connections before the lifespan's shutdown, does not wait on them. Without
        it the hub watches the uvicorn server running in the main thread, if any (``uvicorn
        app:app``, ``sse-tasks serve``); a server run in another thread must be named here.
        Raises ``TypeError`` for an object without ``should_exit``.
        """
        self._server_exit.watch(server)

    async def shutdown(self) -> None:
        """Stop accepting (503), give running tasks ``shutdown_grace`` seconds, cancel
        the rest (and everything still queued), publish their final events, then end
        every stream. Idempotent; returns when done."""
        await self._runner.shutdown()

    @property
    def closing(self) -> bool:
        """True once shutdown has begun: submissions are refused and streams end."""
        return self._runner.closing

    @property
    def running(self) -> int:
        """Tasks executing in this process now."""
        return self._runner.running

    @property
    def queued(self) -> int:
        """Tasks waiting to run in this process now."""
        return self._runner.queued

    @property
    def open_streams(self) -> int:
        """Open SSE streams in this process."""
        return len(self._web.monitor)

    @property
    def client_streams(self) -> ClientSlots:
        """Open SSE streams per client address."""
        return self._web.client_streams

    # -- HTTP ----------------------------------------------------------------------------

    @property
    def routes(self) -> list[BaseRoute]:
        """The hub's Starlette routes (``/tasks``, ``/tasks/{id}``, …, ``/events``), to add
        to another app's routes; they carry the CORS middleware when ``cors_origins`` is set."""
        return self._web.routes

    @property
    def app(self) -> Starlette:
        """An ASGI app serving :attr:`routes`, to ``Mount`` under any prefix.

        Links in its answers and events start with the request's ASGI ``root_path``
        (the mount's path, after the server's ``--root-path``). Mounted, it does not
        run the hub: enter the hub in the outer app's lifespan.
        """
        return self._web.app(self.lifespan)

    def app_with(self, routes: Sequence[BaseRoute]) -> Starlette:
        """Like :attr:`app`, with ``routes`` of your own beside the hub's (e.g. a page at ``/``)."""
        return self._web.app(self.lifespan, routes)


__all__ = ["TaskHub", "TrackedTask"]
