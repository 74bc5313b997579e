"""Exceptions: the errors the HTTP API answers with, and the cancellation of a task.

Two trees, kept apart. An error is what a caller did or met, answered with an HTTP
status and an error code. A cancellation is control flow: it must reach the end of a
task function even through an ``except Exception:`` in its body, so it derives from
``BaseException``, as anyio's and asyncio's cancellations do, and is never answered
over HTTP.

Exception
 └── SSETasksError               every error sse_tasks raises on purpose
      ├── BadRequest             400 malformed request (JSON, query, Last-Event-ID header)
      ├── Unauthorized           401 the authorization hook wants credentials
      ├── Forbidden              403 the authorization hook refused (a task the caller may
      │                              not read answers 404 NotFound instead)
      ├── NotFound               404 unknown task id or task name
      ├── RequestTimeout         408 the request body did not arrive in time
      ├── TaskFinished           409 cancelling a task that already reached a terminal state
      ├── TaskGone               410 a finished task that has expired
      ├── PayloadTooLarge        413 body over the hub's ``max_body_size``
      ├── UnsupportedMediaType   415 body is not ``application/json``
      ├── InvalidRequest         422 body or params of the wrong shape
      ├── Unavailable            503 queue full, too many streams, hub shutting down
      ├── APIError               (sse_tasks.client) an error answer none of the above describes
      └── ConnectionFailed       (sse_tasks.client) the server could not be reached

BaseException
 └── TaskCancelled               raised inside a task function once it is cancelled
                                 (``TaskContext.check()``, ``progress()``, ``output()``,
                                 ``log()``); the task ends ``cancelled``

:data:`HTTP_ERRORS` lists the classes the API answers with; :func:`error_class` finds
the one for an answer's status and code (the Python client raises it).
"""

from __future__ import annotations

from typing import Any


class SSETasksError(Exception):
    """Base class of every error sse_tasks raises on purpose."""

    status_code = 500
    code = "error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body: ``{"error": {"code": …, "message": …}}``."""
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(SSETasksError):
    """Malformed request: invalid JSON, header or query value (400)."""

    status_code = 400
    code = "bad_request"


class Unauthorized(SSETasksError):
    """Credentials are missing or wrong (401); raise it from an authorization hook.
    ``WWW-Authenticate`` defaults to ``Bearer``."""

    status_code = 401
    code = "unauthorized"

    def __init__(
        self, message: str = "authentication required", *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, headers=headers or {"WWW-Authenticate": "Bearer"})


class Forbidden(SSETasksError):
    """The authorization hook refused the action (403); a task the caller may not
    read answers :class:`NotFound` instead, so its existence is not revealed."""

    status_code = 403
    code = "forbidden"


class RequestTimeout(SSETasksError):
    """The body did not arrive within the hub's ``body_timeout`` (408)."""

    status_code = 408
    code = "request_timeout"


class PayloadTooLarge(SSETasksError):
    """The body exceeds the hub's ``max_body_size`` (413)."""

    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(SSETasksError):
    """The body is not ``application/json`` (415)."""

    status_code = 415
    code = "unsupported_media_type"


class InvalidRequest(SSETasksError):
    """A body or params of the wrong shape, or params the task does not accept (422)."""

    status_code = 422
    code = "invalid_request"


class NotFound(SSETasksError):
    """No task with that id, or no task function with that name (404)."""

    status_code = 404
    code = "not_found"


class TaskGone(SSETasksError):
    """The task finished and has expired (410)."""

    status_code = 410
    code = "gone"


class TaskFinished(SSETasksError):
    """The task already reached a terminal state and cannot be cancelled (409)."""

    status_code = 409
    code = "already_finished"


class Unavailable(SSETasksError):
    """503 with ``Retry-After``; ``code`` says why.

    Codes: ``queue_full``, ``too_many_streams``, ``too_many_streams_per_client``,
    ``shutting_down``, ``not_running``, ``broker_unavailable`` (Redis unreachable),
    ``executor_unavailable`` (another engine, e.g. Celery's broker, cannot take the task).
    """

    status_code = 503

    def __init__(self, message: str, *, code: str, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})
        self.code = code


#: Every error the HTTP API answers with, one class per status and code.
HTTP_ERRORS: tuple[type[SSETasksError], ...] = (
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    RequestTimeout,
    TaskFinished,
    TaskGone,
    PayloadTooLarge,
    UnsupportedMediaType,
    InvalidRequest,
    Unavailable,
)


def error_class(status: int, code: str) -> type[SSETasksError] | None:
    """The class of an error answer: the one with this status and code, else the only one
    with this status; None when neither picks one."""
    candidates = [cls for cls in HTTP_ERRORS if cls.status_code == status]
    chosen = next((cls for cls in candidates if cls.code == code), None)
    if chosen is None and len(candidates) == 1:
        chosen = candidates[0]
    return chosen


class TaskCancelled(BaseException):
    """Raised inside a task function by ``TaskContext.check()``, ``progress()``,
    ``output()`` and ``log()`` once the task has been cancelled (``DELETE``, shutdown,
    a timeout that stops a worker thread).

    Not an error: like anyio's and asyncio's cancellation it derives from
    ``BaseException``, so an ``except Exception:`` in the task does not swallow it.
    Catch it by name to clean up, then re-raise; the task ends ``cancelled`` either way.
    """
