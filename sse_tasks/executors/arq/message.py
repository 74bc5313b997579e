"""What an arq job tells the hook: the hub's keyword argument, the task functions' signatures."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from arq.worker import Function, func

from ..._core.models import Task, utc_time, utcnow
from ..._core.text import clean_text
from ...engines.tags import TAGS_KEY, sent_tags

#: The keyword argument the hub adds to the jobs it sends: ``{"owner": …, "created_at": …}``.
#: The hook takes it out before the function is called; its presence says the hub stored
#: ``queued`` itself (a job enqueued by arq's own API has none).
HUB_KWARG = "__sse_tasks__"
#: The keyword argument that gives a job its tags (a list), from the hub or from
#: ``enqueue_job(…, sse_tasks_tags=[…])``; the hook takes it out too.
TAGS_KWARG = TAGS_KEY


def functions_of(settings: Any) -> dict[str, Function]:
    """The arq functions of a ``WorkerSettings`` class (or dict), by name."""
    listed = _setting(settings, "functions", ())
    return {function.name: function for function in map(func, listed)}


def _setting(settings: Any, name: str, default: Any) -> Any:
    if isinstance(settings, Mapping):
        return settings.get(name, default)
    return getattr(settings, name, default)


def signature_of(coroutine: Callable[..., Any]) -> Callable[..., Any]:
    """A stand-in with the params clients send: the function's signature without arq's ``ctx``."""
    signature = inspect.signature(coroutine)
    params = list(signature.parameters.values())[1:]

    @functools.wraps(coroutine)
    async def offered(**params: Any) -> Any:  # pragma: no cover - never called: its signature is
        raise RuntimeError("an arq task runs on the arq workers")

    offered.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    first = list(signature.parameters)[:1]
    offered.__annotations__ = {k: v for k, v in coroutine.__annotations__.items() if k not in first}
    return offered


def queued_snapshot(job_id: str, name: str, hub: Any, enqueue_time: Any, tags: Any = None) -> Task:
    """The ``queued`` snapshot of a job: from the hub's keyword argument, or (a job enqueued
    by arq's own API) created at arq's enqueue time; ``tags``: the :data:`TAGS_KWARG` argument."""
    checked = sent_tags(tags, job_id)
    if isinstance(hub, dict):
        owner = hub.get("owner")
        created = hub.get("created_at")
        return Task(
            id=job_id,
            name=name,
            owner=clean_text(str(owner)) if owner else None,
            created_at=utc_time(created) or utcnow(),
            tags=checked,
        )
    return Task(id=job_id, name=name, created_at=utc_time(enqueue_time) or utcnow(), tags=checked)


def names(functions: Iterable[str]) -> str:
    return ", ".join(map(repr, functions))
