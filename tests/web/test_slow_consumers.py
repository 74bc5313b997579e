"""A client that stops reading must not slow the task, other subscribers or memory."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from _support import LiveServer, collect, task_events

from sse_tasks import TaskContext, TaskHub

pytestmark = pytest.mark.anyio

STEPS = 5_000
PADDING = "x" * 1500  # ~9 MB of events: more than loopback socket buffers hold (~4 MB)


async def test_stalled_reader_does_not_block_and_still_gets_state_changes(
    make_hub: Any, live_server: Callable[..., LiveServer]
) -> None:
    # No send timeout: on a slow machine the stalled stream must not be dropped before
    # it reads again (dropping stuck clients is tested in test_stream_lifecycle).
    hub: TaskHub = make_hub(progress_interval=0, history=50_000, send_timeout=None)

    @hub.task
    async def spam(ctx: TaskContext) -> str:
        for i in range(STEPS):
            ctx.progress((i + 1) / STEPS, PADDING)
            await anyio.lowlevel.checkpoint()
        return "done"

    server = live_server(hub)
    port = int(server.url.rsplit(":", 1)[1])

    # A raw socket with a tiny receive buffer that reads the headers, then nothing.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
        await writer.drain()
        await reader.readuntil(b"retry: 2000\n\n")

        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            task = (await http.post("/tasks", json={"name": "spam"})).json()
            # Another subscriber sees the whole task through while the stalled one is stuck.
            _, events = await collect(
                http, f"/tasks/{task['id']}/events", until=lambda e: e.event == "task.succeeded"
            )
        assert task_events(events)[-1].event == "task.succeeded"
        published = hub.broker.log.head

        # Now the stalled client reads: it gets every state change, in order, with its
        # backlog of progress coalesced rather than buffered for it.
        seen: list[str] = []
        progress = 0
        last_fraction = -1.0
        with anyio.fail_after(60):
            while "task.succeeded" not in seen:
                line = (await reader.readline()).decode()
                assert line, "stream closed early"
                if line.startswith("event: "):
                    kind = line[len("event: ") :].strip()
                    if kind == "task.progress":
                        progress += 1
                    else:
                        seen.append(kind)
                elif line.startswith("data: ") and '"progress":' in line:
                    fraction = float(line.split('"progress":', 1)[1].split(",", 1)[0].replace("null", "-1"))
                    assert fraction >= last_fraction
                    last_fraction = fraction
            # The terminal event's snapshot carries the final progress (the last progress
            # event may be older: a slower broker lets the task outrun its publisher).
            data = (await reader.readline()).decode()
            assert data.startswith("data: ")
            last_fraction = float(data.split('"progress":', 1)[1].split(",", 1)[0])
    finally:
        writer.close()
    assert seen == ["task.queued", "task.running", "task.succeeded"]
    assert progress < published - 3  # coalesced: fewer progress events than were published
    assert last_fraction == 1.0


async def stalled_reader(port: int, url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection with a tiny receive buffer, on ``url``'s stream, that has read its
    first frame and reads nothing more until the test does."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 22)
    writer.write(f"GET {url} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    await writer.drain()
    await reader.readuntil(b"retry: 2000\n\n")
    return reader, writer


async def published_progress(http: httpx.AsyncClient) -> float:
    """Progress events that entered the server's event log so far (from its metrics)."""
    text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith('sse_tasks_events_published_total{type="task.progress"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("path", ["task", "/events"])
async def test_a_stream_that_falls_behind_the_history_is_resynced(
    make_hub: Any, live_server: Callable[..., LiveServer], path: str
) -> None:
    # A tiny history and big events (a message is cut to 4,096 characters: metadata
    # carries the bulk): the stalled stream's position is trimmed away.
    hub: TaskHub = make_hub(
        progress_interval=0, history=16, send_timeout=None, metrics=True, max_metadata_bytes=140_000
    )
    release, enough = threading.Event(), threading.Event()

    @hub.task
    async def burst(ctx: TaskContext) -> str:
        while not release.is_set():
            await anyio.sleep(0.01)
        for i in range(5000):  # until far more events than the history holds are published
            if enough.is_set():
                break
            ctx.metadata(pad=f"{i}" + "y" * 131072)
            ctx.progress((i + 1) / 5000, "y" * 4096)
            await anyio.sleep(0.002)
        return "done"

    server = live_server(hub)
    port = int(server.url.rsplit(":", 1)[1])
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        task = (await http.post("/tasks", json={"name": "burst"})).json()
        url = f"/tasks/{task['id']}/events" if path == "task" else "/events"
        reader, writer = await stalled_reader(port, url)
        try:
            release.set()
            with anyio.fail_after(60):
                while await published_progress(http) < 200:  # far past the history: the stall is trimmed
                    await anyio.sleep(0.05)
            enough.set()
            _, events = await collect(http, f"/tasks/{task['id']}/events")
            assert task_events(events)[-1].event == "task.succeeded"
            kinds: list[str] = []
            with anyio.fail_after(60):
                while "task.succeeded" not in kinds:
                    line = (await reader.readline()).decode()
                    assert line, "stream closed early"
                    if line.startswith("event: "):
                        kinds.append(line[len("event: ") :].strip())
        finally:
            writer.close()
    # It fell behind (perhaps more than once, the task kept going): each time a reset,
    # then the task's current snapshot, and in the end the terminal event.
    assert "reset" in kinds
    assert kinds[-1] == "task.succeeded"
    assert all(kinds[i + 1].startswith("task.") for i, kind in enumerate(kinds) if kind == "reset")


async def test_a_stalled_follower_of_output_gets_it_all_in_order_or_a_reset_and_all(
    make_hub: Any, live_server: Callable[..., LiveServer]
) -> None:
    # 400 chunks of 64 KiB (26 MB, more than socket buffers hold) through a history of 16
    # events: the stalled stream falls behind.
    chunks, size = 400, 65536
    hub: TaskHub = make_hub(history=16, send_timeout=None, max_output_bytes=chunks * size + 1)
    release = anyio.Event()

    @hub.task
    async def write(ctx: TaskContext) -> None:
        await release.wait()
        for i in range(chunks):
            ctx.output(f"{i:05d}" + "z" * (size - 5))
            await anyio.sleep(0.001)

    server = live_server(hub)
    port = int(server.url.rsplit(":", 1)[1])
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        task = (await http.post("/tasks", json={"name": "write"})).json()
        reader, writer = await stalled_reader(port, f"/tasks/{task['id']}/events")
        try:
            release.set()
            # Another follower sees the whole task through while this one is stuck.
            _, events = await collect(http, f"/tasks/{task['id']}/events")
            assert task_events(events)[-1].event == "task.succeeded"
            held: list[int] = []  # output seqs this client holds (dropped on reset)
            resets = 0
            kind = ""
            with anyio.fail_after(60):
                while kind != "task.succeeded":
                    line = (await reader.readline()).decode()
                    assert line, "stream closed early"
                    if line.startswith("event: "):
                        kind = line[len("event: ") :].strip()
                        if kind == "reset":
                            resets += 1
                            held.clear()
                    elif line.startswith("data: ") and kind == "task.output":
                        held.append(int(line.split('"seq":', 1)[1].split(",", 1)[0]))
        finally:
            writer.close()
    assert held == list(range(chunks))  # in order, none missing, none twice: no silent gap
    assert resets >= 1
