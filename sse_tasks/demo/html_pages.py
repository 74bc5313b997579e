"""The demo's server-rendered pages: ``/htmx`` and ``/datastar``, no JavaScript of their own.

Each page has a form per demo task (``count``, ``generate``); the form posts to the page's
``…/start`` route, which submits the task and answers the markup that follows it: the
card and the output box, wired to the hub's HTML stream of that task. The scripts are
the vendored htmx, htmx-ext-sse and Datastar the hub serves under ``/vendor/``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from .._core.errors import SSETasksError
from ..web.html import renderer_of
from ..web.proxy import mount_path
from ..web.render import card_container_id, escape, output_container_id

if TYPE_CHECKING:
    from .._core.models import Task
    from .._hub import TaskHub

_MAX_FORM = 4096
#: The fields of each task's form: (param, label, type, default, step).
_FORMS: dict[str, list[tuple[str, str, type[int] | type[float], str, str]]] = {
    "count": [("n", "Steps", int, "10", "1"), ("interval", "Seconds between steps", float, "0.3", "0.01")],
    "generate": [
        ("words", "Words", int, "50", "1"),
        ("delay", "Seconds between words", float, "0.05", "0.01"),
    ],
}
_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; }
form { display: inline-block; margin: 0 1rem 1rem 0; padding: .5rem 1rem; border: 1px solid #ccc; }
label { display: block; } input { width: 8rem; }
.task { border: 1px solid #ddd; border-radius: 6px; padding: .5rem 1rem; margin: .5rem 0; }
.sse-task-state { font-weight: 600; }
.sse-task progress { width: 12rem; margin: 0 .5rem; vertical-align: middle; }
.sse-task-error { color: #b00; display: block; } .sse-task-result { display: block; }
.output { white-space: pre-wrap; font-family: ui-monospace, monospace; max-height: 14rem; overflow: auto; }
.sse-task-log { color: #666; }
"""


def _forms(start: Callable[[str], str]) -> str:
    forms = []
    for name, fields in _FORMS.items():
        inputs = "".join(
            f'<label for="{name}-{param}">{label}</label>'
            f'<input id="{name}-{param}" name="{param}" type="number" min="0" step="{step}"'
            f' value="{default}" required>'
            for param, label, _, default, step in fields
        )
        forms.append(
            f'<form {start(name)}><input type="hidden" name="name" value="{name}">'
            f"<strong>{name}</strong>{inputs}<button>Start {name}</button></form>"
        )
    return "".join(forms)


def _page(title: str, scripts: str, intro: str, forms: str, shown: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>'
        f"{scripts}<style>{_STYLE}</style></head><body>"
        f'<h1>{title}</h1><p>{intro}</p>{forms}<div id="tasks">{shown}</div></body></html>'
    )


async def _submit(hub: TaskHub, request: Request) -> Task:
    """The task a page's form asks for (the form's fields as the task's params)."""
    body = await request.body()
    if len(body) > _MAX_FORM:
        raise _FormError("the form is too large")
    form = _fields(request.headers.get("content-type", ""), body)
    name = form.pop("name", "")
    fields = _FORMS.get(name)
    if fields is None:
        raise _FormError("choose count or generate")
    params: dict[str, Any] = {}
    for param, _, kind, default, _ in fields:
        try:
            params[param] = kind(form.get(param, default))
        except ValueError:
            raise _FormError(f"{param} must be a number") from None
    return await hub.submit_json(name, params)


def _fields(content_type: str, body: bytes) -> dict[str, str]:
    """A form's text fields, url-encoded (htmx) or ``multipart/form-data`` (Datastar's ``FormData``)."""
    if not content_type.lower().startswith("multipart/form-data"):
        return dict(parse_qsl(body.decode("utf-8", "replace")))
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields: dict[str, str] = {}
    if message.is_multipart():
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields[name] = payload.decode("utf-8", "replace")
    return fields


class _FormError(SSETasksError):
    status_code = 422
    code = "invalid_request"


def _stream_url(hub: TaskHub, request: Request, task: Task, kind: str) -> str:
    url = f"{mount_path(request)}/tasks/{quote(task.id)}/{kind}"
    tokens = hub.settings.tokens
    return f"{url}?token={quote(tokens.issue(task.id))}" if tokens is not None else url


