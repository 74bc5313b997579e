"""Every internal of Starlette, sse-starlette and uvicorn that the fast stream path relies on.

The stream path (``sse_tasks/web/sse.py``, ``streams.py``, ``app.py``'s ``HubApp``,
``server_exit.py``, ``openapi.py``) steps past these libraries' public API in the places
listed in ``sse_tasks/web/sse.py``'s docstring. Each test here pins one such place and
says, when an upgrade changes it, what in sse_tasks has to change with it. Only this
module does so: a test elsewhere that breaks on an upgrade is a bug in that test.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import threading
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from _support import free_port
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from sse_tasks.web.app import HubApp
from sse_tasks.web.server_exit import main_thread_server

pytestmark = pytest.mark.anyio


class _Recorder:
    """A raw ASGI endpoint (not a function: Starlette must not wrap it) that keeps the
    scope it is called with."""

    def __init__(self) -> None:
        self.scope: Scope = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = dict(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def _get(app: Any, path: str) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        assert (await http.get(path)).status_code == 200


async def test_starlette_gives_a_routes_endpoint_the_scope_keys_hubapp_gives_its_streams() -> None:
    full, fast = _Recorder(), _Recorder()
    await _get(Starlette(routes=[Route("/x/events", full)]), "/x/events")
    route = Route("/x/events", fast)
    await _get(HubApp([route], None, routes=[route]), "/x/events")
    assert fast.scope.get("route") is route, "HubApp's fast path did not run: the test no longer pins it"
    added = set(full.scope) - set(fast.scope)
    assert added == {"starlette.exception_handlers"}, (
        f"Starlette now puts {sorted(added)} into the scope of a route's endpoint, which HubApp's"
        " fast path for streams (sse_tasks/web/app.py) does not: set them there too, or let"
        " streams take Starlette's full stack"
    )
    assert set(fast.scope) <= set(full.scope), sorted(set(fast.scope) - set(full.scope))


async def test_starlette_router_puts_the_matched_route_in_the_scope() -> None:
    recorder = _Recorder()
    route = Route("/tasks/{task_id}", recorder)
    await _get(Starlette(routes=[route]), "/tasks/abc")
    assert recorder.scope.get("route") is route, (
        "Starlette no longer sets scope['route'] to the matched route: Param._check"
        " (sse_tasks/web/openapi.py) cannot find the operation that declares what an endpoint reads"
    )
    assert recorder.scope["path_params"] == {"task_id": "abc"}


def test_a_route_of_a_callable_object_is_that_object_not_a_request_response_wrapper() -> None:
    recorder = _Recorder()
    route = Route("/events", recorder)
    assert route.app is recorder, (
        "Starlette wraps a non-function endpoint now: StreamEndpoint (sse_tasks/web/sse.py) would"
        " keep a Request per open stream, and HubApp's isinstance(route.app, StreamEndpoint) fails"
    )


def test_route_matches_returns_the_child_scope_hubapp_applies() -> None:
    route = Route("/tasks/{task_id}/events", _Recorder())
    scope = {"type": "http", "path": "/tasks/abc/events", "method": "GET", "root_path": ""}
    match, child = route.matches(scope)
    assert match is Match.FULL, "Route.matches() no longer answers (Match.FULL, child scope): see HubApp"
    assert child["path_params"] == {"task_id": "abc"}


def test_route_param_convertors_name_the_path_parameters_in_order() -> None:
    route = Route("/a/{first}/b/{second:int}", _Recorder())
    assert list(route.param_convertors) == ["first", "second"], (
        "Route.param_convertors changed: openapi_document (sse_tasks/web/openapi.py) reads the path"
        " parameters of every route from it"
    )


def test_add_middleware_shows_in_user_middleware() -> None:
    app = Starlette()
    before = list(app.user_middleware)
    app.add_middleware(_PassThrough)
    assert app.user_middleware != before, (
        "Starlette.add_middleware no longer changes user_middleware: HubApp (sse_tasks/web/app.py)"
        " would keep routing streams past middleware added to the hub's app"
    )


class _PassThrough:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def test_middleware_keeps_its_class_and_arguments() -> None:
    middleware = Middleware(_PassThrough, 1, two=2)
    assert (middleware.cls, middleware.args, middleware.kwargs) == (_PassThrough, (1,), {"two": 2}), (
        "Middleware no longer has cls/args/kwargs: HubApp builds the CORS middleware around its"
        " streams from them"
    )


def test_event_source_response_headers_and_cleanup_timeout() -> None:
    async def nothing() -> AsyncIterator[bytes]:
        yield b""  # pragma: no cover - never iterated

    body = nothing()
    response = EventSourceResponse(body, headers={"X-Accel-Buffering": "no"}, ping=0, sep="\n")
    headers = dict(response.raw_headers)
    assert headers[b"content-type"] == b"text/event-stream; charset=utf-8", (
        "EventSourceResponse's headers changed: sse_headers() (sse_tasks/web/sse.py) copies them"
        " for every stream; check the new ones belong on a stream"
    )
    assert headers[b"x-accel-buffering"] == b"no"
    timeout = EventSourceResponse.DEFAULT_CLEANUP_TIMEOUT
    assert isinstance(timeout, (int, float)) and timeout > 0, "see _CLEANUP_TIMEOUT in sse_tasks/web/sse.py"
    assert "ping" in inspect.signature(EventSourceResponse).parameters


async def test_uvicorn_in_the_main_thread_is_found_by_its_signal_handler_and_exits_on_should_exit() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("uvicorn installs signal handlers only in the main thread")
    assert main_thread_server() is None  # nothing serves here yet

    async def app(scope: Scope, receive: Receive, send: Send) -> None:  # pragma: no cover - no requests
        pass

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), lifespan="off"))
    serving = asyncio.ensure_future(server.serve())
    try:
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        handler = signal.getsignal(signal.SIGTERM)
        assert main_thread_server() is server, (
            f"uvicorn's SIGTERM handler is {handler!r}, not a method of its Server with should_exit:"
            " sse_tasks/web/server_exit.py cannot find the server, so streams would hold"
            " `uvicorn app:app` and `sse-tasks serve` open on exit"
        )
        server.should_exit = True
        with anyio.fail_after(10):
            await serving
    finally:
        server.should_exit = True
        with anyio.move_on_after(10):
            await serving
    assert main_thread_server() is None, "uvicorn did not restore the signal handler it replaced"
