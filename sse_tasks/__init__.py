"""sse_tasks: run work after the response and stream every status change over SSE."""

import typing as _typing

from ._core.context import TaskContext, current_task
from ._core.errors import (
    BadRequest,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    SSETasksError,
    TaskCancelled,
    TaskFinished,
    TaskGone,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from ._core.lazy import lazy_names as _lazy_names
from ._core.models import OutputChunk, Task, TaskEvent, TaskState

if _typing.TYPE_CHECKING:
    from ._hub import TaskHub, TrackedTask
    from ._runner import Executor, InProcessExecutor, LocalExecutor
    from .brokers import Broker, MemoryBroker, broker_from_url
    from .client import APIError, AsyncClient, Client, ConnectionFailed
    from .web.auth import Access, RedactTokens, TaskTokens, owner_only, tokens_only
    from .web.cors import CORSMiddleware
    from .web.render import HtmlRenderer, TaskCard

__version__ = "0.1.0"

# Names beyond the task model are imported on first use: a worker process or the
# ``sse-tasks watch`` client never needs the web stack (starlette, uvicorn), and a server
# or a worker never needs the client (httpx imports its own command line with it).
_LAZY = {
    **dict.fromkeys(("TaskHub", "TrackedTask"), "_hub"),
    **dict.fromkeys(("Executor", "InProcessExecutor", "LocalExecutor"), "_runner"),
    **dict.fromkeys(("Broker", "MemoryBroker", "broker_from_url"), "brokers"),
    **dict.fromkeys(("APIError", "AsyncClient", "Client", "ConnectionFailed"), "client"),
    **dict.fromkeys(("Access", "RedactTokens", "TaskTokens", "owner_only", "tokens_only"), "web.auth"),
    "CORSMiddleware": "web.cors",
    **dict.fromkeys(("HtmlRenderer", "TaskCard"), "web.render"),
}


__getattr__, __dir__ = _lazy_names(__name__, _LAZY, globals())


__all__ = [
    "APIError",
    "Access",
    "AsyncClient",
    "BadRequest",
    "Broker",
    "CORSMiddleware",
    "Client",
    "ConnectionFailed",
    "Executor",
    "Forbidden",
    "HtmlRenderer",
    "InProcessExecutor",
    "InvalidRequest",
    "LocalExecutor",
    "MemoryBroker",
    "NotFound",
    "OutputChunk",
    "PayloadTooLarge",
    "RedactTokens",
    "RequestTimeout",
    "SSETasksError",
    "Task",
    "TaskCancelled",
    "TaskCard",
    "TaskContext",
    "TaskEvent",
    "TaskFinished",
    "TaskGone",
    "TaskHub",
    "TaskState",
    "TaskTokens",
    "TrackedTask",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "broker_from_url",
    "current_task",
    "owner_only",
    "tokens_only",
]
