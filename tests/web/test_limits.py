"""Limits: stream caps, stream rotation, slow bodies, the end of streams at shutdown
(clients that stop reading: test_stream_lifecycle.py)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from _support import HubFactory, LiveServer, collect, sse_events, submit, task_events, wait_for

from sse_tasks import TaskHub

pytestmark = pytest.mark.anyio


async def test_stream_caps_answer_503_with_retry_after(
    make_hub: HubFactory, live_server: Callable[..., LiveServer]
) -> None:
    hub = make_hub(max_streams=3, max_streams_per_client=2)
    server = live_server(hub)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        async with http.stream("GET", "/events") as one, http.stream("GET", "/events") as two:
            assert one.status_code == two.status_code == 200
            await wait_for(lambda: hub.open_streams == 2)
            third = await http.get("/events")
            assert third.status_code == 503
            assert third.json()["error"]["code"] == "too_many_streams_per_client"
            assert int(third.headers["retry-after"]) > 0
            task = await submit(http, "sleep", seconds=0)
            per_task = await http.get(f"/tasks/{task['id']}/events")
            assert per_task.status_code == 503  # every stream counts
            # Another address is not limited by this one's streams, only by the global cap.
            hub.client_streams.limit = 10
            async with http.stream("GET", "/events") as three:
                assert three.status_code == 200
                await wait_for(lambda: hub.open_streams == 3)
                full = await http.get("/events")
                assert full.status_code == 503 and full.json()["error"]["code"] == "too_many_streams"
                assert "retry-after" in full.headers
        await wait_for(lambda: hub.open_streams == 0 and len(hub.client_streams) == 0)
        hub.client_streams.limit = 2
        async with http.stream("GET", "/events") as again:
            assert again.status_code == 200  # slots are given back when streams end
    assert hub.stats.rejected["too_many_streams_per_client"] == 2
    assert hub.stats.rejected["too_many_streams"] == 1


async def follow_with_resume(
    http: httpx.AsyncClient, url: str, done: Callable[[Any], bool], max_connections: int = 100
) -> tuple[list[Any], int]:
    """Follow ``url`` like EventSource: reconnect with Last-Event-ID whenever the stream ends."""
    events: list[Any] = []
    last_id: str | None = None
    for connection in range(1, max_connections + 1):
        headers = {"last-event-id": last_id} if last_id else {}
        response, got = await collect(http, url, headers=headers, until=done)
        if response.status_code == 204:
            return events, connection
        assert response.status_code == 200
        assert not [e for e in got if e.event == "reset"], "a rotation must resume, not resync"
        for event in got:
            if event.id:
                last_id = event.id
        events.extend(task_events(got))
        if events and done(events[-1]):
            return events, connection
    raise AssertionError("the stream never finished")


async def test_streams_rotate_at_their_lifetime_and_lose_nothing(
    make_hub: HubFactory, live_server: Callable[..., LiveServer]
) -> None:
    hub = make_hub(max_stream_lifetime=0.3, progress_interval=0)
    server = live_server(hub)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        cursor = (await http.get("/tasks")).json()["cursor"]
        task = await submit(http, "count", n=40, interval=0.03)

        def finished(event: Any) -> bool:
            return event.event == "task.succeeded"

        async with anyio.create_task_group() as group:
            results: dict[str, tuple[list[Any], int]] = {}

            async def run(key: str, url: str) -> None:
                results[key] = await follow_with_resume(http, url, finished)

            group.start_soon(run, "task", f"/tasks/{task['id']}/events")
            group.start_soon(run, "global", f"/events?last_event_id={cursor}")
        # The whole history, replayed at once (no rotation within it), is the reference.
        _, replay = await collect(http, f"/events?last_event_id={cursor}", until=finished)
        reference = [e.id for e in task_events(replay)]
        for key, (events, connections) in results.items():
            assert connections >= 3, key  # the task ran ~1.2 s: the stream was rotated
            ids = [e.id for e in events]
            if key == "global":
                assert ids == reference
            else:  # the per-task stream starts from a snapshot, then every later event
                assert ids == reference[reference.index(ids[0]) :]
    await wait_for(lambda: hub.open_streams == 0)


async def test_a_body_that_never_arrives_gets_408(
    make_hub: HubFactory, live_server: Callable[..., LiveServer]
) -> None:
    hub = make_hub(body_timeout=0.3)
    server = live_server(hub)
    port = int(server.url.rsplit(":", 1)[1])
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n" + b'{"name": "sle'
        )
        answer = b""
        while b"request_timeout" not in answer and len(answer) < 4096:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"request_timeout" in answer
    assert time.monotonic() - started < 3
    assert hub.stats.tasks["queued"] == 0


async def test_streams_end_promptly_when_the_hub_shuts_down(
    hub: TaskHub, server: LiveServer, http: httpx.AsyncClient
) -> None:
    async with http.stream("GET", "/events") as stream:
        await wait_for(lambda: hub.open_streams == 1)
        with anyio.fail_after(10):
            await anyio.to_thread.run_sync(server.call, hub.shutdown())
            async for _ in sse_events(stream):
                pass
    assert hub.open_streams == 0
