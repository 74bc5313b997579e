"""The hub's endpoints: one named function per route and method, and how they read requests.

Each endpoint is ``async def name(web: Web, request: Request) -> Response`` (a stream's
may answer an :class:`SSEStream`): everything it may use is in the :class:`Web` context
it is given, so each can be called and tested alone. The route table
(:data:`sse_tasks.web.routes.ROUTES`) pairs each with its path, method and
:class:`~sse_tasks.web.openapi.Operation`, and answers the errors they raise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

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
from .._core.log import reached
from .._core.models import MAX_TASK_ID_LENGTH, Task, TaskState, check_tags, task_path
from .._core.text import ascii_int
from .auth import Gate
from .datastar import datastar_stream
from .html import StreamTools, htmx_stream, vendored_file
from .limits import ClientSlots, lifetime_deadline
from .openapi import Param, openapi_document
from .operations import (
    BEFORE,
    LAST_EVENT_ID,
    LAST_EVENT_ID_HEADER,
    LIMIT,
    MAX_LIST,
    MAX_SELECTED,
    NAME,
    OUTPUT,
    STATE,
    TAGS,
    TASK_IDS,
)
from .paging import older_than
from .proxy import mount_path
from .sse import SSEStream, StreamMonitor, sse_headers
from .streams import Body, Resume, Selection, StreamPlan, global_stream, task_stream

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from .backend import TaskBackend
    from .metrics import Metrics
    from .settings import WebSettings

_MAX_SCAN = 10_000  # tasks scanned for a filtered GET /tasks
_BROWSER_MODULE = Path(__file__).parent / "static" / "sse-tasks.js"
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class Web:
    """What every endpoint may use: the runner (as a :class:`TaskBackend`), the settings,
    the open streams and the authorization gate.

    ``monitor`` and ``client_streams`` default to fresh ones (a hub's :class:`WebService`
    passes its own, shared by every route it builds).
    """

    __slots__ = (
        "client_streams",
        "gate",
        "metrics",
        "monitor",
        "routes",
        "runner",
        "settings",
        "sse_headers",
    )

    def __init__(
        self,
        runner: TaskBackend,
        settings: WebSettings,
        monitor: StreamMonitor | None = None,
        client_streams: ClientSlots | None = None,
    ) -> None:
        self.runner = runner
        self.settings = settings
        self.monitor = monitor or StreamMonitor(
            settings.heartbeat, settings.send_timeout, runner.log.wake, runner.stats
        )
        self.client_streams = client_streams or ClientSlots(settings.max_streams_per_client)
        self.gate = Gate(runner, settings.authorize, settings.identify, settings.tokens)
        #: The raw headers every stream sends (worked out once).
        self.sse_headers = sse_headers(_SSE_HEADERS)
        #: Read at scrape time by ``GET /metrics`` (made when a route table serves it).
        self.metrics: Metrics | None = None
        #: The routes served with this context, which ``/openapi.json`` documents (set by
        #: :func:`~sse_tasks.web.routes.build_routes`).
        self.routes: Sequence[BaseRoute] = ()

    def open_stream(self, request: Request, body: Body) -> SSEStream:
        """The response that sends ``body``: monitored, with its lifetime and a client slot."""
        try:
            slot = self.client_streams.acquire(_client(request))
        except BaseException:
            if body.release is not None:
                body.release()
            raise
        release = slot if body.release is None else _both(body.release, slot)
        return SSEStream(
            body.opening,
            body.follow,
            monitor=self.monitor,
            headers=self.sse_headers,
            deadline=lifetime_deadline(self.settings.max_stream_lifetime),
            release=release,
        )

    def check_stream_capacity(self) -> None:
        """Raise :class:`Unavailable` when no stream may open now (too many, or shutting down)."""
        if len(self.monitor) >= self.settings.max_streams:
            raise Unavailable(f"too many open streams ({self.settings.max_streams})", code="too_many_streams")
        if self.runner.closing:
            raise Unavailable("the hub is shutting down", code="shutting_down")

    async def known_task(self, task_id: str, visible: Callable[[Task], bool] | None) -> None:
        """Raise :class:`NotFound` unless ``task_id`` names a task the caller may follow."""
        try:
            task = await self.runner.get(task_id)
        except TaskGone:
            if not self.gate.open:
                raise NotFound(f"no task with id {task_id!r}") from None
            raise
        if visible is not None and not visible(task):
            self.runner.stats.denied += 1
            raise NotFound(f"no task with id {task_id!r}")


# -- the endpoints -------------------------------------------------------------------


async def submit_task(web: Web, request: Request) -> Response:
    """Submit a task: 202 with its snapshot, ``Location`` and (with tokens) its token."""
    settings = web.settings
    body = await read_json(request, settings.max_body_size, settings.body_timeout)
    if not isinstance(body, dict):
        raise InvalidRequest('body must be a JSON object like {"name": …, "params": {…}}')
    unknown = set(body) - {"name", "params", "tags"}
    if unknown:
        raise InvalidRequest(f"unknown fields: {', '.join(sorted(map(repr, unknown)))}")
    name = body.get("name")
    if not isinstance(name, str):
        raise InvalidRequest("'name' must be a string naming a registered task")
    await web.gate.require("submit", request, name=name)
    owner = await web.gate.caller(request)
    tags = body.get("tags", [])
    if not isinstance(tags, list):
        raise InvalidRequest("'tags' must be a list of strings")
    task = await web.runner.submit_json(name, body.get("params", {}), owner=owner, tags=tags)
    root = mount_path(request)
    answer = task.to_dict(root)
    if settings.tokens is not None:
        answer["token"] = settings.tokens.issue(task.id)
    return JSON(answer, status_code=202, headers={"Location": task_path(task.id, root)})


async def list_tasks(web: Web, request: Request) -> Response:
    """Snapshots, newest first, and the log position to stream from."""
    raw_state = STATE.get(request)
    try:
        state = TaskState(raw_state) if raw_state is not None else None
    except ValueError:
        choices = ", ".join(s.value for s in TaskState)
        raise InvalidRequest(f"'state' must be one of {choices}") from None
    limit = _query_int(request, LIMIT, 100, 1, MAX_LIST)
    tags = _query_tags(request)
    visible = await web.gate.visible("list", request, tags)
    runner = web.runner
    cursor = await runner.cursor()  # before the list: replays, never misses
    name = NAME.get(request)
    before = BEFORE.get(request)
    if before is not None and len(before) > MAX_TASK_ID_LENGTH:
        raise InvalidRequest(
            f"'before' must be a task id or a created_at (at most {MAX_TASK_ID_LENGTH} characters)"
        )
    if visible is None and before is None:
        tasks = await runner.list_tasks(state=state, name=name, tags=tuple(tags), limit=limit)
    else:
        scanned: Sequence[Task] = await runner.list_tasks(
            state=state, name=name, tags=tuple(tags), limit=_MAX_SCAN
        )
        if before is not None:
            scanned = older_than(scanned, before)
        tasks = [t for t in scanned if visible is None or visible(t)][:limit]
    root = mount_path(request)
    return JSON({"tasks": [t.to_dict(root) for t in tasks], "cursor": cursor})


async def get_task(web: Web, request: Request) -> Response:
    """The task's snapshot."""
    task = await web.gate.task("read", request, request.path_params["task_id"])
    return JSON(task.to_dict(mount_path(request)))


