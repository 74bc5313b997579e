"""The arq benchmark's worker settings: a no-op and a 1 ms job, hooked if ``$ARQ_BENCH_HOOK``."""

from __future__ import annotations

import asyncio
import os
from typing import Any, ClassVar

from arq.connections import RedisSettings


async def noop(ctx: dict[str, Any]) -> None:
    return None


async def one_ms(ctx: dict[str, Any]) -> None:
    await asyncio.sleep(0.001)


class WorkerSettings:
    functions: ClassVar[list[Any]] = [noop, one_ms]
    redis_settings = RedisSettings.from_dsn(os.environ["ARQ_REDIS_URL"])
    burst = True
    max_jobs = 10
    keep_result = 0
    poll_delay = 0.01


if os.environ.get("ARQ_BENCH_HOOK") == "1":
    from sse_tasks.arq import hooked

    hooked(WorkerSettings)
