"""Clients that misbehave on the wire, against a real uvicorn on memory and on Redis.

Content-Length that lies, broken chunked bodies, bytes httpx refuses to send (control
bytes in Last-Event-ID, raw bytes in the request target), connections dropped mid-head,
mid-body and right after a stream request, streams reset over and over. Afterwards no
stream is left open, nothing above WARNING was logged, only a complete request created
a task, and a ``/events`` stream opened before it all still carries a new task.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from _support import HubFactory, LiveServer, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz import ANSWERS, Loud, Watcher, streams_closed

from sse_tasks import TaskHub

WIRE = settings(
    max_examples=50,
    deadline=None,
    database=None,
    derandomize=bool(os.environ.get("CI")),  # as in test_fuzz: CI replays the same examples
    suppress_health_check=[HealthCheck.too_slow],
)
BODY_TIMEOUT = 0.3  # a body that never completes is answered 408 after this long
REFUSED = b"Invalid HTTP request received."  # uvicorn's own 400 for what is not HTTP/1.1
#: Each request says which example sent it; the hub records it as the owner of what it
#: creates, so a task created late (its client long gone) is still traced to its request.
MARK = b"X-Example: ########"


@dataclass
class Wire:
    hub: TaskHub
    server: LiveServer
    watcher: Watcher
    running: str
    finished: str
    loud: Callable[[], list[str]]

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.url.removeprefix("http://").split(":")
        return host, int(port)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=5)
        # A small receive buffer: the server's sends block sooner, so resets hit them mid-write.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        return sock

    def settled(self) -> None:
        """Wait (bounded) until the server handles no request but the watcher's stream."""
        state = self.server.server.server_state
        wait_until(lambda: len(state.tasks) <= 1, "the server to settle", 10, interval=0.005)
        assert len(state.tasks) == 1, state.tasks

    def created_by(self) -> Counter[str | None]:
        """Tasks created so far, by the example that sent them."""
        return Counter(t.owner for t in self.server.call(self.hub.list_tasks(limit=10_000)))

    def check_after(self) -> None:
        """No stream left but the watcher's, nothing loud, the list and the watcher still work."""
        streams_closed(self.hub, baseline=1)
        assert len(self.hub.client_streams) == 1  # the watcher's address, one slot
        assert self.loud() == []
        with httpx.Client(base_url=self.server.url, timeout=10) as http:
            listed = http.get("/tasks")
            assert listed.status_code == 200 and isinstance(listed.json()["tasks"], list)
            created = http.post("/tasks", json={"name": "sleep", "params": {"seconds": 0}})
            assert created.status_code == 202
        assert self.watcher.saw(created.json()["id"], "task.succeeded"), self.watcher.problems
        assert not self.watcher.ended and not self.watcher.problems, self.watcher.problems


@pytest.fixture
def wire(make_hub: HubFactory, live_server: Callable[..., LiveServer]) -> Iterator[Wire]:
    hub = make_hub(
        body_timeout=BODY_TIMEOUT,
        progress_interval=0,
        max_queued=1000,
        concurrency=64,
        shutdown_grace=0,
        identify=lambda request: request.headers.get("x-example"),
    )
    server = live_server(hub)
    watcher = Watcher(server.url)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        running = http.post("/tasks", json={"name": "sleep", "params": {"seconds": 600}}).json()["id"]
        finished = http.post("/tasks", json={"name": "sleep", "params": {"seconds": 0}}).json()["id"]
    assert watcher.saw(running, "task.running") and watcher.saw(finished, "task.succeeded")
    loud = Loud()  # as in test_fuzz: root and uvicorn, after the server configured its loggers
    listened = [logging.getLogger(), logging.getLogger("uvicorn")]
    for logger in listened:
        logger.addHandler(loud)
    try:
        yield Wire(hub, server, watcher, running, finished, lambda: list(loud.lines))
    finally:
        for logger in listened:
            logger.removeHandler(loud)
        server.call(hub.shutdown())
        watcher.join()


def reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN: the server sees the connection lost at once."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read(sock: socket.socket, until: bytes | None = None) -> bytes:
    """Everything until the server closes (or ``until`` arrives); a 5 s silence is a hang."""
    data = b""
    while until is None or until not in data:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"the server hung; it sent {data[:300]!r}") from None
        except ConnectionResetError:
            break  # the server cut a connection it would not serve (after answering)
        if not chunk:
            break
        data += chunk
    return data


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def answers(raw: bytes) -> list[Answer]:
    """The HTTP/1.1 responses in ``raw``, in order; a streamed (chunked) one ends the list."""
    found = []
    while raw:
        head, separator, raw = raw.partition(b"\r\n\r\n")
        assert separator, f"a cut response head: {head[:300]!r}"
        status_line, *lines = head.decode("latin-1").split("\r\n")
        version, status, _ = (status_line + " ").split(" ", 2)
        assert version == "HTTP/1.1", status_line
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            size = int(headers["content-length"])
            body, raw = raw[:size], raw[size:]
        else:
            body, raw = raw, b""
        found.append(Answer(int(status), headers, body))
    return found


def check(answer: Answer, request: object) -> None:
    """A status of the contract; an app's error in the JSON error shape, uvicorn's own 400
    for a request that is not HTTP/1.1 in plain text."""
    assert answer.status in ANSWERS | {100}, (request, answer)
    if answer.status >= 400:
        if answer.body == REFUSED:
            assert answer.status == 400, (request, answer)
            return
        assert answer.headers.get("content-type", "").startswith("application/json"), (request, answer)
        error = json.loads(answer.body)["error"]
        assert error["code"] and error["message"], (request, answer)


# -- requests of every shape, then every way of leaving -------------------------------------------

BODIES = st.one_of(
    st.sampled_from(
        [
            b'{"name": "sleep", "params": {"seconds": 0}}',
            b'{"name": "fail", "params": {"message": "\\ud800"}}',
            b'{"name": "fail", "params": {"message": "\xed\xa0\x80"}}',
            b'{"name": "sleep", "params": {"seconds": 1e400}}',
            b'{"name": "nope"}',
            b'\xef\xbb\xbf{"name": "sleep"}',
            b"[" * 3000 + b"]" * 3000,
            b'{"name": "sleep"} and more',
            b"",
            b"\x00" * 16,
        ]
    ),
    st.binary(max_size=64),
)
LINE_BYTES = st.binary(max_size=24).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b""))


@dataclass
class Sent:
    """One request on the wire and how the client leaves."""

    data: bytes
    ending: str  # read | pieces | reset | half-close
    complete: bool  # does ``data`` hold a whole request (else it can create nothing)?
    stream: bool
    cuts: list[int]


def _chunked(body: bytes, sizes: list[int]) -> bytes:
    parts, rest = [], body
    for size in sizes:
        piece, rest = rest[:size], rest[size:]
        if piece:
            parts.append(b"%x\r\n%s\r\n" % (len(piece), piece))
    if rest:
        parts.append(b"%x\r\n%s\r\n" % (len(rest), rest))
    return b"".join(parts) + b"0\r\n\r\n"


@st.composite
def submissions(draw: st.DrawFn) -> tuple[bytes, bytes, bool]:
    """``POST /tasks``: (head, body, complete) with every kind of framing."""
    body = draw(BODIES)
    size = len(body)
    framing = draw(
        st.sampled_from(["length"] * 3 + ["lie", "chunked", "bad chunks", "unended chunks", "none", "both"])
    )
    lines = [b"POST /tasks HTTP/1.1", b"Host: fuzz", MARK, b"Content-Type: application/json"]
    complete = True
    if framing == "length":
        lines.append(b"Content-Length: %d" % size)
    elif framing == "lie":  # shorter, longer, not ASCII digits, negative, huge, several
        values = [
            b"%d" % max(size - 3, 0), b"%d" % (size + 7), "²".encode(), "\u0661".encode(), b"-1", b"9" * 30,
            b"9" * 19, b"1 2", b" %d" % size, b"+%d" % size, b"0x10", b"%d, %d" % (size, size), b"",
        ]  # fmt: skip
        for value in draw(st.lists(st.sampled_from(values), min_size=1, max_size=2)):
            lines.append(b"Content-Length: " + value)
    elif framing in ("chunked", "bad chunks", "unended chunks", "both"):
        lines.append(b"Transfer-Encoding: chunked")
        if framing == "both":
            lines.append(b"Content-Length: %d" % size)
        body = _chunked(body, draw(st.lists(st.integers(1, 16), max_size=3)))
        if framing == "bad chunks":
            body = (
                draw(st.sampled_from([b"zz\r\n", b"-1\r\n", b"ffffffffffffffffff\r\n", b"1;\x00\r\n"])) + body
            )
        elif framing == "unended chunks":
            body, complete = body.removesuffix(b"0\r\n\r\n"), False
    return b"\r\n".join(lines), body, complete


