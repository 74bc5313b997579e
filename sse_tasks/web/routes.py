"""The HTTP API: Starlette routes, request checks and JSON errors."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .._core import codec
from .._core.errors import (
    BadRequest,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    SSETasksError,
    TaskGone,
    Unavailable,
    UnsupportedMediaType,
)
from .._core.models import Task, TaskState, task_path
from .._core.stats import HubStats
from .._core.text import ascii_int
from .auth import Gate
from .cors import CORSMiddleware
from .datastar import datastar_stream
from .html import StreamTools, htmx_stream, vendored_file
from .limits import lifetime_deadline
from .openapi import Operation, Param, openapi_document
from .operations import (
    LAST_EVENT_ID,
    LAST_EVENT_ID_HEADER,
    LIMIT,
    MAX_LIST,
    MAX_SELECTED,
    NAME,
    OPERATIONS,
    OUTPUT,
    STATE,
    TASK_IDS,
)
from .sse import SSEStream, StreamEndpoint, sse_headers
from .streams import Body, Resume, Selection, StreamPlan, global_stream, task_stream

if TYPE_CHECKING:
    from .._runner import Runner
    from .limits import ClientSlots
    from .settings import WebSettings
    from .sse import StreamMonitor

logger = logging.getLogger("sse_tasks")

Endpoint = Callable[[Request], Awaitable[Response]]
_R = TypeVar("_R")


_MAX_SCAN = 10_000  # tasks scanned for a filtered GET /tasks
_BROWSER_MODULE = Path(__file__).parent / "static" / "sse-tasks.js"
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class JSON(JSONResponse):
    """A JSON answer encoded by the hub's codec."""

    def render(self, content: Any) -> bytes:
        return codec.dumps(content)


def error_response(exc: SSETasksError) -> Response:
    return JSON(exc.to_dict(), status_code=exc.status_code, headers=exc.headers)


def _guard(
    endpoint: Callable[[Request], Awaitable[_R]], stats: HubStats | None = None
) -> Callable[[Request], Awaitable[_R | Response]]:
    """Turn every ``SSETasksError`` into its JSON error response (counted by code)."""

    async def guarded(request: Request) -> _R | Response:
        if request.method == "OPTIONS":  # not a preflight (CORS answers those)
            body = {"error": {"code": "method_not_allowed", "message": "OPTIONS is only for CORS preflights"}}
            return JSON(body, status_code=405)
        try:
            return await endpoint(request)
        except SSETasksError as exc:
            if stats is not None:
                stats.rejected[exc.code] += 1
            return error_response(exc)
        except ClientDisconnect:
            # The client left while sending its body: nobody reads the answer, and
            # anyone could flood the log with these, so DEBUG only.
            logger.debug("client disconnected before its request body arrived")
            if stats is not None:
                stats.rejected["client_disconnected"] += 1
            return Response(status_code=400)

    guarded.__name__ = endpoint.__name__
    guarded.__doc__ = endpoint.__doc__
    return guarded


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


async def read_json(request: Request, limit: int, time_limit: float | None = None) -> Any:
    """The request body as JSON, checked for type and size before it is decoded.

    Raises :class:`RequestTimeout` if the body takes longer than ``time_limit`` seconds.
    """
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType("send the body as Content-Type: application/json")
    raw_length = request.headers.get("content-length")
    if raw_length is not None:
        length = ascii_int(raw_length.strip(), 19)
        if length is None:
            raise BadRequest("Content-Length is not a number")
        if length > limit:
            raise PayloadTooLarge(f"body is larger than {limit} bytes")
    body = bytearray()
    with anyio.move_on_after(time_limit) as deadline:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise PayloadTooLarge(f"body is larger than {limit} bytes")
    if deadline.cancelled_caught:
        raise RequestTimeout(f"the body did not arrive within {time_limit:g} s")
    try:
        return codec.loads(bytes(body))
    except codec.LoneSurrogate as exc:
        raise InvalidRequest(f"body holds text that is not Unicode: {exc}") from None
    except ValueError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None


def _query_int(request: Request, param: Param, default: int, low: int, high: int) -> int:
    raw = param.get(request)
    if raw is None:
        return default
    value = ascii_int(raw, len(str(high)))
    if value is None or not low <= value <= high:
        raise InvalidRequest(f"{param.name!r} must be an integer from {low} to {high}")
    return value


def _query_flag(request: Request, param: Param) -> bool:
    raw = param.get(request)
    if raw is None:
        return False
    if raw.lower() not in ("0", "1", "true", "false", ""):
        raise InvalidRequest(f"{param.name!r} must be 1 or 0")
    return raw.lower() in ("1", "true", "")


