"""Celery with and without the sse_tasks hooks: ``python -m benchmarks.celery_tasks [--quick]``.

Against a ``redis-server`` this starts on a free loopback port (Celery's broker and
result backend on database 1, the hub on database 0):

1. **Tasks per second**: N no-op tasks (``bench.noop``) sent with ``.delay()`` from this
   process to one ``celery worker`` (prefork, then threads; concurrency 2), timed from
   the first send until every result is in (Celery's redis result backend). Each pool
   runs *without* the hooks (the same app, ``sse_tasks.celery.connect`` not called, in
   the worker and here) and *with* them, alternately, ``--repeat`` times; a fresh
   worker per run, warmed up before the clock starts. Medians and with ÷ without.
2. **task_success → task.succeeded**: a hub (``TaskHub`` on the Redis broker with the
   ``CeleryExecutor``) served by uvicorn, F followers on its ``/events``; tasks sent one
   at a time to a hooked prefork worker. The worker takes ``time.monotonic_ns()`` in a
   ``task_success`` handler connected before the hook's (one clock for all processes);
   each follower takes it when ``task.succeeded`` of that task arrives. p50/p99 over
   every task and follower.

The server side (redis, the worker and its pool, uvicorn) is pinned to CPU 0, this
process (sender and followers) to CPU 1, as in the other benchmarks (``--no-pin``
does not). ``--json out.json`` writes everything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from celery import Celery, signals

BROKER_ENV = "BENCH_CELERY_BROKER"  # Celery's broker and result backend
HUB_ENV = "BENCH_SSE_TASKS_BROKER"  # the hub's Redis; the hooks are connected when set
STAMPS_ENV = "BENCH_SUCCESS_STAMPS"  # a Redis URL: the worker records task_success times there
STAMPS_KEY = "bench:task_success_ns"
WORK_ENV = "BENCH_WORK_MS"  # CPU milliseconds each task spends (default 0: a no-op)

ROOT = Path(__file__).resolve().parent.parent
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def make_app(broker: str) -> Celery:
    """The benchmark's Celery app: one no-op task, Celery's defaults otherwise."""
    app = Celery("sse_tasks_bench", broker=broker, backend=broker, set_as_current=False)
    app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)

    work = float(os.environ.get(WORK_ENV) or 0) / 1000

    @app.task(name="bench.noop", shared=False)
    def noop() -> None:
        """Nothing, or ``--work-ms`` of CPU (a small real task)."""
        if work:
            end = time.thread_time() + work
            while time.thread_time() < end:
                pass
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


# -- processes and CPU ------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pin(cpu: int | None) -> Any:
    return None if cpu is None else (lambda: os.sched_setaffinity(0, {cpu}))


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a prefork worker's pool children)."""
    found, todo = [], [pid]
    while todo and len(found) < 1000:
        current = todo.pop()
        found.append(current)
        try:
            todo += [int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
        except OSError:
            pass
    return found


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return total


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_cpu() -> float:
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:4]]
    except (OSError, ValueError):
        return float("nan")
    return sum(values) / _CLK_TCK


def wait_quiet(max_wait: float, limit_pct: float = 25.0, sample: float = 0.5) -> float:
    """Wait up to ``max_wait`` s for other processes to use < ``limit_pct`` % of a core."""
    deadline = time.monotonic() + max_wait
    for _ in range(int(max_wait / sample) + 2):
        before, mine = machine_cpu(), own_cpu()
        time.sleep(sample)
        others = 100 * (machine_cpu() - before - (own_cpu() - mine)) / sample
        if others < limit_pct or time.monotonic() + sample > deadline or others != others:
            return max(0.0, others)
    return max(0.0, others)


