"""arq in the engine scenario (``benchmarks.harness``): ``python -m benchmarks.engines arq
[--quick|--smoke]``.

One ``arq`` worker (``benchmarks.arq_bench_tasks.WorkerSettings``, 10 jobs at a time) with
and without ``sse_tasks.arq.hooked``; jobs enqueued from here with ``enqueue_job``, done
when arq's queue is empty (a job leaves it when it ends). The latency run serves a hub with
``ArqExecutor`` and sends each job with ``enqueue_job``.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from typing import Any

from . import harness
from .arq_bench_tasks import READY


class Arq(harness.AsyncEngine):
    name = "arq"
    hub_app = "benchmarks.arq_bench_tasks:hub"
    engine_env = "ARQ_REDIS_URL"

    def worker(self, hooks: bool, stamps: bool = False) -> Any:
        env = self.s.worker_env(hooks, stamps, ARQ_REDIS_URL=self.s.engine_url)
        command = [sys.executable, "-m", "arq", "benchmarks.arq_bench_tasks.WorkerSettings"]
        proc = self.s.procs.spawn(f"arq-{'with' if hooks else 'without'}", command, self.s.cpu, env)
        self.s.wait_log(proc, READY, "the arq worker")
        return proc

    async def send(self, count: int, wait: float | None) -> list[str]:
        from arq.connections import RedisSettings, create_pool
        from arq.constants import default_queue_name

        pool = await create_pool(RedisSettings.from_dsn(self.s.engine_url))
        try:
            ids = [uuid.uuid4().hex for _ in range(count)]
            for job_id in ids:
                await pool.enqueue_job("noop", _job_id=job_id)
            if wait is not None:
                deadline = time.monotonic() + wait
                while await pool.zcard(default_queue_name):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the jobs did not all finish in time")
                    await asyncio.sleep(0.002)
            return ids
        finally:
            await pool.aclose()


def main(argv: list[str] | None = None) -> int:
    return harness.engine_main(
        sys.argv[1:] if argv is None else argv,
        {"arq": Arq},
        "python -m benchmarks.engines arq",
        __doc__.split("\n\n")[0],
    )


if __name__ == "__main__":
    raise SystemExit(main())
