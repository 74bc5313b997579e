"""HTML streams: a task's per-task stream with HTML fragments as event data.

Pages without JavaScript of their own follow a task with htmx's SSE extension
(``GET /tasks/{id}/htmx``) or with Datastar (``GET /tasks/{id}/datastar``, in
:mod:`sse_tasks.web.datastar`). Both are the per-task JSON stream
(:func:`sse_tasks.web.streams.task_stream`) with each frame translated, so they resume,
resync and end exactly as it does and carry its event ids.

Output is exact across every kind of reconnect:

- With ``Last-Event-ID`` (``EventSource``'s own reconnect, Datastar's retry) the JSON
  stream sends exactly the missed events: output chunks are *appended*.
- Without one (a reload, the htmx extension's own reconnect, which opens a fresh
  ``EventSource``) or after a ``reset``, the JSON stream replays the task's whole
  retained output: that replay goes out as *one* event that *replaces* the output
  container's content, never appended to what the page holds.

Every string a task controls goes through :func:`sse_tasks.web.render.escape`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from starlette.requests import Request
from starlette.responses import Response

from .._core import codec
from .._core.errors import NotFound
from .._core.log import reached
from .._core.models import OUTPUT_EVENT, RESET_EVENT, OutputChunk, Task
from .operations import LAST_EVENT_ID, LAST_EVENT_ID_HEADER
from .proxy import mount_path
from .render import HtmlRenderer, TaskCard, escape, output_container_id
from .streams import Body, Resume, Selection, StreamPlan, retry_frame, task_stream

if TYPE_CHECKING:
    from .auth import Gate
    from .backend import TaskBackend
    from .settings import WebSettings
    from .sse import SSEStream


_LINES = re.compile("\r\n|\r|\n")


class Dialect(Protocol):
    """How one kind of page takes fragments (htmx, Datastar): SSE frames, encoded."""

    def state(self, task: Task, event_id: str | None) -> bytes: ...
    def append(self, chunk: OutputChunk, event_id: str | None) -> bytes: ...
    def replace(self, task_id: str, chunks: list[OutputChunk], event_id: str | None) -> bytes: ...
    def done(self, task: Task) -> bytes: ...


def sse_frame(event: str, data: str, event_id: str | None = None) -> bytes:
    """One SSE frame whose data is ``data``, a ``data:`` field per line (a renderer's own
    CR ends a line too, as it would for the client: it cannot start a field of its own)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    lines = "".join(f"data: {line}\n" for line in _LINES.split(data))
    return f"{head}event: {event}\n{lines}\n".encode()


class HtmxDialect:
    """Events for htmx's SSE extension: ``state``, ``output`` and ``done``.

    ``state`` is the card's whole content (``sse-swap="state"``); ``output`` either one
    chunk to append (``hx-swap="beforeend"``) or, after a fresh start or a reset, the
    whole retained output as an out-of-band swap that replaces the container's content;
    ``done`` follows the terminal state (``sse-close="done"``).
    """

    def __init__(self, renderer: HtmlRenderer) -> None:
        self.renderer = renderer

    def state(self, task: Task, event_id: str | None) -> bytes:
        return sse_frame("state", self.renderer.state(task), event_id)

    def append(self, chunk: OutputChunk, event_id: str | None) -> bytes:
        return sse_frame("output", self.renderer.output(chunk), event_id)

    def replace(self, task_id: str, chunks: list[OutputChunk], event_id: str | None) -> bytes:
        inner = "".join(self.renderer.output(chunk) for chunk in chunks)
        container = escape(output_container_id(task_id))
        return sse_frame("output", f'<div id="{container}" hx-swap-oob="innerHTML">{inner}</div>', event_id)

    def done(self, task: Task) -> bytes:
        return sse_frame("done", escape(task.state.value))


