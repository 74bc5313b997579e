"""The arq benchmark's worker settings (``arq benchmarks.arq_bench_tasks.WorkerSettings``),
configured by its environment: arq's Redis in ``$ARQ_REDIS_URL``, the hook when
``$BENCH_SSE_TASKS_BROKER`` is set, success stamps when ``$BENCH_SUCCESS_STAMPS`` is, and
``$BENCH_WORK_MS`` of CPU per job. Also the hub of the latency run (``hub``)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, ClassVar

from arq.connections import RedisSettings

from .harness import HUB_ENV, STAMPS_ENV, STAMPS_KEY, WORK_ENV, busy

READY = "arq bench worker ready"
WORK_MS = float(os.environ.get(WORK_ENV) or 0)


class _Stamps:
    """When each job ended (``time.monotonic_ns()``, before the hook publishes it),
    written to Redis every few milliseconds by a task of its own."""

    def __init__(self, url: str) -> None:
        from redis.asyncio import Redis

        self.redis = Redis.from_url(url)
        self.pending: dict[str, int] = {}
        self.task = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        while True:
            await asyncio.sleep(0.005)
            if self.pending:
                batch, self.pending = self.pending, {}
                await self.redis.hset(STAMPS_KEY, mapping=batch)  # type: ignore[arg-type]


_stamps: list[_Stamps] = []


async def noop(ctx: dict[str, Any]) -> None:
    """Nothing, or ``$BENCH_WORK_MS`` of CPU (a small real task)."""
    busy(WORK_MS)
    if _stamps:
        _stamps[0].pending[ctx["job_id"]] = time.monotonic_ns()


async def on_startup(ctx: dict[str, Any]) -> None:
    if os.environ.get(STAMPS_ENV):
        _stamps.append(_Stamps(os.environ[STAMPS_ENV]))
    print(READY, flush=True)


class WorkerSettings:
    functions: ClassVar[list[Any]] = [noop]
    redis_settings = RedisSettings.from_dsn(os.environ.get("ARQ_REDIS_URL", "redis://127.0.0.1:6379/1"))
    on_startup = on_startup
    keep_result = 0
    poll_delay = 0.01
    max_jobs = 10


if os.environ.get(HUB_ENV):
    from sse_tasks import TaskHub
    from sse_tasks.arq import ArqExecutor, hooked

    hooked(WorkerSettings, os.environ[HUB_ENV])
    hub = TaskHub(os.environ[HUB_ENV], executor=ArqExecutor(WorkerSettings), max_streams=100_000)
