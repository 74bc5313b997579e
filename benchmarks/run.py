"""Run every scenario against both apps and print the ratios (sse_tasks / baseline).

``python -m benchmarks`` (full), ``--quick`` (smaller), ``--repeat 3`` (medians),
``--only fanout,idle``, ``--json out.json``. Each server runs in its own process,
pinned to CPU 0; this client is pinned to CPU 1 and reports its own CPU use next to
the server's, so a saturated client shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from . import client
from .apps import APPS
from .server import raise_nofile

ROOT = Path(__file__).resolve().parent.parent
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
    timeout: float = 55.0


FULL = Scale(1000, 200, 100, 5000, (5000, 10_000), 32, 3.0, 200, (40, 0.2))
QUICK = Scale(300, 100, 50, 1000, (1000, 2000), 16, 1.5, 50, (20, 0.1))
SMOKE = Scale(4, 5, 3, 20, (10, 20), 2, 0.3, 3, (3, 0.01), timeout=20.0)

SCENARIOS = ("fanout", "throughput", "idle", "submit", "latency")


# -- the server process -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``python -m benchmarks.server APP PORT`` in its own process."""

    def __init__(self, app: str, cpu: int | None) -> None:
        self.app = app
        self.port = free_port()
        command = [sys.executable, "-m", "benchmarks.server", app, str(self.port)]
        if cpu is not None:
            command += ["--cpu", str(cpu)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(command, cwd=ROOT, env=env)
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the {app} server did not start") from None
                time.sleep(0.05)

    def cpu(self) -> float:
        """CPU seconds (user + system) the server has used."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK

    def rss(self) -> int:
        """Resident memory in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Window:
    """Wall time and CPU of server and client over one measurement."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.wall0, self.server0, self.client0 = time.monotonic_ns(), server.cpu(), client_cpu()

    def close(self, end_ns: int | None = None) -> dict[str, float]:
        end = end_ns if end_ns is not None else time.monotonic_ns()
        wall = max((end - self.wall0) / 1e9, 1e-9)
        server_cpu, own_cpu = self.server.cpu() - self.server0, client_cpu() - self.client0
        return {
            "seconds": wall,
            "server_cpu": server_cpu,
            "server_cpu_pct": 100 * server_cpu / wall,
            "client_cpu_pct": 100 * own_cpu / wall,
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


# -- scenarios ------------------------------------------------------------------------


async def fanout(
    server: Server, subscribers: int, messages: int, timeout: float, paced: tuple[int, float] = (0, 0.0)
) -> dict[str, Any]:
    """``subscribers`` streams on ``/events``; a publisher emits ``messages`` as fast as it can.

    With ``paced=(count, interval)`` a paced publisher runs first, one message every
    ``interval`` seconds, slow enough for both apps to keep up: its latencies are the
    time one message takes to reach every subscriber, not the time a burst queues.
    """
    chunks: list[tuple[int, int, int, int]] = []

    def on_match(count: int, first: int, last: int, now: int) -> None:
        chunks.append((count, first, last, now))

    streams = await client.subscribe(
        server.port,
        subscribers,
        client.MESSAGE[server.app],
        client.END[server.app],
        on_match=on_match,
        timeout=timeout,
    )
    result: dict[str, Any] = {}
    try:
        await asyncio.sleep(0.3)
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
    ended, _ = await asyncio.wait([s.ended for s in streams], timeout=timeout)
    end = max(f.result() for f in ended) if len(ended) == len(streams) else None
    measured = window.close(end)
    received = sum(count for count, *_ in chunks)
    return {
        "deliveries": received,
        "expected": len(streams) * messages,
        "complete": end is not None,
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


async def idle(server: Server, counts: tuple[int, ...], timeout: float) -> dict[str, Any]:
    """Hold idle ``/events`` streams; server RSS growth per stream."""
    marker = client.MESSAGE[server.app]
    warm = await client.subscribe(server.port, 200, marker, timeout=timeout)
    await client.close_all(warm)
    await asyncio.sleep(0.5)
    base = server.rss()
    result: dict[str, Any] = {"rss_base_mib": base / 2**20}
    streams: list[client.Subscriber] = []
    try:
        for count in sorted(counts):
            streams += await client.subscribe(server.port, count - len(streams), marker, timeout=timeout)
            await asyncio.sleep(1.0)
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

    terminal = client.END[server.app] if server.app == "sse_tasks" else b"event: tick\n"
    (follower,) = await client.subscribe(server.port, 1, terminal, on_match=on_match)
    conn = await client.connect(server.port)
    samples: list[int] = []
    body = b'{"name": "noop", "params": {}}'
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


def scenario_runners(name: str, scale: Scale) -> dict[str, dict[str, Runner]]:
    """For a scenario: {app: {variant: runner}}."""
    t = scale.timeout
    if name == "fanout":
        run: Runner = lambda s: fanout(  # noqa: E731
            s, scale.fanout_subscribers, scale.fanout_messages, t, scale.fanout_paced
        )
        return {app: {"": run} for app in APPS}
    if name == "throughput":
        run = lambda s: fanout(s, scale.throughput_subscribers, scale.throughput_messages, t)  # noqa: E731
        return {app: {"": run} for app in APPS}
    if name == "idle":
        run = lambda s: idle(s, scale.idle_streams, t)  # noqa: E731
        return {app: {"": run} for app in APPS}
    if name == "submit":
        noop = b'{"name": "noop", "params": {}}'
        conns, seconds = scale.submit_connections, scale.submit_seconds
        return {
            "baseline": {"": lambda s: submit(s, "/bare", noop, conns, seconds)},
            "sse_tasks": {
                "": lambda s: submit(s, "/tasks", noop, conns, seconds),
                "bare": lambda s: submit(s, "/bare", noop, conns, seconds),
            },
        }
    if name == "latency":
        run = lambda s: latency(s, scale.latency_tasks, t)  # noqa: E731
        return {app: {"": run} for app in APPS}
    raise ValueError(f"unknown scenario {name!r}")


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for key in runs[0]:
        values = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
        merged[key] = statistics.median(values) if len(values) == len(runs) else runs[-1][key]
    merged["runs"] = len(runs)
    return merged


async def run_all(
    scale: Scale, scenarios: tuple[str, ...] = SCENARIOS, repeat: int = 1, pin: bool = True
) -> dict[str, dict[str, dict[str, Any]]]:
    """{scenario: {app or app:variant: median result}}; apps alternate within each repeat."""
    server_cpu = client_cpu_id = None
    if pin and len(os.sched_getaffinity(0)) >= 2:
        server_cpu, client_cpu_id = sorted(os.sched_getaffinity(0))[:2]
        os.sched_setaffinity(0, {client_cpu_id})
    raise_nofile()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for scenario in scenarios:
        runs: dict[str, list[dict[str, Any]]] = {}
        for _ in range(repeat):
            for app, variants in scenario_runners(scenario, scale).items():
                for variant, runner in variants.items():
                    label = f"{app}:{variant}" if variant else app
                    with Server(app, server_cpu) as server:
                        runs.setdefault(label, []).append(await runner(server))
        results[scenario] = {label: median_of(r) for label, r in runs.items()}
        print_scenario(scenario, results[scenario])
    return results


_ROWS: dict[str, list[tuple[str, str, bool]]] = {
    # (metric, label, higher is better)
    "fanout": [
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
        ("answers_per_s", "answers/s", True),
        ("answers_per_cpu_s", "answers per server CPU second", True),
    ],
    "latency": [("p50_ms", "POST→terminal p50 ms", False), ("p99_ms", "POST→terminal p99 ms", False)],
}
_ROWS["throughput"] = _ROWS["fanout"][:4]


def rows(scenario: str, result: dict[str, dict[str, Any]]) -> list[tuple[str, float, float]]:
    """(label, baseline, sse_tasks) for the table."""
    base, ours = result["baseline"], result["sse_tasks"]
    if scenario == "idle":
        return [
            (f"KiB/stream at {key.rsplit('_', 1)[1]}", base[key], ours[key])
            for key in base
            if key.startswith("kib_per_stream_")
        ]
    table = [(label, base[metric], ours[metric]) for metric, label, _ in _ROWS[scenario]]
    if scenario == "submit":
        bare = result["sse_tasks:bare"]
        table.append(("POST /tasks vs /bare, same server", bare["answers_per_s"], ours["answers_per_s"]))
        table.append(("  per server CPU second", bare["answers_per_cpu_s"], ours["answers_per_cpu_s"]))
    return table


def print_scenario(scenario: str, result: dict[str, dict[str, Any]]) -> None:
    print(f"\n== {scenario}")
    print(f"  {'':38} {'baseline':>12} {'sse_tasks':>12} {'ratio':>8}")
    for label, base, ours in rows(scenario, result):
        ratio = ours / base if base else float("nan")
        print(f"  {label:38} {base:12.4g} {ours:12.4g} {ratio:8.2f}x")
    for label, r in result.items():
        cpu = ""
        if "server_cpu_pct" in r:
            cpu = f"server CPU {r['server_cpu_pct']:.0f}%, client CPU {r['client_cpu_pct']:.0f}%"
        extra = ""
        for prefix in ("paced_", ""):
            if f"{prefix}deliveries" in r:
                got, wanted = r[prefix + "deliveries"], r[prefix + "expected"]
                extra += f"; {prefix or 'burst_'}delivered {got:.0f}/{wanted}"
                extra += "" if r[prefix + "complete"] else " (TIMED OUT)"
        print(f"  [{label}] {cpu}{extra}")
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
    packages = [
        "sse-tasks",
        "starlette",
        "sse-starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "anyio",
        "orjson",
    ]
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "versions": versions,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (about a minute in all)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per app and scenario (medians reported)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated: {','.join(SCENARIOS)}")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and client to separate CPUs")
    parser.add_argument("--json", type=Path, help="write environment and results here")
    args = parser.parse_args(argv)
    scenarios = tuple(s.strip() for s in args.only.split(",") if s.strip())
    for scenario in scenarios:
        if scenario not in SCENARIOS:
            parser.error(f"unknown scenario {scenario!r}")
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
    results = asyncio.run(
        run_all(QUICK if args.quick else FULL, scenarios, max(1, args.repeat), not args.no_pin)
    )
    if args.json:
        scale = QUICK if args.quick else FULL
        args.json.write_text(
            json.dumps({"environment": env, "scale": asdict(scale), "results": results}, indent=2)
        )
    return 0
