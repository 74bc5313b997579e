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
from .taskiq_tasks import DONE_KEY, HUB_ENV, READY, STAMPS_ENV


class Taskiq:
    name = "taskiq"

    def __init__(self, s: harness.EngineStack) -> None:
        self.s = s

    def worker(self, hooks: bool, stamps: bool = False) -> Any:
        env = self.s.env(TASKIQ_REDIS_URL=self.s.engine_url, BENCH_TASKIQ_WORKER="1")
        if hooks:
            env[HUB_ENV] = self.s.hub_url
        if stamps:
            env[STAMPS_ENV] = self.s.stamps_url
        command = [
            sys.executable, "-m", "taskiq", "worker", "benchmarks.taskiq_tasks:broker",
            "--workers", "1", "--max-async-tasks", "10", "--no-configure-logging",
        ]  # fmt: skip
        proc = self.s.procs.spawn(f"taskiq-{'with' if hooks else 'without'}", command, self.s.cpu, env)
        self.s.wait_log(proc, READY, "the taskiq worker")
        return proc

    async def _kiq(self, count: int, wait: float | None) -> list[str]:
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

    def run(self, hooks: bool, tasks: int, timeout: float) -> None:
        asyncio.run(self._kiq(tasks, timeout))

    def send_one(self) -> str:
        return asyncio.run(self._kiq(1, None))[0]

    def serve_command(self, port: int) -> list[str]:
        return [
            sys.executable, "-m", "sse_tasks", "serve", "--app", "benchmarks.taskiq_tasks:hub",
            "--port", str(port), "--log-level", "warning",
        ]  # fmt: skip

    def server_env(self) -> dict[str, str]:
        return {"TASKIQ_REDIS_URL": self.s.engine_url, HUB_ENV: self.s.hub_url}

    def stamps(self, ids: list[str], timeout: float) -> dict[str, int]:
        return harness.stored_stamps(self.s, ids, timeout)

    def close(self) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    return harness.engine_main(
        sys.argv[1:] if argv is None else argv,
        {"taskiq": Taskiq},
        "python -m benchmarks.engines taskiq",
        __doc__.split("\n\n")[0],
    )


if __name__ == "__main__":
    raise SystemExit(main())
