"""``GET /tasks/{id}/datastar``: a task's stream as Datastar events, built with datastar-py.

Datastar 1.0.0-beta.11's protocol (the npm release; datastar-py 0.5): the card goes into
``#task-<id>-card`` and each output chunk is appended to ``#task-<id>-output``
(``datastar-merge-fragments``); the task's state, progress and message are merged into a
signal (``datastar-merge-signals``), ``task`` unless the page names another with
``?signal=``. A fresh start or a reset empties the output container
(``datastar-remove-fragments`` of its children) and appends the whole retained output
(see :mod:`sse_tasks.web.html`): beta.11's ``inner`` mode keeps only the last of several
elements. Every fragment must be elements, not bare text. Datastar's client resends the
last event id as ``Last-Event-ID`` when it retries.

``datastar-py`` (the ``datastar`` extra) is imported here only, when a page asks:
without it the endpoint answers 501.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .._core.errors import InvalidRequest, SSETasksError
from .html import StreamTools, html_stream, renderer_of
from .operations import SIGNAL
from .render import HtmlRenderer, card_container_id, output_container_id

if TYPE_CHECKING:
    from starlette.requests import Request

    from .._core.models import OutputChunk, Task
    from .sse import SSEStream

_SIGNAL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def id_selector(element_id: str) -> str:
    """The CSS selector of the element with id ``element_id``, escaped as the browser's
    ``CSS.escape`` does: a task id's ``:`` or ``.`` selects the element rather than
    breaking the selector, and a control character (no task id holds one) is a hex
    escape, never a line break in the event's ``data: selector`` line."""
    escaped = []
    for index, char in enumerate(element_id):
        code = ord(char)
        if code == 0:
            escaped.append("\ufffd")
        elif (
            code < 0x20
            or code == 0x7F
            or (char.isdigit() and char.isascii() and _digit_first(element_id, index))
        ):
            escaped.append(f"\\{code:x} ")
        elif code >= 0x80 or char in "-_" or (char.isascii() and char.isalnum()):
            escaped.append("\\-" if element_id == "-" else char)
        else:
            escaped.append("\\" + char)
    return "#" + "".join(escaped)


def _digit_first(element_id: str, index: int) -> bool:
    """A digit where an identifier may not start with one: first, or after a first ``-``."""
    return index == 0 or (index == 1 and element_id[0] == "-")


class NotInstalled(SSETasksError):
    """A feature needs a package that is not installed (501)."""

    status_code = 501
    code = "not_implemented"


class DatastarDialect:
    """Datastar's events for one task, made by ``ServerSentEventGenerator``."""

    def __init__(self, generator: Any, renderer: HtmlRenderer, signal: str) -> None:
        self.sse = generator
        self.renderer = renderer
        self.signal = signal

    def state(self, task: Task, event_id: str | None) -> bytes:
        card = self.sse.merge_fragments(
            self.renderer.state(task),
            selector=id_selector(card_container_id(task.id)),
            merge_mode="inner",
            event_id=event_id,
        )
        values = {
            "id": task.id,
            "state": task.state.value,
            "progress": task.progress,
            "message": task.message,
            "terminal": task.terminal,
        }
        signals = self.sse.merge_signals({self.signal: values}, event_id=event_id)
        return f"{card}{signals}".encode()

    def append(self, chunk: OutputChunk, event_id: str | None) -> bytes:
        selector = id_selector(output_container_id(chunk.task_id))
        event = self.sse.merge_fragments(
            self.renderer.output(chunk), selector=selector, merge_mode="append", event_id=event_id
        )
        return str(event).encode()

    def replace(self, task_id: str, chunks: list[OutputChunk], event_id: str | None) -> bytes:
        selector = id_selector(output_container_id(task_id))
        if not chunks:
            return str(self.sse.remove_fragments(f"{selector} > *", event_id=event_id)).encode()
        # Written in one piece; only the last event carries the id, so a retry never skips the append.
        cleared = self.sse.remove_fragments(f"{selector} > *")
        output = "".join(self.renderer.output(chunk) for chunk in chunks)
        appended = self.sse.merge_fragments(output, selector=selector, merge_mode="append", event_id=event_id)
        return f"{cleared}{appended}".encode()

    def done(self, task: Task) -> bytes:
        return b""  # the stream ends after the terminal state, and Datastar's request with it


async def datastar_stream(request: Request, tools: StreamTools) -> SSEStream:
    """``GET /tasks/{id}/datastar``: the task's stream for Datastar (501 without datastar-py)."""
    try:
        from datastar_py import ServerSentEventGenerator
    except ImportError:
        raise NotInstalled("Datastar streams need datastar-py: pip install 'sse-tasks[datastar]'") from None
    signal = SIGNAL.get(request) or "task"
    if not _SIGNAL_NAME.fullmatch(signal):
        raise InvalidRequest("'signal' must be a name of letters, digits and _ (at most 64)")
    renderer = renderer_of(tools.settings)
    return await html_stream(
        request, tools, lambda task: DatastarDialect(ServerSentEventGenerator, renderer, signal)
    )
