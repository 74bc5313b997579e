"""The route table: each path of the hub's API, and per method its endpoint and Operation.

:data:`ROUTES` is the one place a route is declared; :func:`build_routes` turns it into
Starlette routes bound to a :class:`~sse_tasks.web.endpoints.Web` context, and
``/openapi.json`` is generated from those routes (each an :class:`APIRoute` carrying
its operations), so a route cannot be served without being documented.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .._core.errors import SSETasksError
from . import dashboard, endpoints, operations
from .cors import CORSMiddleware
from .endpoints import JSON, Web, error_response
from .openapi import Operation
from .settings import WebSettings
from .sse import SSEStream, StreamEndpoint

logger = logging.getLogger("sse_tasks")

#: An endpoint: ``async def name(web, request)`` (see :mod:`sse_tasks.web.endpoints`).
Endpoint = Callable[[Web, Request], Awaitable[Response | SSEStream]]


@dataclass(frozen=True)
class RouteSpec:
    """One path of the API: per method, its endpoint and what it reads and answers."""

    path: str
    methods: Mapping[str, tuple[Endpoint, Operation]]
    #: A stream: served as a plain ASGI endpoint (see :class:`StreamEndpoint`).
    stream: bool = False
    #: Served only when this says so of the settings (None: always).
    when: Callable[[WebSettings], bool] | None = None

    def route(self, web: Web, cors: Middleware | None) -> APIRoute:
        """This path as a Starlette route bound to ``web``."""
        methods = Methods(web, {method: endpoint for method, (endpoint, _) in self.methods.items()})
        asgi: Callable[..., Any] = StreamEndpoint(methods.handle) if self.stream else methods.handle
        documented = {method: operation for method, (_, operation) in self.methods.items()}
        return APIRoute(self.path, asgi, documented, cors=cors, name=methods.name)


#: The hub's routes, relative to wherever they are mounted.
ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec(
        "/tasks",
        {
            "GET": (endpoints.list_tasks, operations.LIST_TASKS),
            "POST": (endpoints.submit_task, operations.SUBMIT_TASK),
        },
    ),
    RouteSpec(
        "/tasks/{task_id}",
        {
            "GET": (endpoints.get_task, operations.GET_TASK),
            "DELETE": (endpoints.cancel_task, operations.CANCEL_TASK),
        },
    ),
    RouteSpec(
        "/tasks/{task_id}/events", {"GET": (endpoints.task_events, operations.TASK_EVENTS)}, stream=True
    ),
    RouteSpec("/tasks/{task_id}/output", {"GET": (endpoints.task_output, operations.TASK_OUTPUT)}),
    RouteSpec("/tasks/{task_id}/htmx", {"GET": (endpoints.task_htmx, operations.TASK_HTMX)}, stream=True),
    RouteSpec(
        "/tasks/{task_id}/datastar", {"GET": (endpoints.task_datastar, operations.TASK_DATASTAR)}, stream=True
    ),
    RouteSpec("/vendor/{name}", {"GET": (endpoints.vendored, operations.VENDOR)}),
    RouteSpec("/events", {"GET": (endpoints.events, operations.EVENTS)}, stream=True),
    RouteSpec("/openapi.json", {"GET": (endpoints.openapi, operations.OPENAPI)}),
    RouteSpec("/sse-tasks.js", {"GET": (endpoints.browser_module, operations.BROWSER_MODULE)}),
    RouteSpec(
        "/metrics", {"GET": (endpoints.metrics, operations.METRICS)}, when=lambda settings: settings.metrics
    ),
    RouteSpec(
        "/dashboard",
        {"GET": (dashboard.dashboard_page, operations.DASHBOARD)},
        when=lambda settings: settings.dashboard,
    ),
)


def build_routes(web: Web, *, cors_per_route: bool = False) -> list[BaseRoute]:
    """The routes of :data:`ROUTES` that ``web``'s settings serve, bound to ``web``.

    With ``cors_per_route`` each route carries the CORS middleware itself (for routes
    mounted into another app); otherwise :func:`~sse_tasks.web.app.build_app` wraps the
    whole app. The middleware answers preflights itself; any other ``OPTIONS`` gets 405.
    """
    settings = web.settings
    if settings.metrics and web.metrics is None:
        from .metrics import Metrics  # needs the metrics extra: imported only when served

        web.metrics = Metrics(web.runner, web.monitor)
    cors = cors_middleware(settings) if cors_per_route and settings.cors_origins else None
    routes: list[BaseRoute] = [
        spec.route(web, cors) for spec in ROUTES if spec.when is None or spec.when(settings)
    ]
    web.routes = routes
    return routes


class Methods:
    """One route's endpoints by method, bound to a context: :meth:`handle` calls the one
    the request's method names and answers every ``SSETasksError`` as its JSON error."""

    __slots__ = ("endpoints", "web")

    def __init__(self, web: Web, endpoints: Mapping[str, Endpoint]) -> None:
        self.web = web
        self.endpoints = dict(endpoints)

    @property
    def name(self) -> str:
        """The route's name: its endpoints' names."""
        return "|".join(endpoint.__name__ for endpoint in self.endpoints.values())

    async def handle(self, request: Request) -> Response | SSEStream:
        method = request.method
        if method == "OPTIONS":  # not a preflight (CORS answers those)
            body = {"error": {"code": "method_not_allowed", "message": "OPTIONS is only for CORS preflights"}}
            return JSON(body, status_code=405)
        endpoint = self.endpoints["GET" if method == "HEAD" else method]
        try:
            return await endpoint(self.web, request)
        except SSETasksError as exc:
            self.web.runner.stats.rejected[exc.code] += 1
            return error_response(exc)
        except ClientDisconnect:
            # The client left while sending its body: nobody reads the answer, and
            # anyone could flood the log with these, so DEBUG only.
            logger.debug("client disconnected before its request body arrived")
            self.web.runner.stats.rejected["client_disconnected"] += 1
            return Response(status_code=400)


class APIRoute(Route):
    """A route of the hub's API: it carries an :class:`Operation` per method, which
    ``/openapi.json`` is generated from and which declares what its endpoint reads."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        operations: dict[str, Operation],
        *,
        cors: Middleware | None = None,
        name: str | None = None,
    ) -> None:
        methods = [*operations, "OPTIONS"] if cors is not None else list(operations)
        middleware = [cors] if cors is not None else None
        super().__init__(path, endpoint, methods=methods, name=name, middleware=middleware)
        self.operations = operations


def cors_middleware(settings: WebSettings) -> Middleware:
    """The hub's CORS middleware, configured from ``settings``."""
    return Middleware(CORSMiddleware, origins=settings.cors_origins, credentials=settings.cors_credentials)
