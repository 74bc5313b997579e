"""Huey with and without the sse_tasks hook: ``python -m benchmarks.engines huey [--quick]``.

Against a ``redis-server`` this starts on a free loopback port (Huey's queue and results
on database 1, the hub on database 0):

1. **Tasks per second, with ÷ without the hook**: N tasks (``bench_noop``, a no-op, then
   one that spends 1 ms of CPU: ``--work-ms``) enqueued from this process to one
   ``huey_consumer`` (2 worker threads, Huey's defaults otherwise), timed from the first
   enqueue until every result is in Huey's result store. Each runs *without* the hook
   (an app on the same queue, ``sse_tasks.huey.connect`` not called, in the consumer and
   here) and *with* it, alternately, ``--repeat`` times; a fresh consumer per run, warmed
   up before the clock starts; medians. Each run checks that the hub's Redis holds every
   task finished (with) or nothing (without).
2. **Huey's post-execute → task.succeeded**: a hub (``HueyEngine``) served by uvicorn, F
   followers on its ``/events``; tasks enqueued one at a time to a hooked consumer. The
   consumer takes ``time.monotonic_ns()`` in a post-execute hook registered before the
   sse_tasks hook (Huey runs them in order; its ``SIGNAL_COMPLETE`` comes after both);
   each follower takes it when ``task.succeeded`` of that task arrives. p50/p99 over every
   task and follower.

redis, the consumer and the uvicorn server are pinned to CPU 0, this process to CPU 1.
This module is also the consumer's app (``huey_consumer benchmarks.huey_tasks.huey``,
configured by its environment).
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

from huey import RedisHuey
from huey import signals as S

from . import client, harness

BROKER_ENV = "BENCH_HUEY_REDIS"  # Huey's queue and results
HUB_ENV = "BENCH_SSE_TASKS_BROKER"  # the hub's Redis; the hook is connected when set
STAMPS_ENV = "BENCH_SUCCESS_STAMPS"  # a Redis URL: the consumer records success times there
STAMPS_KEY = "bench:success_ns"
WORK_ENV = "BENCH_WORK_MS"  # CPU milliseconds each task spends (default 0: a no-op)
NAME = "sse_tasks_bench"


def make_app(url: str) -> RedisHuey:
    """The benchmark's Huey app: one task, results kept (the sender waits for them)."""
    app = RedisHuey(NAME, url=url)
    work = float(os.environ.get(WORK_ENV) or 0) / 1000

    @app.task(name="bench_noop")
    def noop() -> int:
        """Nothing, or ``--work-ms`` of CPU (a small real task)."""
        if work:
            end = time.thread_time() + work
            while time.thread_time() < end:
                pass
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


class Stack:
    """The redis-server and the processes started against it, pinned to ``cpu``."""

    def __init__(self, cpu: int | None) -> None:
        import redis

        self.cpu = cpu
        self.procs = harness.Processes("huey")
        try:
            self.redis, url = harness.start_redis(self.procs, cpu)
        except BaseException:
            self.procs.close()
            raise
        self.hub_url, self.huey_url, self.stamps_url = (f"{url}/{db}" for db in (0, 1, 2))
        self.dbs = [redis.Redis.from_url(u) for u in (self.hub_url, self.huey_url, self.stamps_url)]
        self.hub = self.dbs[0]

    def flush(self) -> None:
        for db in self.dbs:
            db.flushdb()

    def _env(self, **extra: str) -> dict[str, str]:
        ours = ("BENCH_", "HUEY_", "SSE_TASKS_")
        return {**{k: v for k, v in harness.python_env().items() if not k.startswith(ours)}, **extra}

    def consumer(self, hooks: bool, work_ms: float = 0.0, stamps: bool = False) -> subprocess.Popen[bytes]:
        env = self._env(**{BROKER_ENV: self.huey_url, WORK_ENV: str(work_ms)})
        if hooks:
            env[HUB_ENV] = self.hub_url
        if stamps:
            env[STAMPS_ENV] = self.stamps_url
        command = [sys.executable, "-m", "huey.bin.huey_consumer", "benchmarks.huey_tasks.huey"]
        command += ["-w", "2", "-k", "thread", "-q"]
        return self.procs.spawn("consumer", command, self.cpu, env)

    def server(self, port: int) -> subprocess.Popen[bytes]:
        """The hub (``HueyEngine``) under uvicorn on ``port``, started and answering."""
        command = [sys.executable, "-m", "benchmarks.huey_tasks", "serve", str(port)]
        proc = self.procs.spawn("server", [*command, self.hub_url, self.huey_url], self.cpu, self._env())
        self.procs.wait_port(port, "the hub's server")
        return proc

    def close(self) -> None:
        for db in self.dbs:
            db.close()
        self.procs.close()