@dataclass
class Proc:
    what: str
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.what} exited ({self.proc.returncode}): {self.text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


class Stack:
    """The redis-server and the processes started against it, all stopped at the end."""

    def __init__(self, cpu: int | None) -> None:
        self.cpu = cpu
        self.dir = Path(tempfile.mkdtemp(prefix="bench-celery-"))
        self.procs: list[Proc] = []
        from .systems import _redis_server, redis_server_command

        redis_server = _redis_server()
        if redis_server is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        port = free_port()
        self.redis = self.spawn("redis", redis_server_command(redis_server, port, self.dir))
        self.url = f"redis://127.0.0.1:{port}"
        self.hub_url, self.celery_url, self.stamps_url = (f"{self.url}/{db}" for db in (0, 1, 2))
        import redis

        self.dbs = [redis.Redis.from_url(f"{self.url}/{db}") for db in (0, 1, 2)]
        self.client = self.dbs[0]
        deadline = time.monotonic() + 20
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                self.redis.alive()
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)

    def spawn(self, what: str, command: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.dir / f"{what}-{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                preexec_fn=_pin(self.cpu), start_new_session=True,
            )  # fmt: skip
        started = Proc(what, proc, log)
        self.procs.append(started)
        return started

    def flush(self) -> None:
        for client in self.dbs:
            client.flushdb()

    def worker(self, pool: str, hooks: bool, stamps: bool = False, concurrency: int = 2) -> Proc:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "CELERY_", "SSE_TASKS_"))}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        env[BROKER_ENV] = self.celery_url
        if os.environ.get(WORK_ENV):
            env[WORK_ENV] = os.environ[WORK_ENV]
        if hooks:
            env[HUB_ENV] = self.hub_url
        if stamps:
            env[STAMPS_ENV] = self.stamps_url
        command = [
            sys.executable, "-m", "celery", "-A", "benchmarks.celery_tasks", "worker",
            f"--pool={pool}", f"--concurrency={concurrency}", "--loglevel=WARNING",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            f"--hostname=bench-{pool}-{os.getpid()}-{time.monotonic_ns()}@%h",
        ]  # fmt: skip
        return self.spawn(f"worker-{pool}", command, env)

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self) -> None:
        for client in self.dbs:
            client.close()
        for proc in reversed(self.procs):
            proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def stack(cpu: int | None) -> Iterator[Stack]:
    started = Stack(cpu)
    try:
        yield started
    finally:
        started.close()


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

    def run(self, tasks: int, timeout: float) -> float:
        """Send ``tasks`` no-op tasks; seconds from the first send until every result is in."""
        from celery.result import ResultSet

        start = time.perf_counter()
        results = ResultSet([self.noop.delay() for _ in range(tasks)])
        # join(), not join_native(): the latter waits 0.5 s more on the redis backend
        results.join(timeout=timeout, propagate=True)
        return time.perf_counter() - start

    def close(self) -> None:
        self.hook.disconnect()
        self.app.close()


def throughput_run(
    s: Stack, sender: Sender, pool: str, hooks: bool, tasks: int, warmup: int, timeout: float, quiet: float
) -> dict[str, Any]:
    s.flush()
    sender.hooked(hooks)
    worker = s.worker(pool, hooks)
    try:
        sender.run(warmup, timeout=60)  # the worker is up, its pool and connections warm
        worker.alive()
        others_before = wait_quiet(quiet) if quiet > 0 else float("nan")
        pids = tree(worker.proc.pid)
        worker0, redis0, own0, machine0 = cpu_of(pids), cpu_of([s.redis.proc.pid]), own_cpu(), machine_cpu()
        seconds = sender.run(tasks, timeout)
        worker_cpu = cpu_of(pids) - worker0
        redis_cpu = cpu_of([s.redis.proc.pid]) - redis0
        sender_cpu = own_cpu() - own0
        others = machine_cpu() - machine0 - worker_cpu - redis_cpu - sender_cpu
        check_hub(s, hooks, warmup + tasks)
    finally:
        s.stop(worker)
    return {
        "pool": pool,
        "hooks": hooks,
        "tasks": tasks,
        "seconds": seconds,
        "tasks_per_s": tasks / seconds,
        "worker_cpu_us_per_task": 1e6 * worker_cpu / tasks,
        "redis_cpu_us_per_task": 1e6 * redis_cpu / tasks,
        "sender_cpu_us_per_task": 1e6 * sender_cpu / tasks,
        "other_cpu_pct": max(0.0, 100 * others / seconds),
        "other_cpu_pct_before": others_before,
    }


def check_hub(s: Stack, hooks: bool, tasks: int) -> None:
    """With the hooks, every task ended on the hub (Celery stores the result before its
    ``task_success``, so the last few may still be on their way); without, nothing is there."""
    deadline = time.monotonic() + 10
    while True:
        finished = s.client.zcard("sse_tasks:finished")
        if not hooks:
            if s.client.dbsize():
                raise RuntimeError("hooks off, yet the hub's Redis holds keys")
            return
        if finished == tasks:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{finished} of {tasks} tasks finished on the hub")
        time.sleep(0.01)