async def cancel_task(web: Web, request: Request) -> Response:
    """Cancel the task: 202 with the ``cancelled`` snapshot, 409 if it already finished."""
    task_id = request.path_params["task_id"]
    await web.gate.task("cancel", request, task_id)
    task = await web.runner.cancel(task_id)
    return JSON(task.to_dict(mount_path(request)), status_code=202)


async def task_output(web: Web, request: Request) -> Response:
    """The task's retained output (its ``output`` chunks, joined) as ``text/plain``."""
    task = await web.gate.task("read", request, request.path_params["task_id"])
    chunks = await web.runner.output(task.id)
    text = "".join(chunk.text for chunk in chunks if chunk.kind == "output")
    return Response(text, media_type="text/plain; charset=utf-8")


async def task_events(web: Web, request: Request) -> Response | SSEStream:
    """SSE stream of one task; 204 when resuming at or past its terminal event."""
    web.check_stream_capacity()
    runner = web.runner
    plan = StreamPlan(runner, web.settings, Selection(), mount_path(request))
    task = await web.gate.task("follow", request, request.path_params["task_id"])
    plan.selection = Selection(task_ids=frozenset({task.id}), output=True)
    plan.single = task
    resume = Resume(runner, _last_event_id(request), task)
    terminal_key = runner.parse_event_id(task.event_id or "") if task.terminal else None
    # Inside a replay (``<id>~<seq>``) the terminal snapshot is still to come: no 204.
    plain = resume.output_seq is None
    if resume.valid and plain and terminal_key is not None and reached(resume.key, terminal_key):
        return Response(status_code=204)  # tells EventSource to stop reconnecting
    return web.open_stream(request, await task_stream(plan, resume))


