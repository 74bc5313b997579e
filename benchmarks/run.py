"""Run every scenario against every system and print the ratios within the same run.

``python -m benchmarks`` (full), ``--quick`` (smaller), ``--repeat 3`` (medians),
``--only closed,light``, ``--systems sse_tasks,nchan``, ``--no-install``,
``--json out.json``. Each server runs in its own processes, pinned to CPU 0; the load
client (this process, and a publishing process of its own) is pinned to CPU 1 and
reports its CPU use next to the server's, so a saturated client shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import client
from .systems import ROOT, SYSTEMS, Server, prepare, raise_nofile, versions

_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Scale:
    fanout_subscribers: int
    fanout_messages: int
    throughput_subscribers: int
    throughput_messages: int
    idle_streams: tuple[int, ...]
    submit_connections: int
    submit_seconds: float
    latency_tasks: int
    fanout_paced: tuple[int, float]  # (messages, seconds between them)
    closed_subscribers: int
    closed_publishes: int
    light_subscribers: int
    light_rate: float  # publishes per second
    light_seconds: float
    settle: float = 0.3  # after the streams are open, before publishing
    idle_settle: float = 1.0  # before reading the RSS
    timeout: float = 55.0
    fresh: bool = True  # a fresh server for every scenario (else one per system)


FULL = Scale(1000, 200, 100, 5000, (5000, 10_000), 32, 3.0, 200, (40, 0.2), 1000, 200, 100, 100.0, 5.0)
QUICK = Scale(300, 100, 50, 1000, (1000, 2000), 16, 1.5, 50, (20, 0.1), 1000, 100, 100, 100.0, 2.0)
SMOKE = Scale(
    4,
    5,
    3,
    20,
    (10, 20),
    2,
    0.3,
    3,
    (3, 0.01),
    4,
    5,
    3,
    50.0,
    0.1,
    settle=0.05,
    idle_settle=0.05,
    timeout=20.0,
    fresh=False,
)

SCENARIOS = ("closed", "light", "fanout", "throughput", "idle", "submit", "latency")
#: Systems with a server-side publisher (``POST /tasks`` starting a loop of messages).
SERVER_PUBLISHER = ("sse_tasks", "sse_tasks+redis", "aiohttp-sse", "sse-starlette")
SCENARIO_SYSTEMS: dict[str, tuple[str, ...]] = {
    "closed": SYSTEMS,
    "light": SYSTEMS,
    "fanout": SERVER_PUBLISHER,
    "throughput": SERVER_PUBLISHER,
    "idle": SYSTEMS,
    "submit": ("sse_tasks", "sse_tasks+redis", "sse-starlette"),
    "latency": SERVER_PUBLISHER,
}


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_cpu() -> tuple[float, float]:
    """CPU seconds the machine's processes have run (user, nice, system) and the
    seconds the hypervisor gave to other machines (steal), from ``/proc/stat``."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return float("nan"), float("nan")
    return sum(values[:3]) / _CLK_TCK, values[7] / _CLK_TCK


