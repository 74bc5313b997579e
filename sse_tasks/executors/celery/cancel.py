"""A cooperative cancel in a Celery worker: :class:`TaskCancelled` ends the task as Celery's
``Ignore``.

``TaskCancelled`` derives from ``BaseException`` so that a task's ``except Exception:``
cannot swallow it; Celery's tracer lets any ``BaseException`` but its own out of a task
into the pool (the solo pool exits on it). So the hook wraps each task's ``run`` as the
worker starts, before Celery's tracer takes it: the cancel is reported, then ``Ignore``,
a normal outcome (no retry, no failure, the message acknowledged), ends the task.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from celery.exceptions import Ignore

from ..._core.errors import TaskCancelled

_WRAPPED = "_sse_tasks_cancellable"


def cancellable(
    run: Callable[..., Any], cancelled: Callable[[], None], revoked: Callable[[], bool]
) -> Callable[..., Any]:
    """``run``, calling ``cancelled()`` and raising ``Ignore`` when it raises ``TaskCancelled``
    or, before it starts, when ``revoked()`` (a task revoked while it waited in the pool's
    own queue, where Celery no longer looks)."""
    if getattr(run, _WRAPPED, False):
        return run

    @functools.wraps(run)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if revoked():
            cancelled()
            raise Ignore()
        try:
            return run(*args, **kwargs)
        except TaskCancelled:
            cancelled()
            raise Ignore() from None

    setattr(wrapped, _WRAPPED, True)
    return wrapped
