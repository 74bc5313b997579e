"""The demo tasks on arq workers, streamed by the hub: the same names, params and results.

Two commands, with a redis-server on 127.0.0.1:6379 (``pip install '.[arq]'``)::

    arq examples.arq_app.WorkerSettings
    sse-tasks serve --app examples.arq_app:hub

Then open http://127.0.0.1:8000/ (the demo page), or
``curl -X POST localhost:8000/tasks -H 'content-type: application/json'
-d '{"name":"count","params":{"n":20}}'``, then ``curl -N`` its ``events`` link.
Jobs enqueued from any code (``await pool.enqueue_job("count", n=5)``) show up there too,
once a worker takes them.

Environment:

- ``SSE_TASKS_BROKER``: the hub's Redis (default ``redis://127.0.0.1:6379/0``);
- ``ARQ_REDIS_URL``: arq's Redis (default: the same Redis, the next database).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from arq.connections import RedisSettings

import sse_tasks.arq
from sse_tasks import TaskHub, current_task
from sse_tasks.demo import word


def _next_database(url: str) -> str:
    parts = urlsplit(url)
    db = parts.path.strip("/") or "0"
    return urlunsplit(parts._replace(path=f"/{int(db) + 1 if db.isdigit() else 1}", query=""))


SSE_TASKS_BROKER = os.environ.get("SSE_TASKS_BROKER") or "redis://127.0.0.1:6379/0"
ARQ_REDIS_URL = os.environ.get("ARQ_REDIS_URL") or _next_database(SSE_TASKS_BROKER)


async def sleep(ctx: dict[str, Any], seconds: float = 1.0) -> dict[str, Any]:
    """Wait ``seconds``; result ``{"slept": seconds}``."""
    if not 0 <= seconds <= 86_400:
        raise ValueError("seconds must be from 0 to 86400")
    await asyncio.sleep(seconds)
    return {"slept": seconds}


async def count(ctx: dict[str, Any], n: int = 10, interval: float = 0.1) -> dict[str, Any]:
    """``n`` steps ``interval`` s apart, each reported as progress; result ``{"count": n}``."""
    if not 0 <= n <= 100_000 or not 0 <= interval <= 3600:
        raise ValueError("n must be from 0 to 100000 and interval from 0 to 3600")
    for i in range(1, n + 1):
        await asyncio.sleep(interval)
        current_task().progress(i / n, f"step {i} of {n}")
    return {"count": n}


async def fail(ctx: dict[str, Any], message: str = "boom") -> None:
    """Raise ``RuntimeError(message)``."""
    raise RuntimeError(message)


async def generate(ctx: dict[str, Any], words: int = 50, delay: float = 0.05) -> dict[str, Any]:
    """Write the demo's deterministic text word by word, a log line every 10 words."""
    if not 0 <= words <= 1_000_000 or not 0 <= delay <= 60:
        raise ValueError("words must be from 0 to 1000000 and delay from 0 to 60")
    task = current_task()
    for i in range(words):
        if delay:
            await asyncio.sleep(delay)
        task.output(f"{word(i)} ")
        if (i + 1) % 10 == 0:
            task.log(f"{i + 1} of {words} words")
    return {"words": words}


class WorkerSettings:
    """``arq examples.arq_app.WorkerSettings``: every job reports to the hub's Redis."""

    functions: ClassVar[list[Any]] = [sleep, count, fail, generate]
    redis_settings = RedisSettings.from_dsn(ARQ_REDIS_URL)


# Worker side: the one call (wraps the functions, chains on_startup/on_shutdown).
sse_tasks.arq.hooked(WorkerSettings, SSE_TASKS_BROKER)

# Web side: the hub offers these functions by name and enqueues them on arq's Redis.
hub = TaskHub(broker=SSE_TASKS_BROKER, executor=sse_tasks.arq.ArqExecutor(WorkerSettings))
