"""Celery with and without the sse_tasks hooks: ``python -m benchmarks.celery_tasks [--quick]``.

Against a ``redis-server`` this starts on a free loopback port (Celery's broker and
result backend on database 1, the hub on database 0):

1. **Tasks per second, with ÷ without the hooks**: N no-op tasks (``bench.noop``)
   sent with ``.delay()`` from this process to one ``celery worker`` (prefork, then
   threads; concurrency 2, Celery's defaults otherwise), timed from the first send
   until every result is in (``ResultSet.join()`` on the redis backend;
   ``join_native()`` adds a 0.5 s wait). Each pool runs *without* the hooks (the same
   app, ``sse_tasks.celery.connect`` not called, in the worker and here) and *with*
   them, alternately, ``--repeat`` times; a fresh worker per run, warmed up before the
   clock starts; medians. Each run checks that the hub's Redis holds every task
   finished (with) or nothing (without). ``--work-ms N``: each task spends N ms of CPU.
2. **task_success → task.succeeded**: a hub (``TaskHub`` on the Redis broker with the
   ``CeleryExecutor``) served by uvicorn, F followers on its ``/events``; tasks sent one
   at a time to a hooked prefork worker. The worker takes ``time.monotonic_ns()`` in a
   ``task_success`` handler connected before the hook's (one clock for all processes);
   each follower takes it when ``task.succeeded`` of that task arrives. p50/p99 over
   every task and follower.

redis, the worker with its pool and the uvicorn server are pinned to CPU 0, this
process (sender and followers) to CPU 1. This module is also the worker's app
(``celery -A benchmarks.celery_tasks worker``, configured by its environment).
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

from celery import Celery, signals

from . import client, harness
from .harness import HUB_ENV, STAMPS_ENV, STAMPS_KEY, WORK_ENV, busy

BROKER_ENV = "BENCH_CELERY_BROKER"  # Celery's broker and result backend


def make_app(broker: str) -> Celery:
    """The benchmark's Celery app: one no-op task, Celery's defaults otherwise."""
    app = Celery("sse_tasks_bench", broker=broker, backend=broker, set_as_current=False)
    app.conf.update(
        # Celery prefers $CELERY_BROKER_URL to `broker=` (a test run sets it for its own
        # app), but not to these: the benchmark sends where it says, whatever the environment.
        broker_read_url=broker,
        broker_write_url=broker,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )

    work_ms = float(os.environ.get(WORK_ENV) or 0)

    @app.task(name="bench.noop", shared=False)
    def noop() -> None:
        """Nothing, or ``--work-ms`` of CPU (a small real task)."""
        busy(work_ms)
        return None

    return app


def _record_successes(app: Celery, url: str) -> None:
    """``task_success`` times, taken before the hook's handler runs (connected first) and
    written to Redis after the task (``task_postrun``), so the write is not in the delay."""
    import redis

    stamps: dict[str, int] = {}
    clients: list[Any] = []

    def on_success(sender: Any = None, **_: Any) -> None:
        stamps[sender.request.id] = time.monotonic_ns()

    def on_postrun(task_id: Any = None, **_: Any) -> None:
        stamp = stamps.pop(task_id, None)
        if stamp is None:
            return
        if not clients:  # one per process, made after the fork
            clients.append(redis.Redis.from_url(url))
        clients[0].hset(STAMPS_KEY, task_id, stamp)

    signals.task_success.connect(on_success, weak=False, dispatch_uid="bench-success")
    signals.task_postrun.connect(on_postrun, weak=False, dispatch_uid="bench-postrun")


# The worker's app (``celery -A benchmarks.celery_tasks worker``), from its environment.
app: Celery | None = None
if os.environ.get(BROKER_ENV):
    app = make_app(os.environ[BROKER_ENV])
    if os.environ.get(STAMPS_ENV):
        _record_successes(app, os.environ[STAMPS_ENV])
    if os.environ.get(HUB_ENV):
        import sse_tasks.celery

        sse_tasks.celery.connect(app, os.environ[HUB_ENV])


class Stack:
    """The redis-server and the processes started against it, pinned to ``cpu``."""

    def __init__(self, cpu: int | None) -> None:
        import redis

        self.cpu = cpu
        self.procs = harness.Processes("celery")
        try:
            self.redis, url = harness.start_redis(self.procs, cpu)
        except BaseException:
            self.procs.close()
            raise
        self.hub_url, self.celery_url, self.stamps_url = (f"{url}/{db}" for db in (0, 1, 2))
        self.dbs = [redis.Redis.from_url(u) for u in (self.hub_url, self.celery_url, self.stamps_url)]
        self.hub = self.dbs[0]

    def flush(self) -> None:
        for db in self.dbs:
            db.flushdb()

    def _env(self, **extra: str) -> dict[str, str]:
        """This environment without the benchmark's, Celery's and sse_tasks' settings; ``extra``."""
        ours = ("BENCH_", "CELERY_", "SSE_TASKS_")
        return {**{k: v for k, v in harness.python_env().items() if not k.startswith(ours)}, **extra}

    def worker(
        self, pool: str, hooks: bool, stamps: bool = False, concurrency: int = 2
    ) -> subprocess.Popen[bytes]:
        env = self._env(**{BROKER_ENV: self.celery_url})
        if os.environ.get(WORK_ENV):
            env[WORK_ENV] = os.environ[WORK_ENV]
        if hooks:
            env[HUB_ENV] = self.hub_url
        if stamps:
            env[STAMPS_ENV] = self.stamps_url
        quiet = "--loglevel=WARNING --without-gossip --without-mingle --without-heartbeat".split()
        name = f"--hostname=bench-{pool}-{os.getpid()}-{time.monotonic_ns()}@%h"
        command = [sys.executable, "-m", "celery", "-A", "benchmarks.celery_tasks", "worker", *quiet, name]
        command += [f"--pool={pool}", f"--concurrency={concurrency}"]
        return self.procs.spawn(f"worker-{pool}", command, self.cpu, env)

    def warm(self, sender: Sender, worker: subprocess.Popen[bytes], tasks: int) -> None:
        """Send ``tasks`` no-op tasks and wait until ``worker`` ran them (it is up, its pool
        and connections warm); raise with its log if it does not within a minute."""
        from celery.exceptions import TimeoutError as CeleryTimeout

        try:
            sender.run(tasks, timeout=60)
        except CeleryTimeout:
            self.procs.check(worker, "the worker")
            broker = self.dbs[1]
            waiting, results = broker.llen("celery"), len(broker.keys("celery-task-meta-*"))
            raise RuntimeError(
                f"{tasks} tasks not all done in 60 s ({waiting} still queued, {results} results stored); "
                f"the worker's log: {self.procs.log(worker)[-3000:]}"
            ) from None
        self.procs.check(worker, "the worker")

    def server(self, port: int) -> subprocess.Popen[bytes]:
        """The hub (``CeleryExecutor``) under uvicorn on ``port``, started and answering."""
        command = [sys.executable, "-m", "benchmarks.celery_tasks", "serve", str(port)]
        proc = self.procs.spawn("server", [*command, self.hub_url, self.celery_url], self.cpu, self._env())
        self.procs.wait_port(port, "the hub's server")
        return proc

    def close(self) -> None:
        for db in self.dbs:
            db.close()
        self.procs.close()


