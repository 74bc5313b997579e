"""The benchmark's taskiq tasks: no-op and 1 ms, each counting its completion in Redis
(``$TASKIQ_REDIS_URL``, key ``bench:done``); the middleware only with ``$SSE_TASKS_BROKER``."""

from __future__ import annotations

import os
import time

import anyio
from redis.asyncio import Redis
from taskiq_redis import ListQueueBroker

URL = os.environ.get("TASKIQ_REDIS_URL", "redis://127.0.0.1:6379/1")
broker = ListQueueBroker(URL, queue_name=os.environ.get("TASKIQ_QUEUE", "bench"))
if os.environ.get("SSE_TASKS_BROKER"):
    from sse_tasks.taskiq import StatusMiddleware, TaskiqExecutor

    broker.add_middlewares(StatusMiddleware(os.environ["SSE_TASKS_BROKER"]))

_counter: list[Redis] = []


async def _done() -> None:
    if not _counter:
        _counter.append(Redis.from_url(URL))
    await _counter[0].incr("bench:done")


@broker.task(task_name="noop")
async def noop() -> None:
    await _done()


@broker.task(task_name="ms")
async def ms() -> None:
    await anyio.sleep(0.001)
    await _done()


@broker.task(task_name="stamp")
async def stamp(delay: float = 0.0) -> float:
    """Its result is when it returned (wall clock): the followers' latency starts there."""
    await anyio.sleep(delay)
    return time.time()


if os.environ.get("SSE_TASKS_BROKER"):
    from sse_tasks import TaskHub

    hub = TaskHub(os.environ["SSE_TASKS_BROKER"], executor=TaskiqExecutor(broker))
