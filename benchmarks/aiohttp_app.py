"""The aiohttp + aiohttp-sse app: the sse-starlette app's design on aiohttp.

One unbounded ``asyncio.Queue`` per subscriber and ``sse_response`` with its defaults
(a ping task per stream every 15 s), the loop its README shows (``while
resp.is_connected()``). Same routes as ``benchmarks.apps`` (see there). Imported only
when aiohttp and aiohttp-sse are installed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from aiohttp_sse import sse_response

from .apps import payload


def make_app() -> web.Application:
    subscribers: set[asyncio.Queue[tuple[str, str]]] = set()
    publishers: set[asyncio.Task[None]] = set()

    async def events(request: web.Request) -> web.StreamResponse:
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        subscribers.add(queue)
        try:
            async with sse_response(request, sep="\n") as resp:
                while resp.is_connected():
                    event, data = await queue.get()
                    await resp.send(data, event=event)
        finally:
            subscribers.discard(queue)
        return resp

    def broadcast(message: tuple[str, str]) -> None:
        for queue in list(subscribers):
            queue.put_nowait(message)

    async def run(n: int, interval: float, size: int) -> None:
        for i in range(n):
            broadcast(("tick", payload(i, size)))
            await asyncio.sleep(interval)
        broadcast(("end", "{}"))

    async def tasks(request: web.Request) -> web.Response:
        body: dict[str, Any] = (await request.json()).get("params", {})
        task = asyncio.create_task(
            run(int(body.get("n", 1)), float(body.get("interval", 0)), int(body.get("size", 100)))
        )
        publishers.add(task)
        task.add_done_callback(publishers.discard)
        return web.json_response({"id": str(id(task))}, status=202)

    async def publish(request: web.Request) -> web.Response:
        broadcast(("tick", await request.text()))
        return web.json_response({"subscribers": len(subscribers)}, status=202)

    async def bare(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"ok": True, "echo": body}, status=202, dumps=json.dumps)

    app = web.Application()
    app.router.add_get("/events", events)
    app.router.add_post("/tasks", tasks)
    app.router.add_post("/publish", publish)
    app.router.add_post("/bare", bare)
    return app


def serve(port: int) -> None:
    import uvloop

    uvloop.install()
    web.run_app(
        make_app(),
        host="127.0.0.1",
        port=port,
        backlog=4096,
        access_log=None,
        print=None,
        shutdown_timeout=3,
        handle_signals=True,
    )
