"""The Python servers under test: ``python -m benchmarks.apps APP PORT [--cpu N] [--broker URL]``.

Every app serves the routes the load client drives:

- ``GET /events``: an SSE stream of everything published;
- ``POST /tasks``: a server-side publisher emitting ``n`` messages whose text carries
  ``ts=<time.monotonic_ns()>`` (publish time) so the client can measure latency, then
  an end marker (``event: end``; for sse_tasks the task's ``task.succeeded``);
- ``POST /publish`` (the peers): the request body, a client's message, goes to every
  subscriber as one event. sse_tasks has no such route: its publish is ``POST /tasks``
  of the demo task ``fail`` (three events: ``queued``, ``running``, ``failed``);
- ``POST /bare``: a bare JSON endpoint (decode the body, answer 202 with JSON), the
  yardstick for ``POST /tasks``.

``sse_tasks`` is the hub's own app (what ``sse-tasks serve`` serves) with ``/bare``
beside it; ``--output-bound`` raises its per-task output bound and history for the
output fan-out. ``sse-starlette`` is what people write with Starlette: one unbounded
``asyncio.Queue`` per subscriber, the publisher putting each message into every queue,
and ``EventSourceResponse`` encoding a dict per event per subscriber. ``aiohttp-sse`` is
the same design on aiohttp (``sse_response`` with its defaults: a ping task per stream,
the loop its README shows). Each runs under the server its users run it with: uvicorn
with uvloop and httptools, no access log; ``aiohttp.web`` on uvloop. nchan is an nginx
module (``benchmarks/systems.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sse_tasks import TaskContext, TaskHub
from sse_tasks.demo import register_demo_tasks

from .harness import raise_nofile

APPS = ("sse_tasks", "sse-starlette", "aiohttp-sse")
M = TypeVar("M")


def payload(i: int, size: int) -> str:
    """A message of ``size`` characters carrying its publish time."""
    text = f"ts={time.monotonic_ns()} i={i} "
    return text + "x" * max(0, size - len(text))


class Broadcast(Generic[M]):
    """The peers' design: one unbounded queue per subscriber, each message (made once by
    ``message(event, data)``) put into every queue."""

    def __init__(self, message: Callable[[str, str], M]) -> None:
        self.message = message
        self.subscribers: set[asyncio.Queue[M]] = set()
        self.publishers: set[asyncio.Task[None]] = set()

    def send(self, event: str, data: str) -> None:
        message = self.message(event, data)
        for queue in list(self.subscribers):
            queue.put_nowait(message)

    async def _run(self, n: int, interval: float, size: int) -> None:
        for i in range(n):
            self.send("tick", payload(i, size))
            await asyncio.sleep(interval)
        self.send("end", "{}")

    def start(self, body: dict[str, Any]) -> str:
        """Start the server-side publisher of a ``POST /tasks`` body; its id."""
        params = body.get("params", {})
        task = asyncio.create_task(
            self._run(int(params.get("n", 1)), float(params.get("interval", 0)), int(params.get("size", 100)))
        )
        self.publishers.add(task)
        task.add_done_callback(self.publishers.discard)
        return str(id(task))


async def bare(request: Request) -> Response:
    body = await request.json()
    return JSONResponse({"ok": True, "echo": body}, status_code=202)


def sse_starlette_app() -> Starlette:
    hub: Broadcast[dict[str, str]] = Broadcast(lambda event, data: {"event": event, "data": data})

    async def events(request: Request) -> Response:
        queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        hub.subscribers.add(queue)

        async def stream() -> AsyncIterator[dict[str, str]]:
            try:
                while True:
                    yield await queue.get()
            finally:
                hub.subscribers.discard(queue)

        return EventSourceResponse(stream(), sep="\n")

    async def tasks(request: Request) -> Response:
        return JSONResponse({"id": hub.start(await request.json())}, status_code=202)

    async def publish(request: Request) -> Response:
        hub.send("tick", (await request.body()).decode())
        return JSONResponse({"subscribers": len(hub.subscribers)}, status_code=202)

    return Starlette(
        routes=[
            Route("/events", events),
            Route("/tasks", tasks, methods=["POST"]),
            Route("/publish", publish, methods=["POST"]),
            Route("/bare", bare, methods=["POST"]),
        ]
    )


def sse_tasks_app(broker: str = "memory://", output_bound: bool = False) -> Starlette:
    # Every progress call published (no rate limit) and delivered (no coalescing), so
    # every app delivers the same messages.
    bounds: dict[str, Any] = (
        {"max_output_chunks": 1 << 22, "max_output_bytes": 1 << 28} if output_bound else {}
    )
    hub = TaskHub(
        broker,
        progress_interval=0,
        coalesce_after=1 << 30,
        max_queued=1 << 20,
        max_streams=1 << 20,
        history=50_000 if output_bound else 20_000,
        **bounds,
    )
    register_demo_tasks(hub)  # ``fail`` publishes in the closed loop; ``generate`` writes output

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

    return hub.app_with([Route("/bare", bare, methods=["POST"])])


def serve_aiohttp(port: int) -> None:
    """The aiohttp + aiohttp-sse app on ``aiohttp.web`` (imported only here: optional)."""
    from aiohttp import web
    from aiohttp_sse import sse_response

    hub: Broadcast[tuple[str, str]] = Broadcast(lambda event, data: (event, data))

    async def events(request: web.Request) -> web.StreamResponse:
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        hub.subscribers.add(queue)
        try:
            async with sse_response(request, sep="\n") as resp:
                while resp.is_connected():
                    event, data = await queue.get()
                    await resp.send(data, event=event)
        finally:
            hub.subscribers.discard(queue)
        return resp

    async def tasks(request: web.Request) -> web.Response:
        return web.json_response({"id": hub.start(await request.json())}, status=202)

    async def publish(request: web.Request) -> web.Response:
        hub.send("tick", await request.text())
        return web.json_response({"subscribers": len(hub.subscribers)}, status=202)

    async def bare_(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "echo": await request.json()}, status=202, dumps=json.dumps)

    app = web.Application()
    app.router.add_get("/events", events)
    app.router.add_post("/tasks", tasks)
    app.router.add_post("/publish", publish)
    app.router.add_post("/bare", bare_)
    import uvloop

    uvloop.install()
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        backlog=4096,
        access_log=None,
        print=None,
        shutdown_timeout=3,
        handle_signals=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.apps", description=__doc__.split("\n\n")[0])
    parser.add_argument("app", choices=APPS)
    parser.add_argument("port", type=int)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    parser.add_argument("--broker", default="memory://", help="sse_tasks only")
    parser.add_argument(
        "--output-bound", action="store_true", help="sse_tasks only: room for 4M output chunks"
    )
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    raise_nofile()
    if args.app == "aiohttp-sse":
        serve_aiohttp(args.port)
        return
    import uvicorn

    app = (
        sse_starlette_app() if args.app == "sse-starlette" else sse_tasks_app(args.broker, args.output_bound)
    )
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_graceful_shutdown=3,
    )


if __name__ == "__main__":
    main()