class Window:
    """Wall time and CPU of server and client over one measurement, and what the rest of
    the machine used meanwhile (other jobs compete for the same two cores)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.wall0, self.server0, self.client0 = time.monotonic_ns(), server.cpu(), client_cpu()
        self.helpers0 = server.helper_cpu()
        self.machine0 = machine_cpu()

    def close(
        self, end_ns: int | None = None, start_ns: int | None = None, other_client_cpu: float = 0.0
    ) -> dict[str, float]:
        end = end_ns if end_ns is not None else time.monotonic_ns()
        wall = max((end - (start_ns if start_ns is not None else self.wall0)) / 1e9, 1e-9)
        server_cpu = self.server.cpu() - self.server0
        helpers = self.server.helper_cpu() - self.helpers0
        own_cpu = client_cpu() - self.client0 + other_client_cpu
        machine = machine_cpu()
        others = machine[0] - self.machine0[0] - server_cpu - own_cpu
        return {
            "seconds": wall,
            "server_cpu": server_cpu,
            "server_cpu_pct": 100 * server_cpu / wall,
            # Of which processes the server started (redis-server for ``sse_tasks+redis``).
            "helper_cpu_pct": 100 * helpers / wall,
            "client_cpu_pct": 100 * own_cpu / wall,
            # Percent of one core, from 0 to 200 on two.
            "other_cpu_pct": max(0.0, 100 * others / wall),
            "steal_pct": 100 * (machine[1] - self.machine0[1]) / wall,
        }


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    if not samples_ns:
        return {"p50_ms": float("nan"), "p99_ms": float("nan")}
    ordered = sorted(samples_ns)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

    return {"p50_ms": at(0.50), "p99_ms": at(0.99)}


def _trigger(messages: int, interval: float = 0.0, name: str = "publish") -> bytes:
    return json.dumps({"name": name, "params": {"n": messages, "interval": interval, "size": 100}}).encode()


def _ended(streams: list[client.Subscriber]) -> int | None:
    """When the last stream ended, or None if one has not (or was lost)."""
    futures = [s.ended for s in streams]
    if not all(f.done() and not f.cancelled() for f in futures):
        return None
    return max(f.result() for f in futures) if futures else time.monotonic_ns()


# -- scenarios: a server-side publisher ---------------------------------------------------


async def fanout(
    server: Server,
    subscribers: int,
    messages: int,
    timeout: float,
    paced: tuple[int, float] = (0, 0.0),
    settle: float = 0.3,
) -> dict[str, Any]:
    """``subscribers`` streams on ``/events``; a publisher emits ``messages`` as fast as it can.

    With ``paced=(count, interval)`` a paced publisher runs first, one message every
    ``interval`` seconds, slow enough for every app to keep up: its latencies are the
    time one message takes to reach every subscriber, not the time a burst queues.
    """
    chunks: list[tuple[int, int, int, int]] = []

    def on_match(count: int, first: int, last: int, now: int) -> None:
        chunks.append((count, first, last, now))

    streams = await client.subscribe(
        server.port,
        subscribers,
        client.MESSAGE[server.system],
        client.END[server.system],
        on_match=on_match,
        timeout=timeout,
    )
    result: dict[str, Any] = {}
    try:
        await asyncio.sleep(settle)
        if paced[0]:
            slow = await _publish(server, streams, chunks, paced[0], paced[1], timeout)
            result.update({f"paced_{key}": value for key, value in slow.items()})
            chunks.clear()
        result.update(await _publish(server, streams, chunks, messages, 0.0, timeout))
    finally:
        await client.close_all(streams)
    return result


async def _publish(
    server: Server,
    streams: list[client.Subscriber],
    chunks: list[tuple[int, int, int, int]],
    messages: int,
    interval: float,
    timeout: float,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    for stream in streams:
        stream.ended = loop.create_future()
    trigger = await client.connect(server.port)  # a fresh one: keep-alive ends after 5 s
    window = Window(server)
    response = await trigger.post("/tasks", _trigger(messages, interval))
    trigger.close()
    if client.status(response) != 202:
        raise RuntimeError(f"publish failed: {response[:300]!r}")
    await asyncio.wait([s.ended for s in streams], timeout=timeout)
    end = _ended(streams)
    measured = window.close(end)
    received = sum(count for count, *_ in chunks)
    return {
        "deliveries": received,
        "expected": len(streams) * messages,
        "complete": end is not None,
        # Messages published ÷ time until every subscriber had the last one: unlike
        # deliveries/s, not lowered when the hub merges a progress report into the next.
        "messages_per_s": messages / measured["seconds"],
        "deliveries_per_s": received / measured["seconds"],
        "server_us_per_delivery": 1e6 * measured["server_cpu"] / max(received, 1),
        **percentiles(latencies(chunks)),
        **measured,
    }


def latencies(chunks: list[tuple[int, int, int, int]]) -> list[int]:
    """Per-message latency: exact for the first and last message of each chunk, between them
    interpolated (see ``client``)."""
    samples: list[int] = []
    for count, first, last, now in chunks:
        if count == 1:
            samples.append(now - first)
        else:
            step = (last - first) / (count - 1)
            samples.extend([now - first - int(step * j) for j in range(count)])
    return samples


# -- scenarios: a client publishing (closed loop, paced) ------------------------------------


class Publisher:
    """``benchmarks.publisher`` in a process of its own (on the client's CPU)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, server: Server, count: int, rate: float, timeout: float) -> Publisher:
        config = {
            "port": server.port,
            "system": server.system,
            "count": count,
            "rate": rate,
            "connections": 4,
            "timeout": timeout,
        }
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.publisher",
            json.dumps(config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        publisher = cls(proc)
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if line.strip() != b"ready":
                raise RuntimeError(f"the publisher did not start: {line[:200]!r}")
        except BaseException:
            await publisher.close()
            raise
        return publisher

    async def run(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"go\n")
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout + 10)
        await asyncio.wait_for(self.proc.wait(), 10)
        if not line:
            raise RuntimeError(f"the publisher failed (exit {self.proc.returncode})")
        report: dict[str, Any] = json.loads(line)
        return report

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def publishes(
    server: Server, subscribers: int, count: int, rate: float, timeout: float, settle: float = 0.3
) -> dict[str, Any]:
    """``subscribers`` streams on ``/events``; the client publishes ``count`` times, in a
    closed loop (``rate`` 0: the next when the previous answer arrives) or ``rate`` per
    second. Each publish's final event (sse_tasks: ``task.failed``) carries its publish
    time; the measurement ends when every subscriber has every final event."""
    chunks: list[tuple[int, int, int, int]] = []

    def on_match(n: int, first: int, last: int, now: int) -> None:
        chunks.append((n, first, last, now))

    streams = await client.subscribe(
        server.port, subscribers, client.FINAL[server.system], on_match=on_match, timeout=timeout
    )
    try:
        await asyncio.sleep(settle)
        for stream in streams:
            stream.expect(count)
        publisher = await Publisher.start(server, count, rate, timeout)
        try:
            window = Window(server)
            report = await publisher.run(timeout)
        finally:
            await publisher.close()
        left = max(0.1, timeout - (time.monotonic_ns() - report["first_ns"]) / 1e9)
        await asyncio.wait([s.ended for s in streams], timeout=left)
        end = _ended(streams)
        complete = end is not None and report["answered"] == count
        measured = window.close(end, start_ns=report["first_ns"], other_client_cpu=report["cpu_s"])
    finally:
        await client.close_all(streams)
    received = sum(n for n, *_ in chunks)
    wall = measured["seconds"]
    return {
        "subscribers": subscribers,
        "publishes": report["answered"],
        "refused": report["failed"],
        "deliveries": received,
        "expected": subscribers * count,
        "complete": complete,
        "publishes_per_s": report["answered"] / wall,
        "deliveries_per_s": received / wall,
        "server_us_per_delivery": 1e6 * measured["server_cpu"] / max(received, 1),
        **percentiles(latencies(chunks)),
        "answer_p50_ms": report["answer_p50_ms"],
        "answer_p99_ms": report["answer_p99_ms"],
        "publisher_lag_max_ms": report["lag_max_ms"],
        "publisher_late": report["late"],
        "publisher_cpu_pct": 100 * report["cpu_s"] / wall,
        **measured,
    }


# -- scenarios: streams and requests ----------------------------------------------------------


async def idle(
    server: Server, counts: tuple[int, ...], timeout: float, settle: float = 1.0
) -> dict[str, Any]:
    """Hold idle ``/events`` streams; server RSS growth per stream."""
    marker = client.FINAL[server.system]
    warm = await client.subscribe(server.port, min(200, max(counts)), marker, timeout=timeout)
    await client.close_all(warm)
    await asyncio.sleep(settle / 2)
    base = server.rss()
    result: dict[str, Any] = {"rss_base_mib": base / 2**20}
    streams: list[client.Subscriber] = []
    try:
        for count in sorted(counts):
            streams += await client.subscribe(server.port, count - len(streams), marker, timeout=timeout)
            await asyncio.sleep(settle)
            result[f"kib_per_stream_{count}"] = (server.rss() - base) / count / 1024
    finally:
        await client.close_all(streams)
    return result


async def submit(server: Server, path: str, body: bytes, connections: int, seconds: float) -> dict[str, Any]:
    """``connections`` keep-alive clients POSTing back to back for ``seconds``."""
    conns = [await client.connect(server.port) for _ in range(connections)]
    answered = failed = 0
    counting = False

    async def worker(conn: client.Connection, until: float) -> None:
        nonlocal answered, failed
        while time.monotonic() < until:
            response = await conn.post(path, body)
            if not counting:
                continue
            if client.status(response) == 202:
                answered += 1
            else:
                failed += 1

    try:
        warmup = time.monotonic() + min(0.5, seconds / 3)
        await asyncio.gather(*(worker(c, warmup) for c in conns))
        counting = True
        window = Window(server)
        await asyncio.gather(*(worker(c, time.monotonic() + seconds) for c in conns))
        measured = window.close()
    finally:
        for conn in conns:
            conn.close()
    return {
        "answers_per_s": answered / measured["seconds"],
        # Contention-proof: what one fully available core would answer.
        "answers_per_cpu_s": answered / max(measured["server_cpu"], 1e-9),
        "failed": failed,
        **measured,
    }


async def latency(server: Server, tasks: int, timeout: float) -> dict[str, Any]:
    """One task at a time: from sending ``POST /tasks`` to a follower on ``/events`` seeing its end."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[int] | None = None

    def on_match(count: int, first: int, last: int, now: int) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(now)

    ours = server.system.startswith("sse_tasks")
    terminal = client.END[server.system] if ours else b"event: tick\n"
    (follower,) = await client.subscribe(server.port, 1, terminal, on_match=on_match)
    conn = await client.connect(server.port)
    samples: list[int] = []
    body = b'{"name": "noop", "params": {}}' if ours else _trigger(1)
    try:
        window = Window(server)
        for _ in range(tasks):
            waiter = loop.create_future()
            start = time.monotonic_ns()
            response = await conn.post("/tasks", body)
            if client.status(response) != 202:
                raise RuntimeError(f"submit failed: {response[:300]!r}")
            samples.append(await asyncio.wait_for(waiter, timeout) - start)
        measured = window.close()
    finally:
        conn.close()
        await client.close_all([follower])
    return {"tasks": len(samples), **percentiles(samples), **measured}


# -- running and reporting ------------------------------------------------------------

Runner = Callable[[Server], Awaitable[dict[str, Any]]]


def scenario_runners(
    name: str, scale: Scale, systems: tuple[str, ...] = SYSTEMS
) -> dict[str, dict[str, Runner]]:
    """For a scenario: {system: {variant: runner}}, for the ``systems`` it applies to."""
    t, settle = scale.timeout, scale.settle
    run: Runner
    if name == "closed":
        run = lambda s: publishes(s, scale.closed_subscribers, scale.closed_publishes, 0.0, t, settle)  # noqa: E731
    elif name == "light":
        count = max(1, round(scale.light_rate * scale.light_seconds))
        run = lambda s: publishes(s, scale.light_subscribers, count, scale.light_rate, t, settle)  # noqa: E731
    elif name == "fanout":
        run = lambda s: fanout(  # noqa: E731
            s, scale.fanout_subscribers, scale.fanout_messages, t, scale.fanout_paced, settle
        )
    elif name == "throughput":
        run = lambda s: fanout(s, scale.throughput_subscribers, scale.throughput_messages, t, settle=settle)  # noqa: E731
    elif name == "idle":
        run = lambda s: idle(s, scale.idle_streams, t, scale.idle_settle)  # noqa: E731
    elif name == "submit":
        noop = b'{"name": "noop", "params": {}}'
        conns, seconds = scale.submit_connections, scale.submit_seconds
        table: dict[str, dict[str, Runner]] = {
            "sse_tasks": {
                "": lambda s: submit(s, "/tasks", noop, conns, seconds),
                "bare": lambda s: submit(s, "/bare", noop, conns, seconds),
            },
            "sse_tasks+redis": {"": lambda s: submit(s, "/tasks", noop, conns, seconds)},
            "sse-starlette": {"": lambda s: submit(s, "/bare", noop, conns, seconds)},
        }
        return {system: table[system] for system in SCENARIO_SYSTEMS[name] if system in systems}
    elif name == "latency":
        run = lambda s: latency(s, scale.latency_tasks, t)  # noqa: E731
    else:
        raise ValueError(f"unknown scenario {name!r}")
    return {system: {"": run} for system in SCENARIO_SYSTEMS[name] if system in systems}


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r] or runs
    merged: dict[str, Any] = {}
    for key in ok[0]:
        values = [
            r[key] for r in ok if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
        ]
        merged[key] = statistics.median(values) if len(values) == len(ok) else ok[-1][key]
    merged["runs"] = len(ok)
    return merged


async def run_all(
    scale: Scale,
    scenarios: tuple[str, ...] = SCENARIOS,
    repeat: int = 1,
    pin: bool = True,
    systems: tuple[str, ...] = SYSTEMS,
    quiet: float = 0.0,
    profile: Path | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """{scenario: {system or system:variant: median result}}; systems alternate within each
    repeat. ``systems`` must be installed (see ``systems.prepare``). Before each run, wait
    up to ``quiet`` seconds for other processes to leave the CPUs alone."""
    server_cpu = client_cpu_id = None
    if pin and len(os.sched_getaffinity(0)) >= 2:
        server_cpu, client_cpu_id = sorted(os.sched_getaffinity(0))[:2]
        os.sched_setaffinity(0, {client_cpu_id})
    raise_nofile()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    kept: dict[str, Server] = {}  # scale.fresh False: one server per system for every scenario
    try:
        for scenario in scenarios:
            runs: dict[str, list[dict[str, Any]]] = {}
            for _ in range(repeat):
                for system, variants in scenario_runners(scenario, scale, systems).items():
                    for variant, runner in variants.items():
                        label = f"{system}:{variant}" if variant else system
                        stem = None
                        if profile is not None:
                            name = f"{scenario}-{label.replace(':', '-')}-{len(runs.get(label, []))}"
                            stem = profile / name
                        runs.setdefault(label, []).append(
                            await _run_one(system, runner, server_cpu, scale, kept, quiet, stem)
                        )
            results[scenario] = {label: median_of(r) for label, r in runs.items()}
            print_scenario(scenario, results[scenario])
    finally:
        for server in kept.values():
            server.stop()
    return results


async def wait_quiet(max_wait: float, limit_pct: float = 25.0, sample: float = 0.5) -> float:
    """Wait up to ``max_wait`` seconds for the rest of the machine to use less than
    ``limit_pct`` % of a core (other jobs share these two cores); the last sample."""
    deadline = time.monotonic() + max_wait
    while True:
        before, own0 = machine_cpu()[0], client_cpu()
        await asyncio.sleep(sample)
        others = 100 * (machine_cpu()[0] - before - (client_cpu() - own0)) / sample
        if others < limit_pct or time.monotonic() + sample > deadline or math.isnan(others):
            return max(0.0, others)


async def _run_one(
    system: str,
    runner: Runner,
    cpu: int | None,
    scale: Scale,
    kept: dict[str, Server],
    quiet: float = 0.0,
    profile: Path | None = None,
) -> dict[str, Any]:
    try:
        if quiet > 0:
            others = await wait_quiet(quiet)
            if others >= 25.0:
                print(f"  [{system}] other processes still use {others:.0f}% of a core after {quiet:.0f} s")
        if scale.fresh:
            with Server(system, cpu) as server:
                return await _profiled(runner, server, profile)
        if system not in kept:
            kept[system] = Server(system, cpu)
        return await _profiled(runner, kept[system], profile)
    except Exception as exc:  # one system failing must not lose the others' results
        print(f"  [{system}] FAILED: {type(exc).__name__}: {exc}", flush=True)
        return {"error": f"{type(exc).__name__}: {exc}"}


async def _profiled(runner: Runner, server: Server, profile: Path | None) -> dict[str, Any]:
    """Run ``runner``; with ``profile`` (a stem: ``DIR/scenario-system``) under py-spy on the
    server's main process, writing ``<stem>.txt`` (collapsed stacks) and ``<stem>-summary.txt``."""
    if profile is None or server.main_pid is None:
        return await runner(server)
    from . import profile as summary

    raw = profile.with_suffix(".txt")
    spy = await asyncio.create_subprocess_exec(
        shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")),
        *("record", "--pid", str(server.main_pid), "--rate", "250", "--format", "raw"),
        *("--nonblocking", "--output", str(raw)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.5)  # py-spy attaches
    try:
        return await runner(server)
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(spy.wait(), 10)
        except TimeoutError:
            spy.kill()
            await spy.wait()
        if raw.exists():
            profile.with_name(profile.name + "-summary.txt").write_text(summary.summarize(raw.read_text()))


# (metric, label, higher is better)
_ROWS: dict[str, list[tuple[str, str, bool]]] = {
    "closed": [
        ("publishes_per_s", "publishes/s", True),
        ("p50_ms", "final event latency p50 ms", False),
        ("p99_ms", "final event latency p99 ms", False),
        ("server_us_per_delivery", "server CPU µs/delivery", False),
    ],
    "light": [
        ("p50_ms", "final event latency p50 ms", False),
        ("p99_ms", "final event latency p99 ms", False),
        ("server_cpu_pct", "server CPU % of a core", False),
    ],
    "fanout": [
        ("messages_per_s", "burst: messages/s", True),
        ("deliveries_per_s", "burst: deliveries/s", True),
        ("server_us_per_delivery", "burst: server CPU µs/delivery", False),
        ("p50_ms", "burst: latency p50 ms", False),
        ("p99_ms", "burst: latency p99 ms", False),
        ("paced_p50_ms", "paced: latency p50 ms", False),
        ("paced_p99_ms", "paced: latency p99 ms", False),
        ("paced_server_us_per_delivery", "paced: server CPU µs/delivery", False),
    ],
    "idle": [],
    "submit": [
        ("answers_per_s", "answers/s (sse_tasks: /tasks)", True),
        ("answers_per_cpu_s", "answers per server CPU second", True),
    ],
    "latency": [("p50_ms", "POST→terminal p50 ms", False), ("p99_ms", "POST→terminal p99 ms", False)],
}
_ROWS["throughput"] = _ROWS["fanout"][:5]

#: (column title, numerator, denominator)
RATIOS = (
    ("÷nchan", "sse_tasks", "nchan"),
    ("÷aiohttp", "sse_tasks", "aiohttp-sse"),
    ("÷starlette", "sse_tasks", "sse-starlette"),
    ("redis÷mem", "sse_tasks+redis", "sse_tasks"),
)
_SHORT = {
    "sse_tasks": "sse_tasks",
    "sse_tasks+redis": "+redis",
    "nchan": "nchan",
    "aiohttp-sse": "aiohttp-sse",
    "sse-starlette": "starlette",
}


def _value(result: dict[str, dict[str, Any]], system: str, metric: str) -> float:
    value = result.get(system, {}).get(metric)
    return float(value) if isinstance(value, (int, float)) else float("nan")


def ratio(result: dict[str, dict[str, Any]], metric: str, top: str, bottom: str) -> float:
    a, b = _value(result, top, metric), _value(result, bottom, metric)
    return a / b if b and not math.isnan(a) and not math.isnan(b) else float("nan")


def rows(scenario: str, result: dict[str, dict[str, Any]]) -> list[tuple[str, str, bool]]:
    """(metric, label, higher is better) of the table."""
    if scenario == "idle":
        keys = {key for r in result.values() for key in r if key.startswith("kib_per_stream_")}
        return [
            (key, f"KiB/stream at {key.rsplit('_', 1)[1]}", False)
            for key in sorted(keys, key=lambda k: int(k.rsplit("_", 1)[1]))
        ]
    return _ROWS[scenario]


def _cell(value: float, width: int, suffix: str = "") -> str:
    return f"{'-':>{width}}" if math.isnan(value) else f"{value:{width - len(suffix)}.4g}{suffix}"


def print_scenario(scenario: str, result: dict[str, dict[str, Any]]) -> None:
    print(f"\n== {scenario}")
    head = "".join(f"{_SHORT[s]:>12}" for s in SYSTEMS) + "".join(f"{t:>11}" for t, *_ in RATIOS)
    print(f"  {'':34}{head}")
    for metric, label, higher in rows(scenario, result):
        cells = "".join(_cell(_value(result, s, metric), 12) for s in SYSTEMS)
        cells += "".join(_cell(ratio(result, metric, a, b), 11, "x") for _, a, b in RATIOS)
        print(f"  {label + (' ↑' if higher else ''):34}{cells}")
    if "sse_tasks:bare" in result and "sse_tasks" in result:
        print(
            f"  sse_tasks POST /tasks ÷ POST /bare on the same server: "
            f"{ratio(result, 'answers_per_s', 'sse_tasks', 'sse_tasks:bare'):.2f}x answers/s, "
            f"{ratio(result, 'answers_per_cpu_s', 'sse_tasks', 'sse_tasks:bare'):.2f}x per server CPU second"
        )
    for label, r in result.items():
        if "error" in r:
            print(f"  [{label}] FAILED: {r['error']}")
            continue
        notes = []
        if "server_cpu_pct" in r:
            client_note = f"client CPU {r['client_cpu_pct']:.0f}%"
            if "publisher_cpu_pct" in r:
                client_note += f" (publisher {r['publisher_cpu_pct']:.0f}%)"
            server_note = f"server CPU {r['server_cpu_pct']:.0f}%"
            if r.get("helper_cpu_pct", 0) >= 0.5 and label.startswith("sse_tasks+redis"):
                server_note += f" (redis-server {r['helper_cpu_pct']:.0f}%)"
            notes.append(f"{server_note}, {client_note}")
            if r.get("other_cpu_pct", 0) >= 10:
                notes.append(f"other processes {r['other_cpu_pct']:.0f}% of a core")
            if r.get("steal_pct", 0) >= 5:
                notes.append(f"steal {r['steal_pct']:.0f}%")
        for prefix in ("paced_", ""):
            if f"{prefix}deliveries" in r:
                got, wanted = r[prefix + "deliveries"], r[prefix + "expected"]
                note = (
                    f"{prefix or ('burst_' if 'paced_deliveries' in r else '')}delivered {got:.0f}/{wanted}"
                )
                notes.append(note + ("" if r[prefix + "complete"] else " (TIMED OUT)"))
        if r.get("refused"):
            notes.append(f"{r['refused']} publishes refused")
        if r.get("publisher_late"):
            notes.append(
                f"{r['publisher_late']} publishes > 5 ms late (max {r['publisher_lag_max_ms']:.1f} ms)"
            )
        if "answer_p50_ms" in r:
            notes.append(f"publish answer p50 {r['answer_p50_ms']:.2f} ms")
        if notes:
            print(f"  [{label}] " + "; ".join(notes))
    sys.stdout.flush()


def targets(results: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The targets, each with its measured value and whether it is met (None: not measured).

    A target whose runs did not complete (a subscriber missed events, a publish was
    refused, a time-out) is not met, whatever the ratio."""
    found: list[dict[str, Any]] = []

    def check(
        name: str, scenario: str, metric: str, top: str, bottom: str, ok: Callable[[float], bool]
    ) -> None:
        result = results.get(scenario, {})
        value = ratio(result, metric, top, bottom)
        met = None if math.isnan(value) else ok(value)
        incomplete = [s for s in (top, bottom) if result.get(s, {}).get("complete") is False]
        if met and incomplete:
            met = False
        found.append({"target": name, "value": value, "unit": "x", "met": met, "incomplete": incomplete})

    idle = results.get("idle", {})
    keys = sorted(
        (k for k in idle.get("sse_tasks", {}) if k.startswith("kib_per_stream_")),
        key=lambda k: int(k.rsplit("_", 1)[1]),
    )
    if keys:
        kib = _value(idle, "sse_tasks", keys[-1])
        found.append(
            {
                "target": f"idle stream ≤ 12 KiB (at {keys[-1].rsplit('_', 1)[1]} streams)",
                "value": kib,
                "unit": " KiB",
                "met": kib <= 12,
                "incomplete": [],
            }
        )
    subscribers = results.get("closed", {}).get("sse_tasks", {}).get("subscribers", "?")
    check(
        f"closed-loop fan-out ({subscribers} subscribers) ≥ 1.0x nchan publishes/s",
        "closed",
        "publishes_per_s",
        "sse_tasks",
        "nchan",
        lambda v: v >= 1.0,
    )
    check("light-load p99 ≤ aiohttp-sse's", "light", "p99_ms", "sse_tasks", "aiohttp-sse", lambda v: v <= 1.0)
    check(
        "redis closed-loop fan-out publishes/s ≥ 0.7x memory",
        "closed",
        "publishes_per_s",
        "sse_tasks+redis",
        "sse_tasks",
        lambda v: v >= 0.7,
    )
    check(
        "redis burst fan-out messages/s ≥ 0.7x memory",
        "fanout",
        "messages_per_s",
        "sse_tasks+redis",
        "sse_tasks",
        lambda v: v >= 0.7,
    )
    check(
        "redis throughput messages/s ≥ 0.7x memory",
        "throughput",
        "messages_per_s",
        "sse_tasks+redis",
        "sse_tasks",
        lambda v: v >= 0.7,
    )
    check(
        "redis light-load server CPU ≤ 1.5x memory",
        "light",
        "server_cpu_pct",
        "sse_tasks+redis",
        "sse_tasks",
        lambda v: v <= 1.5,
    )
    check(
        "redis light-load p99 ≤ 2x memory",
        "light",
        "p99_ms",
        "sse_tasks+redis",
        "sse_tasks",
        lambda v: v <= 2.0,
    )
    check(
        "submit ≥ 0.7x a bare Starlette endpoint (same server)",
        "submit",
        "answers_per_s",
        "sse_tasks",
        "sse_tasks:bare",
        lambda v: v >= 0.7,
    )
    return found


def print_targets(found: list[dict[str, Any]]) -> None:
    print("\n== targets")
    for target in found:
        met = {True: "met", False: "NOT met", None: "not measured"}[target["met"]]
        value = "-" if math.isnan(target["value"]) else f"{target['value']:.2f}{target['unit']}"
        if target["incomplete"]:
            met += f" (incomplete: {', '.join(target['incomplete'])})"
        print(f"  {target['target']:58} {value:>10}  {met}")
    sys.stdout.flush()


def environment() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "versions": versions(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per system and scenario (medians reported)"
    )
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated: {','.join(SCENARIOS)}")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated: {','.join(SYSTEMS)}")
    parser.add_argument("--no-install", action="store_true", help="skip systems that are not installed")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and client to separate CPUs")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=5.0,
        help="seconds to wait before each run for other processes to use < 25%% of a core (0: never)",
    )
    parser.add_argument("--json", type=Path, help="write environment and results here")
    parser.add_argument(
        "--profile",
        type=Path,
        help="run py-spy on each Python server; collapsed stacks and a summary per run go here",
    )
    args = parser.parse_args(argv)
    scenarios = tuple(s.strip() for s in args.only.split(",") if s.strip())
    for scenario in scenarios:
        if scenario not in SCENARIOS:
            parser.error(f"unknown scenario {scenario!r}")
    wanted = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    for system in wanted:
        if system not in SYSTEMS:
            parser.error(f"unknown system {system!r}")
    skipped = prepare(wanted, install=not args.no_install)
    systems = tuple(s for s in wanted if s not in skipped)
    env = environment()
    print(
        f"{env['nproc']} CPUs ({env['cpu']}), Python {env['python']}, "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    scale = QUICK if args.quick else FULL
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results = asyncio.run(
        run_all(
            scale, scenarios, max(1, args.repeat), not args.no_pin, systems, args.quiet_wait, args.profile
        )
    )
    found = targets(results)
    print_targets(found)
    print(f"\n{time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "environment": env,
                    "scale": asdict(scale),
                    "skipped": skipped,
                    "results": results,
                    "targets": found,
                },
                indent=2,
            )
        )
    return 0
