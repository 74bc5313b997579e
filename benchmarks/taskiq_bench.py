"""Engine adapters' cost: tasks per second with ÷ without the worker hook (no-op and 1 ms
tasks), and how soon 100 followers of a task see its ``succeeded`` after it returned.

    python -m benchmarks.engines taskiq [--quick | --smoke]

Each engine runs its own worker process against a throwaway redis-server: N tasks are
queued first, then the worker drains them; the time from its first to its last
completion gives the rate. With the hook the worker reports every task to the hub's Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import httpx

from . import harness

ENGINES = ("taskiq",)


async def _kiq(url: str, queue: str, name: str, count: int) -> None:
    from taskiq.kicker import AsyncKicker
    from taskiq_redis import ListQueueBroker

    broker = ListQueueBroker(url, queue_name=queue)
    try:
        for _ in range(count):
            await AsyncKicker(task_name=name, broker=broker, labels={}).kiq()
    finally:
        await broker.shutdown()


def _worker(procs: harness.Processes, env: dict[str, str], concurrency: int) -> Any:
    command = [
        sys.executable, "-m", "taskiq", "worker", "benchmarks.taskiq_tasks:broker",
        "--workers", "1", "--max-async-tasks", str(concurrency), "--no-configure-logging",
    ]  # fmt: skip
    return procs.spawn("taskiq-worker", command, None, env)


def throughput(redis: str, name: str, count: int, hooked: bool) -> tuple[float, float]:
    """Tasks per second of one worker draining ``count`` queued ``name`` tasks, and the
    worker's CPU milliseconds per task (steadier than the rate on a busy machine)."""
    import redis as redis_py

    queue = f"bench-{name}-{int(hooked)}-{time.monotonic_ns()}"
    env = {**harness.python_env(), "TASKIQ_REDIS_URL": f"{redis}/1", "TASKIQ_QUEUE": queue}
    env.pop("SSE_TASKS_BROKER", None)
    if hooked:
        env["SSE_TASKS_BROKER"] = f"{redis}/0"
    client = redis_py.Redis.from_url(f"{redis}/1")
    client.delete("bench:done")
    asyncio.run(_kiq(f"{redis}/1", queue, name, count))
    procs = harness.Processes("engines")
    try:
        _worker(procs, env, 100)
        first = None
        deadline = time.monotonic() + 300
        while True:
            done = int(client.get("bench:done") or 0)
            now = time.monotonic()
            if done and first is None:
                first, first_done = now, done
                cpu = harness.cpu_seconds(procs.pids())
            if done >= count:
                break
            if now > deadline:
                raise RuntimeError(f"only {done} of {count} tasks ran")
            time.sleep(0.002)
        assert first is not None
        per_task = (harness.cpu_seconds(procs.pids()) - cpu) * 1000 / max(count - first_done, 1)
        return (count - first_done) / max(now - first, 1e-9), per_task
    finally:
        procs.close()
        client.close()


async def _follow(http: httpx.AsyncClient, task_id: str, samples: list[int]) -> None:
    """Follow the task; the sample: from its return (its result) to its ``succeeded`` here."""
    async with http.stream("GET", f"/tasks/{task_id}/events") as response:
        async for line in response.aiter_lines():
            if line.startswith("data:") and '"succeeded"' in line:
                received = time.time()
                samples.append(int((received - json.loads(line[5:])["result"]) * 1e9))
                return


async def _latency(base: str, tasks: int, followers: int) -> list[int]:
    samples: list[int] = []
    limits = httpx.Limits(max_connections=None)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        for _ in range(tasks):
            # It returns 0.5 s later: the followers are connected by then.
            answer = await http.post("/tasks", json={"name": "stamp", "params": {"delay": 0.5}})
            assert answer.status_code == 202, answer.text
            task_id = answer.json()["id"]
            await asyncio.gather(*(_follow(http, task_id, samples) for _ in range(followers)))
    return samples


def latency(redis: str, tasks: int, followers: int) -> dict[str, float]:
    """success→follower p50/p99 (ms): from the task's return to each follower's event."""
    env = {**harness.python_env(), "TASKIQ_REDIS_URL": f"{redis}/1", "TASKIQ_QUEUE": "bench-latency"}
    env["SSE_TASKS_BROKER"] = f"{redis}/0"
    procs = harness.Processes("engines-latency")
    port = harness.free_port()
    try:
        _worker(procs, env, 10)
        serve = [
            sys.executable, "-m", "sse_tasks", "serve", "--app", "benchmarks.taskiq_tasks:hub",
            "--port", str(port), "--log-level", "warning",
        ]  # fmt: skip
        procs.spawn("hub", serve, None, env)
        procs.wait_port(port, "the hub")
        return harness.percentiles(asyncio.run(_latency(f"http://127.0.0.1:{port}", tasks, followers)))
    finally:
        procs.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=ENGINES, default="taskiq")
    parser.add_argument("--smoke", action="store_true", help="smallest scale, seconds")
    parser.add_argument("--quick", action="store_true", help="a quick run")
    parser.add_argument("--json", type=str, default=None)
    args = parser.parse_args(argv)
    count = 50 if args.smoke else 2000 if args.quick else 10000
    tasks = 2 if args.smoke else 20 if args.quick else 50
    followers = 5 if args.smoke else 100
    procs = harness.Processes("engines-redis")
    try:
        _, redis = harness.start_redis(procs, None)
        results: dict[str, Any] = {"engine": args.engine}
        for name in ("noop", "ms"):
            bare, bare_cpu = throughput(redis, name, count, hooked=False)
            hooked, hooked_cpu = throughput(redis, name, count, hooked=True)
            results[name] = {
                "without": bare, "with": hooked, "ratio": harness.ratio(hooked, bare),
                "cpu_ms_without": bare_cpu, "cpu_ms_with": hooked_cpu,
            }  # fmt: skip
            print(f"{args.engine} {name}: {bare:.0f}/s without the hook, {hooked:.0f}/s with: "
                  f"{harness.ratio(hooked, bare):.2f}x; worker CPU per task "
                  f"{bare_cpu:.2f} ms without, {hooked_cpu:.2f} ms with")  # fmt: skip
        results["latency"] = latency(redis, tasks, followers)
        late = results["latency"]
        print(f"{args.engine} success→follower ({followers} followers): "
              f"p50 {late['p50_ms']:.1f} ms, p99 {late['p99_ms']:.1f} ms")  # fmt: skip
    finally:
        procs.close()
    if args.json:
        harness.write_json(__import__("pathlib").Path(args.json), results)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
