"""sse_tasks: run work after the response and stream every status change over SSE."""

from ._context import TaskContext
from ._errors import (
    BadRequest,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    SSETasksError,
    TaskCancelled,
    TaskFinished,
    TaskGone,
    Unavailable,
    UnsupportedMediaType,
)
from ._hub import TaskHub, TrackedTask
from ._models import Task, TaskEvent, TaskState
from .brokers import Broker, MemoryBroker, broker_from_url
from .client import APIError, AsyncClient, Client, ConnectionFailed

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AsyncClient",
    "BadRequest",
    "Broker",
    "Client",
    "ConnectionFailed",
    "InvalidRequest",
    "MemoryBroker",
    "NotFound",
    "PayloadTooLarge",
    "SSETasksError",
    "Task",
    "TaskCancelled",
    "TaskContext",
    "TaskEvent",
    "TaskFinished",
    "TaskGone",
    "TaskHub",
    "TaskState",
    "TrackedTask",
    "Unavailable",
    "UnsupportedMediaType",
    "broker_from_url",
]
