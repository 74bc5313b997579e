"""The Dramatiq benchmark's app: one actor, ``bench.noop``; the worker's module
(``dramatiq benchmarks.dramatiq_app``), configured by its environment (see
``benchmarks/engines.py``). Without ``BENCH_DRAMATIQ_BROKER`` it declares nothing."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from .harness import HUB_ENV, STAMPS_ENV, STAMPS_KEY, WORK_ENV, busy

BROKER_ENV = "BENCH_DRAMATIQ_BROKER"  # Dramatiq's broker and result backend
#: Seconds a read of the result backend may wait (longer than any run's timeout).
RESULT_WAIT = 300.0


class Stamps(Middleware):
    """When each task ended, taken before the sse_tasks middleware publishes it (its
    ``after_process_message`` runs last in a worker) and written to Redis after the ack."""

    def __init__(self, url: str) -> None:
        import redis

        self.url = url
        self.stamps: dict[str, int] = {}
        self.local = threading.local()
        self.redis = redis

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        self.stamps[message.message_id] = time.monotonic_ns()

    def after_ack(self, broker: Any, message: Any) -> None:
        stamp = self.stamps.pop(message.message_id, None)
        if stamp is None:
            return
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = self.redis.Redis.from_url(self.url)
        client.hset(STAMPS_KEY, message.message_id, stamp)


def make_broker(url: str, hub: str | None = None, stamps: str | None = None) -> RedisBroker:
    """A broker with the ``bench.noop`` actor, results on, and the sse_tasks middleware
    if ``hub`` is given."""
    import redis

    broker = RedisBroker(url=url)
    # A blocking wait for a result (BRPOPLPUSH, up to a run's timeout) outlasts redis-py
    # 8's default 5 s read timeout when a fresh worker is slow to take its first messages.
    results = redis.Redis.from_url(url, socket_timeout=RESULT_WAIT)
    broker.add_middleware(Results(backend=RedisBackend(client=results)))
    if hub:
        import sse_tasks.dramatiq

        sse_tasks.dramatiq.connect(broker, hub)
    if stamps:
        broker.add_middleware(Stamps(stamps))
    work_ms = float(os.environ.get(WORK_ENV) or 0)

    def noop() -> None:
        """Nothing, or ``--work-ms`` of CPU (a small real task)."""
        busy(work_ms)

    dramatiq.actor(noop, actor_name="bench.noop", broker=broker, max_retries=0, store_results=True)
    return broker


if os.environ.get(BROKER_ENV):
    broker = make_broker(os.environ[BROKER_ENV], os.environ.get(HUB_ENV), os.environ.get(STAMPS_ENV))
    dramatiq.set_broker(broker)
