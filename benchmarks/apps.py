"""The two servers under test, with the same routes the load client drives.

Both apps serve, under uvicorn with the same flags:

- ``GET /events``: an SSE stream of everything published;
- a publisher, started by a POST, emitting ``n`` messages whose text carries
  ``ts=<time.monotonic_ns()>`` (publish time) so the client can measure latency, then
  an end marker (``event: end``; for sse_tasks the task's ``task.succeeded``);
- ``POST /bare``: a bare Starlette JSON endpoint (decode the body, answer 202 with JSON),
  the yardstick for ``POST /tasks``.

``baseline`` is what people write with sse-starlette: one unbounded ``asyncio.Queue``
per subscriber, the publisher putting each message into every queue, and
``EventSourceResponse`` encoding a dict per event per subscriber.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sse_tasks import TaskContext, TaskHub
from sse_tasks.web.routes import build_app

APPS = ("baseline", "sse_tasks")


def payload(i: int, size: int) -> str:
    """A message of ``size`` characters carrying its publish time."""
    text = f"ts={time.monotonic_ns()} i={i} "
    return text + "x" * max(0, size - len(text))


async def bare(request: Request) -> Response:
    body = await request.json()
    return JSONResponse({"ok": True, "echo": body}, status_code=202)


def baseline_app() -> Starlette:
    subscribers: set[asyncio.Queue[dict[str, str]]] = set()
    publishers: set[asyncio.Task[None]] = set()

    async def events(request: Request) -> Response:
        queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        subscribers.add(queue)

        async def stream() -> AsyncIterator[dict[str, str]]:
            try:
                while True:
                    yield await queue.get()
            finally:
                subscribers.discard(queue)

        return EventSourceResponse(stream(), sep="\n")

    async def run(n: int, interval: float, size: int) -> None:
        for i in range(n):
            message = {"event": "tick", "data": payload(i, size)}
            for queue in list(subscribers):
                queue.put_nowait(message)
            await asyncio.sleep(interval)
        end = {"event": "end", "data": "{}"}
        for queue in list(subscribers):
            queue.put_nowait(end)

    async def publish(request: Request) -> Response:
        body: dict[str, Any] = (await request.json()).get("params", {})
        task = asyncio.create_task(
            run(int(body.get("n", 1)), float(body.get("interval", 0)), int(body.get("size", 100)))
        )
        publishers.add(task)
        task.add_done_callback(publishers.discard)
        return JSONResponse({"id": str(id(task))}, status_code=202)

    return Starlette(
        routes=[
            Route("/events", events),
            Route("/tasks", publish, methods=["POST"]),
            Route("/bare", bare, methods=["POST"]),
        ]
    )


def sse_tasks_app() -> Starlette:
    # Every progress call published (no rate limit) and delivered (no coalescing), so
    # both apps deliver exactly the same number of messages.
    hub = TaskHub(
        progress_interval=0,
        coalesce_after=1 << 30,
        max_queued=1 << 20,
        max_streams=1 << 20,
        history=20_000,
    )

    @hub.task
    async def publish(ctx: TaskContext, n: int = 1, interval: float = 0.0, size: int = 100) -> None:
        for i in range(n):
            # The hub publishes the latest value when it gets to it: a call made before
            # the previous one was picked up replaces it (the first one, always), so
            # the client counts what arrives and stops at the task's terminal event.
            ctx.progress((i + 1) / n, payload(i, size))
            await asyncio.sleep(interval)
        ctx.progress(1.0, "done")  # so the terminal snapshot carries no timestamp

    @hub.task
    async def noop(ctx: TaskContext) -> None:
        return None

    return build_app(hub, routes=[Route("/bare", bare, methods=["POST"])])


def make_app(name: str) -> Starlette:
    if name == "baseline":
        return baseline_app()
    if name == "sse_tasks":
        return sse_tasks_app()
    raise ValueError(f"unknown app {name!r}; choose from {', '.join(APPS)}")
