"""How a stream lives and ends: heartbeats, disconnects, stuck clients, server exit."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import anyio
import anyio.lowlevel
import anyio.to_thread
import httpx
import pytest
from _support import HubFactory, LiveServer, collect, serve_in_thread, submit, task_events, wait_for

from sse_tasks import TaskContext, TaskHub

pytestmark = pytest.mark.anyio


async def test_idle_stream_gets_heartbeats(
    make_hub: HubFactory, live_server: Callable[..., LiveServer]
) -> None:
    server = live_server(make_hub(heartbeat=0.2))
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        started = time.monotonic()
        _, events = await collect(http, "/events", until=lambda e: "ping" in e.comments)
        assert events[-1].comments == ["ping"]
        assert events[-1].event is None and events[-1].data == ""  # a comment, not an event
        # No ping before three quarters of the interval, and not later than it (with slack).
        assert 0.15 <= time.monotonic() - started < 2.0


async def test_heartbeat_zero_sends_no_pings(
    make_hub: HubFactory, live_server: Callable[..., LiveServer]
) -> None:
    server = live_server(make_hub(heartbeat=0))
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        with anyio.move_on_after(0.5):
            await collect(http, "/events", until=lambda e: "ping" in e.comments)
            pytest.fail("a ping was sent with heartbeat=0")


async def test_clients_that_disconnect_free_their_streams(hub: TaskHub, server: LiveServer) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    writers: list[asyncio.StreamWriter] = []

    async def open_stream(i: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        path = "/events" if i % 2 else "/events?name=count"
        writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        await writer.drain()
        assert b"200 OK" in await reader.readuntil(b"\r\n")
        await reader.readuntil(b"retry: 2000\n\n")
        writers.append(writer)

    async with anyio.create_task_group() as group:
        for i in range(300):
            group.start_soon(open_stream, i)
    assert hub.open_streams == 300
    for writer in writers:
        writer.close()
    await wait_for(lambda: hub.open_streams == 0)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        task = await submit(http, "sleep", seconds=0)
        _, events = await collect(http, f"/tasks/{task['id']}/events")
        assert task_events(events)[-1].event == "task.succeeded"


async def test_head_answers_headers_without_a_stream(
    make_hub: HubFactory, live_server: Callable[..., LiveServer]
) -> None:
    hub = make_hub()
    server = live_server(hub)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        response = await http.head("/events")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert hub.open_streams == 0


async def test_a_client_that_stops_reading_is_dropped(
    make_hub: HubFactory, live_server: Callable[..., LiveServer]
) -> None:
    hub = make_hub(send_timeout=0.3)

    @hub.task
    async def big(ctx: TaskContext) -> str:
        return "x" * 2**19

    # Final events are never coalesced: 60 of 512 KiB is far more than socket buffers hold.
    server = live_server(hub)
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as stuck:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.sendall(b"GET /events HTTP/1.1\r\nHost: test\r\n\r\n")
        await wait_for(lambda: hub.open_streams == 1)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            tasks = [await submit(http, "big") for _ in range(60)]
            # Everyone else still sees the tasks through while the stuck stream is cut off.
            for task in tasks:
                _, events = await collect(http, f"/tasks/{task['id']}/events")
                assert events[-1].event == "task.succeeded"
        # Cut by the server while this client still holds its end open.
        await wait_for(lambda: hub.open_streams == 0, timeout=10)


async def test_server_exit_ends_tasks_and_streams(
    make_hub: HubFactory, live_server: Callable[..., LiveServer]
) -> None:
    hub = make_hub(shutdown_grace=0.2)
    server = live_server(hub)  # the hub is told of its server (hub.stop_with)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        task = (await http.post("/tasks", json={"name": "sleep", "params": {"seconds": 30}})).json()
        with anyio.fail_after(10):
            async with (
                http.stream("GET", f"/tasks/{task['id']}/events") as one,
                http.stream("GET", "/events") as every,
            ):
                await wait_for(lambda: hub.open_streams == 2)
                server.server.should_exit = True  # what uvicorn's signal handler sets
                body, everything = (await one.aread()).decode(), (await every.aread()).decode()
            # The server did not wait on the streams: it is gone too.
            await anyio.to_thread.run_sync(server.thread.join, 10)
    assert not server.thread.is_alive()
    assert "event: task.cancelled" in body
    assert "server shutting down" in body
    assert "event: task.cancelled" in everything


async def test_a_hub_served_again_is_not_stopped_by_the_server_before(make_hub: HubFactory) -> None:
    hub = make_hub()
    with serve_in_thread(hub.app, hub):
        pass  # that server has exited: should_exit stays set on it
    with serve_in_thread(hub.app, hub) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            posted = await http.post("/tasks", json={"name": "sleep", "params": {"seconds": 0.2}})
            assert posted.status_code == 202, posted.text
            _, events = await collect(http, f"/tasks/{posted.json()['id']}/events")
    assert events[-1].event == "task.succeeded"


def test_stop_with_needs_a_server_that_says_when_it_exits(make_hub: HubFactory) -> None:
    with pytest.raises(TypeError, match="should_exit"):
        make_hub().stop_with(object())
