"""The demo tasks on taskiq workers, streamed by the hub: the same names, params and results.

Two commands, with a redis-server on 127.0.0.1:6379 (``pip install '.[taskiq]'``)::

    taskiq worker examples.taskiq_app:broker
    sse-tasks serve --app examples.taskiq_app:hub

Then open http://127.0.0.1:8000/ (the demo page), or POST ``{"name":"count","params":{"n":20}}``
to ``/tasks`` and follow its ``events`` link. Tasks sent from any code
(``await count.kiq(n=5)``) show up there too.

Environment:

- ``SSE_TASKS_BROKER``: the hub's Redis (default ``redis://127.0.0.1:6379/0``);
- ``TASKIQ_REDIS_URL``: taskiq's queue (default: the same Redis, the next database).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
from taskiq import TaskiqDepends
from taskiq.depends.progress_tracker import ProgressTracker
from taskiq_redis import ListQueueBroker

from sse_tasks import TaskHub, current_task
from sse_tasks.demo import word
from sse_tasks.taskiq import StatusMiddleware, TaskiqExecutor


def _next_database(url: str) -> str:
    parts = urlsplit(url)
    db = parts.path.strip("/") or "0"
    return urlunsplit(parts._replace(path=f"/{int(db) + 1 if db.isdigit() else 1}"))


SSE_TASKS_BROKER = os.environ.get("SSE_TASKS_BROKER") or "redis://127.0.0.1:6379/0"
TASKIQ_REDIS_URL = os.environ.get("TASKIQ_REDIS_URL") or _next_database(SSE_TASKS_BROKER)

# No socket timeout: the worker waits for messages in a BRPOP that never times out, and
# redis-py 8 (which taskiq-redis 1.2 needs) times a read out after 5 s by default, which
# kills an idle worker process and the tasks it runs (taskiq-redis issue 127).
broker = ListQueueBroker(TASKIQ_REDIS_URL, queue_name="sse_tasks_demo", socket_timeout=None)
# Worker side (and every sender): every task of this broker reports to the hub's Redis.
broker.add_middlewares(StatusMiddleware(SSE_TASKS_BROKER))


@broker.task(task_name="sleep")
async def sleep(seconds: float = 1.0) -> dict[str, Any]:
    """Wait ``seconds``; result ``{"slept": seconds}``."""
    if not 0 <= seconds <= 86_400:
        raise ValueError("seconds must be from 0 to 86400")
    await anyio.sleep(seconds)
    return {"slept": seconds}


@broker.task(task_name="count")
async def count(
    n: int = 10,
    interval: float = 0.1,
    tracker: ProgressTracker[dict[str, Any]] = TaskiqDepends(),  # noqa: B008
) -> dict[str, Any]:
    """``n`` steps ``interval`` s apart, reported with taskiq's own progress tracker in
    celery-progress's format; result ``{"count": n}``."""
    if not 0 <= n <= 100_000 or not 0 <= interval <= 3600:
        raise ValueError("n must be from 0 to 100000 and interval from 0 to 3600")
    for i in range(1, n + 1):
        await anyio.sleep(interval)
        await tracker.set_progress("PROGRESS", {"current": i, "total": n, "description": f"step {i} of {n}"})
    return {"count": n}


@broker.task(task_name="fail")
async def fail(message: str = "boom") -> None:
    """Raise ``RuntimeError(message)``."""
    raise RuntimeError(message)


@broker.task(task_name="generate")
async def generate(words: int = 50, delay: float = 0.05) -> dict[str, Any]:
    """Write the demo's deterministic text word by word, a log line every 10 words."""
    if not 0 <= words <= 1_000_000 or not 0 <= delay <= 60:
        raise ValueError("words must be from 0 to 1000000 and delay from 0 to 60")
    task = current_task()
    for i in range(words):
        if delay:
            await anyio.sleep(delay)
        task.output(f"{word(i)} ")
        if (i + 1) % 10 == 0:
            task.log(f"{i + 1} of {words} words")
    return {"words": words}


# Web side: the hub offers these tasks by name and kicks them to the workers.
hub = TaskHub(broker=SSE_TASKS_BROKER, executor=TaskiqExecutor(broker))