class Translator:
    """Turns the JSON frames of one per-task stream into a dialect's frames.

    ``fresh``: the stream starts without a resume point, so its opening replays the
    whole retained output (see the module doc). A ``reset`` frame does the same for the
    frames after it in its chunk: the JSON stream sends a resync as one chunk.
    """

    def __init__(self, dialect: Dialect, task_id: str) -> None:
        self.dialect = dialect
        self.task_id = task_id

    def translate(self, data: bytes, *, fresh: bool = False) -> bytes:
        """The dialect's frames for the whole frames in ``data`` (b"" stays b"")."""
        out: list[bytes] = []
        replacing = fresh
        group: list[OutputChunk] = []
        group_id: str | None = None

        def flush() -> None:
            nonlocal replacing, group, group_id
            out.append(self.dialect.replace(self.task_id, group, group_id))
            replacing, group, group_id = False, [], None

        for event_id, event, payload in _frames(data):
            if event == "":  # retry: or a comment
                out.append(payload)
                continue
            if event == RESET_EVENT:
                replacing, group, group_id = True, [], None
                continue
            value = codec.loads(payload)
            if event == OUTPUT_EVENT:
                chunk = OutputChunk.from_record(value)
                if replacing:
                    group.append(chunk)
                    group_id = event_id
                else:
                    out.append(self.dialect.append(chunk, event_id))
                continue
            task = Task.from_record(value)
            if replacing and (group or task.terminal):
                flush()
            out.append(self.dialect.state(task, event_id))
            if task.terminal:
                out.append(self.dialect.done(task))
        if replacing:
            flush()
        return b"".join(out)

    async def follow(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Each chunk of ``chunks``, translated (heartbeat chances stay empty)."""
        try:
            async for chunk in chunks:
                yield self.translate(chunk) if chunk else b""
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]


def _frames(data: bytes) -> Iterable[tuple[str | None, str, bytes]]:
    """``(id, event, data)`` of each frame; ``event`` "" for a frame passed on as is."""
    for raw in data.split(b"\n\n"):
        if not raw:
            continue
        event_id: str | None = None
        event = ""
        payload = b""
        for line in raw.split(b"\n"):
            field, _, value = line.partition(b": ")
            if field == b"id":
                event_id = value.decode()
            elif field == b"event":
                event = value.decode()
            elif field == b"data":
                payload = value
        if not event:
            yield None, "", raw + b"\n\n"
        else:
            yield event_id, event, payload


@dataclass(frozen=True)
class StreamTools:
    """What an HTML stream endpoint needs from the hub's routes."""

    runner: TaskBackend
    settings: WebSettings
    gate: Gate
    check_capacity: Callable[[], None]
    respond: Callable[[Request, Body], SSEStream]


async def html_stream(
    request: Request, tools: StreamTools, make_dialect: Callable[[Task], Dialect]
) -> SSEStream:
    """One task's stream in ``make_dialect(task)``'s fragments (access checked like ``/events``)."""
    tools.check_capacity()
    runner = tools.runner
    plan = StreamPlan(runner, tools.settings, Selection(), mount_path(request))
    task = await tools.gate.task("follow", request, request.path_params["task_id"])
    plan.selection = Selection(task_ids=frozenset({task.id}), output=True)
    plan.single = task
    raw = LAST_EVENT_ID_HEADER.get(request) or LAST_EVENT_ID.get(request) or None
    resume = Resume(runner, raw, task)
    translator = Translator(make_dialect(task), task.id)
    terminal_key = runner.parse_event_id(task.event_id or "") if task.terminal else None
    plain = resume.output_seq is None
    if resume.valid and plain and terminal_key is not None and reached(resume.key, terminal_key):
        # The page has everything: the card again and the end, no output (not a 204,
        # which would make htmx's extension open a fresh EventSource).
        opening = retry_frame(tools.settings.retry) + translator.dialect.state(task, task.event_id)
        return tools.respond(request, Body(opening + translator.dialect.done(task)))
    body = await task_stream(plan, resume)
    try:
        opening = translator.translate(body.opening, fresh=not resume.given)
        follow = translator.follow(body.follow) if body.follow is not None else None
    except BaseException:
        if body.release is not None:
            body.release()
        raise
    return tools.respond(request, Body(opening, follow, body.release))


def renderer_of(settings: WebSettings) -> HtmlRenderer:
    """The hub's renderer: ``html_renderer`` or the default :class:`TaskCard`."""
    renderer = settings.html_renderer
    return renderer if renderer is not None else TaskCard()


async def htmx_stream(request: Request, tools: StreamTools) -> SSEStream:
    """``GET /tasks/{id}/htmx``: the task's stream for htmx's SSE extension."""
    renderer = renderer_of(tools.settings)
    return await html_stream(request, tools, lambda task: HtmxDialect(renderer))


_VENDOR = Path(__file__).parent / "static" / "vendor"
#: The vendored browser libraries the hub serves (see static/vendor/README.md).
VENDORED = {
    "htmx.min.js": "text/javascript; charset=utf-8",
    "htmx-ext-sse.min.js": "text/javascript; charset=utf-8",
    "datastar.js": "text/javascript; charset=utf-8",
}


async def vendored_file(request: Request) -> Response:
    """``GET /vendor/{name}``: htmx, its SSE extension or Datastar, as vendored."""
    name = request.path_params["name"]
    media_type = VENDORED.get(name)
    if media_type is None:
        raise NotFound(f"no vendored file {name!r}")
    return Response(
        (_VENDOR / name).read_bytes(), media_type=media_type, headers={"Cache-Control": "no-cache"}
    )
