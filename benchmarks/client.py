"""A lean raw-asyncio load client: it must never be the bottleneck.

SSE subscribers are bare ``asyncio.Protocol`` objects. Per chunk received they cut at
the last ``\n\n`` (the frames before it are complete), count the messages in it with
``bytes.count`` and read the publish timestamps of its first and last message only:
the messages of one chunk arrive together, so their latencies run from the first's to
the last's, and each is taken by linear interpolation between the two (exact for one
message, and publish times within a chunk are evenly spread by a steady publisher).
A regular expression per message costs the client as much CPU as the server spends
delivering it. The HTTP/1.1 request client is just as thin (keep-alive,
``Content-Length`` bodies). Chunked transfer encoding (uvicorn, aiohttp) needs no
decoding: a chunk's size line falls between two frames and holds no marker.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

#: What precedes a message's ``<monotonic ns>`` publish time: the progress messages of
#: the server-side publisher (``POST /tasks``), per system.
MESSAGE = {
    "sse-starlette": b"data: ts=",
    "aiohttp-sse": b"data: ts=",
    "sse_tasks": b'"message":"ts=',
    "sse_tasks+redis": b'"message":"ts=',
}
#: The server-side publisher is done: its last event, per system.
END = {
    "sse-starlette": b"event: end\n",
    "aiohttp-sse": b"event: end\n",
    "sse_tasks": b"event: task.succeeded\n",
    "sse_tasks+redis": b"event: task.succeeded\n",
}
#: The final event of one client publish (``POST /publish``; sse_tasks: the ``task.failed``
#: of a ``fail`` task whose message is the publish time), up to its timestamp.
FINAL = {
    "sse-starlette": b"data: ts=",
    "aiohttp-sse": b"data: ts=",
    "nchan": b"data: ts=",
    "sse_tasks": b'"error":{"type":"RuntimeError","message":"ts=',
    "sse_tasks+redis": b'"error":{"type":"RuntimeError","message":"ts=',
}
_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")

#: ``on_match(count, first_publish_ns, last_publish_ns, received_ns)``
OnMessages = Callable[[int, int, int, int], None]


_DIGITS = re.compile(rb"\d*")


def _stamp(buffer: bytes, at: int) -> int:
    digits = _DIGITS.match(buffer, at).group()  # type: ignore[union-attr]  # \d* always matches
    return int(digits) if digits else 0


class Subscriber(asyncio.Protocol):
    """One SSE stream: counts the messages that start with ``marker``; ``ended`` is set when
    ``end`` arrives, or when ``expect`` messages have (see :meth:`expect`)."""

    def __init__(self, path: str, marker: bytes, end: bytes | None, on_match: OnMessages | None) -> None:
        self.request = f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n".encode()
        self.marker = marker
        self.end = end
        self.on_match = on_match
        loop = asyncio.get_running_loop()
        self.started: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.ended: asyncio.Future[int] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.tail = b""
        self.count = 0
        self.target: int | None = None

    def expect(self, messages: int) -> None:
        """From now on, ``ended`` is set once ``messages`` more have arrived."""
        self.ended = asyncio.get_running_loop().create_future()
        self.target = self.count + messages

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.started.done():
            if not data.startswith(b"HTTP/1.1 200"):
                self.started.set_exception(RuntimeError(data[:200].decode(errors="replace")))
                return
            self.started.set_result(None)
        buffer = self.tail + data if self.tail else data
        stop = buffer.rfind(b"\n\n") + 2
        if stop < 2:
            self.tail = buffer
            return
        self.tail = buffer[stop:]
        marker = self.marker
        count = buffer.count(marker, 0, stop)
        if count:
            self.count += count
            if self.on_match is not None:
                size = len(marker)
                first = _stamp(buffer, buffer.find(marker, 0, stop) + size)
                last = _stamp(buffer, buffer.rfind(marker, 0, stop) + size) if count > 1 else first
                self.on_match(count, first, last, time.monotonic_ns())
            if self.target is not None and self.count >= self.target and not self.ended.done():
                self.ended.set_result(time.monotonic_ns())
        if self.end is not None and not self.ended.done():
            if buffer.find(self.end, max(0, stop - 4096), stop) >= 0:
                self.ended.set_result(time.monotonic_ns())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.started.done():
            self.started.set_exception(exc or ConnectionError("closed before the response"))
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.ended.done():
            self.ended.cancel()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def subscribe(
    port: int,
    count: int,
    marker: bytes,
    end: bytes | None = None,
    on_match: OnMessages | None = None,
    path: str = "/events",
    batch: int = 250,
    timeout: float = 60,
) -> list[Subscriber]:
    """Open ``count`` streams (``batch`` connects at a time) and wait for every response to start."""
    loop = asyncio.get_running_loop()
    subscribers: list[Subscriber] = []

    async def open_all() -> None:
        for start in range(0, count, batch):
            opened = []
            for _ in range(min(batch, count - start)):
                subscriber = Subscriber(path, marker, end, on_match)
                opened.append(loop.create_connection(lambda s=subscriber: s, "127.0.0.1", port))  # type: ignore[misc]
                subscribers.append(subscriber)
            await asyncio.gather(*opened)
            await asyncio.gather(*(s.started for s in subscribers[start:]))

    try:
        await asyncio.wait_for(open_all(), timeout)
    except BaseException:
        await close_all(subscribers)
        raise
    return subscribers


async def close_all(subscribers: list[Subscriber], timeout: float = 10) -> None:
    for subscriber in subscribers:
        subscriber.close()
    if subscribers:
        await asyncio.wait([s.closed for s in subscribers], timeout=timeout)


class Connection(asyncio.Protocol):
    """A keep-alive HTTP/1.1 connection sending one request at a time."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[bytes] | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        match = _CONTENT_LENGTH.search(self.buffer, 0, head_end + 2)
        total = head_end + 4 + (int(match.group(1)) if match else 0)
        if len(self.buffer) < total:
            return
        response, self.buffer = self.buffer[:total], self.buffer[total:]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionError("connection closed"))

    async def post(self, path: str, body: bytes, content_type: bytes = b"application/json") -> bytes:
        """Send one POST and return the raw response (status line, headers, body)."""
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(
            b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: %s\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path.encode(), content_type, len(body), body)
        )
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(port: int) -> Connection:
    _, protocol = await asyncio.get_running_loop().create_connection(Connection, "127.0.0.1", port)
    return protocol


def status(response: bytes) -> int:
    return int(response[9:12])


def body(response: bytes) -> bytes:
    return response[response.find(b"\r\n\r\n") + 4 :]
