"""taskiq in the engine scenario (``benchmarks.harness``): ``python -m benchmarks.engines
taskiq [--quick|--smoke]``.

One ``taskiq worker`` process (``benchmarks.taskiq_tasks:broker`` on taskiq-redis's
``ListQueueBroker``, 10 tasks at a time) with and without ``StatusMiddleware``; tasks sent
from here with ``.kiq()``, done when the worker's count says so. The latency run serves a
hub with ``TaskiqExecutor`` and sends each task with ``.kiq()``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from . import harness
from .taskiq_tasks import DONE_KEY, READY


class Taskiq(harness.AsyncEngine):
    name = "taskiq"
    hub_app = "benchmarks.taskiq_tasks:hub"
    engine_env = "TASKIQ_REDIS_URL"

    def worker(self, hooks: bool, stamps: bool = False) -> Any:
        env = self.s.worker_env(hooks, stamps, TASKIQ_REDIS_URL=self.s.engine_url, BENCH_TASKIQ_WORKER="1")
        command = [
            sys.executable, "-m", "taskiq", "worker", "benchmarks.taskiq_tasks:broker",
            "--workers", "1", "--max-async-tasks", "10", "--no-configure-logging",
        ]  # fmt: skip
        proc = self.s.procs.spawn(f"taskiq-{'with' if hooks else 'without'}", command, self.s.cpu, env)
        self.s.wait_log(proc, READY, "the taskiq worker")
        return proc

    async def send(self, count: int, wait: float | None) -> list[str]:
        from taskiq.kicker import AsyncKicker
        from taskiq_redis import ListQueueBroker

        db = self.s.dbs[1]
        before = int(db.get(DONE_KEY) or 0)  # every task sent earlier is done and counted
        broker = ListQueueBroker(self.s.engine_url, queue_name="bench")
        await broker.startup()
        try:
            kicker = AsyncKicker(task_name="noop", broker=broker, labels={})
            ids = [(await kicker.kiq()).task_id for _ in range(count)]
        finally:
            await broker.shutdown()
        if wait is not None:
            deadline = time.monotonic() + wait
            while int(db.get(DONE_KEY) or 0) < before + count:
                if time.monotonic() > deadline:
                    raise RuntimeError("the tasks did not all finish in time")
                await asyncio.sleep(0.002)
        return ids


def main(argv: list[str] | None = None) -> int:
    return harness.engine_main(
        sys.argv[1:] if argv is None else argv,
        {"taskiq": Taskiq},
        "python -m benchmarks.engines taskiq",
        __doc__.split("\n\n")[0],
    )


if __name__ == "__main__":
    raise SystemExit(main())
