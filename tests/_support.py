"""Test helpers: a real uvicorn server in a thread, an SSE reader over raw lines."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from sse_tasks import TaskHub


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    """A uvicorn server on a loopback port, running ``app`` in its own thread and loop."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop | None = None

    def call(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the server's loop (e.g. ``hub.shutdown()``) and wait for it."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


#: ``make_hub(**options)`` and ``live_server(hub, app=None)`` (fixtures in conftest.py).
HubFactory = Callable[..., TaskHub]
ServerFactory = Callable[..., LiveServer]


@contextmanager
def serve_in_thread(app: Any, hub: TaskHub | None = None, **config: Any) -> Iterator[LiveServer]:
    """Serve ``app`` on 127.0.0.1; on exit stop the server the way a signal would, which
    the hub (told of its server) sees: it ends its tasks and streams, then the server exits."""
    port = free_port()
    cfg = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **config)
    server = uvicorn.Server(cfg)
    if hub is not None:
        hub.stop_with(server)  # in a thread, uvicorn installs no signal handler to find it by
    live = LiveServer(f"http://127.0.0.1:{port}", server, threading.Thread(target=lambda: None))

    def run() -> None:
        loop = asyncio.new_event_loop()
        live.loop = loop
        loop.run_until_complete(server.serve())
        # Whatever an app left running on the loop is ended before the loop is closed.
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:  # gather() of nothing needs a current loop, which this thread has not
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()

    live.thread = threading.Thread(target=run, daemon=True)
    live.thread.start()
    for _ in range(500):
        if server.started:
            break
        if not live.thread.is_alive():
            raise RuntimeError("server failed to start")
        threading.Event().wait(0.01)
    else:
        raise RuntimeError("server did not start in 5 s")
    try:
        yield live
    finally:
        server.should_exit = True  # what uvicorn's SIGTERM handler sets
        live.thread.join(30)


@dataclass
class SSEEvent:
    id: str | None = None
    event: str | None = None
    data: str = ""
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


async def sse_events(response: httpx.Response) -> AsyncIterator[SSEEvent]:
    """Parse an SSE body strictly by the spec's line rules (comments kept for assertions)."""
    current = SSEEvent()
    data_lines: list[str] = []
    touched = False
    async for line in response.aiter_lines():
        if line == "":
            if touched:
                current.data = "\n".join(data_lines)
                yield current
            current, data_lines, touched = SSEEvent(), [], False
            continue
        if line.startswith(":"):
            current.comments.append(line[1:].strip())
            touched = True
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        touched = True
        if name == "id":
            current.id = value
        elif name == "event":
            current.event = value
        elif name == "data":
            data_lines.append(value)
        elif name == "retry":
            current.retry = int(value)


async def collect(
    client: httpx.AsyncClient,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    until: Any = None,
    limit: int = 10_000,
) -> tuple[httpx.Response, list[SSEEvent]]:
    """Read ``url``'s stream until it ends, ``until(event)`` is true, or ``limit`` events."""
    events: list[SSEEvent] = []
    async with client.stream("GET", url, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            return response, events
        async for event in sse_events(response):
            if event.event is None and event.data == "" and not event.comments and event.retry:
                events.append(event)
                continue
            events.append(event)
            if until is not None and until(event):
                break
            if len(events) >= limit:
                break
    return response, events


def task_events(events: list[SSEEvent]) -> list[SSEEvent]:
    """Only the events that carry a snapshot (``task.*`` but ``task.output``; no retry/ping/reset)."""
    return [e for e in events if e.event and e.event.startswith("task.") and e.event != "task.output"]


def with_routes(hub: TaskHub, routes: Any) -> Any:
    """``hub.app`` at the root behind ``routes`` of another app, run by the hub's lifespan."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    return Starlette(routes=[*routes, Mount("/", hub.app)], lifespan=hub.lifespan)


#: The repository's root (the checkout the tests run from).
ROOT = Path(__file__).resolve().parent.parent
