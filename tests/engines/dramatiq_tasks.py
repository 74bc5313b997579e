"""The contract's tasks as Dramatiq actors, hooked with the sse_tasks middleware.

Imported by the Dramatiq worker processes the suite starts (``dramatiq dramatiq_tasks``)
and by the test process (a sender like any other code). ``DRAMATIQ_REDIS_URL``: Dramatiq's
own Redis; ``SSE_TASKS_BROKER``: the hub's; ``TASKS_APP_QUEUE``: a queue of its own for
workers that die (declared here, so a worker given ``--queues`` it consumes it).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq_abort import Abortable
from dramatiq_abort.backends import RedisBackend
from fake import TASKS

import sse_tasks.dramatiq

broker = RedisBroker(url=os.environ["DRAMATIQ_REDIS_URL"])
broker.add_middleware(Abortable(backend=RedisBackend.from_url(os.environ["DRAMATIQ_REDIS_URL"])))
dramatiq.set_broker(broker)
middleware = sse_tasks.dramatiq.connect(broker, os.environ["SSE_TASKS_BROKER"])

actors = {name: dramatiq.actor(fn, actor_name=name, max_retries=0) for name, fn in TASKS.items()}


@dramatiq.actor(actor_name="flaky", max_retries=2, min_backoff=10, max_backoff=20)
def flaky(marker: str, failures: int = 1) -> int:
    """Fails its first ``failures`` attempts (counted in the file ``marker``), then succeeds."""
    path = Path(marker)
    attempt = int(path.read_text() or "0") + 1 if path.exists() else 1
    path.write_text(str(attempt))
    if attempt <= failures:
        raise RuntimeError(f"attempt {attempt}")
    return attempt


@dramatiq.actor(actor_name="oblivious", max_retries=0)
def oblivious(marker: str, seconds: float = 60.0) -> str:
    """Never reports nor checks: only dramatiq-abort's Abortable stops it."""
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        Path(marker).write_text("stopped")
    return "never aborted"


own_queue = os.environ.get("TASKS_APP_QUEUE")
if own_queue:
    broker.declare_queue(own_queue)