def serve(port: int, hub_url: str, huey_url: str) -> None:
    import uvicorn

    from sse_tasks import TaskHub
    from sse_tasks.huey import HueyEngine

    hub = TaskHub(hub_url, executor=HueyEngine(make_app(huey_url)), max_streams=100_000)
    uvicorn.run(hub.app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- 1. tasks per second ----------------------------------------------------------------


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


def throughput_run(
    s: Stack, sender: Sender, hooks: bool, work_ms: float, scale: Scale, quiet: float
) -> dict[str, Any]:
    s.flush()
    consumer = s.consumer(hooks, work_ms)
    try:
        sender.run(hooks, scale.warmup, timeout=60)  # the consumer is up, its connections warm
        s.procs.check(consumer, "the consumer")
        others_before = harness.wait_quiet(quiet) if quiet > 0 else float("nan")
        pids, redis_pid = harness.descendants(consumer.pid), [s.redis.pid]
        window = harness.Window(
            lambda: harness.cpu_seconds(pids) + harness.cpu_seconds(redis_pid),
            lambda: harness.cpu_seconds(redis_pid),
        )
        sender.run(hooks, scale.tasks, scale.timeout)
        measured = window.close()
        try:
            check_hub(s, hooks, scale.warmup + scale.tasks)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\nthe consumer's log: {s.procs.log(consumer)[-3000:]}") from None
    finally:
        s.procs.stop(consumer)
    per_task = 1e6 / scale.tasks
    return {
        "work_ms": work_ms,
        "hooks": hooks,
        "tasks": scale.tasks,
        "seconds": measured["seconds"],
        "tasks_per_s": scale.tasks / measured["seconds"],
        "worker_cpu_us_per_task": (measured["server_cpu"] - measured["helper_cpu"]) * per_task,
        "redis_cpu_us_per_task": measured["helper_cpu"] * per_task,
        "sender_cpu_us_per_task": measured["client_cpu"] * per_task,
        "other_cpu_pct": measured["other_cpu_pct"],
        "other_cpu_pct_before": others_before,
    }


def check_hub(s: Stack, hooks: bool, tasks: int) -> None:
    """With the hook, every task ended on the hub; without, nothing is there."""
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
            done = {m.decode() for m in s.hub.zrange("sse_tasks:finished", 0, -1)}
            ids = [m.decode() for m in s.hub.zrange("sse_tasks:tasks", 0, -1)]
            states = {i: s.hub.hget(f"sse_tasks:task:{i}", "s") for i in ids if i not in done}
            raise RuntimeError(f"{finished} of {tasks} tasks finished on the hub; not: {states}")
        time.sleep(0.01)


def throughput(s: Stack, scale: Scale, quiet: float) -> dict[str, Any]:
    sender = Sender(s.huey_url, s.hub_url)
    out: dict[str, Any] = {}
    try:
        for work_ms in scale.works:
            runs: list[dict[str, Any]] = []
            for rep in range(scale.repeat):
                for hooks in (False, True):  # alternately
                    run = throughput_run(s, sender, hooks, work_ms, scale, quiet)
                    runs.append(run)
                    label = "with" if hooks else "without"
                    print(
                        f"  {work_ms:g} ms {label:7} #{rep + 1}: {run['tasks_per_s']:7.0f} tasks/s; "
                        f"other processes {run['other_cpu_pct']:.0f}% of a core",
                        flush=True,
                    )
            out[f"{work_ms:g}ms"] = {"runs": runs, **summary(runs)}
    finally:
        sender.close()
    return out


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key in ("tasks_per_s", "worker_cpu_us_per_task", "redis_cpu_us_per_task", "sender_cpu_us_per_task"):
        without = statistics.median(r[key] for r in runs if not r["hooks"])
        with_ = statistics.median(r[key] for r in runs if r["hooks"])
        found[key] = {"without": without, "with": with_, "ratio": harness.ratio(with_, without)}
    pairs = zip(runs[::2], runs[1::2], strict=True)
    found["ratio_per_repetition"] = [b["tasks_per_s"] / a["tasks_per_s"] for a, b in pairs]
    found["other_cpu_pct_median"] = statistics.median(r["other_cpu_pct"] for r in runs)
    return found


# -- 2. success → task.succeeded ----------------------------------------------------------

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
    port: int, app: RedisHuey, followers: int, tasks: int, timeout: float
) -> tuple[list[Follower], list[str]]:
    loop = asyncio.get_running_loop()
    waiting: dict[str, list[Any]] = {}  # task id -> [followers still to see it, future]

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
    noop = app._registry.string_to_task(f"{__name__}.bench_noop")

    def send() -> str:
        task = noop()
        app.enqueue(task)
        return str(task.id)

    try:
        for _ in range(tasks):
            task_id = await loop.run_in_executor(pool, send)
            done: asyncio.Future[None] = loop.create_future()
            already = sum(task_id in f.seen for f in streams)
            waiting[task_id] = [followers - already, done]
            if already == followers:
                done.set_result(None)
            await asyncio.wait_for(done, timeout)
            ids.append(task_id)
    finally:
        pool.shutdown(wait=True)
        for stream in streams:
            stream.close()
    return streams, ids


