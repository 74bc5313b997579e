"""Real ``taskiq worker`` processes for the engine contract (their own process group)."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _support import Proc, spawn, worker_pythonpath

HERE = Path(__file__).resolve().parent


def start_taskiq_worker(env: dict[str, str], max_async: int = 2) -> Proc:
    """``taskiq worker taskiq_tasks:broker`` (one process, ``max_async`` tasks at once), once
    its broker has started (it touches ``$TASKIQ_READY`` then)."""
    ready = Path(tempfile.mkstemp(prefix="taskiq-ready-")[1])
    ready.unlink()
    command = [
        sys.executable, "-m", "taskiq", "worker", "taskiq_tasks:broker",
        "--workers", "1", "--max-async-tasks", str(max_async), "--no-configure-logging",
    ]  # fmt: skip
    full = {**os.environ, **env, "TASKIQ_READY": str(ready), "PYTHONPATH": worker_pythonpath(HERE)}
    try:
        return spawn("taskiq worker", command, env=full, cwd=HERE, ready=lambda _: ready.exists())
    finally:
        ready.unlink(missing_ok=True)


def enqueue(env: dict[str, str], name: str, labels: dict[str, Any] | None = None, **params: Any) -> str:
    """``.kiq()`` from a sender of its own (no hub), on a loop in a thread of its own."""
    found: list[str] = []

    async def send() -> None:
        from taskiq.kicker import AsyncKicker
        from taskiq_redis import ListQueueBroker

        from sse_tasks.taskiq import StatusMiddleware

        broker = ListQueueBroker(env["TASKIQ_REDIS_URL"], queue_name=env["TASKIQ_QUEUE"])
        broker.add_middlewares(StatusMiddleware(env["SSE_TASKS_BROKER"]))
        await broker.startup()
        try:
            sent = await AsyncKicker(task_name=name, broker=broker, labels=labels or {}).kiq(**params)
            found.append(sent.task_id)
        finally:
            await broker.shutdown()

    run_in_thread(lambda: asyncio.run(send()))
    return found[0]


def run_in_thread(call: Callable[[], None]) -> None:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    if errors:
        raise errors[0]
