"""RQ with and without the sse_tasks hook: ``python -m benchmarks.engines rq [--quick]``.

For RQ (``--engine rq``), against a ``redis-server`` this starts on a free loopback port
(RQ's queue on database 1, the hub on database 0):

1. **Tasks per second, with ÷ without the hook**: N jobs (``benchmarks.rq_jobs.noop``,
   no-op and then ``--work-ms`` of CPU each) enqueued from this process to two
   ``rq worker`` processes (RQ's forking ``Worker``, then ``sse_tasks.rq.Worker``),
   timed from the first enqueue until RQ's finished registry holds all N. Without and
   with alternately, ``--repeat`` times; fresh workers per run, warmed up before the
   clock starts; medians. Each run checks that the hub's Redis holds every task finished
   (with) or nothing (without).
2. **job returns → task.succeeded**: a hub (``RQEngine``) served by uvicorn, F followers
   on its ``/events``; jobs enqueued one at a time to a hooked worker. The job returns
   ``time.monotonic_ns()`` as it ends (one clock for all processes); each follower takes
   it when ``task.succeeded`` of that job arrives. p50/p99 over every job and follower.

redis, the workers and the uvicorn server are pinned to CPU 0, this process (sender and
followers) to CPU 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

from . import client, harness

WORK_ENV = "BENCH_WORK_MS"
ENGINES = ("rq",)


class Stack:
    """The redis-server and the processes started against it, pinned to ``cpu``."""

    def __init__(self, cpu: int | None) -> None:
        import redis
        import rq

        self.cpu = cpu
        self.procs = harness.Processes("engines")
        try:
            self.redis, url = harness.start_redis(self.procs, cpu)
        except BaseException:
            self.procs.close()
            raise
        self.hub_url, self.rq_url = f"{url}/0", f"{url}/1"
        self.dbs = [redis.Redis.from_url(u) for u in (self.hub_url, self.rq_url)]
        self.hub = self.dbs[0]
        self.queue = rq.Queue("bench", connection=self.dbs[1])

    def flush(self) -> None:
        for db in self.dbs:
            db.flushdb()

    def _env(self, **extra: str) -> dict[str, str]:
        ours = ("BENCH_", "RQ_", "SSE_TASKS_")
        return {**{k: v for k, v in harness.python_env().items() if not k.startswith(ours)}, **extra}

    def worker(self, hooks: bool, work_ms: float) -> subprocess.Popen[bytes]:
        env = self._env(**{WORK_ENV: str(work_ms)})
        command = [sys.executable, "-m", "rq.cli", "worker", "--quiet", "--url", self.rq_url]
        if hooks:
            env["SSE_TASKS_BROKER"] = self.hub_url
            command += ["--worker-class", "sse_tasks.rq.Worker"]
        command += ["--name", f"bench-{os.getpid()}-{time.monotonic_ns()}", "bench"]
        return self.procs.spawn("worker", command, self.cpu, env)

    def server(self, port: int) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "benchmarks.rq_tasks", "serve", str(port), self.hub_url, self.rq_url]
        proc = self.procs.spawn("server", command, self.cpu, self._env())
        self.procs.wait_port(port, "the hub's server")
        return proc

    def close(self) -> None:
        for db in self.dbs:
            db.close()
        self.procs.close()


def serve(port: int, hub_url: str, rq_url: str) -> None:
    import redis
    import rq
    import uvicorn

    from sse_tasks import TaskHub
    from sse_tasks.rq import RQEngine

    from .rq_jobs import noop

    queue = rq.Queue("bench", connection=redis.Redis.from_url(rq_url))
    hub = TaskHub(hub_url, executor=RQEngine(queue, [noop]), max_streams=100_000)
    uvicorn.run(hub.app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- 1. tasks per second ----------------------------------------------------------------


def _enqueue_and_wait(s: Stack, jobs: int, timeout: float) -> None:
    from .rq_jobs import noop

    before = s.queue.finished_job_registry.count
    with s.dbs[1].pipeline() as pipe:
        for _ in range(jobs):
            s.queue.enqueue(noop, pipeline=pipe)
        pipe.execute()
    deadline = time.monotonic() + timeout
    while s.queue.finished_job_registry.count < before + jobs:
        if time.monotonic() > deadline:
            raise RuntimeError("the jobs did not all finish in time")
        time.sleep(0.002)


def throughput_run(s: Stack, hooks: bool, work_ms: float, scale: Scale, quiet: float) -> dict[str, Any]:
    s.flush()
    workers = [s.worker(hooks, work_ms) for _ in range(scale.workers)]
    try:
        _enqueue_and_wait(s, scale.warmup, timeout=60)
        for worker in workers:
            s.procs.check(worker, "the worker")
        others_before = harness.wait_quiet(quiet) if quiet > 0 else float("nan")
        pids = [pid for w in workers for pid in harness.descendants(w.pid)]
        redis_pid = [s.redis.pid]
        window = harness.Window(
            lambda: harness.cpu_seconds(pids) + harness.cpu_seconds(redis_pid),
            lambda: harness.cpu_seconds(redis_pid),
        )
        _enqueue_and_wait(s, scale.tasks, scale.timeout)
        measured = window.close()
        check_hub(s, hooks, scale.warmup + scale.tasks)
    finally:
        for worker in workers:
            s.procs.stop(worker)
    return {
        "hooks": hooks,
        "work_ms": work_ms,
        "tasks": scale.tasks,
        "seconds": measured["seconds"],
        "tasks_per_s": scale.tasks / measured["seconds"],
        "other_cpu_pct": measured["other_cpu_pct"],
        "other_cpu_pct_before": others_before,
    }


def check_hub(s: Stack, hooks: bool, tasks: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        if not hooks:
            if s.hub.dbsize():
                raise RuntimeError("hook off, yet the hub's Redis holds keys")
            return
        finished = s.hub.zcard("sse_tasks:finished")
        if finished == tasks:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{finished} of {tasks} tasks finished on the hub")
        time.sleep(0.01)


def throughput(s: Stack, scale: Scale, quiet: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for work_ms in scale.work_ms:
        runs: list[dict[str, Any]] = []
        for rep in range(scale.repeat):
            for hooks in (False, True):
                run = throughput_run(s, hooks, work_ms, scale, quiet)
                runs.append(run)
                label = "with" if hooks else "without"
                print(f"  {work_ms:g} ms {label:7} #{rep + 1}: {run['tasks_per_s']:7.0f} tasks/s", flush=True)
        without = statistics.median(r["tasks_per_s"] for r in runs if not r["hooks"])
        with_ = statistics.median(r["tasks_per_s"] for r in runs if r["hooks"])
        out[f"{work_ms:g}ms"] = {
            "runs": runs,
            "tasks_per_s": {"without": without, "with": with_, "ratio": harness.ratio(with_, without)},
        }
    return out


# -- 2. the job returns → a follower sees task.succeeded ------------------------------------

_SUCCEEDED = re.compile(rb'event: task\.succeeded\r?\ndata: \{"id":"([^"]+)"')


class Follower(client.Frames):
    """A stream of ``/events``: when each task's ``task.succeeded`` arrived."""

    def __init__(self, on_seen: Callable[[str], None]) -> None:
        super().__init__("/events")
        self.seen: dict[str, int] = {}
        self.on_seen = on_seen

    def frames(self, frames: bytes, now: int) -> None:
        for match in _SUCCEEDED.finditer(frames):
            task_id = match.group(1).decode()
            if task_id not in self.seen:
                self.seen[task_id] = now
                self.on_seen(task_id)


