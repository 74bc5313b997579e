"""The web side of one hub: its settings, streams, limits and routes, over a task backend."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
from starlette.applications import Starlette
from starlette.routing import BaseRoute
from starlette.types import Lifespan

from .app import build_app
from .backend import TaskBackend
from .endpoints import Web
from .limits import ClientSlots
from .routes import build_routes
from .settings import WebSettings
from .sse import StreamMonitor


class WebService:
    """Serves a :class:`TaskBackend` (the hub's runner) over HTTP and SSE with one frozen
    :class:`WebSettings`.

    It reads and writes tasks only through the backend's protocol (never the runner as
    such, nor its broker), and never starts or stops the runner: the hub does.
    :meth:`run` keeps its streams' heartbeats and send timeouts; :meth:`end_streams`
    ends them when the server exits.
    """

    def __init__(self, runner: TaskBackend, settings: WebSettings) -> None:
        self.runner = runner
        self.settings = settings
        #: What every endpoint is given (see :mod:`sse_tasks.web.endpoints`).
        self.web = Web(runner, settings)
        self._routes: list[BaseRoute] | None = None

    @property
    def monitor(self) -> StreamMonitor:
        """The open streams, their heartbeats and send timeouts."""
        return self.web.monitor

    @property
    def client_streams(self) -> ClientSlots:
        """Open SSE streams per client address."""
        return self.web.client_streams

    @property
    def routes(self) -> list[BaseRoute]:
        """Routes to mount into another app (each carries the CORS middleware when set)."""
        if self._routes is None:
            self._routes = build_routes(self.web, cors_per_route=True)
        return self._routes

    @property
    def built(self) -> bool:
        """True once :attr:`routes` were handed out (settings can no longer change)."""
        return self._routes is not None

    def app(self, lifespan: Lifespan[Starlette], extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
        """A Starlette app serving the routes (plus ``extra_routes``), run by ``lifespan``."""
        routes = build_routes(self.web, cors_per_route=False)
        return build_app([*routes, *extra_routes], self.settings, lifespan)

    async def run(self) -> None:
        """Until cancelled: the stream monitor's heartbeats and send timeouts."""
        await self.monitor.run()

    async def end_streams(self, grace: float = 5.0) -> None:
        """Let open streams end by themselves for ``grace`` seconds (the tasks ended, so
        they carry their final events and close), then cut whatever stream is still open."""
        with anyio.move_on_after(grace):
            await self.monitor.wait_empty()
        self.monitor.abort_all()
