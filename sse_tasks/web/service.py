"""The web side of one hub: its settings, streams, limits and routes, over the runner."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
from starlette.applications import Starlette
from starlette.routing import BaseRoute
from starlette.types import Lifespan

from .._runner import Runner
from .app import build_app
from .limits import ClientSlots
from .routes import build_routes
from .server_exit import ServerExit
from .settings import WebSettings
from .sse import StreamMonitor


class WebService:
    """Serves a :class:`Runner` over HTTP and SSE with one frozen :class:`WebSettings`.

    It reads and writes tasks only through the runner (never its broker). :meth:`run`
    keeps its streams' heartbeats and send timeouts, and ends the tasks and then the
    streams when ``server_exit`` says the server begins to exit.
    """

    def __init__(self, runner: Runner, settings: WebSettings, server_exit: ServerExit | None = None) -> None:
        self.runner = runner
        self.settings = settings
        #: The servers this hub runs under (see :mod:`sse_tasks.web.server_exit`).
        self.server_exit = server_exit or ServerExit()
        self.monitor = StreamMonitor(settings.heartbeat, settings.send_timeout, runner.log.wake, runner.stats)
        #: Open SSE streams per client address.
        self.client_streams = ClientSlots(settings.max_streams_per_client)
        self._routes: list[BaseRoute] | None = None

    @property
    def routes(self) -> list[BaseRoute]:
        """Routes to mount into another app (each carries the CORS middleware when set)."""
        if self._routes is None:
            self._routes = self._build(cors_per_route=True)
        return self._routes

    @property
    def built(self) -> bool:
        """True once :attr:`routes` were handed out (settings can no longer change)."""
        return self._routes is not None

    def app(self, lifespan: Lifespan[Starlette], extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
        """A Starlette app serving the routes (plus ``extra_routes``), run by ``lifespan``."""
        return build_app([*self._build(cors_per_route=False), *extra_routes], self.settings, lifespan)

    def _build(self, *, cors_per_route: bool) -> list[BaseRoute]:
        return build_routes(
            self.runner, self.settings, self.monitor, self.client_streams, cors_per_route=cors_per_route
        )

    async def run(self) -> None:
        """Until cancelled: the stream monitor, and the server-exit watcher."""
        async with anyio.create_task_group() as group:
            group.start_soon(self.monitor.run)
            group.start_soon(self._end_on_server_exit)

    async def _end_on_server_exit(self) -> None:
        # The server begins to exit before it waits for open connections (and long
        # before the lifespan's shutdown): end the tasks first, so the streams carry
        # their final events and then close; cut whatever stream is still open 5 s later.
        await self.server_exit.wait()
        await self.runner.shutdown()
        with anyio.move_on_after(5.0):
            await self.monitor.wait_empty()
        self.monitor.abort_all()