def _last_event_id(request: Request) -> str | None:
    # The header is what EventSource sends on reconnect, so it beats the URL's.
    # An empty value means none (the spec's initial last event ID is the empty string).
    return LAST_EVENT_ID_HEADER.get(request) or LAST_EVENT_ID.get(request) or None


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
    ) -> None:
        methods = [*operations, "OPTIONS"] if cors is not None else list(operations)
        super().__init__(path, endpoint, methods=methods, middleware=[cors] if cors is not None else None)
        self.operations = operations


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def build_routes(
    runner: Runner,
    settings: WebSettings,
    monitor: StreamMonitor,
    client_streams: ClientSlots,
    *,
    cors_per_route: bool = False,
) -> list[BaseRoute]:
    """The hub's routes, relative to wherever they are mounted.

    With ``cors_per_route`` each route carries the CORS middleware itself (for routes
    mounted into another app); otherwise :func:`build_app` wraps the whole app.
    """
    gate = Gate(runner, settings.authorize, settings.identify, settings.tokens)

    raw_sse_headers = sse_headers(_SSE_HEADERS)

    def stream_response(request: Request, body: Body) -> SSEStream:
        return SSEStream(
            body.opening,
            body.follow,
            monitor=monitor,
            headers=raw_sse_headers,
            deadline=lifetime_deadline(settings.max_stream_lifetime),
            release=client_streams.acquire(_client(request)),
        )

    def check_stream_capacity() -> None:
        if len(monitor) >= settings.max_streams:
            raise Unavailable(f"too many open streams ({settings.max_streams})", code="too_many_streams")
        if runner.closing:
            raise Unavailable("the hub is shutting down", code="shutting_down")

    async def known_task(task_id: str, visible: Callable[[Task], bool] | None) -> None:
        """Raise :class:`NotFound` unless ``task_id`` names a task the caller may follow."""
        try:
            task = await runner.get(task_id)
        except TaskGone:
            if not gate.open:
                raise NotFound(f"no task with id {task_id!r}") from None
            raise
        if visible is not None and not visible(task):
            runner.stats.denied += 1
            raise NotFound(f"no task with id {task_id!r}")

    async def create_task(request: Request) -> Response:
        """Submit a task: 202 with its snapshot, ``Location`` and (with tokens) its token."""
        body = await read_json(request, settings.max_body_size, settings.body_timeout)
        if not isinstance(body, dict):
            raise InvalidRequest('body must be a JSON object like {"name": …, "params": {…}}')
        unknown = set(body) - {"name", "params"}
        if unknown:
            raise InvalidRequest(f"unknown fields: {', '.join(sorted(map(repr, unknown)))}")
        name = body.get("name")
        if not isinstance(name, str):
            raise InvalidRequest("'name' must be a string naming a registered task")
        await gate.require("submit", request, name=name)
        owner = settings.identify(request) if settings.identify is not None else None
        task = await runner.submit_json(name, body.get("params", {}), owner=owner)
        root = _root(request)
        answer = task.to_dict(root)
        if settings.tokens is not None:
            answer["token"] = settings.tokens.issue(task.id)
        return JSON(
            answer,
            status_code=202,
            headers={"Location": task_path(task.id, root)},
        )

    async def list_tasks(request: Request) -> Response:
        """Snapshots, newest first, and the log position to stream from."""
        raw_state = STATE.get(request)
        try:
            state = TaskState(raw_state) if raw_state is not None else None
        except ValueError:
            choices = ", ".join(s.value for s in TaskState)
            raise InvalidRequest(f"'state' must be one of {choices}") from None
        limit = _query_int(request, LIMIT, 100, 1, MAX_LIST)
        visible = await gate.visible("list", request)
        cursor = await runner.cursor()  # before the list: replays, never misses
        name = NAME.get(request)
        if visible is None:
            tasks = await runner.list_tasks(state=state, name=name, limit=limit)
        else:
            scanned = await runner.list_tasks(state=state, name=name, limit=_MAX_SCAN)
            tasks = [t for t in scanned if visible(t)][:limit]
        root = _root(request)
        return JSON({"tasks": [t.to_dict(root) for t in tasks], "cursor": cursor})

    async def tasks(request: Request) -> Response:
        if request.method == "POST":
            return await create_task(request)
        return await list_tasks(request)

    async def task_detail(request: Request) -> Response:
        """``GET``: the snapshot. ``DELETE``: cancel it (202), 409 if already finished."""
        task_id = request.path_params["task_id"]
        if request.method == "DELETE":
            await gate.task("cancel", request, task_id)
            task = await runner.cancel(task_id)
            return JSON(task.to_dict(_root(request)), status_code=202)
        task = await gate.task("read", request, task_id)
        return JSON(task.to_dict(_root(request)))

    async def task_events(request: Request) -> Response | SSEStream:
        """SSE stream of one task; 204 when resuming at or past its terminal event."""
        check_stream_capacity()
        plan = StreamPlan(runner, settings, Selection(), _root(request))
        task = await gate.task("follow", request, request.path_params["task_id"])
        plan.selection = Selection(task_ids=frozenset({task.id}), output=True)
        plan.single = task
        resume = Resume(runner, _last_event_id(request))
        terminal_key = runner.parse_event_id(task.event_id or "") if task.terminal else None
        # Inside a replay (``<id>~<seq>``) the terminal snapshot is still to come: no 204.
        plain = resume.output_seq is None
        if resume.valid and plain and terminal_key is not None and resume.key >= terminal_key:
            return Response(status_code=204)  # tells EventSource to stop reconnecting
        return stream_response(request, await task_stream(plan, resume))

    async def events(request: Request) -> Response | SSEStream:
        """SSE stream of all tasks, or those chosen by ``?task=`` and ``?name=``."""
        check_stream_capacity()
        ids = TASK_IDS.get_all(request)
        if len(ids) > MAX_SELECTED:
            raise InvalidRequest(f"at most {MAX_SELECTED} 'task' ids per stream")
        visible = await gate.visible("follow", request)  # on every (re)connect
        name = NAME.get(request)
        if name is not None and name not in runner.registry:
            raise NotFound(f"no task named {name!r} is registered")
        for task_id in dict.fromkeys(ids):
            await known_task(task_id, visible)
        selection = Selection(
            task_ids=frozenset(ids) if ids else None,
            name=name,
            visible=visible,
            output=_query_flag(request, OUTPUT),
        )
        plan = StreamPlan(runner, settings, selection, _root(request))
        body = await global_stream(plan, Resume(runner, _last_event_id(request)))
        return stream_response(request, body)

    async def task_output(request: Request) -> Response:
        """The task's retained output (its ``output`` chunks, joined) as ``text/plain``."""
        task = await gate.task("read", request, request.path_params["task_id"])
        chunks = await runner.output(task.id)
        text = "".join(chunk.text for chunk in chunks if chunk.kind == "output")
        return Response(text, media_type="text/plain; charset=utf-8")

    async def openapi(request: Request) -> Response:
        """This API as an OpenAPI 3.1 document, generated from these routes."""
        return JSON(openapi_document(routes, runner.registry, _root(request)))

    async def browser_module(request: Request) -> Response:
        """The browser module (an ES module): ``followTask`` and ``followTasks``."""
        return Response(
            _BROWSER_MODULE.read_bytes(),
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    stats = runner.stats
    endpoints: list[tuple[str, Endpoint | StreamEndpoint]] = [
        ("/tasks", _guard(tasks, stats)),
        ("/tasks/{task_id}", _guard(task_detail, stats)),
        ("/tasks/{task_id}/events", StreamEndpoint(_guard(task_events, stats))),
        ("/tasks/{task_id}/output", _guard(task_output, stats)),
        ("/events", StreamEndpoint(_guard(events, stats))),
        ("/openapi.json", openapi),
        ("/sse-tasks.js", browser_module),
    ]
    html = StreamTools(runner, settings, gate, check_stream_capacity, stream_response)

    async def task_htmx(request: Request) -> SSEStream:
        """HTML fragments of one task for htmx's SSE extension (:mod:`sse_tasks.web.html`)."""
        return await htmx_stream(request, html)

    async def task_datastar(request: Request) -> SSEStream:
        """Datastar events of one task (:mod:`sse_tasks.web.datastar`)."""
        return await datastar_stream(request, html)

    endpoints += [
        ("/tasks/{task_id}/htmx", StreamEndpoint(_guard(task_htmx, stats))),
        ("/tasks/{task_id}/datastar", StreamEndpoint(_guard(task_datastar, stats))),
        ("/vendor/{name}", _guard(vendored_file, stats)),
    ]
    if settings.metrics:
        from .metrics import metrics_endpoint

        endpoints.append(("/metrics", metrics_endpoint(runner, monitor)))
    # The middleware answers preflights itself; any other OPTIONS gets 405 (see _guard).
    cors = cors_middleware(settings) if cors_per_route and settings.cors_origins else None
    routes: list[BaseRoute] = [
        APIRoute(path, endpoint, OPERATIONS[path], cors=cors) for path, endpoint in endpoints
    ]
    return routes


def cors_middleware(settings: WebSettings) -> Middleware:
    return Middleware(CORSMiddleware, origins=settings.cors_origins, credentials=settings.cors_credentials)