def throughput(
    s: Stack, pools: tuple[str, ...], tasks: int, repeat: int, warmup: int, timeout: float, quiet: float
) -> dict[str, Any]:
    sender = Sender(s.celery_url, s.hub_url)
    out: dict[str, Any] = {}
    try:
        for pool in pools:
            runs: list[dict[str, Any]] = []
            for rep in range(repeat):
                for hooks in (False, True):  # alternately
                    run = throughput_run(s, sender, pool, hooks, tasks, warmup, timeout, quiet)
                    runs.append(run)
                    label = "with" if hooks else "without"
                    print(
                        f"  {pool:8} {label:7} #{rep + 1}: {run['tasks_per_s']:7.0f} tasks/s, worker "
                        f"{run['worker_cpu_us_per_task']:5.0f} µs/task, redis "
                        f"{run['redis_cpu_us_per_task']:4.0f}, sender {run['sender_cpu_us_per_task']:4.0f}; "
                        f"other processes {run['other_cpu_pct']:.0f}% of a core",
                        flush=True,
                    )
            out[pool] = {"runs": runs, **summary(runs)}
    finally:
        sender.close()
    return out


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key in ("tasks_per_s", "worker_cpu_us_per_task", "redis_cpu_us_per_task", "sender_cpu_us_per_task"):
        without = statistics.median(r[key] for r in runs if not r["hooks"])
        with_ = statistics.median(r[key] for r in runs if r["hooks"])
        found[key] = {
            "without": without,
            "with": with_,
            "ratio": with_ / without if without else float("nan"),
        }
    pairs = [(a["tasks_per_s"], b["tasks_per_s"]) for a, b in zip(runs[::2], runs[1::2], strict=True)]
    found["ratio_per_repetition"] = [b / a for a, b in pairs]
    found["other_cpu_pct_median"] = statistics.median(r["other_cpu_pct"] for r in runs)
    return found


# -- 2. task_success → a follower sees task.succeeded -------------------------------------------

SERVER = """
import os, sys
import uvicorn
from sse_tasks import TaskHub
from sse_tasks.celery import CeleryExecutor
from benchmarks.celery_tasks import make_app

hub = TaskHub(sys.argv[2], executor=CeleryExecutor(make_app(sys.argv[3])), max_streams=100_000)
uvicorn.run(hub.app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""

_SUCCEEDED = re.compile(rb'event: task\.succeeded\r?\ndata: \{"id":"([^"]+)"')


class Follower(asyncio.Protocol):
    """One stream of ``/events``: when each task's ``task.succeeded`` arrived."""

    def __init__(self, on_seen: Any) -> None:
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.seen: dict[str, int] = {}
        self.on_seen = on_seen
        self.tail = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"GET /events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if not self.opened.done():
            if b" 200 " not in data.split(b"\r\n", 1)[0]:
                self.opened.set_exception(RuntimeError(f"/events answered {data[:200]!r}"))
                return
            self.opened.set_result(None)
        data = self.tail + data
        cut = data.rfind(b"\n\n") + 2
        frames, self.tail = data[:cut], data[cut:]
        for match in _SUCCEEDED.finditer(frames):
            task_id = match.group(1).decode()
            if task_id not in self.seen:
                self.seen[task_id] = now
                self.on_seen(task_id)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(RuntimeError(f"/events closed: {exc}"))


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
            if stream.transport is not None:
                stream.transport.close()
    return streams, ids


