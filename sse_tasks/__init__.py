"""sse_tasks: run work after the response and stream every status change over SSE."""

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
from .client import APIError, AsyncClient, Client, ConnectionFailed
from .web.auth import Access, RedactTokens, TaskTokens, owner_only, tokens_only
from .web.cors import CORSMiddleware
from .web.render import HtmlRenderer, TaskCard

__version__ = "0.1.0"

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
