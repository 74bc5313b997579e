"""The broker's own cost per state change: ``python -m benchmarks.writes [--quick] [--repeat 5]``.

One process publishes ``queued``, ``running`` and ``succeeded`` for each of ``--tasks``
tasks, one after the other, through a started broker whose log takes every event (on
Redis, its stream reader reads each back, as in a server). Alternately on ``memory://``
and on a redis-server of its own, pinned with this process to one CPU (as the peer
harness pins a server and its Redis), ``--repeat`` times; the process's CPU per task
(what a server pays for a task's state changes, without HTTP), medians, and redis ÷
memory. Steadier than the light-load scenario, whose figure also holds the streams.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import time
from typing import Any, NamedTuple

import anyio

from sse_tasks import Task, TaskState
from sse_tasks.brokers import Broker, broker_from_url

from . import harness


class Size(NamedTuple):
    tasks: int
    warmup: int


SIZES = {"full": Size(4000, 300), "quick": Size(1500, 200), "smoke": Size(20, 5)}


async def cpu_per_task(url: str, size: Size) -> float:
    """Microseconds of this process's CPU per task (three state changes) on ``url``."""
    broker: Broker = broker_from_url(url)
    await broker.start(lambda event: None)
    run = secrets.token_hex(4)  # new ids each run: Redis keeps the earlier runs' tasks
    try:

        async def one(task_id: str) -> None:
            queued = await broker.publish(Task(id=task_id, name="job"), "task.queued")
            assert queued is not None
            running = await broker.publish(queued.task.evolve(state=TaskState.RUNNING), "task.running")
            assert running is not None
            done = running.task.evolve(state=TaskState.SUCCEEDED, result=1)
            assert await broker.publish(done, "task.succeeded") is not None

        for i in range(size.warmup):
            await one(f"{run}-warm{i}")
        start = time.process_time()
        for i in range(size.tasks):
            await one(f"{run}-{i}")
        spent = time.process_time() - start
        with anyio.fail_after(10):
            await broker.read_back()  # the last events are in the log: nothing left to read
        return spent / size.tasks * 1e6
    finally:
        await broker.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.writes", description=__doc__.split("\n\n")[0])
    harness.common_arguments(parser, quiet_wait=None)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each broker, alternated (medians)")
    args = parser.parse_args(argv)
    size = SIZES[harness.level(args)]
    cpus = sorted(os.sched_getaffinity(0))
    cpu = None if args.no_pin else cpus[0]
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    procs = harness.Processes("writes")
    try:
        _, redis_url = harness.start_redis(procs, cpu)
        runs: dict[str, list[float]] = {"memory": [], "redis": []}
        for _ in range(args.repeat):
            runs["memory"].append(harness.run_async(cpu_per_task("memory://", size)))
            runs["redis"].append(harness.run_async(cpu_per_task(redis_url, size)))
    finally:
        procs.close()
    medians = {name: statistics.median(values) for name, values in runs.items()}
    ratio = harness.ratio(medians["redis"], medians["memory"])
    rows = [["broker", "CPU µs per task (median)", "runs"]]
    rows += [[name, f"{medians[name]:.1f}", " ".join(f"{v:.0f}" for v in runs[name])] for name in runs]
    print(f"== writes: {size.tasks} tasks, 3 state changes each, {args.repeat} runs each")
    print(harness.table(rows))
    print(f"  redis ÷ memory: {ratio:.2f}x")
    result: dict[str, Any] = {"tasks": size.tasks, "runs": runs, "medians": medians, "ratio": ratio}
    harness.write_json(args.json, {"environment": harness.environment(harness.versions(["redis"])), **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