def latency(s: Stack, followers: int, tasks: int, timeout: float) -> dict[str, Any]:
    s.flush()
    sender = Sender(s.celery_url, s.hub_url)
    sender.hooked(True)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env = {k: v for k, v in env.items() if not k.startswith("BENCH_")}
    server = s.spawn("server", [sys.executable, "-c", SERVER, str(port), s.hub_url, s.celery_url], env)
    worker = s.worker("prefork", hooks=True, stamps=True)
    try:
        sender.run(20, timeout=60)  # warm
        import httpx

        deadline = time.monotonic() + 30
        while True:  # bounded: the server answers
            server.alive()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/tasks", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer: {server.text()[-2000:]}")
            time.sleep(0.05)
        streams, ids = asyncio.run(_follow(port, sender, followers, tasks, timeout))
        stamps_client = type(s.client).from_url(s.stamps_url)
        stamps = {k.decode(): int(v) for k, v in stamps_client.hgetall(STAMPS_KEY).items()}
        stamps_client.close()
    finally:
        sender.close()
        s.stop(worker)
        s.stop(server)
    missing = [i for i in ids if i not in stamps]
    if missing:
        raise RuntimeError(f"{len(missing)} tasks have no task_success time")
    samples = sorted(f.seen[i] - stamps[i] for i in ids for f in streams)
    last = sorted(max(f.seen[i] for f in streams) - stamps[i] for i in ids)
    first = sorted(min(f.seen[i] for f in streams) - stamps[i] for i in ids)

    def at(values: list[int], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] / 1e6

    return {
        "followers": followers,
        "tasks": len(ids),
        "deliveries": len(samples),
        "p50_ms": at(samples, 0.5),
        "p99_ms": at(samples, 0.99),
        "max_ms": samples[-1] / 1e6,
        "first_follower_p50_ms": at(first, 0.5),
        "last_follower_p50_ms": at(last, 0.5),
        "last_follower_p99_ms": at(last, 0.99),
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


FULL = Scale()
QUICK = Scale(tasks=500, followers=100, latency_tasks=50)
SMOKE = Scale(tasks=20, repeat=1, warmup=5, followers=3, latency_tasks=3, pools=("threads",), timeout=30.0)


def run(scale: Scale, pin: bool = True, quiet: float = 0.0) -> dict[str, Any]:
    if pin and len(os.sched_getaffinity(0)) < 2:
        pin = False
    server_cpu = 0 if pin else None
    if pin:
        os.sched_setaffinity(0, {1})
    started = time.monotonic()
    with stack(server_cpu) as s:
        results: dict[str, Any] = {"scale": asdict(scale), "pinned": pin}
        print(f"== tasks per second: {scale.tasks} no-op tasks, concurrency 2, {scale.repeat} repetitions")
        results["throughput"] = throughput(
            s, scale.pools, scale.tasks, scale.repeat, scale.warmup, scale.timeout, quiet
        )
        print(f"== task_success → task.succeeded: {scale.followers} followers, {scale.latency_tasks} tasks")
        results["latency"] = latency(s, scale.followers, scale.latency_tasks, scale.timeout)
    results["seconds"] = time.monotonic() - started
    return results


def print_table(results: dict[str, Any]) -> None:
    print("\n| pool | metric | without hooks | with hooks | with ÷ without |")
    print("|---|---|---:|---:|---:|")
    names = {
        "tasks_per_s": "tasks/s ↑",
        "worker_cpu_us_per_task": "worker CPU µs/task",
        "redis_cpu_us_per_task": "redis CPU µs/task",
        "sender_cpu_us_per_task": "sender CPU µs/task",
    }
    for pool, found in results["throughput"].items():
        for key, name in names.items():
            value = found[key]
            cells = f"{value['without']:,.0f} | {value['with']:,.0f} | {value['ratio']:.2f}x"
            print(f"| {pool} | {name} | {cells} |")
        per_rep = ", ".join(f"{r:.2f}x" for r in found["ratio_per_repetition"])
        print(f"| {pool} | tasks/s ratio per repetition | | | {per_rep} |")
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


def versions() -> dict[str, str]:
    found = {}
    for name in ("sse-tasks", "celery", "kombu", "redis", "hiredis", "uvicorn", "uvloop"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "-"
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=10).stdout
        found["redis-server"] = out.split("v=", 1)[-1].split()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        found["redis-server"] = "-"
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.celery_tasks", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK.tasks} tasks per run, {QUICK.latency_tasks} for the delay",
    )
    parser.add_argument("--tasks", type=int, help="tasks per throughput run")
    parser.add_argument("--repeat", type=int, help="repetitions of without/with per pool (medians)")
    parser.add_argument("--pools", help="comma-separated Celery pools (default prefork,threads)")
    parser.add_argument("--followers", type=int, help="followers on /events for the delay")
    parser.add_argument("--latency-tasks", type=int, help="tasks for the delay")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the server side and this process")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=3.0,
        help="seconds to wait before each timed run for other processes to use < 25%% of a core (0: never)",
    )
    parser.add_argument("--json", type=Path, help="write environment and results here")
    parser.add_argument(
        "--work-ms", type=float, default=0.0, help="CPU milliseconds each task spends (default 0: no-op)"
    )
    args = parser.parse_args(argv)  # fmt: skip
    if args.work_ms:
        os.environ[WORK_ENV] = str(args.work_ms)
    scale = QUICK if args.quick else FULL
    changes = {
        "tasks": args.tasks,
        "repeat": args.repeat,
        "followers": args.followers,
        "latency_tasks": args.latency_tasks,
        "pools": tuple(p.strip() for p in args.pools.split(",") if p.strip()) if args.pools else None,
    }
    scale = Scale(**{**asdict(scale), **{k: v for k, v in changes.items() if v is not None}})
    env = {"nproc": os.cpu_count(), "python": sys.version.split()[0], "versions": versions()}
    print(
        f"{env['nproc']} CPUs, Python {env['python']}, "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    )
    results = run(scale, pin=not args.no_pin, quiet=args.quiet_wait)
    print_table(results)
    print(f"\n{results['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"environment": env, **results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