@st.composite
def stream_requests(draw: st.DrawFn, wire: Wire) -> bytes:
    """A stream request whose target and Last-Event-ID hold any byte (but line ends)."""
    path = draw(
        st.sampled_from(
            [
                b"/events",
                b"/events?last_event_id=%ED%A0%80",
                f"/events?task={wire.running}&task={wire.running}".encode(),
                f"/tasks/{wire.running}/events".encode(),
                f"/tasks/{wire.finished}/events".encode(),
                b"/tasks/%00/events",
            ]
        )
    )
    extra = draw(st.none() | LINE_BYTES)
    if extra is not None:
        path += (b"&" if b"?" in path else b"?") + b"x=" + extra
    lines = [b"GET " + path + b" HTTP/1.1", b"Host: fuzz", MARK]
    lines += [b"Last-Event-ID: " + v for v in draw(st.lists(LINE_BYTES, max_size=2))]
    return b"\r\n".join(lines)


@st.composite
def wire_requests(draw: st.DrawFn, wire: Wire) -> Sent:
    stream = draw(st.booleans())
    if stream:
        head, body, complete = draw(stream_requests(wire)), b"", True
    else:
        head, body, complete = draw(submissions())
    ending = draw(st.sampled_from(["read", "read", "pieces", "reset", "half-close", "mid head", "mid body"]))
    if ending in ("read", "pieces"):
        data = head + b"\r\nConnection: close\r\n\r\n" + body
        if ending == "pieces":
            cuts = sorted(draw(st.lists(st.integers(1, max(len(data) - 1, 1)), min_size=1, max_size=4)))
            return Sent(data, "pieces", complete, stream, cuts)
        return Sent(data, "read", complete, stream, [])
    data = head + b"\r\n\r\n" + body
    if ending == "mid head":  # the head never ends
        data, complete = data[: draw(st.integers(0, len(head)))], False
    elif ending == "mid body" and body and complete and not stream:
        data, complete = data[: len(head) + 4 + draw(st.integers(0, len(body) - 1))], False
    leave = draw(st.sampled_from(["reset", "half-close"])) if ending.startswith("mid") else ending
    return Sent(data, leave, complete, stream, [])


