"""The demo tasks on a Huey consumer, streamed by the hub: the same names, params and results.

Two commands, with a redis-server on 127.0.0.1:6379 (``pip install '.[huey]'``)::

    huey_consumer examples.huey_app.huey
    sse-tasks serve --app examples.huey_app:hub

Then open http://127.0.0.1:8000/ (the demo page), or
``curl -X POST localhost:8000/tasks -H 'content-type: application/json'
-d '{"name":"count","params":{"n":20}}'``, then ``curl -N`` its ``events`` link.
Tasks enqueued from any code (``count(n=5)``) show up there too, ``queued`` at once.

Environment:

- ``SSE_TASKS_BROKER``: the hub's Redis (default ``redis://127.0.0.1:6379/0``);
- ``HUEY_REDIS_URL``: Huey's Redis (default: the same Redis, the next database).
"""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from huey import RedisHuey

import sse_tasks.huey
from sse_tasks import TaskHub, current_task
from sse_tasks.demo import word


def _next_database(url: str) -> str:
    parts = urlsplit(url)
    db = parts.path.strip("/") or "0"
    return urlunsplit(parts._replace(path=f"/{int(db) + 1 if db.isdigit() else 1}"))


SSE_TASKS_BROKER = os.environ.get("SSE_TASKS_BROKER") or "redis://127.0.0.1:6379/0"
HUEY_REDIS_URL = os.environ.get("HUEY_REDIS_URL") or _next_database(SSE_TASKS_BROKER)

huey = RedisHuey("sse_tasks_demo", url=HUEY_REDIS_URL, results=False)

# Worker side (and every process that enqueues): each task of this app reports to the hub.
sse_tasks.huey.connect(huey, SSE_TASKS_BROKER)


@huey.task(name="sleep")
def sleep(seconds: float = 1.0) -> dict[str, Any]:
    """Wait ``seconds``; result ``{"slept": seconds}``."""
    if not 0 <= seconds <= 86_400:
        raise ValueError("seconds must be from 0 to 86400")
    time.sleep(seconds)
    return {"slept": seconds}


@huey.task(name="count")
def count(n: int = 10, interval: float = 0.1) -> dict[str, Any]:
    """``n`` steps ``interval`` s apart, each reported as progress; result ``{"count": n}``."""
    if not 0 <= n <= 100_000 or not 0 <= interval <= 3600:
        raise ValueError("n must be from 0 to 100000 and interval from 0 to 3600")
    task = current_task()
    for i in range(1, n + 1):
        time.sleep(interval)
        task.progress(i / n, f"step {i} of {n}")  # raises once the task is cancelled
    return {"count": n}


@huey.task(name="fail")
def fail(message: str = "boom") -> None:
    """Raise ``RuntimeError(message)``."""
    raise RuntimeError(message)


@huey.task(name="generate")
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


# Web side: the hub offers these tasks by name and enqueues them for the consumer.
hub = TaskHub(broker=SSE_TASKS_BROKER, executor=sse_tasks.huey.HueyEngine(huey))