async def _follow(
    port: int, s: Stack, followers: int, tasks: int, timeout: float
) -> tuple[list[Follower], list[str]]:
    from .rq_jobs import noop

    loop = asyncio.get_running_loop()
    waiting: dict[str, list[Any]] = {}

    def on_seen(task_id: str) -> None:
        entry = waiting.get(task_id)
        if entry is not None:
            entry[0] -= 1
            if entry[0] == 0 and not entry[1].done():
                entry[1].set_result(None)

    streams: list[Follower] = []
    for _ in range(followers):
        _, stream = await loop.create_connection(lambda: Follower(on_seen), "127.0.0.1", port)
        streams.append(stream)
    await asyncio.wait_for(asyncio.gather(*(f.opened for f in streams)), timeout)
    ids: list[str] = []
    pool = ThreadPoolExecutor(1)
    try:
        for _ in range(tasks):
            job = await loop.run_in_executor(pool, s.queue.enqueue, noop)
            done: asyncio.Future[None] = loop.create_future()
            already = sum(job.id in f.seen for f in streams)
            waiting[job.id] = [followers - already, done]
            if already == followers:
                done.set_result(None)
            await asyncio.wait_for(done, timeout)
            ids.append(job.id)
    finally:
        pool.shutdown(wait=True)
        for stream in streams:
            stream.close()
    return streams, ids