def html_page_routes(hub: TaskHub) -> list[BaseRoute]:
    """``/htmx`` and ``/datastar`` (pages; ``?task=<id>`` shows that task) and their ``…/start``.

    None on a hub with an authorization hook: these pages submit without asking it.
    """
    if hub.settings.authorize is not None:
        return []
    renderer = renderer_of(hub.settings)

    def htmx_widget(request: Request, task: Task) -> str:
        url = escape(_stream_url(hub, request, task, "htmx"))
        return (
            f'<section class="task" hx-ext="sse" sse-connect="{url}" sse-close="done">'
            f'<div id="{escape(card_container_id(task.id))}" sse-swap="state">{renderer.state(task)}</div>'
            f'<div id="{escape(output_container_id(task.id))}" class="output" sse-swap="output"'
            ' hx-swap="beforeend"></div></section>'
        )

    def datastar_widget(request: Request, task: Task) -> str:
        url = escape(json.dumps(_stream_url(hub, request, task, "datastar")))  # a JS string
        return (
            f'<section class="task" data-on-load="@get({url})">'
            f'<div id="{escape(card_container_id(task.id))}">{renderer.state(task)}</div>'
            f'<div id="{escape(output_container_id(task.id))}" class="output"></div></section>'
        )

    async def shown(request: Request, widget: Callable[[Request, Task], str]) -> str:
        task_id = request.query_params.get("task")
        if not task_id:
            return ""
        if hub.settings.tokens is not None:  # the id alone must not be enough to follow a task
            return '<p class="error" role="alert">?task= is off with task tokens</p>'
        try:
            return widget(request, await hub.get(task_id))
        except SSETasksError as exc:
            return f'<p class="error" role="alert">{escape(exc.message)}</p>'

    async def htmx_page(request: Request) -> Response:
        root = escape(mount_path(request))  # a forwarded prefix may hold quotes and markup
        scripts = (
            f'<script src="{root}/vendor/htmx.min.js"></script>'
            f'<script src="{root}/vendor/htmx-ext-sse.min.js"></script>'
        )
        forms = _forms(lambda name: f'hx-post="{root}/htmx/start" hx-target="#tasks" hx-swap="afterbegin"')
        intro = "Followed by htmx and its SSE extension: the hub's HTML fragments, no script of its own."
        page = _page("sse-tasks · htmx", scripts, intro, forms, await shown(request, htmx_widget))
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    async def htmx_start(request: Request) -> Response:
        try:
            task = await _submit(hub, request)
        except SSETasksError as exc:
            return HTMLResponse(f'<p class="error" role="alert">{escape(exc.message)}</p>')
        return HTMLResponse(htmx_widget(request, task))

    async def datastar_page(request: Request) -> Response:
        root = mount_path(request)
        scripts = f'<script type="module" src="{escape(root)}/vendor/datastar.js"></script>'
        start = escape(json.dumps(f"{root}/datastar/start"))  # a JS string in an attribute
        forms = _forms(lambda name: f"data-on-submit=\"@post({start}, {{contentType: 'form'}})\"")
        intro = "Followed by Datastar: the hub's datastar-merge-fragments, no script of its own."
        page = _page("sse-tasks · Datastar", scripts, intro, forms, await shown(request, datastar_widget))
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    async def datastar_start(request: Request) -> Response:
        try:
            from datastar_py import ServerSentEventGenerator as SSE
            from datastar_py.consts import FragmentMergeMode
        except ImportError:
            return Response("this page needs datastar-py: pip install 'sse-tasks[datastar]'", status_code=501)
        try:
            markup = datastar_widget(request, await _submit(hub, request))
        except SSETasksError as exc:
            markup = f'<p class="error" role="alert">{escape(exc.message)}</p>'
        event = SSE.merge_fragments(markup, selector="#tasks", merge_mode=FragmentMergeMode.PREPEND)
        return Response(str(event), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return [
        Route("/htmx", htmx_page, methods=["GET"]),
        Route("/htmx/start", htmx_start, methods=["POST"]),
        Route("/datastar", datastar_page, methods=["GET"]),
        Route("/datastar/start", datastar_start, methods=["POST"]),
    ]
