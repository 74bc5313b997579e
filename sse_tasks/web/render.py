"""What the HTML streams are made of: escaping, element ids and the task card.

Separate from :mod:`sse_tasks.web.html` so the settings can name :class:`HtmlRenderer`.
"""

from __future__ import annotations

import html
import json
import re
from typing import Protocol

from .._core.models import OutputChunk, Task

#: Characters that end a line for SSE (CR) or for ``str.splitlines`` (which datastar-py
#: splits ``elements`` with), and lone surrogates (not encodable): written as references.
_UNSAFE = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\ud800-\udfff]")


def _reference(match: re.Match[str]) -> str:
    char = match.group()
    return "\ufffd" if "\ud800" <= char <= "\udfff" else f"&#x{ord(char):x};"


def escape(value: object) -> str:
    """``value`` as text safe inside an HTML element or a quoted attribute value.

    ``html.escape(…, quote=True)``, lone surrogates replaced by U+FFFD, and CR, U+2028 and
    the other characters that would split an event's ``data:`` lines as character references.
    """
    return _UNSAFE.sub(_reference, html.escape(str(value), quote=True))


def output_id(task_id: str, seq: int) -> str:
    """The element id of a task's output chunk ``seq``: ``task-<id>-out-<seq>``."""
    return f"task-{task_id}-out-{seq}"


def output_container_id(task_id: str) -> str:
    """The id of the element a task's output goes into: ``task-<id>-output``."""
    return f"task-{task_id}-output"


def card_container_id(task_id: str) -> str:
    """The id of the element a task's card goes into: ``task-<id>-card``."""
    return f"task-{task_id}-card"


class HtmlRenderer(Protocol):
    """What an HTML stream's fragments are made of; pass one as ``TaskHub(html_renderer=…)``.

    ``state`` renders the whole task (the content of its card: any one is enough);
    ``output`` one chunk of its output, appended after the previous ones. Escape every
    string of the task with :func:`escape`.
    """

    def state(self, task: Task) -> str:
        """The content of the task's card."""
        ...

    def output(self, chunk: OutputChunk) -> str:
        """One output chunk (``kind`` ``output`` or ``log``)."""
        ...


class TaskCard:
    """The default :class:`HtmlRenderer`: a progress card, output as ``<span>``/``<div>``.

    Classes start with ``sse-task``; each output chunk carries the id :func:`output_id`.
    """

    def state(self, task: Task) -> str:
        """Name, state, a ``<progress>`` bar, the message, and the result or error."""
        state = escape(task.state.value)
        if task.progress is None:
            bar = (
                f'<progress class="sse-task-progress" max="100" aria-label="{escape(task.name)}"></progress>'
            )
        else:
            percent = round(task.progress * 100)
            bar = (
                f'<progress class="sse-task-progress" max="100" value="{percent}"'
                f' aria-label="{escape(task.name)}">{percent}%</progress>'
            )
        parts = [
            f'<div class="sse-task sse-task-{state}" data-state="{state}">',
            f'<span class="sse-task-name">{escape(task.name)}</span> ',
            f'<span class="sse-task-state">{state}</span> ',
            bar,
            f'<span class="sse-task-message">{escape(task.message or "")}</span>',
        ]
        if task.result is not None:
            result = json.dumps(task.result, ensure_ascii=False)
            parts.append(f'<code class="sse-task-result">{escape(result)}</code>')
        if task.error is not None:
            kind, message = task.error.get("type", ""), task.error.get("message", "")
            parts.append(f'<span class="sse-task-error">{escape(kind)}: {escape(message)}</span>')
        parts.append("</div>")
        return "".join(parts)

    def output(self, chunk: OutputChunk) -> str:
        """``<span>`` for output text, ``<div>`` with the level for a log line."""
        ident = escape(output_id(chunk.task_id, chunk.seq))
        if chunk.kind == "log":
            level = escape(chunk.level or "info")
            return f'<div id="{ident}" class="sse-task-log sse-task-log-{level}">{escape(chunk.text)}</div>'
        return f'<span id="{ident}" class="sse-task-out">{escape(chunk.text)}</span>'
