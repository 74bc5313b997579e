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
from ._core.models import OutputChunk, Task, TaskEvent, TaskState
from ._hub import TaskHub, TrackedTask
from ._runner import Executor, InProcessExecutor, LocalExecutor
from .brokers import Broker, MemoryBroker, broker_from_url
from .web.auth import Access, RedactTokens, TaskTokens, owner_only, tokens_only
from .web.cors import CORSMiddleware
from .web.render import HtmlRenderer, TaskCard

if _typing.TYPE_CHECKING:
    from .client import APIError, AsyncClient, Client, ConnectionFailed

__version__ = "0.1.0"

# The client's names are imported on first use: httpx imports its own command line
# (click, rich, pygments) with it, which a server or worker process never needs.
_CLIENT_NAMES = frozenset({"APIError", "AsyncClient", "Client", "ConnectionFailed"})


def __getattr__(name: str) -> object:
    if name in _CLIENT_NAMES:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'sse_tasks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_CLIENT_NAMES})


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