def serve(port: int, hub_url: str, celery_url: str) -> None:
    import uvicorn

    from sse_tasks import TaskHub
    from sse_tasks.celery import CeleryExecutor

    hub = TaskHub(hub_url, executor=CeleryExecutor(make_app(celery_url)), max_streams=100_000)
    uvicorn.run(hub.app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- 1. tasks per second ----------------------------------------------------------------


class Sender:
    """This process's copy of the app; its hook is connected only for the runs "with"."""

    def __init__(self, celery_url: str, hub_url: str) -> None:
        import sse_tasks.celery

        self.app = make_app(celery_url)
        self.hook = sse_tasks.celery.connect(self.app, hub_url)
        self.hook.disconnect()
        self.noop = self.app.tasks["bench.noop"]

    def hooked(self, on: bool) -> None:
        if on:
            self.hook.connect()
        else:
            self.hook.disconnect()

    def run(self, tasks: int, timeout: float) -> None:
        """Send ``tasks`` no-op tasks and wait until every result is in."""
        from celery.result import ResultSet

        # join(), not join_native(): the latter waits 0.5 s more on the redis backend
        ResultSet([self.noop.delay() for _ in range(tasks)]).join(timeout=timeout, propagate=True)

    def close(self) -> None:
        self.hook.disconnect()
        self.app.close()


def throughput_run(
    s: Stack, sender: Sender, pool: str, hooks: bool, scale: Scale, quiet: float, keep: bool = False
) -> tuple[dict[str, Any], subprocess.Popen[bytes] | None]:
    """One run on a fresh worker; ``keep``: the worker records success stamps and is left
    running, and returned."""
    s.flush()
    sender.hooked(hooks)
    worker = s.worker(pool, hooks, stamps=keep)
    try:
        s.warm(sender, worker, scale.warmup)
        others_before = harness.wait_quiet(quiet) if quiet > 0 else float("nan")
        pids, redis_pid = harness.descendants(worker.pid), [s.redis.pid]
        window = harness.Window(
            lambda: harness.cpu_seconds(pids) + harness.cpu_seconds(redis_pid),
            lambda: harness.cpu_seconds(redis_pid),
        )
        sender.run(scale.tasks, scale.timeout)
        measured = window.close()
        check_hub(s, hooks, scale.warmup + scale.tasks)
    finally:
        if not keep:  # kept or not, an error leaves it to the stack's close
            s.procs.stop(worker, scale.grace(15.0))
    per_task = 1e6 / scale.tasks
    return {
        "pool": pool,
        "hooks": hooks,
        "tasks": scale.tasks,
        "seconds": measured["seconds"],
        "tasks_per_s": scale.tasks / measured["seconds"],
        "worker_cpu_us_per_task": (measured["server_cpu"] - measured["helper_cpu"]) * per_task,
        "redis_cpu_us_per_task": measured["helper_cpu"] * per_task,
        "sender_cpu_us_per_task": measured["client_cpu"] * per_task,
        "other_cpu_pct": measured["other_cpu_pct"],
        "other_cpu_pct_before": others_before,
    }, worker if keep else None


def check_hub(s: Stack, hooks: bool, tasks: int) -> None:
    """With the hooks, every task ended on the hub (Celery stores the result before its
    ``task_success``, so the last few may still be on their way); without, nothing is there."""
    deadline = time.monotonic() + 10
    while True:
        if not hooks:
            if s.hub.dbsize():
                raise RuntimeError("hooks off, yet the hub's Redis holds keys")
            return
        finished = s.hub.zcard("sse_tasks:finished")
        if finished == tasks:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{finished} of {tasks} tasks finished on the hub")
        time.sleep(0.01)


def throughput(s: Stack, scale: Scale, quiet: float) -> tuple[dict[str, Any], subprocess.Popen[bytes] | None]:
    """Every pool's runs; in a smoke run, the last worker if it is a hooked prefork one,
    kept for :func:`latency`."""
    sender = Sender(s.celery_url, s.hub_url)
    out: dict[str, Any] = {}
    kept = None
    try:
        for pool in scale.pools:
            runs: list[dict[str, Any]] = []
            for rep in range(scale.repeat):
                for hooks in (False, True):  # alternately
                    # The very last run's: a worker kept earlier would take the next runs' tasks.
                    last = pool == scale.pools[-1] and hooks and rep == scale.repeat - 1
                    keep = scale.smoke and pool == "prefork" and last
                    run, kept = throughput_run(s, sender, pool, hooks, scale, quiet, keep)
                    runs.append(run)
                    label = "with" if hooks else "without"
                    print(
                        f"  {pool:8} {label:7} #{rep + 1}: {run['tasks_per_s']:7.0f} tasks/s; "
                        f"other processes {run['other_cpu_pct']:.0f}% of a core",
                        flush=True,
                    )
            out[pool] = {"runs": runs, **summary(runs)}
    finally:
        sender.close()
    return out, kept


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key in ("tasks_per_s", "worker_cpu_us_per_task", "redis_cpu_us_per_task", "sender_cpu_us_per_task"):
        without = statistics.median(r[key] for r in runs if not r["hooks"])
        with_ = statistics.median(r[key] for r in runs if r["hooks"])
        found[key] = {
            "without": without,
            "with": with_,
            "ratio": harness.ratio(with_, without),
        }
    pairs = zip(runs[::2], runs[1::2], strict=True)
    found["ratio_per_repetition"] = [b["tasks_per_s"] / a["tasks_per_s"] for a, b in pairs]
    found["other_cpu_pct_median"] = statistics.median(r["other_cpu_pct"] for r in runs)
    return found


# -- 2. task_success → a follower sees task.succeeded -------------------------------------------

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
    port: int, sender: Sender, followers: int, tasks: int, timeout: float
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
    pool = ThreadPoolExecutor(1)  # one sending thread: Celery's producer stays in it

    def send() -> Any:
        return sender.noop.apply_async(ignore_result=True)

    try:
        for _ in range(tasks):
            result = await loop.run_in_executor(pool, send)
            done: asyncio.Future[None] = loop.create_future()
            already = sum(result.id in f.seen for f in streams)
            waiting[result.id] = [followers - already, done]
            if already == followers:
                done.set_result(None)
            await asyncio.wait_for(done, timeout)
            ids.append(result.id)
    finally:
        pool.shutdown(wait=True)
        for stream in streams:
            stream.close()
    return streams, ids


def latency(s: Stack, scale: Scale, worker: subprocess.Popen[bytes] | None = None) -> dict[str, Any]:
    """On ``worker`` (prefork, hooked, recording stamps) if given, else on a fresh one."""
    if worker is None:
        s.flush()
        worker = s.worker("prefork", hooks=True, stamps=True)  # starts while the server does
    sender = Sender(s.celery_url, s.hub_url)
    sender.hooked(True)
    server = s.server(port := harness.free_port())
    try:
        s.warm(sender, worker, min(20, scale.warmup))
        streams, ids = asyncio.run(_follow(port, sender, scale.followers, scale.latency_tasks, scale.timeout))
        # A follower may see task.succeeded before the worker has written its stamp.
        deadline = time.monotonic() + scale.timeout
        while True:
            stamps = {k.decode(): int(v) for k, v in s.dbs[2].hgetall(STAMPS_KEY).items()}
            if all(i in stamps for i in ids) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        sender.close()
        s.procs.stop(worker, scale.grace(15.0))
        s.procs.stop(server)
    missing = [i for i in ids if i not in stamps]
    if missing:
        raise RuntimeError(f"{len(missing)} tasks have no task_success time")
    samples = sorted(f.seen[i] - stamps[i] for i in ids for f in streams)
    last = sorted(max(f.seen[i] for f in streams) - stamps[i] for i in ids)
    first = sorted(min(f.seen[i] for f in streams) - stamps[i] for i in ids)
    return {
        "followers": scale.followers,
        "tasks": len(ids),
        "deliveries": len(samples),
        "p50_ms": harness.percentile(samples, 0.5) / 1e6,
        "p99_ms": harness.percentile(samples, 0.99) / 1e6,
        "max_ms": samples[-1] / 1e6,
        "first_follower_p50_ms": harness.percentile(first, 0.5) / 1e6,
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
    pools: tuple[str, ...] = ("prefork", "threads")
    timeout: float = 120.0
    #: Nothing is measured (``--smoke``): a worker is killed once its run is over, not
    #: given time to exit, and the delay is taken on the last hooked prefork worker of
    #: the throughput runs (started recording stamps) rather than on one more.
    smoke: bool = False

    def grace(self, seconds: float) -> float:
        """How long a stopped worker may take to exit: ``seconds``, none in a smoke run."""
        return 0.0 if self.smoke else seconds


SCALES = {
    "full": Scale(),
    "quick": Scale(tasks=500, latency_tasks=50),
    "smoke": Scale(
        tasks=20,
        repeat=1,
        warmup=5,
        followers=3,
        latency_tasks=3,
        pools=("prefork",),
        timeout=30.0,
        smoke=True,
    ),
}


def run(scale: Scale, pin: bool = True, quiet: float = 0.0) -> dict[str, Any]:
    started = time.monotonic()
    s = Stack(harness.pin_client(pin))
    try:
        results: dict[str, Any] = {"scale": asdict(scale), "pinned": s.cpu is not None}
        print(f"== tasks per second: {scale.tasks} no-op tasks, concurrency 2, {scale.repeat} repetitions")
        results["throughput"], kept = throughput(s, scale, quiet)
        print(f"== task_success → task.succeeded: {scale.followers} followers, {scale.latency_tasks} tasks")
        results["latency"] = latency(s, scale, kept)
    finally:
        s.close()
    results["seconds"] = time.monotonic() - started
    return results


def print_table(results: dict[str, Any]) -> None:
    names = {
        "tasks_per_s": "tasks/s ↑",
        "worker_cpu_us_per_task": "worker CPU µs/task",
        "redis_cpu_us_per_task": "redis CPU µs/task",
        "sender_cpu_us_per_task": "sender CPU µs/task",
    }
    rows = [["pool", "metric", "without hooks", "with hooks", "with ÷ without"]]
    for pool, found in results["throughput"].items():
        for key, name in names.items():
            v = found[key]
            rows.append(
                [pool, name, f"{v['without']:,.0f}", f"{v['with']:,.0f}", harness.number(v["ratio"], "x")]
            )
        per_rep = ", ".join(f"{r:.2f}x" for r in found["ratio_per_repetition"])
        rows.append([pool, "tasks/s ratio per repetition", "", "", per_rep])
    print()
    print(harness.table(rows, indent=0, left=2))
    lat = results["latency"]
    print(
        f"\ntask_success → task.succeeded at {lat['followers']} followers ({lat['tasks']} tasks, "
        f"{lat['deliveries']} deliveries): p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, "
        f"max {lat['max_ms']:.1f} ms; per task, the last follower: p50 {lat['last_follower_p50_ms']:.2f} ms, "
        f"p99 {lat['last_follower_p99_ms']:.2f} ms"
    )
    for pool, found in results["throughput"].items():
        ratio = found["tasks_per_s"]["ratio"]
        met = "met" if ratio >= 0.8 else "NOT met"
        print(f"target tasks/s with ÷ without ≥ 0.8 ({pool}): {ratio:.2f}x, {met}")


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["serve"]:
        port, hub_url, celery_url = args_list[1:4]
        serve(int(port), hub_url, celery_url)
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.celery_tasks", description=__doc__.split("\n\n")[0]
    )
    harness.common_arguments(parser, quiet_wait=3.0)
    parser.add_argument("--tasks", type=int, help="tasks per throughput run")
    parser.add_argument("--repeat", type=int, help="repetitions of without/with per pool (medians)")
    parser.add_argument("--pools", help="comma-separated Celery pools (default prefork,threads)")
    parser.add_argument("--followers", type=int, help="followers on /events for the delay")
    parser.add_argument("--latency-tasks", type=int, help="tasks for the delay")
    parser.add_argument(
        "--work-ms", type=float, default=0.0, help="CPU milliseconds each task spends (default 0: no-op)"
    )
    args = parser.parse_args(args_list)
    if args.work_ms:
        os.environ[WORK_ENV] = str(args.work_ms)
    changes = {
        "tasks": args.tasks,
        "repeat": args.repeat,
        "followers": args.followers,
        "latency_tasks": args.latency_tasks,
        "pools": tuple(p.strip() for p in args.pools.split(",") if p.strip()) if args.pools else None,
    }
    scale = replace(SCALES[harness.level(args)], **{k: v for k, v in changes.items() if v is not None})
    env = harness.environment(
        harness.versions(("sse-tasks", "celery", "kombu", "redis", "hiredis", "uvicorn", "uvloop"))
    )
    results = run(scale, pin=not args.no_pin, quiet=args.quiet_wait)
    print_table(results)
    print(f"\n{results['seconds']:.0f} s")
    harness.write_json(args.json, {"environment": env, **results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
