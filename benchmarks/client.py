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

Client publishes (closed loop, light load) come from a process of its own,
``python -m benchmarks.client CONFIG`` (:class:`Publisher`), on the client's CPU at a
higher priority: in the subscribers' event loop an answer would wait behind a thousand
streams' data, which would hold every system's closed loop to the client's speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import harness

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


class Frames(asyncio.Protocol):
    """An SSE stream read whole frames at a time, for checks a count cannot make:
    ``opened`` is set when the response (200) and its first frame have arrived, then
    :meth:`frames` gets every run of whole frames with the time it arrived."""

    def __init__(self, path: str) -> None:
        self.request = f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n".encode()
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.tail = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if not self.tail and not self.opened.done() and not data.startswith(b"HTTP/1.1 200"):
            self.opened.set_exception(RuntimeError(f"{self.request[:60]!r} answered {data[:200]!r}"))
            return
        data = self.tail + data
        cut = data.rfind(b"\n\n") + 2
        self.tail = data[cut:]
        if cut > 1:
            if not self.opened.done():
                self.opened.set_result(None)
            self.frames(data[:cut], now)

    def frames(self, frames: bytes, now: int) -> None:
        """Whole frames (the first run starts with the response's head)."""

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before the stream started: {exc}"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


_SUCCEEDED = re.compile(rb'event: task\.succeeded\r?\ndata: \{"id":"([^"]+)"')