def latency(s: Stack, scale: Scale) -> dict[str, Any]:
    s.flush()
    sender = Sender(s.huey_url, s.hub_url)
    consumer = s.consumer(hooks=True, stamps=True)  # starts while the server does
    server = s.server(port := harness.free_port())
    try:
        sender.run(True, min(20, scale.warmup), timeout=60)  # warm
        streams, ids = asyncio.run(
            _follow(port, sender.hooked, scale.followers, scale.latency_tasks, scale.timeout)
        )
        deadline = time.monotonic() + scale.timeout
        while True:
            stamps = {k.decode(): int(v) for k, v in s.dbs[2].hgetall(STAMPS_KEY).items()}
            if all(i in stamps for i in ids) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        sender.close()
        s.procs.stop(consumer)
        s.procs.stop(server)
    missing = [i for i in ids if i not in stamps]
    if missing:
        raise RuntimeError(f"{len(missing)} tasks have no success time")
    samples = sorted(f.seen[i] - stamps[i] for i in ids for f in streams)
    last = sorted(max(f.seen[i] for f in streams) - stamps[i] for i in ids)
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
    tasks: int = 2000
    repeat: int = 3
    warmup: int = 50
    followers: int = 100
    latency_tasks: int = 200
    works: tuple[float, ...] = (0.0, 1.0)
    timeout: float = 120.0


SCALES = {
    "full": Scale(),
    "quick": Scale(tasks=500, latency_tasks=50),
    "smoke": Scale(tasks=20, repeat=1, warmup=5, followers=3, latency_tasks=3, works=(0.0,), timeout=30.0),
}


def run(scale: Scale, pin: bool = True, quiet: float = 0.0) -> dict[str, Any]:
    started = time.monotonic()
    s = Stack(harness.pin_client(pin))
    try:
        results: dict[str, Any] = {"scale": asdict(scale), "pinned": s.cpu is not None}
        print(f"== tasks per second: {scale.tasks} tasks, 2 worker threads, {scale.repeat} repetitions")
        results["throughput"] = throughput(s, scale, quiet)
        print(f"== post-execute → task.succeeded: {scale.followers} followers, {scale.latency_tasks} tasks")
        results["latency"] = latency(s, scale)
    finally:
        s.close()
    results["seconds"] = time.monotonic() - started
    return results


def print_table(results: dict[str, Any]) -> None:
    names = {
        "tasks_per_s": "tasks/s ↑",
        "worker_cpu_us_per_task": "consumer CPU µs/task",
        "redis_cpu_us_per_task": "redis CPU µs/task",
        "sender_cpu_us_per_task": "sender CPU µs/task",
    }
    rows = [["task", "metric", "without hook", "with hook", "with ÷ without"]]
    for work, found in results["throughput"].items():
        for key, name in names.items():
            v = found[key]
            rows.append(
                [work, name, f"{v['without']:,.0f}", f"{v['with']:,.0f}", harness.number(v["ratio"], "x")]
            )
        per_rep = ", ".join(f"{r:.2f}x" for r in found["ratio_per_repetition"])
        rows.append([work, "tasks/s ratio per repetition", "", "", per_rep])
    print()
    print(harness.table(rows, indent=0, left=2))
    lat = results["latency"]
    print(
        f"\npost-execute → task.succeeded at {lat['followers']} followers ({lat['tasks']} tasks, "
        f"{lat['deliveries']} deliveries): p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, "
        f"max {lat['max_ms']:.1f} ms"
    )
    for work, found in results["throughput"].items():
        ratio = found["tasks_per_s"]["ratio"]
        print(f"tasks/s with ÷ without ({work} tasks): {ratio:.2f}x")


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["serve"]:
        port, hub_url, huey_url = args_list[1:4]
        serve(int(port), hub_url, huey_url)
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.engines huey", description=__doc__.split("\n\n")[0]
    )
    harness.common_arguments(parser, quiet_wait=3.0)
    parser.add_argument("--tasks", type=int, help="tasks per throughput run")
    parser.add_argument("--repeat", type=int, help="repetitions of without/with (medians)")
    parser.add_argument("--followers", type=int, help="followers on /events for the delay")
    parser.add_argument("--latency-tasks", type=int, help="tasks for the delay")
    parser.add_argument("--work-ms", help="comma-separated CPU ms per task (default 0,1)")
    args = parser.parse_args(args_list)
    changes = {
        "tasks": args.tasks,
        "repeat": args.repeat,
        "followers": args.followers,
        "latency_tasks": args.latency_tasks,
        "works": tuple(float(w) for w in args.work_ms.split(",")) if args.work_ms else None,
    }
    scale = replace(SCALES[harness.level(args)], **{k: v for k, v in changes.items() if v is not None})
    env = harness.environment(
        harness.versions(("sse-tasks", "huey", "redis", "hiredis", "uvicorn", "uvloop"))
    )
    results = run(scale, pin=not args.no_pin, quiet=args.quiet_wait)
    print_table(results)
    print(f"\n{results['seconds']:.0f} s")
    harness.write_json(args.json, {"environment": env, **results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
