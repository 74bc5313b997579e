"""The taskiq benchmark's broker and task (``taskiq worker benchmarks.taskiq_tasks:broker``),
configured by its environment: taskiq's Redis in ``$TASKIQ_REDIS_URL``, the middleware when
``$BENCH_SSE_TASKS_BROKER`` is set, success stamps when ``$BENCH_SUCCESS_STAMPS`` is, and
``$BENCH_WORK_MS`` of CPU per task. The worker counts the tasks it ran in ``bench:done``
(taskiq's Redis, written every few milliseconds, not per task). Also the hub of the latency
run (``hub``)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from taskiq import Context, TaskiqDepends, TaskiqEvents, TaskiqState
from taskiq_redis import ListQueueBroker

from .harness import HUB_ENV, STAMPS_ENV, STAMPS_KEY, WORK_ENV, busy

DONE_KEY = "bench:done"
READY = "taskiq bench worker ready"
WORK_MS = float(os.environ.get(WORK_ENV) or 0)
URL = os.environ.get("TASKIQ_REDIS_URL", "redis://127.0.0.1:6379/1")

broker = ListQueueBroker(URL, queue_name="bench", socket_timeout=None)  # see examples/taskiq_app.py
if os.environ.get(HUB_ENV):
    from sse_tasks.taskiq import StatusMiddleware

    broker.add_middlewares(StatusMiddleware(os.environ[HUB_ENV]))


class _Recorder:
    """The tasks done and when each ended (``time.monotonic_ns()``, before the hook
    publishes it), written to Redis every few milliseconds by a task of its own."""

    def __init__(self) -> None:
        from redis.asyncio import Redis

        self.done = 0
        self.written = 0
        self.stamps: dict[str, int] = {}
        self.count = Redis.from_url(URL)
        self.stamping = Redis.from_url(os.environ[STAMPS_ENV]) if os.environ.get(STAMPS_ENV) else None
        self.task = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        while True:
            await asyncio.sleep(0.005)
            if self.stamps and self.stamping is not None:
                batch, self.stamps = self.stamps, {}
                await self.stamping.hset(STAMPS_KEY, mapping=batch)  # type: ignore[arg-type]
            if self.done != self.written:
                self.written = self.done
                await self.count.set(DONE_KEY, self.written)


_recorder: list[_Recorder] = []


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def _started(state: TaskiqState) -> None:
    _recorder.append(_Recorder())
    print(READY, flush=True)


@broker.task(task_name="noop")
async def noop(context: Context = TaskiqDepends()) -> None:  # noqa: B008 - taskiq's idiom
    """Nothing, or ``$BENCH_WORK_MS`` of CPU (a small real task)."""
    busy(WORK_MS)
    if _recorder:
        recorder = _recorder[0]
        recorder.done += 1
        if recorder.stamping is not None:
            recorder.stamps[context.message.task_id] = time.monotonic_ns()


def _hub() -> Any:
    from sse_tasks import TaskHub
    from sse_tasks.taskiq import TaskiqExecutor

    return TaskHub(os.environ[HUB_ENV], executor=TaskiqExecutor(broker), max_streams=100_000)


if os.environ.get(HUB_ENV) and not os.environ.get("BENCH_TASKIQ_WORKER"):
    hub = _hub()
