"""The demo tasks on Dramatiq workers, streamed by the hub: the same names, params and results.

Two commands, with a redis-server on 127.0.0.1:6379 (``pip install '.[dramatiq]'``)::

    dramatiq examples.dramatiq_app
    sse-tasks serve --app examples.dramatiq_app:hub

Then open http://127.0.0.1:8000/ (the demo page), or
``curl -X POST localhost:8000/tasks -H 'content-type: application/json'
-d '{"name":"count","params":{"n":20}}'``, then ``curl -N`` its ``events`` link.
Messages sent from any code (``count.send(n=5)``) show up there too.

Environment:

- ``SSE_TASKS_BROKER``: the hub's Redis (default ``redis://127.0.0.1:6379/0``);
- ``DRAMATIQ_REDIS_URL``: Dramatiq's broker and results (default: the same Redis, the
  next database).
"""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

import sse_tasks.dramatiq
from sse_tasks import TaskHub, current_task
from sse_tasks.demo import word


def _next_database(url: str) -> str:
    parts = urlsplit(url)
    db = parts.path.strip("/") or "0"
    return urlunsplit(parts._replace(path=f"/{int(db) + 1 if db.isdigit() else 1}"))


SSE_TASKS_BROKER = os.environ.get("SSE_TASKS_BROKER") or "redis://127.0.0.1:6379/0"
DRAMATIQ_REDIS_URL = os.environ.get("DRAMATIQ_REDIS_URL") or _next_database(SSE_TASKS_BROKER)

# The broker is set before any actor is declared (the worker imports this module).
broker = RedisBroker(url=DRAMATIQ_REDIS_URL)
broker.add_middleware(Results(backend=RedisBackend(url=DRAMATIQ_REDIS_URL)))
dramatiq.set_broker(broker)

# Worker side: every message of this broker reports to the hub's Redis.
broker.add_middleware(sse_tasks.dramatiq.StatusMiddleware(SSE_TASKS_BROKER))

# max_retries=0: the demo's `fail` fails once (Dramatiq retries 20 times by default).


@dramatiq.actor(actor_name="sleep", max_retries=0, store_results=True)
def sleep(seconds: float = 1.0) -> dict[str, Any]:
    """Wait ``seconds``; result ``{"slept": seconds}``."""
    if not 0 <= seconds <= 86_400:
        raise ValueError("seconds must be from 0 to 86400")
    time.sleep(seconds)
    return {"slept": seconds}


@dramatiq.actor(actor_name="count", max_retries=0, store_results=True)
def count(n: int = 10, interval: float = 0.1) -> dict[str, Any]:
    """``n`` steps ``interval`` s apart, each reported with ``current_task().progress``;
    result ``{"count": n}``."""
    if not 0 <= n <= 100_000 or not 0 <= interval <= 3600:
        raise ValueError("n must be from 0 to 100000 and interval from 0 to 3600")
    task = current_task()
    for i in range(1, n + 1):
        time.sleep(interval)
        task.progress(i / n, f"step {i} of {n}")  # also where a DELETE stops it
    return {"count": n}


@dramatiq.actor(actor_name="fail", max_retries=0, store_results=True)
def fail(message: str = "boom") -> None:
    """Raise ``RuntimeError(message)``."""
    raise RuntimeError(message)


@dramatiq.actor(actor_name="generate", max_retries=0, store_results=True)
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


# Web side: the hub offers these actors by name and sends them to the workers.
hub = TaskHub(broker=SSE_TASKS_BROKER, executor=sse_tasks.dramatiq.DramatiqEngine(broker))
