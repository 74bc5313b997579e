"""Huey in the engine scenario (``benchmarks.harness``): ``python -m benchmarks.engines huey
[--quick|--smoke]``.

One ``huey_consumer`` (2 worker threads) with and without ``sse_tasks.huey.connect`` (in
the consumer and here, the sender); tasks (``bench_noop``) enqueued from here, done when
every result is in Huey's result store. The consumer takes each task's success time in a
post-execute hook registered before the sse_tasks hook (Huey runs them in order) and
writes it at ``SIGNAL_COMPLETE`` (after both). The latency run serves a hub with
``HueyEngine`` (``python -m benchmarks.huey_tasks serve``). This module is also the
consumer's app (``huey_consumer benchmarks.huey_tasks.huey``, configured by its environment).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from huey import RedisHuey
from huey import signals as S

from . import harness
from .harness import HUB_ENV, STAMPS_ENV, STAMPS_KEY, WORK_ENV, busy

BROKER_ENV = "BENCH_HUEY_REDIS"  # Huey's queue and results
NAME = "sse_tasks_bench"


def make_app(url: str) -> RedisHuey:
    """The benchmark's Huey app: one task, results kept (the sender waits for them)."""
    app = RedisHuey(NAME, url=url)
    work_ms = float(os.environ.get(WORK_ENV) or 0)

    @app.task(name="bench_noop")
    def noop() -> int:
        """Nothing, or ``--work-ms`` of CPU (a small real task)."""
        busy(work_ms)
        return 1

    return app


def _record_successes(app: RedisHuey, url: str) -> None:
    """Success times, taken in a post-execute hook that runs before the sse_tasks hook's,
    written to Redis at ``SIGNAL_COMPLETE`` (after both): the write is not in the delay."""
    import redis

    stamps: dict[str, int] = {}
    db = redis.Redis.from_url(url)

    @app.post_execute("bench_stamp")
    def stamp(task: Any, value: Any, exception: Any) -> None:
        if exception is None:
            stamps[task.id] = time.monotonic_ns()

    @app.signal(S.SIGNAL_COMPLETE)
    def record(signal: str, task: Any) -> None:
        taken = stamps.pop(task.id, None)
        if taken is not None:
            db.hset(STAMPS_KEY, task.id, taken)


# The consumer's app (``huey_consumer benchmarks.huey_tasks.huey``), from its environment.
huey = make_app(os.environ.get(BROKER_ENV) or "redis://127.0.0.1:6379/1")
if os.environ.get(STAMPS_ENV):
    _record_successes(huey, os.environ[STAMPS_ENV])
if os.environ.get(HUB_ENV):
    import sse_tasks.huey

    sse_tasks.huey.connect(huey, os.environ[HUB_ENV])


def serve(port: int, hub_url: str, huey_url: str) -> None:
    import uvicorn

    from sse_tasks import TaskHub
    from sse_tasks.huey import HueyEngine

    hub = TaskHub(hub_url, executor=HueyEngine(make_app(huey_url)), max_streams=100_000)
    uvicorn.run(hub.app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


class Sender:
    """This process's two copies of the app on the same queue: one hooked, one not."""

    def __init__(self, huey_url: str, hub_url: str) -> None:
        import sse_tasks.huey

        self.plain = make_app(huey_url)
        self.hooked = make_app(huey_url)
        self.hook = sse_tasks.huey.connect(self.hooked, hub_url)

    def app(self, hooks: bool) -> RedisHuey:
        return self.hooked if hooks else self.plain

    def run(self, hooks: bool, tasks: int, timeout: float) -> None:
        """Enqueue ``tasks`` tasks and wait until every result is in."""
        app = self.app(hooks)
        noop = app._registry.string_to_task(f"{__name__}.bench_noop")
        start = app.result_count()
        for _ in range(tasks):
            app.enqueue(noop())
        deadline = time.monotonic() + timeout
        while app.result_count() < start + tasks:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{app.result_count() - start} of {tasks} results in")
            time.sleep(0.002)

    def close(self) -> None:
        self.hook.close()


class HueyEngine:
    name = "huey"

    def __init__(self, s: harness.EngineStack) -> None:
        self.s = s
        self.sender = Sender(s.engine_url, s.hub_url)

    def worker(self, hooks: bool, stamps: bool = False) -> Any:
        env = self.s.worker_env(hooks, stamps, **{BROKER_ENV: self.s.engine_url})
        command = [sys.executable, "-m", "huey.bin.huey_consumer", "benchmarks.huey_tasks.huey"]
        command += ["-w", "2", "-k", "thread", "-q"]
        return self.s.procs.spawn(f"huey-{'with' if hooks else 'without'}", command, self.s.cpu, env)

    def run(self, hooks: bool, tasks: int, timeout: float) -> None:
        self.sender.run(hooks, tasks, timeout)

    def send_one(self) -> str:
        app = self.sender.app(True)
        return str(app.enqueue(app._registry.string_to_task(f"{__name__}.bench_noop")()).id)

    def serve_command(self, port: int) -> list[str]:
        return [
            sys.executable, "-m", "benchmarks.huey_tasks", "serve", str(port),
            self.s.hub_url, self.s.engine_url,
        ]  # fmt: skip

    def server_env(self) -> dict[str, str]:
        return {}

    def stamps(self, ids: list[str], timeout: float) -> dict[str, int]:
        return harness.stored_stamps(self.s, ids, timeout)

    def close(self) -> None:
        self.sender.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["serve"]:
        port, hub_url, huey_url = args[1:4]
        serve(int(port), hub_url, huey_url)
        return 0
    return harness.engine_main(
        args, {"huey": HueyEngine}, "python -m benchmarks.engines huey", __doc__.split("\n\n")[0]
    )


if __name__ == "__main__":
    raise SystemExit(main())
