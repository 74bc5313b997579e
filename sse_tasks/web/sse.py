"""The SSE response: each stream in its request's task, one monitor per hub for the rest.

**asyncio only.** This module, :mod:`sse_tasks.web.streams` and the event log
(:mod:`sse_tasks._core.log`) are the hub's fast stream path, written for asyncio (the
loop uvicorn runs), not for anyio's other backends; a ``TaskHub`` refuses to start
elsewhere. ``EventSourceResponse`` runs a task group of four tasks per connection
(body, ping, exit-signal listener, disconnect listener) and arms a timer around every
send: for a hub holding thousands of streams that was most of an idle stream's memory
and, with small writes, a third of the CPU per delivery. The benchmark that justifies
what follows is ``python -m benchmarks`` (``benchmarks/README.md``, "What changed"):
an idle stream costs 13.2 KiB at 10,000 streams, 22.4 KiB with anyio cancel scopes and
Starlette's per-request stack, 43.5 KiB with ``EventSourceResponse``.

Deliberate deviations — do not "fix" them:

- **asyncio, not anyio.** A stream is stopped by ``asyncio.Task.cancel()`` on its own
  request's task (:meth:`SSEStream.abort`), the cancellation taken back with
  ``Task.uncancel()``, and its lifetime is a ``loop.call_at`` timer: an anyio cancel
  scope per stream was a tenth of an idle stream's memory (900 B).
- **The body runs in the request's own task**, not in a task group: one small
  ``asyncio`` task per stream waits for the client's disconnect and aborts it.
- **One :class:`StreamMonitor` per hub** sends heartbeats to streams that have been
  quiet and cuts a stream whose send has blocked longer than ``send_timeout``,
  checking every stream a few times per interval instead of a timer per send.
- **The event log wakes each waiting stream through one asyncio future** and defers
  wake-ups with ``loop.call_soon``/``call_later`` (see :mod:`sse_tasks._core.log`): a
  waiting stream holds a future, not a coroutine or an ``anyio.Event``.
- **The hub's own app routes its streams past Starlette's middleware stack**
  (``HubApp`` in :mod:`sse_tasks.web.app`) until middleware is added to it, and
  stream routes are plain ASGI endpoints (``StreamEndpoint``), not ``request_response``.
- **Headers, ``HEAD`` and the cleanup timeout are sse-starlette's**, taken once per hub
  from an ``EventSourceResponse`` that is never run (:func:`sse_headers`).
- **Server exit is uvicorn's ``should_exit``** (:mod:`sse_tasks.web.server_exit`), not
  sse-starlette's process-global ``AppStatus``.

Every Starlette, sse-starlette and uvicorn internal this relies on is pinned by
``tests/web/test_pinned_internals.py``, which fails with a clear message on the
upgrade that changes one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import anyio
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .._core.stats import HubStats

logger = logging.getLogger("sse_tasks")

PING = b": ping\n\n"
#: Longest a stream's body may take to clean up after it ends (sse-starlette's default).
_CLEANUP_TIMEOUT = EventSourceResponse.DEFAULT_CLEANUP_TIMEOUT


class StreamMonitor:
    """Heartbeats and send timeouts for every open stream of one hub.

    A stream that has sent nothing for ``heartbeat`` seconds gets ``: ping``; when any
    does, every stream quiet for three quarters of that gets one too, so that idle
    streams fall into step and are woken together once per interval.
    """

    def __init__(
        self,
        heartbeat: float,
        send_timeout: float | None,
        wake: Callable[[], None],
        stats: HubStats | None = None,
    ) -> None:
        self.heartbeat = heartbeat
        self.send_timeout = send_timeout
        self.wake = wake  # wakes every stream's body (it yields b"" when woken with nothing new)
        self.stats = stats or HubStats()
        self.streams: set[SSEStream] = set()
        self._emptied: anyio.Event | None = None

    def add(self, stream: SSEStream) -> None:
        self.streams.add(stream)

    def discard(self, stream: SSEStream) -> None:
        self.streams.discard(stream)
        if not self.streams and self._emptied is not None:
            self._emptied.set()
            self._emptied = None

    async def wait_empty(self) -> None:
        """Return once no stream is open."""
        if self.streams:
            if self._emptied is None:
                self._emptied = anyio.Event()
            await self._emptied.wait()

    @property
    def tick(self) -> float:
        """Seconds between checks (``inf``: nothing to check)."""
        periods = [p for p in (self.heartbeat, self.send_timeout) if p]
        return max(min(periods) / 4, 0.01) if periods else math.inf

    async def run(self) -> None:
        """Check every open stream each :attr:`tick` until cancelled."""
        tick = self.tick
        if tick == math.inf:
            await anyio.sleep_forever()
        while True:
            await anyio.sleep(tick)
            self.check(time.monotonic())

    def check(self, now: float) -> None:
        """Cut streams stuck in a send; mark quiet ones for a heartbeat and wake them."""
        send_timeout, heartbeat = self.send_timeout, self.heartbeat
        if send_timeout:
            since = now - send_timeout
            stuck = [s for s in self.streams if s.sending_since is not None and s.sending_since <= since]
            for stream in stuck:
                stream.abort(timed_out=True)
        if heartbeat and any(now - s.last_sent >= heartbeat for s in self.streams):
            quiet = now - heartbeat * 0.75
            for stream in self.streams:
                if stream.last_sent <= quiet:
                    stream.ping_due = True
            self.wake()

    def abort_all(self) -> None:
        """End every open stream now (the server is exiting and the grace is over)."""
        for stream in list(self.streams):
            stream.abort()

    def __len__(self) -> int:
        return len(self.streams)


def sse_headers(headers: Mapping[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    """The raw response headers of an SSE stream: what ``EventSourceResponse`` sends
    (``text/event-stream; charset=utf-8``, ``Connection``, ``X-Accel-Buffering``) with
    ``headers``. Worked out once per hub; every stream sends the same."""

    async def nothing() -> AsyncIterator[bytes]:
        yield b""  # pragma: no cover - never iterated

    body = nothing()
    response = EventSourceResponse(body, headers=headers, ping=0, sep="\n")
    raw = tuple(response.raw_headers)
    del response
    return raw


class SSEStream:
    """An SSE response whose body runs in the request's task (see module doc).

    It sends ``opening`` (the retry frame, and a snapshot, a replay or a resync) and
    then each chunk ``follow`` yields: pre-encoded, whole frames. An empty chunk means
    "woken with nothing to send", the moment a due heartbeat goes out. ``HEAD`` gets
    the headers and no body, like ``EventSourceResponse``. An idle stream holds only
    this object, its two tasks' frames and its cursor, so it has slots, and its
    headers are the hub's (see :func:`sse_headers`).
    """

    __slots__ = (
        "_aborted",
        "_task",
        "_timed_out",
        "active",
        "deadline",
        "follow",
        "headers",
        "last_sent",
        "monitor",
        "opening",
        "ping_due",
        "release",
        "sending_since",
    )

    status_code = 200

    def __init__(
        self,
        opening: bytes,
        follow: AsyncIterator[bytes] | None,
        *,
        monitor: StreamMonitor,
        headers: tuple[tuple[bytes, bytes], ...],
        deadline: float = math.inf,
        release: Callable[[], None] | None = None,
    ) -> None:
        self.opening = opening
        self.follow = follow
        self.monitor = monitor
        self.headers = headers
        self.deadline = deadline
        self.release = release
        self.active = True
        self.last_sent = time.monotonic()
        self.sending_since: float | None = None
        self.ping_due = False
        self._task: asyncio.Task[object] | None = None  # while it may be cancelled
        self._aborted = False
        self._timed_out = False

    def abort(self, *, timed_out: bool = False) -> None:
        """Stop the stream (from another task): a disconnect, a stuck send, server exit."""
        self._timed_out = self._timed_out or timed_out
        task = self._task
        if task is not None and not self._aborted:
            self._aborted = True
            task.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # One coroutine for the whole stream (each level of awaiting is a frame kept
        # for as long as the stream is open).
        if scope["method"] == "HEAD":  # the headers, no body (nothing is followed)
            try:
                await self._close_follow()
                with anyio.move_on_after(self.monitor.send_timeout or math.inf):
                    await send({"type": "http.response.start", "status": 200, "headers": list(self.headers)})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                if self.release is not None:
                    self.release()
            return
        # Cancelled by abort() (or at its deadline) while it sends or waits: a plain
        # task cancellation, caught below, rather than a cancel scope per stream.
        self._task = asyncio.current_task()
        deadline = self.deadline
        expiry = None if deadline == math.inf else asyncio.get_running_loop().call_at(deadline, self.abort)
        listener = asyncio.ensure_future(self._watch_disconnect(receive))
        monitor = self.monitor
        monitor.add(self)
        try:
            try:
                await send({"type": "http.response.start", "status": 200, "headers": list(self.headers)})
                opening, self.opening = self.opening, b""
                monitor.stats.count_frames(opening)
                self.sending_since = time.monotonic()
                await send({"type": "http.response.body", "body": opening, "more_body": True})
                self.last_sent = time.monotonic()
                self.sending_since = None
                del opening
                follow = self.follow
                if follow is not None:
                    async for chunk in follow:
                        if not chunk:  # (the body counts the frames it yields)
                            if not self.ping_due:
                                continue
                            chunk = PING
                        self.ping_due = False
                        self.sending_since = time.monotonic()
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                        self.last_sent = time.monotonic()
                        self.sending_since = None
            except asyncio.CancelledError:
                if not (self._aborted and _uncancel(self._task)):
                    raise  # not (only) ours: the server or an outer scope cancels
            finally:
                self._task = None  # no await between the body and here: nothing else is cut
            if self._timed_out:
                # The server closes the connection when the response is left unfinished.
                logger.warning("dropped a stream whose client read nothing for %ss", monitor.send_timeout)
                return
            if self.active:  # the body ended, its lifetime passed or the server exits
                with anyio.move_on_after(monitor.send_timeout or math.inf):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if expiry is not None:
                expiry.cancel()
            monitor.discard(self)
            listener.cancel()
            try:
                await self._close_follow()
            finally:
                if self.release is not None:
                    self.release()

    async def _close_follow(self) -> None:
        """Suspended at a yield (cancelled mid-send): run the body's cleanup before leaving."""
        follow, self.follow = self.follow, None
        if follow is not None:
            with anyio.move_on_after(_CLEANUP_TIMEOUT, shield=True):
                await follow.aclose()  # type: ignore[attr-defined]

    async def _watch_disconnect(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.active = False
                self.abort()
                return


StreamHandler = Callable[[Request], Awaitable[Response | SSEStream]]


class StreamEndpoint:
    """A stream route's ASGI app: the handler decides the response, then it runs.

    Starlette's ``request_response`` keeps the ``Request``, a second exception
    wrapper and its ``send`` closures alive for as long as the response runs: for a
    stream that is its whole life, and a good part of an idle stream's memory. Here
    they are gone once the response is chosen. The app's middleware, exception
    handlers and routing wrap it exactly as they wrap every other route.
    """

    __slots__ = ("handler",)

    def __init__(self, handler: StreamHandler) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handler(Request(scope, receive, send))
        await response(scope, receive, send)


def _uncancel(task: asyncio.Task[object] | None) -> bool:
    """Take back the one cancellation abort() asked for; False if others remain."""
    uncancel = getattr(task, "uncancel", None)  # Python 3.11+; before, nothing counts them
    return uncancel is None or uncancel() == 0
