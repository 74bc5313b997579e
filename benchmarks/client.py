"""A lean raw-asyncio load client: it must never be the bottleneck.

SSE subscribers are bare ``asyncio.Protocol`` objects: per chunk received they cut at
the last ``\\n\\n`` (the frames before it are complete) and run one compiled regex
over them, which counts the messages and pulls out the publish timestamps. The
HTTP/1.1 request client is just as thin (keep-alive, ``Content-Length`` bodies).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

#: A published message, in either app: its event type, then ``ts=<monotonic ns>``.
MESSAGE = re.compile(rb"event: (?:task\.progress|tick)\ndata: [^\n]*?ts=(\d+)")
#: The publisher is done: after its last message.
END = re.compile(rb"event: (?:task\.succeeded|end)\n")
_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")

OnFrames = Callable[[list[bytes], int], None]


class Subscriber(asyncio.Protocol):
    """One SSE stream: counts messages matching ``pattern`` and hands their groups to ``on_match``."""

    def __init__(self, path: str, pattern: re.Pattern[bytes], on_match: OnFrames | None) -> None:
        self.request = f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n".encode()
        self.pattern = pattern
        self.on_match = on_match
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.tail = b""
        self.count = 0
        self.received = 0
        self.ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if not self.started.done():
            if not data.startswith(b"HTTP/1.1 200"):
                self.started.set_exception(RuntimeError(data[:200].decode(errors="replace")))
                return
            self.started.set_result(None)
        buffer = self.tail + data if self.tail else data
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self.tail = buffer
            return
        self.tail = buffer[end + 2 :]
        found = self.pattern.findall(buffer, 0, end + 2)
        if found:
            self.count += len(found)
            if self.on_match is not None:
                self.on_match(found, time.monotonic_ns())
        if not self.ended.done() and END.search(buffer, 0, end + 2):
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
    path: str = "/events",
    pattern: re.Pattern[bytes] = MESSAGE,
    on_match: OnFrames | None = None,
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
                subscriber = Subscriber(path, pattern, on_match)
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

    async def post(self, path: str, body: bytes) -> bytes:
        """Send one POST and return the raw response (status line, headers, body)."""
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(
            b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body)
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