def _returned(job: Any, timeout: float) -> int:
    """The job's return value: the hub may show it succeeded before RQ has stored it."""
    deadline = time.monotonic() + timeout
    while (value := job.return_value(refresh=True)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job.id} has no return value")
        time.sleep(0.01)
    return int(value)


def latency(s: Stack, scale: Scale) -> dict[str, Any]:
    import rq

    s.flush()
    worker = s.worker(hooks=True, work_ms=0)
    server = s.server(port := harness.free_port())
    try:
        _enqueue_and_wait(s, min(5, scale.warmup), timeout=60)
        streams, ids = asyncio.run(_follow(port, s, scale.followers, scale.latency_tasks, scale.timeout))
        ended = {i: _returned(rq.job.Job.fetch(i, connection=s.dbs[1]), scale.timeout) for i in ids}
    finally:
        s.procs.stop(worker)
        s.procs.stop(server)
    samples = sorted(f.seen[i] - ended[i] for i in ids for f in streams)
    last = sorted(max(f.seen[i] for f in streams) - ended[i] for i in ids)
    return {
        "followers": scale.followers,
        "tasks": len(ids),
        "deliveries": len(samples),
        "p50_ms": harness.percentile(samples, 0.5) / 1e6,
        "p99_ms": harness.percentile(samples, 0.99) / 1e6,
        "max_ms": samples[-1] / 1e6,
        "last_follower_p50_ms": harness.percentile(last, 0.5) / 1e6,
        "last_follower_p99_ms": harness.percentile(last, 0.99) / 1e6,
    }


# -- running and reporting ------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    tasks: int = 1000
    repeat: int = 3
    warmup: int = 20
    workers: int = 2
    followers: int = 100
    latency_tasks: int = 200
    work_ms: tuple[float, ...] = (0.0, 1.0)
    timeout: float = 300.0


SCALES = {
    "full": Scale(),
    "quick": Scale(tasks=300, latency_tasks=50),
    "smoke": Scale(tasks=10, repeat=1, warmup=2, followers=3, latency_tasks=3, work_ms=(1.0,), timeout=60.0),
}


def run(scale: Scale, pin: bool = True, quiet: float = 0.0) -> dict[str, Any]:
    started = time.monotonic()
    s = Stack(harness.pin_client(pin))
    try:
        results: dict[str, Any] = {"engine": "rq", "scale": asdict(scale), "pinned": s.cpu is not None}
        print(
            f"== RQ tasks per second: {scale.tasks} jobs, {scale.workers} workers, {scale.repeat} repetitions"
        )
        results["throughput"] = throughput(s, scale, quiet)
        print(f"== RQ job returns → task.succeeded: {scale.followers} followers, {scale.latency_tasks} jobs")
        results["latency"] = latency(s, scale)
    finally:
        s.close()
    results["seconds"] = time.monotonic() - started
    return results


def print_table(results: dict[str, Any]) -> None:
    rows = [["work", "without hook", "with hook", "with ÷ without"]]
    for work, found in results["throughput"].items():
        v = found["tasks_per_s"]
        rows.append([work, f"{v['without']:,.0f}", f"{v['with']:,.0f}", harness.number(v["ratio"], "x")])
    print()
    print(harness.table(rows, indent=0, left=1))
    lat = results["latency"]
    print(
        f"\njob returns → task.succeeded at {lat['followers']} followers ({lat['tasks']} jobs): "
        f"p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.1f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["serve"]:
        port, hub_url, rq_url = args_list[1:4]
        serve(int(port), hub_url, rq_url)
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.engines rq", description=__doc__.split("\n\n")[0]
    )
    harness.common_arguments(parser, quiet_wait=3.0)
    parser.add_argument("--engine", choices=ENGINES, default="rq", help="the engine (default rq)")
    parser.add_argument("--tasks", type=int, help="jobs per throughput run")
    parser.add_argument("--repeat", type=int, help="repetitions of without/with (medians)")
    parser.add_argument("--followers", type=int, help="followers on /events for the delay")
    args = parser.parse_args(args_list)
    changes = {"tasks": args.tasks, "repeat": args.repeat, "followers": args.followers}
    scale = replace(SCALES[harness.level(args)], **{k: v for k, v in changes.items() if v is not None})
    env = harness.environment(harness.versions(("sse-tasks", "rq", "redis", "hiredis", "uvicorn")))
    results = run(scale, pin=not args.no_pin, quiet=args.quiet_wait)
    print_table(results)
    print(f"\n{results['seconds']:.0f} s")
    harness.write_json(args.json, {"environment": env, **results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
