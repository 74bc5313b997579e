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
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq_abort import Abortable
from dramatiq_abort.backends import RedisBackend
from fake import TASKS, stubborn

import sse_tasks.dramatiq


class LateAbort(dramatiq.Middleware):
    """Plays the worst moment for dramatiq-abort's watcher to raise the ``Abort`` of a
    ``late_abort`` task: after its body ended, before ``Abortable`` forgets the message (added
    after it, this middleware's ``after_process_message`` runs before Abortable's)."""

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        if message.actor_name == "late_abort":
            abortable.manager.add_abort_request(message.message_id)  # what the watcher does
            abortable.manager.abort_pending()


broker = RedisBroker(url=os.environ["DRAMATIQ_REDIS_URL"])
abortable = Abortable(backend=RedisBackend.from_url(os.environ["DRAMATIQ_REDIS_URL"]))
broker.add_middleware(abortable)
broker.add_middleware(LateAbort())
dramatiq.set_broker(broker)
middleware = sse_tasks.dramatiq.connect(broker, os.environ["SSE_TASKS_BROKER"])

actors = {name: dramatiq.actor(fn, actor_name=name, max_retries=0) for name, fn in TASKS.items()}
late_abort = dramatiq.actor(stubborn, actor_name="late_abort", max_retries=0)


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
