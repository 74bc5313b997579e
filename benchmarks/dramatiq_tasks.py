"""Dramatiq with and without the sse_tasks hook: ``python -m benchmarks.engines dramatiq [--quick]``.

For each engine (``--engines``, default every one installed), against a ``redis-server``
this starts on a free loopback port (the engine's queue and results on database 1, the
hub on 0), in the structure of ``benchmarks/celery_tasks.py``:

1. **Tasks per second, with ÷ without the hook**: N no-op tasks (then ``--work-ms``
   CPU milliseconds each) sent with the engine's own API from this process to one worker
   (two threads), timed from the first send until every result is in; without the hook
   (worker and sender) and with it, alternately, ``--repeat`` times, a fresh warmed-up
   worker per run; medians. Each run checks that the hub's Redis holds every task
   finished (with) or nothing (without).
2. **success → follower**: a hub (``TaskHub`` with the engine) served by uvicorn, F
   followers on its ``/events``; tasks sent one at a time to a hooked worker, which takes
   the time a task ends before the hook publishes it; each follower takes it when that
   task's ``task.succeeded`` arrives. p50/p99 over every task and follower.

redis, the worker and the hub's server are pinned to CPU 0, this process to CPU 1.
Engines: ``dramatiq``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

from . import harness
from .celery_tasks import Follower


@dataclass(frozen=True)
class Scale:
    tasks: int = 2000
    repeat: int = 3
    warmup: int = 50
    followers: int = 100
    latency_tasks: int = 200
    timeout: float = 120.0


SCALES = {
    "full": Scale(),
    "quick": Scale(tasks=500, latency_tasks=50),
    "smoke": Scale(tasks=20, repeat=1, warmup=5, followers=3, latency_tasks=3, timeout=30.0),
}


class Stack:
    """The redis-server and the processes started against it, pinned to ``cpu``."""

    def __init__(self, cpu: int | None) -> None:
        import redis

        self.cpu = cpu
        self.procs = harness.Processes("engines")
        try:
            self.redis, url = harness.start_redis(self.procs, cpu)
        except BaseException:
            self.procs.close()
            raise
        self.hub_url, self.engine_url, self.stamps_url = (f"{url}/{db}" for db in (0, 1, 2))
        self.dbs = [redis.Redis.from_url(u) for u in (self.hub_url, self.engine_url, self.stamps_url)]
        self.hub = self.dbs[0]

    def flush(self) -> None:
        for db in self.dbs:
            db.flushdb()

    def env(self, **extra: str) -> dict[str, str]:
        ours = ("BENCH_", "SSE_TASKS_", "DRAMATIQ_", "dramatiq_")
        env = {k: v for k, v in harness.python_env().items() if not k.startswith(ours)}
        if os.environ.get("BENCH_WORK_MS"):
            env["BENCH_WORK_MS"] = os.environ["BENCH_WORK_MS"]
        return {**env, **extra}

    def close(self) -> None:
        for db in self.dbs:
            db.close()
        self.procs.close()


class Dramatiq:
    """Dramatiq: ``dramatiq benchmarks.dramatiq_app`` (one process, two threads), the
    ``StatusMiddleware`` on its broker; ``actor.send()`` from here, results from its
    Results middleware (on the same Redis)."""

    name = "dramatiq"

    def __init__(self, s: Stack) -> None:
        from . import dramatiq_app

        self.s, self.app = s, dramatiq_app
        self.senders = {
            hooks: dramatiq_app.make_broker(s.engine_url, s.hub_url if hooks else None)
            for hooks in (False, True)
        }

    def worker(self, hooks: bool, stamps: bool = False) -> Any:
        env = self.s.env(**{self.app.BROKER_ENV: self.s.engine_url, "dramatiq_worker_timeout": "100"})
        if hooks:
            env[self.app.HUB_ENV] = self.s.hub_url
        if stamps:
            env[self.app.STAMPS_ENV] = self.s.stamps_url
        command = [
            sys.executable,
            "-m",
            "dramatiq",
            "benchmarks.dramatiq_app",
            "--processes=1",
            "--threads=2",
        ]
        proc = self.s.procs.spawn(f"dramatiq-{'with' if hooks else 'without'}", command, self.s.cpu, env)
        deadline = time.monotonic() + 60
        while "is ready for action" not in self.s.procs.log(proc):
            self.s.procs.check(proc, "the dramatiq worker")
            if time.monotonic() > deadline:
                raise RuntimeError("the dramatiq worker never became ready")
            time.sleep(0.05)
        return proc

    def run(self, hooks: bool, tasks: int, timeout: float) -> None:
        """Send ``tasks`` no-op messages and wait until every result is in."""
        broker = self.senders[hooks]
        actor, backend = broker.get_actor("bench.noop"), broker.get_results_backend()
        messages = [actor.send() for _ in range(tasks)]
        for message in messages:
            message.get_result(backend=backend, block=True, timeout=int(timeout * 1000))

    def send_one(self) -> str:
        return str(self.senders[True].get_actor("bench.noop").send().message_id)

    def serve_command(self, port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "benchmarks.dramatiq_tasks",
            "serve",
            self.name,
            str(port),
            self.s.hub_url,
            self.s.engine_url,
        ]

    def close(self) -> None:
        for broker in self.senders.values():
            broker.close()


ENGINES: dict[str, Callable[[Stack], Any]] = {"dramatiq": Dramatiq}


def serve(engine: str, port: int, hub_url: str, engine_url: str) -> None:
    import uvicorn

    from sse_tasks import TaskHub

    if engine == "dramatiq":
        from sse_tasks.dramatiq import DramatiqEngine

        from .dramatiq_app import make_broker

        executor: Any = DramatiqEngine(make_broker(engine_url))
    else:
        raise SystemExit(f"unknown engine {engine!r}")
    hub = TaskHub(hub_url, executor=executor, max_streams=100_000)
    uvicorn.run(hub.app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


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


def throughput(s: Stack, engine: Any, scale: Scale, quiet: float) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for rep in range(scale.repeat):
        for hooks in (False, True):  # alternately
            s.flush()
            worker = engine.worker(hooks)
            try:
                engine.run(hooks, scale.warmup, timeout=60)
                if quiet > 0:
                    harness.wait_quiet(quiet)
                started = time.monotonic()
                engine.run(hooks, scale.tasks, scale.timeout)
                seconds = time.monotonic() - started
                check_hub(s, hooks, scale.warmup + scale.tasks)
            finally:
                s.procs.stop(worker)
            run = {
                "hooks": hooks,
                "tasks": scale.tasks,
                "seconds": seconds,
                "tasks_per_s": scale.tasks / seconds,
            }
            runs.append(run)
            label = "with" if hooks else "without"
            print(f"  {engine.name} {label:7} #{rep + 1}: {run['tasks_per_s']:7.0f} tasks/s", flush=True)
    without = statistics.median(r["tasks_per_s"] for r in runs if not r["hooks"])
    with_ = statistics.median(r["tasks_per_s"] for r in runs if r["hooks"])
    pairs = zip(runs[::2], runs[1::2], strict=True)
    return {
        "runs": runs,
        "tasks_per_s": {"without": without, "with": with_, "ratio": harness.ratio(with_, without)},
        "ratio_per_repetition": [b["tasks_per_s"] / a["tasks_per_s"] for a, b in pairs],
    }


async def _follow(
    port: int, send: Callable[[], str], followers: int, tasks: int, timeout: float
) -> tuple[list[Follower], list[str]]:
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


def latency(s: Stack, engine: Any, scale: Scale) -> dict[str, Any]:
    s.flush()
    worker = engine.worker(True, stamps=True)
    port = harness.free_port()
    server = s.procs.spawn("server", engine.serve_command(port), s.cpu, s.env())
    s.procs.wait_port(port, "the hub's server")
    try:
        engine.run(True, min(20, scale.warmup), timeout=60)
        streams, ids = asyncio.run(
            _follow(port, engine.send_one, scale.followers, scale.latency_tasks, scale.timeout)
        )
        deadline = time.monotonic() + scale.timeout
        while True:
            stamps = {k.decode(): int(v) for k, v in s.dbs[2].hgetall("bench:task_success_ns").items()}
            if all(i in stamps for i in ids) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        s.procs.stop(worker)
        s.procs.stop(server)
    missing = [i for i in ids if i not in stamps]
    if missing:
        raise RuntimeError(f"{len(missing)} tasks have no success time")
    samples = sorted(f.seen[i] - stamps[i] for i in ids for f in streams)
    return {
        "followers": scale.followers,
        "tasks": len(ids),
        "deliveries": len(samples),
        "p50_ms": harness.percentile(samples, 0.5) / 1e6,
        "p99_ms": harness.percentile(samples, 0.99) / 1e6,
        "max_ms": samples[-1] / 1e6,
    }


def run(
    engines: list[str], scale: Scale, work_ms: list[float], pin: bool = True, quiet: float = 0.0
) -> dict[str, Any]:
    started = time.monotonic()
    s = Stack(harness.pin_client(pin))
    results: dict[str, Any] = {"scale": asdict(scale), "pinned": s.cpu is not None, "engines": {}}
    try:
        for name in engines:
            found: dict[str, Any] = {"throughput": {}}
            for work in work_ms:
                os.environ["BENCH_WORK_MS"] = str(work)
                print(
                    f"== {name}: tasks per second, {scale.tasks} tasks of {work:g} ms, "
                    f"{scale.repeat} repetitions"
                )
                engine = ENGINES[name](s)
                try:
                    found["throughput"][f"{work:g}ms"] = throughput(s, engine, scale, quiet)
                finally:
                    engine.close()
            os.environ.pop("BENCH_WORK_MS", None)
            print(
                f"== {name}: success → task.succeeded, {scale.followers} followers, "
                f"{scale.latency_tasks} tasks"
            )
            engine = ENGINES[name](s)
            try:
                found["latency"] = latency(s, engine, scale)
            finally:
                engine.close()
            results["engines"][name] = found
    finally:
        s.close()
    results["seconds"] = time.monotonic() - started
    return results


def print_table(results: dict[str, Any]) -> None:
    rows = [["engine", "work per task", "without hook", "with hook", "with ÷ without"]]
    for name, found in results["engines"].items():
        for work, t in found["throughput"].items():
            v = t["tasks_per_s"]
            rows.append(
                [name, work, f"{v['without']:,.0f}", f"{v['with']:,.0f}", harness.number(v["ratio"], "x")]
            )
    print()
    print(harness.table(rows, indent=0, left=2))
    for name, found in results["engines"].items():
        lat = found["latency"]
        print(
            f"{name}: success → task.succeeded at {lat['followers']} followers ({lat['tasks']} tasks): "
            f"p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.1f} ms"
        )


def installed() -> list[str]:
    import importlib.util

    return [name for name in ENGINES if importlib.util.find_spec(name) is not None]


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["serve"]:
        engine, port, hub_url, engine_url = args_list[1:5]
        serve(engine, int(port), hub_url, engine_url)
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.engines dramatiq", description=__doc__.split("\n\n")[0]
    )
    harness.common_arguments(parser, quiet_wait=3.0)
    parser.add_argument(
        "--engines", help=f"comma-separated engines (default: those installed of {', '.join(ENGINES)})"
    )
    parser.add_argument("--tasks", type=int, help="tasks per throughput run")
    parser.add_argument("--repeat", type=int, help="repetitions of without/with (medians)")
    parser.add_argument("--followers", type=int, help="followers on /events for the delay")
    parser.add_argument("--latency-tasks", type=int, help="tasks for the delay")
    parser.add_argument("--work-ms", default="0,1", help="CPU ms per task, comma-separated (default 0,1)")
    args = parser.parse_args(args_list)
    engines = [e.strip() for e in args.engines.split(",")] if args.engines else installed()
    changes = {
        "tasks": args.tasks,
        "repeat": args.repeat,
        "followers": args.followers,
        "latency_tasks": args.latency_tasks,
    }
    scale = replace(SCALES[harness.level(args)], **{k: v for k, v in changes.items() if v is not None})
    work = [float(w) for w in args.work_ms.split(",") if w.strip()]
    env = harness.environment(harness.versions(("sse-tasks", "dramatiq", "redis", "hiredis", "uvicorn")))
    results = run(engines, scale, work, pin=not args.no_pin, quiet=args.quiet_wait)
    print_table(results)
    print(f"\n{results['seconds']:.0f} s")
    harness.write_json(args.json, {"environment": env, **results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