async def events(web: Web, request: Request) -> Response | SSEStream:
    """SSE stream of all tasks, or those chosen by ``?task=``, ``?name=`` and ``?tag=``."""
    web.check_stream_capacity()
    ids = TASK_IDS.get_all(request)
    if len(ids) > MAX_SELECTED:
        raise InvalidRequest(f"at most {MAX_SELECTED} 'task' ids per stream")
    tags = _query_tags(request)
    visible = await web.gate.visible("follow", request, tags)  # on every (re)connect
    name = NAME.get(request)
    if name is not None and name not in web.runner.registry:
        raise NotFound(f"no task named {name!r} is registered")
    for task_id in dict.fromkeys(ids):
        await web.known_task(task_id, visible)
    selection = Selection(
        task_ids=frozenset(ids) if ids else None,
        name=name,
        tags=tags,
        visible=visible,
        output=_query_flag(request, OUTPUT),
    )
    plan = StreamPlan(web.runner, web.settings, selection, mount_path(request))
    body = await global_stream(plan, Resume(web.runner, _last_event_id(request)))
    return web.open_stream(request, body)


async def openapi(web: Web, request: Request) -> Response:
    """This API as an OpenAPI 3.1 document, generated from the routes served."""
    return JSON(openapi_document(web.routes, web.runner.registry, mount_path(request)))


async def browser_module(web: Web, request: Request) -> Response:
    """The browser module (an ES module): ``followTask`` and ``followTasks``."""
    return Response(
        _BROWSER_MODULE.read_bytes(),
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "no-cache"},
    )


async def metrics(web: Web, request: Request) -> Response:
    """The hub's counters in the Prometheus text format (served with ``metrics=True``)."""
    if web.metrics is None:
        raise NotFound("metrics are off (TaskHub(metrics=True) serves them)")
    return Response(web.metrics.render(), media_type=web.metrics.content_type)


# -- reading requests, answering JSON ---------------------------------------------------


class JSON(JSONResponse):
    """A JSON answer encoded by the hub's codec."""

    def render(self, content: Any) -> bytes:
        return codec.dumps(content)


def error_response(exc: SSETasksError) -> Response:
    """The JSON error answer of ``exc``, with its status and headers."""
    return JSON(exc.to_dict(), status_code=exc.status_code, headers=exc.headers)


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


def _query_tags(request: Request) -> frozenset[str]:
    """The ``?tag=`` selection (tasks carrying every one); 422 for a bad tag or too many."""
    try:
        return frozenset(check_tags(TAGS.get_all(request)))
    except ValueError as exc:
        raise InvalidRequest(f"'tag': {exc}") from None


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


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def _html_tools(web: Web) -> StreamTools:
    return StreamTools(web.runner, web.settings, web.gate, web.check_stream_capacity, web.open_stream)


async def task_htmx(web: Web, request: Request) -> SSEStream:
    """HTML fragments of one task for htmx's SSE extension (:mod:`sse_tasks.web.html`)."""
    return await htmx_stream(request, _html_tools(web))


async def task_datastar(web: Web, request: Request) -> SSEStream:
    """Datastar events of one task (:mod:`sse_tasks.web.datastar`)."""
    return await datastar_stream(request, _html_tools(web))


async def vendored(web: Web, request: Request) -> Response:
    """A vendored browser library the HTML pages load (htmx, its SSE extension, Datastar)."""
    return await vendored_file(request)


def _both(first: Callable[[], None], second: Callable[[], None]) -> Callable[[], None]:
    def release() -> None:
        try:
            first()
        finally:
            second()

    return release