def test_raw_requests_and_dropped_connections_leave_nothing_behind(wire: Wire) -> None:
    """Submissions framed every way (Content-Length shorter, longer, "²", negative, huge,
    twice; chunked, broken chunks, both) and stream requests with raw bytes in the target
    and Last-Event-ID; the client reads, sends in pieces, resets, half-closes, or leaves
    mid-head or mid-body. Every answer is the contract's (or uvicorn's plain 400 for what
    is not HTTP/1.1), only a request the server received whole creates a task, and no
    stream stays open."""
    allowed: dict[str, int] = {}  # example -> tasks it may have created

    @WIRE
    @given(sent=wire_requests(wire))
    def fuzz(sent: Sent) -> None:
        example = f"{len(allowed):08d}"
        data = sent.data.replace(MARK, f"X-Example: {example}".encode())
        sock = wire.connect()
        try:
            pieces = [data[a:b] for a, b in zip([0, *sent.cuts], [*sent.cuts, len(data)], strict=True)]
            for piece in pieces:
                try:
                    sock.sendall(piece)
                except (BrokenPipeError, ConnectionResetError):
                    break  # the server answered before the end (a 400 or 413) and closed
            if sent.ending in ("read", "pieces"):
                raw = read(sock, until=b"retry: " if sent.stream else None)
                found = answers(raw)
                assert found, (sent, raw[:300])
                for answer in found:
                    check(answer, sent)
                if sent.stream and found[-1].status == 200:
                    assert found[-1].headers["content-type"].startswith("text/event-stream")
                # The answer was read, so whatever the request created exists by now.
                allowed[example] = sum(a.status == 202 for a in found)
                assert wire.created_by()[example] == allowed[example], (sent, found)
            else:
                allowed[example] = 1 if sent.complete and not sent.stream else 0
                if sent.ending == "half-close":
                    sock.shutdown(socket.SHUT_WR)  # "nothing more": the server drops the request
                    read(sock)
        finally:
            reset(sock)
        streams_closed(wire.hub, baseline=1)

    fuzz()
    wire.settled()
    created = wire.created_by()
    assert all(created[example] <= most for example, most in allowed.items()), created
    wire.check_after()


def test_every_byte_in_last_event_id_gets_a_stream_or_a_clean_refusal(wire: Wire) -> None:
    """Each byte but LF in a Last-Event-ID (alone and inside an id), what httpx refuses to
    send: a stream that starts with a reset, or uvicorn's plain 400 for a header that is
    not HTTP; never a 500 or a hang."""
    for byte in range(256):
        if byte == 0x0A:
            continue
        for value in (bytes([byte]), b"0-" + bytes([byte]) + b"1"):
            for path in ("/events", f"/tasks/{wire.finished}/events"):
                if path != "/events" and byte % 16:
                    continue  # the per-task stream for one byte in sixteen
                sock = wire.connect()
                try:
                    sock.sendall(
                        f"GET {path} HTTP/1.1\r\nHost: fuzz\r\nLast-Event-ID: ".encode() + value + b"\r\n\r\n"
                    )
                    # Blank is no id (the header's spaces are not part of its value): no reset.
                    blank = not value.strip(b" \t")
                    raw = read(sock, until=b"retry: " if blank else b"event: reset")
                finally:
                    reset(sock)
                (answer,) = answers(raw)
                check(answer, value)
                if answer.status != 200:
                    assert answer.body == REFUSED, (value, answer)
                elif not blank:
                    assert b"\nevent: reset\n" in answer.body, value
    streams_closed(wire.hub, baseline=1)
    wire.check_after()


def test_streams_reset_over_and_over_are_all_released(wire: Wire) -> None:
    """Streams opened and reset at every moment (right after the request, after the head,
    mid-frame, while a busy task floods them, during a resync of many snapshots)."""
    with httpx.Client(base_url=wire.server.url, timeout=10) as http:
        for _ in range(100):  # a resync sends all of their snapshots in one chunk
            assert (
                http.post("/tasks", json={"name": "fail", "params": {"message": "x" * 500}}).status_code
                == 202
            )
        busy = http.post(
            "/tasks", json={"name": "count", "params": {"n": 100_000, "interval": 0.002}}
        ).json()["id"]
    paths = [
        "/events",
        "/events?last_event_id=unknown",
        f"/events?task={busy}",
        f"/tasks/{busy}/events",
        f"/tasks/{busy}/events?last_event_id=unknown",
        f"/tasks/{wire.finished}/events",
    ]
    moments = ["after the request", "after the head", "after a frame", "after a while"]
    for round_ in range(4):
        for path in paths:
            for moment in moments:
                sock = wire.connect()
                try:
                    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n".encode())
                    if moment == "after the head":
                        read(sock, until=b"\r\n\r\n")
                    elif moment == "after a frame":
                        read(sock, until=b"retry: ")
                    elif moment == "after a while":
                        read(sock, until=b"data: ")
                        sock.recv(1000 * (round_ + 1))
                finally:
                    reset(sock)
    with httpx.Client(base_url=wire.server.url, timeout=10) as http:
        http.delete(f"/tasks/{busy}")
    wire.check_after()
