"""The demo tasks on RQ workers, streamed by the hub: the same names, params and results.

Two commands from the project checkout, with a redis-server on 127.0.0.1:6379
(``pip install '.[rq]'``)::

    export SSE_TASKS_BROKER=redis://127.0.0.1:6379/0 RQ_REDIS_URL=redis://127.0.0.1:6379/1
    rq worker --worker-class sse_tasks.rq.Worker --url "$RQ_REDIS_URL"
    sse-tasks serve --app examples.rq_app:hub

``rq worker`` imports ``examples.rq_app.count`` & co. from its working directory (the
checkout). Then open http://127.0.0.1:8000/ or ``POST /tasks``; jobs enqueued from any
code (``Queue(connection=…).enqueue(count, n=5)``) show up there too, from when a worker
picks them up.

Environment:

- ``SSE_TASKS_BROKER``: the hub's Redis (default ``redis://127.0.0.1:6379/0``);
- ``RQ_REDIS_URL``: RQ's Redis (default: the same Redis, the next database).
"""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import rq

from sse_tasks import TaskHub, current_task
from sse_tasks.demo import word
from sse_tasks.rq import RQEngine


def _next_database(url: str) -> str:
    parts = urlsplit(url)
    db = parts.path.strip("/") or "0"
    return urlunsplit(parts._replace(path=f"/{int(db) + 1 if db.isdigit() else 1}"))


SSE_TASKS_BROKER = os.environ.get("SSE_TASKS_BROKER") or "redis://127.0.0.1:6379/0"
RQ_REDIS_URL = os.environ.get("RQ_REDIS_URL") or _next_database(SSE_TASKS_BROKER)


def sleep(seconds: float = 1.0) -> dict[str, Any]:
    """Wait ``seconds``; result ``{"slept": seconds}``."""
    if not 0 <= seconds <= 86_400:
        raise ValueError("seconds must be from 0 to 86400")
    time.sleep(seconds)
    return {"slept": seconds}


def count(n: int = 10, interval: float = 0.1) -> dict[str, Any]:
    """``n`` steps ``interval`` s apart, reported with RQ's own ``job.meta`` in
    celery-progress's format; result ``{"count": n}``."""
    if not 0 <= n <= 100_000 or not 0 <= interval <= 3600:
        raise ValueError("n must be from 0 to 100000 and interval from 0 to 3600")
    job = rq.get_current_job()
    for i in range(1, n + 1):
        time.sleep(interval)
        if job is not None:
            job.meta.update(current=i, total=n, description=f"step {i} of {n}")
            job.save_meta()
    return {"count": n}


def fail(message: str = "boom") -> None:
    """Raise ``RuntimeError(message)``."""
    raise RuntimeError(message)


def generate(words: int = 50, delay: float = 0.05) -> dict[str, Any]:
    """Write the demo's deterministic text word by word, a log line every 10 words."""
    if not 0 <= words <= 1_000_000 or not 0 <= delay <= 60:
        raise ValueError("words must be from 0 to 1000000 and delay from 0 to 60")
    task = current_task()
    for i in range(words):
        if delay:
            time.sleep(delay)
        task.output(f"{word(i)} ")
        if (i + 1) % 10 == 0:
            task.log(f"{i + 1} of {words} words")
    return {"words": words}


queue = rq.Queue(connection=redis.Redis.from_url(RQ_REDIS_URL))

# Web side: the hub offers these functions by name and enqueues them on RQ's queue.
hub = TaskHub(broker=SSE_TASKS_BROKER, executor=RQEngine(queue, [sleep, count, fail, generate]))
