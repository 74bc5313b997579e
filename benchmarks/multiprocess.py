"""Task output across processes: ``python -m benchmarks.multiprocess [--processes N]``.

What one deployment pays for output: ``--tasks`` (20) ``generate words=2000 delay=0``
tasks (2,200 chunks each: the words and a log line every 10) submitted to one process
**A** (the producer), followed on ``/events?output=1&name=generate`` by ``--followers``
(2) clients on the other processes **B…**, while one process (**idle**) has no client
at all. Every process is ``sse-tasks serve --app benchmarks.multiprocess_app:hub`` on
one throwaway ``redis-server`` (``--cluster``: and on a local Redis Cluster of three
masters, ``redis+cluster://``, with its default three partitions and with one); the
same workload on one ``memory://`` process (its followers on it) is the yardstick,
measured in the same run.

Each follower checks every chunk of every task arrives once and in order. Reported,
per system: wall time from the first submit until every follower has every chunk and
every task's end; CPU µs per chunk of the producer, of a follower process, of the idle
process, of redis-server (all nodes of a cluster) and of the busiest node (``/proc``,
whole process trees); delivery latency
p50/p99 of the log lines (stamped when written, ``benchmarks/multiprocess_app.py``)
to followers on another process; and each ratio against memory. The servers share
the first CPU, the client the second (``--no-pin``: not pinned).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import client, harness

APP = "benchmarks.multiprocess_app:hub"
SIZES = {"full": (20, 2000, 2), "quick": (10, 1000, 2), "smoke": (2, 50, 1)}  # tasks, words, followers
_CHUNK = re.compile(rb'data: \{"id":"([^"]+)","seq":(\d+),"kind":"(?:output|log)"[^\n]*')
_STAMP = re.compile(rb"ts=(\d+)")
_END = b"event: task.succeeded\n"
_FAILED = b"event: task.failed\n"


class Follower(client.Frames):
    """``/events?output=1&name=generate``: every chunk of ``tasks`` tasks of ``chunks``
    chunks each, once and in order per task; the latency of each stamped chunk."""

    def __init__(self, tasks: int, chunks: int) -> None:
        super().__init__("/events?output=1&name=generate")
        self.tasks, self.chunks = tasks, chunks
        self.next: dict[bytes, int] = {}
        self.complete = 0
        self.ended = 0
        self.failed = 0  # tasks that ended failed (their output is cut short)
        self.latencies: list[int] = []
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def frames(self, frames: bytes, now: int) -> None:
        for match in _CHUNK.finditer(frames):
            task, seq = match.group(1), int(match.group(2))
            expected = self.next.get(task, 0)
            if seq != expected:
                self._fail(AssertionError(f"task {task!r}: expected chunk {expected}, got {seq}"))
                return
            self.next[task] = seq + 1
            if seq + 1 == self.chunks:
                self.complete += 1
            stamp = _STAMP.search(match.group(0))
            if stamp is not None:
                self.latencies.append(now - int(stamp.group(1)))
        self.ended += frames.count(_END)
        failed = frames.count(_FAILED)
        if failed:  # e.g. WorkerLost: its process was too busy to renew the lease
            self.failed += failed
            self.ended += failed
        if b"event: reset\n" in frames:
            self._fail(AssertionError("the stream was reset"))
        # A task's end follows all of its output in the stream.
        if self.ended >= self.tasks and not self.done.done():
            self.done.set_result(now)

    def _fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._fail(ConnectionError(f"/events closed: {exc}"))


class Deployment:
    """``processes`` serve processes on ``broker`` (one, for ``memory://``), pinned to ``cpu``."""

    def __init__(self, procs: harness.Processes, broker: str, processes: int, cpu: int | None) -> None:
        self.ports = [harness.free_port() for _ in range(processes)]
        self.servers = []
        for port in self.ports:
            command = [sys.executable, "-m", "sse_tasks", "serve", "--app", APP, "--broker", broker]
            command += ["--port", str(port), "--log-level", "warning"]
            self.servers.append(procs.spawn("serve", command, cpu, env=harness.python_env()))
        for port in self.ports:
            procs.wait_port(port, "sse-tasks serve")
        self.procs = procs

    def cpu(self, index: int) -> float:
        return harness.cpu_seconds(self.procs.pids([self.servers[index]]))


async def _done(
    streams: list[Follower], deployment: Deployment, procs: harness.Processes, timeout: float
) -> list[int]:
    """When each follower had everything (monotonic ns); raise, with the logs, after ``timeout``."""
    try:
        return list(await asyncio.wait_for(asyncio.gather(*(s.done for s in streams)), timeout))
    except TimeoutError:
        seen = [(len(s.next), s.complete, s.ended) for s in streams]
        logs = "".join(procs.log(server)[-1500:] for server in deployment.servers)
        raise RuntimeError(
            f"followers (tasks seen, complete, ended) {seen} after {timeout} s; logs: {logs}"
        ) from None


async def run_once(
    procs: harness.Processes,
    broker: str,
    processes: int,
    tasks: int,
    words: int,
    followers: int,
    cpu: int | None,
    helpers: Sequence[int] = (),
    timeout: float = 120.0,
    nodes: Sequence[int] = (),
    profile: Path | None = None,
) -> dict[str, Any]:
    """One run: ``processes`` = 1 (memory: everything on it) or ≥ 3 (A, followers, idle)."""
    deployment = Deployment(procs, broker, processes, cpu)
    chunks = words + words // 10
    total = tasks * chunks
    producer, idle = 0, processes - 1
    serving = [0] if processes == 1 else list(range(1, processes - 1))
    loop = asyncio.get_running_loop()
    streams: list[Follower] = []
    try:
        for i in range(followers):
            port = deployment.ports[serving[i % len(serving)]]
            _, stream = await loop.create_connection(lambda: Follower(tasks, chunks), "127.0.0.1", port)
            streams.append(stream)
        await asyncio.wait_for(asyncio.gather(*(s.opened for s in streams)), 60)
        await asyncio.sleep(0.3)  # the processes settle after starting
        conns = [await client.connect(deployment.ports[producer]) for _ in range(tasks)]
        body = json.dumps({"name": "generate", "params": {"words": words, "delay": 0}}).encode()
        refused = 0

        async def submit(conn: client.Connection) -> None:
            nonlocal refused
            for _ in range(50):
                response = await conn.post("/tasks", body)
                if client.status(response) == 202:
                    return
                if client.status(response) != 503:
                    raise RuntimeError(f"submit failed: {response[:300]!r}")
                refused += 1  # a client retries a 503 (sooner than its Retry-After: 2)
                await asyncio.sleep(0.1)
            raise RuntimeError(f"submit refused 50 times: {response[:300]!r}")

        roles = {producer: "producer"}
        if processes > 1:
            roles |= {serving[0]: "follower", idle: "idle"}
        async with contextlib.AsyncExitStack() as profiles:
            for index, role in roles.items():
                stem = (
                    None if profile is None else profile / f"{'memory' if processes == 1 else 'redis'}-{role}"
                )
                await profiles.enter_async_context(harness.profiled(deployment.servers[index].pid, stem))
            cpus0 = [deployment.cpu(i) for i in range(processes)]
            helper0 = harness.cpu_seconds(helpers)
            nodes0 = [harness.cpu_seconds([node]) for node in nodes]
            start = time.monotonic_ns()
            try:
                await asyncio.gather(*(submit(conn) for conn in conns))  # 20 clients at once
            finally:
                for conn in conns:
                    conn.close()
            ends = await _done(streams, deployment, procs, timeout)
            used = [deployment.cpu(i) - cpus0[i] for i in range(processes)]
            helper = harness.cpu_seconds(helpers) - helper0
            busiest = max(
                (harness.cpu_seconds([n]) - n0 for n, n0 in zip(nodes, nodes0, strict=True)), default=helper
            )
        wall = (max(ends) - start) / 1e9
    finally:
        for stream in streams:
            stream.close()
        for server in deployment.servers:
            procs.stop(server)
    latency = harness.percentiles(sample for s in streams for sample in s.latencies)

    def per_chunk(seconds: float) -> float:
        return round(seconds / total * 1e6, 2)

    return {
        "processes": processes,
        "tasks": tasks,
        "chunks": total,
        "followers": followers,
        "submits_refused": refused,
        "tasks_failed": max(s.failed for s in streams),
        "tasks_complete": min(s.complete for s in streams),
        "wall_s": round(wall, 3),
        "producer_cpu_us_per_chunk": per_chunk(used[producer]),
        "follower_cpu_us_per_chunk": per_chunk(statistics.mean(used[i] for i in serving)),
        "idle_cpu_us_per_chunk": per_chunk(used[idle]) if processes > 1 else float("nan"),
        "redis_cpu_us_per_chunk": per_chunk(helper) if helpers else float("nan"),
        "redis_busiest_cpu_us_per_chunk": per_chunk(busiest) if helpers else float("nan"),
        "latency_p50_ms": round(latency["p50_ms"], 2),
        "latency_p99_ms": round(latency["p99_ms"], 2),
    }


async def measure_memory(
    size: tuple[int, int, int], cpu: int | None, profile: Path | None = None
) -> dict[str, Any]:
    procs = harness.Processes("multiprocess-memory")
    try:
        return await run_once(procs, "memory://", 1, *size, cpu, profile=profile)
    finally:
        procs.close()


async def measure_redis(
    size: tuple[int, int, int], processes: int, cpu: int | None, profile: Path | None = None
) -> dict[str, Any]:
    procs = harness.Processes("multiprocess-redis")
    try:
        redis, url = harness.start_redis(procs, cpu, "--maxclients", "1000")
        pids = harness.descendants(redis.pid)
        return await run_once(procs, f"{url}/0", processes, *size, cpu, pids, profile=profile)
    finally:
        procs.close()


async def measure_cluster(
    size: tuple[int, int, int],
    processes: int,
    cpu: int | None,
    profile: Path | None = None,
    partitions: int | None = None,
) -> dict[str, Any]:
    """The redis:// workload on a local Redis Cluster of three masters (its CPU: all three;
    the busiest one's too), with ``partitions`` (default: the broker's, three)."""
    procs = harness.Processes("multiprocess-cluster")
    try:
        nodes, url = harness.start_redis_cluster(procs, cpu, "--maxclients", "1000")
        pids = procs.pids(nodes)
        if partitions is not None:
            url += f"?partitions={partitions}"
        return await run_once(procs, url, processes, *size, cpu, pids, profile=profile, nodes=pids)
    finally:
        procs.close()


#: (metric, label) of the table; each is also given ÷ memory.
ROWS = (
    ("wall_s", "wall time s"),
    ("producer_cpu_us_per_chunk", "producer CPU µs/chunk"),
    ("follower_cpu_us_per_chunk", "follower process CPU µs/chunk"),
    ("idle_cpu_us_per_chunk", "idle process CPU µs/chunk"),
    ("redis_cpu_us_per_chunk", "redis-server CPU µs/chunk"),
    ("redis_busiest_cpu_us_per_chunk", "busiest Redis node CPU µs/chunk"),
    ("latency_p50_ms", "latency p50 ms (log lines)"),
    ("latency_p99_ms", "latency p99 ms (log lines)"),
)


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Every metric of every system ÷ memory's (per chunk: ÷ memory's producer), and the
    idle process's CPU as a fraction of the producer's."""
    memory = results["memory"]
    found: dict[str, dict[str, float]] = {}
    for system, result in results.items():
        if system == "memory":
            continue
        mine: dict[str, float] = {}
        for metric, _ in ROWS:
            bottom = memory[metric]
            if metric.endswith("_cpu_us_per_chunk"):
                bottom = memory["producer_cpu_us_per_chunk"]
            mine[metric] = round(harness.ratio(result[metric], bottom), 3)
        mine["idle_of_producer"] = round(
            harness.ratio(result["idle_cpu_us_per_chunk"], result["producer_cpu_us_per_chunk"]), 3
        )
        found[system] = mine
    return found


def report(results: dict[str, dict[str, Any]], found: dict[str, dict[str, float]]) -> str:
    systems = list(results)
    head = ["metric", *systems, *(f"{s}÷memory" for s in found)]
    rows = [head]
    for metric, label in ROWS:
        row = [label, *(harness.number(results[s][metric]) for s in systems)]
        row += [harness.number(found[s][metric], "x") for s in found]
        rows.append(row)
    lines = [harness.table(rows)]
    for system, mine in found.items():
        share = 100 * mine["idle_of_producer"]
        lines.append(f"  {system}: idle process CPU = {share:.1f} % of the producer's")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.multiprocess", description=__doc__.split("\n\n")[0]
    )
    harness.common_arguments(parser, quiet_wait=5.0)
    parser.add_argument("--processes", type=int, default=3, help="redis:// serve processes, at least 3")
    parser.add_argument("--tasks", type=int, help=f"default {SIZES['full'][0]}")
    parser.add_argument("--words", type=int, help=f"default {SIZES['full'][1]}")
    parser.add_argument("--followers", type=int, help=f"default {SIZES['full'][2]}")
    parser.add_argument("--repeat", type=int, default=1, help="medians of N runs per system")
    parser.add_argument(
        "--cluster", action="store_true", help="also on a local three-master Redis Cluster (redis+cluster://)"
    )
    parser.add_argument(
        "--profile", type=Path, help="py-spy on the producer, a follower process and the idle one: into DIR"
    )
    args = parser.parse_args(argv)
    if args.processes < 3:
        parser.error("--processes must be at least 3 (a producer, a follower process, an idle one)")
    tasks, words, followers = SIZES[harness.level(args)]
    size = (args.tasks or tasks, args.words or words, args.followers or followers)
    env = harness.environment(harness.versions(harness.PACKAGES))
    cpu = harness.pin_client(not args.no_pin)

    async def measure() -> dict[str, dict[str, Any]]:
        runs: dict[str, list[dict[str, Any]]] = {"memory": [], "redis": []}
        if args.cluster:
            runs["cluster"] = []
            runs["cluster-1"] = []  # the cluster with one partition: one master carries it
        for _ in range(args.repeat):
            for system in runs:
                if args.quiet_wait:
                    harness.wait_quiet(args.quiet_wait)
                if system == "memory":
                    runs[system].append(await measure_memory(size, cpu, args.profile))
                elif system == "cluster":
                    runs[system].append(await measure_cluster(size, args.processes, cpu, args.profile))
                elif system == "cluster-1":
                    runs[system].append(await measure_cluster(size, args.processes, cpu, args.profile, 1))
                else:
                    runs[system].append(await measure_redis(size, args.processes, cpu, args.profile))
        return {system: harness.median_of(found) for system, found in runs.items()}

    results = harness.run_async(measure())
    found = ratios(results)
    print(report(results, found), flush=True)
    harness.write_json(args.json, {"environment": env, "results": results, "ratios": found})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
