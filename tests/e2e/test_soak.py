"""Soak: some 160 clients connecting, dropping, resuming, submitting and cancelling at once.

Runs ``sse-tasks serve`` in its own process (so its RSS is its own) for about
``SSE_TASKS_SOAK_SECONDS`` (default 6) per broker. Afterwards every submitted task
has its final state, every follower that stayed saw it, the server's open streams are
back to 0 and its RSS near where it was after warming up. Skip locally with
``-m "not soak"``.
"""

from __future__ import annotations

import json
import os
import random
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
from _support import free_port, sse_events
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.soak, pytest.mark.anyio, pytest.mark.timeout(300), pytest.mark.xdist_group("soak")]

SECONDS = float(os.environ.get("SSE_TASKS_SOAK_SECONDS", "6"))
# Enough work to soak, few enough 3 s sleeps that the server's 16 slots drain them in seconds.
MAX_TASKS = 120
TERMINAL = {"task.succeeded": "succeeded", "task.failed": "failed", "task.cancelled": "cancelled"}


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]

    def rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")


@pytest.fixture
def soak_server(broker_url: str) -> Iterator[Server]:
    port = free_port()
    command = [
        sys.executable, "-m", "sse_tasks", "serve", "--port", str(port), "--broker", broker_url,
        "--metrics", "--max-streams-per-client", "100000", "--max-stream-lifetime", "5",
        "--heartbeat", "2", "--log-level", "warning",
    ]  # fmt: skip
    # Settings other tests' in-process `serve` calls left in os.environ must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_TASKS_")}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/tasks", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        process.kill()
        raise RuntimeError("sse-tasks serve did not start")
    yield Server(url, process)
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@dataclass
class Soak:
    submitted: list[str] = field(default_factory=list)
    followed: list[tuple[str, str]] = field(default_factory=list)  # (task id, terminal state seen)
    connects: int = 0
    drops: int = 0
    resumes: int = 0
    cancels: int = 0
    refused: int = 0
    errors: int = 0  # transport errors (a loaded 2-core machine): retried like a real client
    latencies: list[float] = field(default_factory=list)  # seconds per POST /tasks
    stop: anyio.Event = field(default_factory=anyio.Event)  # no new work
    done: anyio.Event = field(default_factory=anyio.Event)  # every task has its final state

    def enough(self) -> bool:
        """The load really happened: a loaded machine may need longer than SECONDS for it."""
        submitted = min(2 * SECONDS, MAX_TASKS // 2)  # (the submitters stop at MAX_TASKS)
        return len(self.submitted) > submitted and len(self.followed) > SECONDS and self.drops > 5 * SECONDS

    def watched_all(self, seen: dict[str, str]) -> bool:
        return self.done.is_set() and all(i in seen for i in self.submitted)


def state_of(event: Any) -> tuple[str, str] | None:
    """(task id, terminal state) for a terminal event or terminal snapshot."""
    if event.event and event.event.startswith("task."):
        data = json.loads(event.data)
        if data["state"] in ("succeeded", "failed", "cancelled"):
            return data["id"], data["state"]
    return None


async def submitter(http: httpx.AsyncClient, soak: Soak) -> None:
    choices = [
        {"name": "sleep", "params": {"seconds": 0.2}},
        {"name": "sleep", "params": {"seconds": 3}},
        {"name": "count", "params": {"n": 10, "interval": 0.05}},
        {"name": "fail", "params": {"message": "soak"}},
    ]
    while not soak.stop.is_set() and len(soak.submitted) < MAX_TASKS:
        try:
            sent = time.monotonic()
            response = await http.post("/tasks", json=random.choice(choices))
            soak.latencies.append(time.monotonic() - sent)
            if response.status_code == 202:
                task_id = response.json()["id"]
                soak.submitted.append(task_id)
                if random.random() < 0.2:
                    await anyio.sleep(random.uniform(0, 0.5))
                    if (await http.delete(f"/tasks/{task_id}")).status_code == 202:
                        soak.cancels += 1
            else:
                soak.refused += 1
        except httpx.TransportError:
            soak.errors += 1
        await anyio.sleep(random.uniform(0.05, 0.15))


async def follow(
    http: httpx.AsyncClient,
    url: str,
    soak: Soak,
    until_terminal: str | None,
    opened: anyio.Event | None = None,
) -> dict[str, str]:
    """Follow like EventSource (resume with Last-Event-ID) until the task ends or the soak
    does; ``opened`` is set once the first stream is open (the server follows from there)."""
    seen: dict[str, str] = {}
    last_id: str | None = None
    while True:
        headers = {"last-event-id": last_id} if last_id else {}
        soak.connects += 1
        try:
            async with http.stream("GET", url, headers=headers) as response:
                if response.status_code == 204:
                    return seen
                if response.status_code != 200:
                    soak.refused += 1
                    await anyio.sleep(0.5)
                    continue
                if opened is not None:
                    opened.set()
                async for event in sse_events(response):
                    if event.id:
                        last_id = event.id
                    found = state_of(event)
                    if found:
                        seen[found[0]] = found[1]
                        if found[0] == until_terminal:
                            return seen
                    if until_terminal is None and soak.watched_all(seen):
                        return seen
        except httpx.TransportError:
            soak.errors += 1
            await anyio.sleep(0.5)
        if until_terminal is None and soak.done.is_set() and soak.watched_all(seen):
            return seen
        soak.resumes += 1


async def follower(http: httpx.AsyncClient, soak: Soak) -> None:
    while not soak.stop.is_set():
        if not soak.submitted:
            await anyio.sleep(0.1)
            continue
        task_id = random.choice(soak.submitted[-20:])
        with anyio.move_on_after(30):
            seen = await follow(http, f"/tasks/{task_id}/events", soak, task_id)
            if task_id in seen:
                soak.followed.append((task_id, seen[task_id]))
        await anyio.sleep(random.uniform(1.0, 2.0))


async def dropper(http: httpx.AsyncClient, soak: Soak) -> None:
    last_id: str | None = None
    while not soak.stop.is_set():
        url = (
            "/events"
            if random.random() < 0.7 or not soak.submitted
            else f"/tasks/{soak.submitted[-1]}/events"
        )
        headers = {"last-event-id": last_id} if last_id and url == "/events" else {}
        soak.connects += 1
        try:
            async with http.stream("GET", url, headers=headers) as response:
                if response.status_code == 200:
                    wanted = random.randint(0, 4)
                    with anyio.move_on_after(1):
                        async for event in sse_events(response):
                            last_id = event.id or last_id
                            wanted -= 1
                            if wanted < 0:
                                break
        except httpx.TransportError:
            soak.errors += 1
        soak.drops += 1  # leaving the block closes the connection mid-stream
        await anyio.sleep(random.uniform(0.5, 1.5))


async def watcher(
    http: httpx.AsyncClient, soak: Soak, results: list[dict[str, str]], opened: anyio.Event
) -> None:
    seen: dict[str, str] = {}
    results.append(seen)  # a watcher cut off by the deadline has seen nothing
    seen.update(await follow(http, "/events", soak, None, opened))


TLS = ssl.create_default_context()  # made once: building one per client costs ~20 ms of CPU


async def client_of(url: str, worker: Callable[..., Awaitable[None]], *args: Any) -> None:
    """Run ``worker`` with a client of its own: one shared pool of hundreds of
    connections makes httpx itself the bottleneck."""
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(30, connect=10), verify=TLS) as http:
        await worker(http, *args)


