"""The Python servers under test, with the same routes the load client drives.

Every app serves:

- ``GET /events``: an SSE stream of everything published;
- ``POST /tasks``: a server-side publisher emitting ``n`` messages whose text carries
  ``ts=<time.monotonic_ns()>`` (publish time) so the client can measure latency, then
  an end marker (``event: end``; for sse_tasks the task's ``task.succeeded``);
- ``POST /publish`` (the peers): the request body, a client's message, goes to every
  subscriber as one event. sse_tasks has no such route: its publish is ``POST /tasks``
  of the demo task ``fail`` (three events: ``queued``, ``running``, ``failed``);
- ``POST /bare``: a bare JSON endpoint (decode the body, answer 202 with JSON), the
  yardstick for ``POST /tasks``.

``sse-starlette`` is what people write with Starlette: one unbounded ``asyncio.Queue``
per subscriber, the publisher putting each message into every queue, and
``EventSourceResponse`` encoding a dict per event per subscriber. ``aiohttp-sse`` is
the same design on aiohttp (``sse_response``, its defaults). Both run under the server
their users run them with (uvicorn with uvloop and httptools; ``aiohttp.web`` on uvloop).
nchan is an nginx module (``benchmarks/nchan.py``).
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
from sse_tasks.demo import register_demo_tasks

#: Apps run under uvicorn; ``aiohttp-sse`` runs under ``aiohttp.web`` (``aiohttp_app``).
UVICORN_APPS = ("sse-starlette", "sse_tasks")
APPS = (*UVICORN_APPS, "aiohttp-sse")


def payload(i: int, size: int) -> str:
    """A message of ``size`` characters carrying its publish time."""
    text = f"ts={time.monotonic_ns()} i={i} "
    return text + "x" * max(0, size - len(text))


async def bare(request: Request) -> Response:
    body = await request.json()
    return JSONResponse({"ok": True, "echo": body}, status_code=202)


def sse_starlette_app() -> Starlette:
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

    def broadcast(message: dict[str, str]) -> None:
        for queue in list(subscribers):
            queue.put_nowait(message)

    async def run(n: int, interval: float, size: int) -> None:
        for i in range(n):
            broadcast({"event": "tick", "data": payload(i, size)})
            await asyncio.sleep(interval)
        broadcast({"event": "end", "data": "{}"})

    async def tasks(request: Request) -> Response:
        body: dict[str, Any] = (await request.json()).get("params", {})
        task = asyncio.create_task(
            run(int(body.get("n", 1)), float(body.get("interval", 0)), int(body.get("size", 100)))
        )
        publishers.add(task)
        task.add_done_callback(publishers.discard)
        return JSONResponse({"id": str(id(task))}, status_code=202)

    async def publish(request: Request) -> Response:
        broadcast({"event": "tick", "data": (await request.body()).decode()})
        return JSONResponse({"subscribers": len(subscribers)}, status_code=202)

    return Starlette(
        routes=[
            Route("/events", events),
            Route("/tasks", tasks, methods=["POST"]),
            Route("/publish", publish, methods=["POST"]),
            Route("/bare", bare, methods=["POST"]),
        ]
    )


def sse_tasks_app(broker: str = "memory://") -> Starlette:
    # Every progress call published (no rate limit) and delivered (no coalescing), so
    # every app delivers the same messages.
    hub = TaskHub(
        broker,
        progress_interval=0,
        coalesce_after=1 << 30,
        max_queued=1 << 20,
        max_streams=1 << 20,
        history=20_000,
    )
    register_demo_tasks(hub)  # ``fail``: the client publish of the closed and light scenarios

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

    # The hub's own app (what ``sse-tasks serve`` serves) with the bare endpoint beside it.
    return hub.app_with([Route("/bare", bare, methods=["POST"])])


def make_app(name: str, broker: str = "memory://") -> Starlette:
    if name == "sse-starlette":
        return sse_starlette_app()
    if name == "sse_tasks":
        return sse_tasks_app(broker)
    raise ValueError(f"unknown app {name!r}; choose from {', '.join(UVICORN_APPS)}")
