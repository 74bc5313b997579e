"""The demo tasks on Celery workers, streamed by the hub: the same names, params and results.

Two commands, with a redis-server on 127.0.0.1:6379 (``pip install '.[celery]'``)::

    celery -A examples.celery_app worker --loglevel=INFO
    sse-tasks serve --app examples.celery_app:hub

Then open http://127.0.0.1:8000/ (the demo page), or
``curl -X POST localhost:8000/tasks -H 'content-type: application/json'
-d '{"name":"count","params":{"n":20}}'``, then ``curl -N`` its ``events`` link.
Tasks sent from any code (``count.delay(n=5)``) show up there too.

Environment:

- ``SSE_TASKS_BROKER``: the hub's Redis (default ``redis://127.0.0.1:6379/0``);
- ``CELERY_BROKER_URL``: Celery's broker (default: the same Redis, the next database);
- ``CELERY_WORKER_POOL``: ``prefork`` (default; ``DELETE`` terminates a running task),
  ``threads`` or ``solo`` (``DELETE`` stops it at its next progress report).
"""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from celery import Celery

import sse_tasks.celery
from sse_tasks import TaskHub, current_task
from sse_tasks.demo import word


def _next_database(url: str) -> str:
    parts = urlsplit(url)
    db = parts.path.strip("/") or "0"
    return urlunsplit(parts._replace(path=f"/{int(db) + 1 if db.isdigit() else 1}"))


SSE_TASKS_BROKER = os.environ.get("SSE_TASKS_BROKER") or "redis://127.0.0.1:6379/0"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or _next_database(SSE_TASKS_BROKER)

celery_app = Celery("sse_tasks_demo", broker=CELERY_BROKER_URL, backend=CELERY_BROKER_URL)
celery_app.conf.update(
    worker_pool=os.environ.get("CELERY_WORKER_POOL") or "prefork",
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    task_track_started=True,
)

# Worker side: every task of this app reports to the hub's Redis.
sse_tasks.celery.connect(celery_app, SSE_TASKS_BROKER)

# shared=False: Celery would otherwise add these generic names to every other Celery app
# the same process defines, in place of that app's own tasks of the same name.


@celery_app.task(name="sleep", shared=False)
def sleep(seconds: float = 1.0) -> dict[str, Any]:
    """Wait ``seconds``; result ``{"slept": seconds}``."""
    if not 0 <= seconds <= 86_400:
        raise ValueError("seconds must be from 0 to 86400")
    time.sleep(seconds)
    return {"slept": seconds}


@celery_app.task(name="count", bind=True, shared=False)
def count(self: Any, n: int = 10, interval: float = 0.1) -> dict[str, Any]:
    """``n`` steps ``interval`` s apart, reported with Celery's own ``update_state`` in
    celery-progress's format, with the metadata ``{"done": i, "total": n}``; result
    ``{"count": n}``."""
    if not 0 <= n <= 100_000 or not 0 <= interval <= 3600:
        raise ValueError("n must be from 0 to 100000 and interval from 0 to 3600")
    for i in range(1, n + 1):
        time.sleep(interval)
        meta = {"current": i, "total": n, "description": f"step {i} of {n}"}
        self.update_state(state="PROGRESS", meta=meta)
        current_task().metadata(done=i, total=n)
    return {"count": n}


@celery_app.task(name="fail", shared=False)
def fail(message: str = "boom") -> None:
    """Raise ``RuntimeError(message)``."""
    raise RuntimeError(message)


@celery_app.task(name="generate", shared=False)
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


# Web side: the hub offers these tasks by name and sends them to the workers.
hub = TaskHub(
    broker=SSE_TASKS_BROKER,
    executor=sse_tasks.celery.CeleryExecutor(celery_app, terminate=celery_app.conf.worker_pool == "prefork"),
)