async def get(http: httpx.AsyncClient, url: str, **kwargs: Any) -> httpx.Response:
    """A GET retried once on a kept-alive connection the server closed as it was reused
    (uvicorn ends idle connections after 5 s), as an HTTP client does for idempotent requests."""
    try:
        return await http.get(url, **kwargs)
    except httpx.RemoteProtocolError:
        return await http.get(url, **kwargs)


async def metrics(http: httpx.AsyncClient) -> dict[str, float]:
    text = (await get(http, "/metrics")).text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


async def test_soak(soak_server: Server) -> None:
    url = soak_server.url
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(30, connect=10)) as http:
        # Warm up (imports, first tasks and streams), then take the baseline.
        warm = Soak()
        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(client_of, url, submitter, warm)
                group.start_soon(client_of, url, dropper, warm)
            await anyio.sleep(3)
            warm.stop.set()
        rss_before = soak_server.rss_mb()

        soak = Soak()
        watched: list[dict[str, str]] = []
        started = time.monotonic()
        async with anyio.create_task_group() as clients:
            subscribed = [anyio.Event() for _ in range(10)]
            for opened in subscribed:
                clients.start_soon(client_of, url, watcher, soak, watched, opened)
            with anyio.fail_after(60):  # every watcher follows before the first task
                for opened in subscribed:
                    await opened.wait()
            for _ in range(10):
                clients.start_soon(client_of, url, submitter, soak)
            for _ in range(80):
                clients.start_soon(client_of, url, follower, soak)
            for _ in range(60):
                clients.start_soon(client_of, url, dropper, soak)
            await anyio.sleep(SECONDS)
            with anyio.fail_after(90):
                while not soak.enough():
                    await anyio.sleep(0.2)
            soak.stop.set()  # submitters, followers and droppers stop; watchers go on
            with anyio.fail_after(60):
                while True:
                    active = [
                        (await get(http, "/tasks", params={"state": s})).json()["tasks"]
                        for s in ("queued", "running")
                    ]
                    if not any(active):
                        break
                    await anyio.sleep(0.5)
            soak.done.set()  # watchers end once they have seen every final state
            # Bounded: a watcher that never sees a final state fails the checks below.
            clients.cancel_scope.deadline = anyio.current_time() + 60
        elapsed = time.monotonic() - started

        final = {}
        for task_id in soak.submitted:
            response = await get(http, f"/tasks/{task_id}")
            assert response.status_code == 200, response.text
            final[task_id] = response.json()["state"]
        with anyio.fail_after(20):
            while (numbers := await metrics(http))["sse_tasks_open_streams"] != 0:
                await anyio.sleep(0.2)
    rss_after = soak_server.rss_mb()

    summary = (
        f"soak {elapsed:.0f}s: {len(soak.submitted)} tasks ({soak.cancels} cancelled by clients), "
        f"{soak.connects} stream connects, {soak.drops} dropped mid-stream, {soak.resumes} resumes, "
        f"{soak.refused} refused, {soak.errors} transport errors, {len(soak.followed)} follows to the end; "
        f"POST /tasks median {sorted(soak.latencies)[len(soak.latencies) // 2] * 1000:.0f} ms, "
        f"max {max(soak.latencies) * 1000:.0f} ms; "
        f"events delivered {numbers['sse_tasks_events_delivered_total']:.0f}, "
        f"resets {numbers['sse_tasks_resets_sent_total']:.0f}; "
        f"server RSS {rss_before:.1f} MB after warm-up -> {rss_after:.1f} MB after; open streams 0"
    )
    print(summary)  # the numbers to quote (run with -s)
    assert soak.enough(), summary
    assert soak.errors <= max(10, soak.connects // 20), summary
    assert set(final.values()) <= {"succeeded", "failed", "cancelled"}
    for task_id, seen in soak.followed:
        assert seen == final[task_id], (task_id, seen, final[task_id])
    assert len(watched) == 10
    for seen_by_watcher in watched:
        missing = [i for i in soak.submitted if seen_by_watcher.get(i) != final[i]]
        assert not missing, f"a watcher missed {len(missing)} final states"
    assert rss_after - rss_before < 64, summary
