"""The Huey app of the engine contract: the fake engine's tasks, on a RedisHuey named by
``$HUEY_NAME`` on ``$HUEY_REDIS_URL``, hooked to the hub on ``$SSE_TASKS_BROKER``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fake import TASKS, touch
from huey import RedisHuey
from huey.api import TaskWrapper
from huey.exceptions import CancelExecution

import sse_tasks.huey

__all__ = ["TASKS", "huey", "make", "make_task"]

_WRAPPERS: dict[str, dict[str, TaskWrapper]] = {}


def flaky(marker: str) -> str:
    """Fails its first attempt (it writes ``marker``), succeeds the next."""
    if not Path(marker).exists():
        Path(marker).write_text("failed once")
        raise RuntimeError("first attempt")
    return "second attempt"


def exits(code: int = 3) -> None:
    """Raises ``SystemExit``: Huey restarts its worker thread, without post-execute hooks."""
    raise SystemExit(code)


class Unreadable(Exception):
    def __str__(self) -> str:
        raise SystemExit("raised by __str__")


def unreadable() -> None:
    raise Unreadable


class Unrepresentable(Exception):
    def __repr__(self) -> str:
        raise ValueError("no repr")


def unrepresentable() -> None:
    """Huey builds its error result with ``repr()`` before its post-execute hooks."""
    raise Unrepresentable("raised")


def make(name: str) -> RedisHuey:
    """An app with the contract's tasks and ``flaky`` (one retry), hooked."""
    app = RedisHuey(name, url=os.environ["HUEY_REDIS_URL"], results=False)
    _WRAPPERS[name] = {task_name: app.task(name=task_name)(func) for task_name, func in TASKS.items()}
    _WRAPPERS[name]["flaky"] = app.task(name="flaky", retries=1)(flaky)
    _WRAPPERS[name]["vetoed"] = app.task(name="vetoed")(touch)
    _WRAPPERS[name]["exits"] = app.task(name="exits")(exits)
    _WRAPPERS[name]["unreadable"] = app.task(name="unreadable")(unreadable)
    _WRAPPERS[name]["unrepresentable"] = app.task(name="unrepresentable")(unrepresentable)
    sse_tasks.huey.connect(app)

    @app.pre_execute("veto")  # after the hook's: the task has started when it is cancelled
    def veto(task: Any) -> None:
        if type(task).__name__ == "vetoed":
            raise CancelExecution(retry=False)

    return app


def make_task(app: RedisHuey, name: str, params: dict[str, Any]) -> Any:
    """A task of ``app`` by name, as its own ``task.s(**params)`` makes it."""
    return _WRAPPERS[app.name][name].s(**params)


huey = make(os.environ.get("HUEY_NAME", "contract"))
