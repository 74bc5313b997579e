"""SSEStream and StreamMonitor: heartbeats for quiet streams, stuck sends cut."""

from __future__ import annotations

import threading
from collections.abc import Callable

import anyio
import httpx
import pytest
from _support import LiveServer, collect

from sse_tasks import TaskContext, TaskHub
from sse_tasks.web.sse import StreamMonitor

pytestmark = pytest.mark.anyio

HubFactory = Callable[..., TaskHub]


class FakeStream:
    """What the monitor reads and calls on a stream."""

    def __init__(self, last_sent: float, sending_since: float | None = None) -> None:
        self.last_sent = last_sent
        self.sending_since = sending_since
        self.ping_due = False
        self.aborted: bool | None = None

    def abort(self, *, timed_out: bool = False) -> None:
        self.aborted = timed_out


def monitor_with(hub: TaskHub, *streams: FakeStream) -> StreamMonitor:
    settings = hub.settings
    monitor = StreamMonitor(settings.heartbeat, settings.send_timeout, hub.broker.log.wake)
    monitor.streams.update(streams)  # type: ignore[arg-type]
    return monitor


def test_quiet_streams_are_marked_for_a_heartbeat_together() -> None:
    hub = TaskHub(heartbeat=10.0, send_timeout=None)
    quiet = FakeStream(last_sent=100.0)  # 10 s quiet: due
    nearly = FakeStream(last_sent=102.0)  # 8 s quiet: more than 3/4 of the interval, joins in
    busy = FakeStream(last_sent=109.0)  # sent 1 s ago
    monitor_with(hub, quiet, nearly, busy).check(now=110.0)
    assert (quiet.ping_due, nearly.ping_due, busy.ping_due) == (True, True, False)


def test_no_heartbeat_while_every_stream_sent_recently() -> None:
    hub = TaskHub(heartbeat=10.0, send_timeout=None)
    streams = [FakeStream(last_sent=102.0), FakeStream(last_sent=105.0)]
    monitor_with(hub, *streams).check(now=110.0)
    assert not any(s.ping_due for s in streams)


def test_a_send_blocked_past_the_timeout_is_cut() -> None:
    hub = TaskHub(heartbeat=0, send_timeout=5.0)
    stuck = FakeStream(last_sent=0.0, sending_since=104.0)
    slow = FakeStream(last_sent=0.0, sending_since=107.0)
    idle = FakeStream(last_sent=0.0)
    monitor_with(hub, stuck, slow, idle).check(now=110.0)
    assert (stuck.aborted, slow.aborted, idle.aborted) == (True, None, None)
    assert not any(s.ping_due for s in (stuck, slow, idle))  # heartbeat=0: never


def test_the_tick_follows_the_shortest_period() -> None:
    def wake() -> None: ...

    assert StreamMonitor(8.0, 30.0, wake).tick == 2.0
    assert StreamMonitor(0, 2.0, wake).tick == 0.5
    assert StreamMonitor(0, None, wake).tick == float("inf")


async def test_a_filtered_stream_gets_heartbeats_while_other_tasks_keep_the_hub_busy(
    make_hub: HubFactory, live_server: Callable[..., LiveServer]
) -> None:
    # Every wake-up brings events, none of them for this stream: it must still be pinged.
    hub = make_hub(heartbeat=0.2, progress_interval=0)
    stop = threading.Event()

    @hub.task
    async def chatter(ctx: TaskContext) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            ctx.progress(None, f"tick {i}")
            await anyio.sleep(0.005)

    server = live_server(hub)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        busy = (await http.post("/tasks", json={"name": "chatter"})).json()
        try:
            with anyio.fail_after(10):
                _, events = await collect(http, "/events?name=sleep", until=lambda e: "ping" in e.comments)
            assert events[-1].comments == ["ping"]
            assert not [e for e in events if e.event]  # nothing of the busy task leaked in
        finally:
            stop.set()
            await http.delete(f"/tasks/{busy['id']}")