class SucceededFollower(Frames):
    """A stream of ``/events``: when each task's ``task.succeeded`` arrived (``seen``, in
    ``time.monotonic_ns()``); ``on_seen(task_id)`` for each."""

    def __init__(self, on_seen: Callable[[str], None]) -> None:
        super().__init__("/events")
        self.seen: dict[str, int] = {}
        self.on_seen = on_seen

    def frames(self, frames: bytes, now: int) -> None:
        for match in _SUCCEEDED.finditer(frames):
            task_id = match.group(1).decode()
            if task_id not in self.seen:
                self.seen[task_id] = now
                self.on_seen(task_id)


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

    async def post(
        self, path: str, body: bytes, content_type: bytes = b"application/json", method: bytes = b"POST"
    ) -> bytes:
        """Send one request (a POST unless told) and return the raw response (status
        line, headers, body)."""
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(
            b"%s %s HTTP/1.1\r\nHost: bench\r\nContent-Type: %s\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (method, path.encode(), content_type, len(body), body)
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


def trigger(messages: int, interval: float = 0.0) -> bytes:
    """The body of a ``POST /tasks`` starting the server-side publisher (``publish``)."""
    return json.dumps(
        {"name": "publish", "params": {"n": messages, "interval": interval, "size": 100}}
    ).encode()


def latencies(chunks: Sequence[tuple[int, int, int, int]]) -> list[int]:
    """Per message, from the chunks an ``on_match`` collected: exact for the first and last
    message of each chunk, between them interpolated."""
    samples: list[int] = []
    for count, first, last, now in chunks:
        if count == 1:
            samples.append(now - first)
        else:
            step = (last - first) / (count - 1)
            samples.extend([now - first - int(step * j) for j in range(count)])
    return samples


def last_end(streams: Sequence[Subscriber]) -> int | None:
    """When the last stream ended, or None if one has not (or was lost)."""
    futures = [s.ended for s in streams]
    if not all(f.done() and not f.cancelled() for f in futures):
        return None
    return max(f.result() for f in futures) if futures else time.monotonic_ns()


# -- the publishing process -------------------------------------------------------------


def publish_request(system: str, i: int) -> tuple[str, bytes, bytes]:
    """(path, body, content type) of publish ``i``, stamped now: sse_tasks a ``fail`` task
    whose error message is the stamp, the peers a 100-byte message to ``/publish``."""
    if system.startswith("sse_tasks"):
        return (
            "/tasks",
            b'{"name":"fail","params":{"message":"ts=%d"}}' % time.monotonic_ns(),
            b"application/json",
        )
    text = b"ts=%d i=%d " % (time.monotonic_ns(), i)
    return "/publish", text + b"x" * max(0, 100 - len(text)), b"text/plain"


#: Statuses of an accepted publish (nchan: 201 with subscribers, 202 without).
ACCEPTED = {200, 201, 202}


async def publish(config: dict[str, Any]) -> dict[str, Any]:
    """In the publishing process: connect, print ``ready``, wait for a line on stdin,
    publish, and report (see :meth:`Publisher.run`)."""
    port, system, count = int(config["port"]), str(config["system"]), int(config["count"])
    rate, timeout = float(config.get("rate", 0)), float(config.get("timeout", 60))
    connections = 1 if rate <= 0 else max(1, int(config.get("connections", 4)))
    conns = [await connect(port) for _ in range(connections)]
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    sent = answered = failed = late = 0
    lag_max = 0
    answers: list[int] = []
    cpu0 = harness.own_cpu()
    first = time.monotonic_ns()
    deadline = time.monotonic() + timeout

    async def one(conn: Connection, i: int) -> None:
        nonlocal sent, answered, failed
        path, body, content_type = publish_request(system, i)
        start = time.monotonic_ns()
        sent += 1
        response = await conn.post(path, body, content_type)
        answers.append(time.monotonic_ns() - start)
        if status(response) in ACCEPTED:
            answered += 1
        else:
            failed += 1
            if failed == 1:
                print(f"publish refused: {response[:300]!r}", file=sys.stderr, flush=True)

    try:
        if rate <= 0:
            for i in range(count):
                if time.monotonic() > deadline:
                    break
                await asyncio.wait_for(one(conns[0], i), max(0.01, deadline - time.monotonic()))
        else:
            free: asyncio.Queue[Connection] = asyncio.Queue()
            for conn in conns:
                free.put_nowait(conn)
            running: set[asyncio.Task[None]] = set()

            async def paced(conn: Connection, i: int) -> None:
                try:
                    await one(conn, i)
                finally:
                    free.put_nowait(conn)

            for i in range(count):
                due = first + int(i * 1e9 / rate)
                wait = (due - time.monotonic_ns()) / 1e9
                if wait > 0:
                    await asyncio.sleep(wait)
                conn = await asyncio.wait_for(free.get(), max(0.01, deadline - time.monotonic()))
                behind = time.monotonic_ns() - due
                lag_max = max(lag_max, behind)
                late += behind > 5_000_000
                task = asyncio.create_task(paced(conn, i))
                running.add(task)
                task.add_done_callback(running.discard)
            if running:
                await asyncio.wait(running, timeout=max(0.01, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        pass
    finally:
        for conn in conns:
            conn.close()
    return {
        "sent": sent,
        "answered": answered,
        "failed": failed,
        "first_ns": first,
        "last_answer_ns": time.monotonic_ns(),
        "cpu_s": harness.own_cpu() - cpu0,
        **{f"answer_{key}": v for key, v in harness.percentiles(answers).items()},
        "lag_max_ms": lag_max / 1e6,
        "late": late,
    }


class Publisher:
    """The publishing process, started connected and ready: ``count`` publishes to the
    server on ``port``, in a closed loop (``rate`` 0: the next when the previous answer
    arrives, one keep-alive connection) or ``rate`` per second over 4 connections."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, port: int, system: str, count: int, rate: float, timeout: float) -> Publisher:
        config = {
            "port": port,
            "system": system,
            "count": count,
            "rate": rate,
            "connections": 4,
            "timeout": timeout,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.client",
            json.dumps(config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=harness.ROOT,
            env=harness.python_env(),
        )
        publisher = cls(proc)
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if line.strip() != b"ready":
                raise RuntimeError(f"the publisher did not start: {line[:200]!r}")
        except BaseException:
            await publisher.close()
            raise
        return publisher

    async def run(self, timeout: float) -> dict[str, Any]:
        """Publish; when the first was sent (``first_ns``), how many were answered and
        refused, the process's CPU seconds, the answers' p50/p99, how far the paced
        publishes fell behind their schedule (``lag_max_ms``, ``late``: > 5 ms)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"go\n")
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout + 10)
        await asyncio.wait_for(self.proc.wait(), 10)
        if not line:
            raise RuntimeError(f"the publisher failed (exit {self.proc.returncode})")
        report: dict[str, Any] = json.loads(line)
        return report

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


def main() -> None:
    # The subscribers' process shares this CPU: a higher priority lets an answer be
    # read as soon as it arrives instead of after their next turn (root only).
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    print(json.dumps(harness.run_async(publish(json.loads(sys.argv[1])))), flush=True)


if __name__ == "__main__":
    main()
