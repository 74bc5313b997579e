"""The hub's own Starlette app (``hub.app``): its routes, with a fast path for its streams."""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Lifespan, Receive, Scope, Send

from .endpoints import JSON
from .routes import cors_middleware
from .settings import WebSettings
from .sse import StreamEndpoint

logger = logging.getLogger("sse_tasks")

#: The least time between two warnings of a prefix left in the path, in seconds: a client
#: can neither fill the log with them nor, by sending one first, silence the warning a
#: real misconfiguration (every hub URL answered 404) deserves.
PREFIX_WARNING_EVERY = 60.0

# A hub path behind one or more segments: what a dispatcher that forwards the whole
# path, without adding its prefix to ``root_path``, makes of ``/jobs/tasks/<id>``.
_PREFIXED = re.compile(
    r"(/.+?)(/tasks(?:/[^/]+(?:/events|/output)?)?|/events|/sse-tasks\.js|/openapi\.json)/?"
)


def _note_unstripped_prefix(request: Request) -> None:
    app = request.scope.get("app")
    root_path = str(request.scope.get("root_path", ""))
    path = str(request.scope["path"])
    route_path = path[len(root_path) :] if root_path and path.startswith(root_path) else path
    match = _PREFIXED.fullmatch(route_path)
    if match is None or not isinstance(app, HubApp):
        return
    now = time.monotonic()
    if now - app.prefix_warned_at < PREFIX_WARNING_EVERY:
        return
    app.prefix_warned_at = now
    logger.warning(
        "sse_tasks: %s reached the hub with %r still in its path (root_path %r): whatever forwards "
        "to hub.app must add its prefix to the ASGI root_path, as Starlette's Mount(%r, hub.app) "
        "or sse_tasks.django.asgi(hub, prefix=%r) do; the hub answers 404 until then",
        path,
        match[1],
        root_path,
        match[1],
        match[1],
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        _note_unstripped_prefix(request)
    codes = {404: "not_found", 405: "method_not_allowed"}
    body = {"error": {"code": codes.get(exc.status_code, "http_error"), "message": exc.detail}}
    return JSON(body, status_code=exc.status_code, headers=exc.headers)


class HubApp(Starlette):
    """The hub's own app (``hub.app``): a Starlette app whose stream routes skip
    Starlette's per-request stack.

    For ``GET``/``HEAD`` of ``/events`` and ``/tasks/<id>/events`` it routes the request
    itself (with Starlette's own route matching) and runs the stream directly, behind
    the hub's CORS middleware when that is set: the error and exception middleware,
    the router and their ``send`` wrappers would otherwise stay alive, one set per
    stream, for as long as the stream is open. Once middleware is added to this app
    (``add_middleware``), every request takes the full stack again, so that
    middleware wraps the streams too; an app that mounts or wraps this one wraps them
    in any case.
    """

    def __init__(self, streams: Sequence[Route], cors: Middleware | None, **options: Any) -> None:
        super().__init__(**options)
        self._own_middleware = list(self.user_middleware)
        #: When the app last logged that it was reached with a prefix left in the path
        #: (``time.monotonic()``).
        self.prefix_warned_at = -math.inf
        self._streams: list[tuple[Route, ASGIApp]] = []
        for route in streams:
            app: ASGIApp = route.app
            if cors is not None:
                app = cors.cls(app, *cors.args, **cors.kwargs)
            self._streams.append((route, app))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"].endswith("/events")
            and self.user_middleware == self._own_middleware
        ):
            for route, app in self._streams:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope["app"] = self
                    scope.setdefault("router", self.router)
                    scope["route"] = route
                    scope.update(child_scope)
                    if isinstance(app, StreamEndpoint):  # one frame less per open stream
                        response = await app.handler(Request(scope, receive, send))
                        await response(scope, receive, send)
                    else:
                        await app(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)


def build_app(routes: Sequence[BaseRoute], settings: WebSettings, lifespan: Lifespan[Starlette]) -> Starlette:
    """A Starlette app serving ``routes`` (built without per-route CORS), run by ``lifespan``.

    Mounted under another app, that app's lifespan must enter the hub instead.
    """
    cors = cors_middleware(settings) if settings.cors_origins else None
    streams = [r for r in routes if isinstance(r, Route) and isinstance(r.app, StreamEndpoint)]
    return HubApp(
        streams,
        cors,
        routes=list(routes),
        middleware=[cors] if cors is not None else [],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
