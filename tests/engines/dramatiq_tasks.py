"""The contract's tasks as Dramatiq actors, hooked with the sse_tasks middleware.

Imported by the Dramatiq worker processes the suite starts (``dramatiq dramatiq_tasks``)
and by the test process (a sender like any other code). ``DRAMATIQ_REDIS_URL``: Dramatiq's
own Redis; ``SSE_TASKS_BROKER``: the hub's; ``TASKS_APP_QUEUE``: a queue of its own for
workers that die (declared here, so a worker given ``--queues`` it consumes it).
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from fake import TASKS

import sse_tasks.dramatiq

broker = RedisBroker(url=os.environ["DRAMATIQ_REDIS_URL"])
dramatiq.set_broker(broker)
middleware = sse_tasks.dramatiq.connect(broker, os.environ["SSE_TASKS_BROKER"])

actors = {name: dramatiq.actor(fn, actor_name=name, max_retries=0) for name, fn in TASKS.items()}

own_queue = os.environ.get("TASKS_APP_QUEUE")
if own_queue:
    broker.declare_queue(own_queue)
