"""RQ in the engine scenario (``benchmarks.harness``): ``python -m benchmarks.engines rq
[--quick|--smoke]``.

One ``rq worker`` (RQ's forking ``Worker``, then ``sse_tasks.rq.Worker``) on the queue
``bench``; jobs (``benchmarks.rq_jobs.noop``) enqueued from here in one pipeline, done when
RQ's finished registry holds them all. A job returns when it ended
(``time.monotonic_ns()``): the latency run's success stamps are the return values. The
latency run serves a hub with ``RQEngine`` (``python -m benchmarks.rq_tasks serve``).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from . import harness

#: The scenario's scales (``benchmarks.harness.ENGINE_SCALES``).
SCALES = harness.ENGINE_SCALES


class RQEngine:
    name = "rq"

    def __init__(self, s: harness.EngineStack) -> None:
        import rq

        self.s = s
        self.queue = rq.Queue("bench", connection=s.dbs[1])

    def worker(self, hooks: bool, stamps: bool = False) -> Any:
        env = self.s.env()
        command = [sys.executable, "-m", "rq.cli", "worker", "--quiet", "--url", self.s.engine_url]
        if hooks:
            env["SSE_TASKS_BROKER"] = self.s.hub_url
            command += ["--worker-class", "sse_tasks.rq.Worker"]
        command += ["--name", f"bench-{time.monotonic_ns()}", "bench"]
        return self.s.procs.spawn(f"rq-{'with' if hooks else 'without'}", command, self.s.cpu, env)

    def run(self, hooks: bool, tasks: int, timeout: float) -> None:
        from .rq_jobs import noop

        registry = self.queue.finished_job_registry
        before = registry.count
        with self.s.dbs[1].pipeline() as pipe:
            for _ in range(tasks):
                self.queue.enqueue(noop, pipeline=pipe)
            pipe.execute()
        deadline = time.monotonic() + timeout
        while registry.count < before + tasks:
            if time.monotonic() > deadline:
                raise RuntimeError("the jobs did not all finish in time")
            time.sleep(0.002)

    def send_one(self) -> str:
        from .rq_jobs import noop

        return str(self.queue.enqueue(noop).id)

    def serve_command(self, port: int) -> list[str]:
        return [
            sys.executable, "-m", "benchmarks.rq_tasks", "serve", str(port),
            self.s.hub_url, self.s.engine_url,
        ]  # fmt: skip

    def server_env(self) -> dict[str, str]:
        return {}

    def stamps(self, ids: list[str], timeout: float) -> dict[str, int]:
        """The jobs' return values (the hub may show a job succeeded before RQ stored it)."""
        import rq

        found: dict[str, int] = {}
        deadline = time.monotonic() + timeout
        for job_id in ids:
            job = rq.job.Job.fetch(job_id, connection=self.s.dbs[1])
            while (value := job.return_value(refresh=True)) is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if value is not None:
                found[job_id] = int(value)
        return found

    def close(self) -> None:
        pass


def serve(port: int, hub_url: str, rq_url: str) -> None:
    import redis
    import rq
    import uvicorn

    from sse_tasks import TaskHub
    from sse_tasks.rq import RQEngine as Executor

    from .rq_jobs import noop

    queue = rq.Queue("bench", connection=redis.Redis.from_url(rq_url))
    hub = TaskHub(hub_url, executor=Executor(queue, [noop]), max_streams=100_000)
    uvicorn.run(hub.app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["serve"]:
        port, hub_url, rq_url = args[1:4]
        serve(int(port), hub_url, rq_url)
        return 0
    return harness.engine_main(
        args, {"rq": RQEngine}, "python -m benchmarks.engines rq", __doc__.split("\n\n")[0]
    )


if __name__ == "__main__":
    raise SystemExit(main())
