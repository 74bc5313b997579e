"""The request-head deadline and size limit that ``sse-tasks serve`` runs uvicorn with."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from _support import free_port, serve_in_thread, wait_until

from sse_tasks import TaskHub
from sse_tasks.cli.config import ServeConfig
from sse_tasks.cli.protocol import protocol_for


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True if the server closes ``sock`` (EOF or reset) before ``within`` seconds pass."""
    sock.settimeout(within)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


@pytest.fixture
def port() -> Iterator[int]:
    hub = TaskHub("memory://")  # the protocol is the same whatever the broker
    with serve_in_thread(hub.app, hub, http=protocol_for(ServeConfig(header_timeout=0.5))) as server:
        yield int(server.url.rsplit(":", 1)[1])


def test_a_request_head_that_never_completes_is_cut(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as silent:
        assert closed_by_server(silent, within=10)
    with socket.create_connection(("127.0.0.1", port)) as trickle:
        trickle.sendall(b"GET /tasks HTTP/1.1\r\nHost: t\r\n")  # ...and the rest never comes
        assert closed_by_server(trickle, within=10)


def test_complete_requests_and_long_streams_are_not_cut(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
        client.settimeout(10)
        assert client.recv(4096).startswith(b"HTTP/1.1 200")
        # Well past the head deadline, the stream is still open.
        assert not closed_by_server(client, within=1.5)


LIST = b"GET /tasks HTTP/1.1\r\nHost: t\r\n\r\n"


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_stream_with_a_request_pipelined_behind_it_ends_cleanly_when_its_client_leaves() -> None:
    """uvicorn makes a pipelined request the connection's current one and stops reading:
    the stream before it is still released once its client is gone (at its next write,
    a heartbeat here), and nothing is logged as an error."""
    hub = TaskHub("memory://", heartbeat=0.2)
    errors = Records()
    logging.getLogger("uvicorn.error").addHandler(errors)
    try:
        with serve_in_thread(hub.app, hub, http=protocol_for(ServeConfig())) as server:
            port = int(server.url.rsplit(":", 1)[1])
            for _ in range(3):
                with socket.create_connection(("127.0.0.1", port)) as client:
                    client.sendall(
                        b"GET /events HTTP/1.1\r\nHost: t\r\n\r\nGET /tasks HTTP/1.1\r\nHost: t\r\n\r\n"
                    )
                    client.settimeout(10)
                    assert client.recv(4096).startswith(b"HTTP/1.1 200")
                    assert hub.open_streams == 1
                wait_until(lambda: hub.open_streams == 0, "the stream released")
    finally:
        logging.getLogger("uvicorn.error").removeHandler(errors)
    assert [r.getMessage() for r in errors.records if r.levelno >= logging.ERROR] == []


@pytest.fixture
def sized_port() -> Iterator[int]:
    """The default size limit (64 KiB), with a head deadline far beyond any test's wait."""
    hub = TaskHub("memory://", max_body_size=1024 * 1024)
    with serve_in_thread(hub.app, hub, http=protocol_for(ServeConfig(header_timeout=600))) as server:
        yield int(server.url.rsplit(":", 1)[1])


def request(name: bytes = b"X-Big", size: int = 0, method: bytes = b"GET", body: bytes = b"") -> bytes:
    head = method + b" /tasks HTTP/1.1\r\nHost: t\r\n"
    if size:
        head += name + b": " + b"a" * size + b"\r\n"
    if body:
        head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


def answer(sock: socket.socket, within: float = 10) -> bytes:
    """What the server sends until it closes ``sock`` or ends one response (b"" if it reset)."""
    sock.settimeout(within)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            length = [line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")]
            if sep and length and len(body) >= int(length[0].split(b":")[1]):
                return data
    except (ConnectionResetError, BrokenPipeError):
        return data


def send(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except (ConnectionResetError, BrokenPipeError):
        pass  # the server stopped reading: what it said is in answer()


def refused(data: bytes) -> bool:
    """A 431, or closed without an answer (a reset can overtake the 431 in flight)."""
    return data == b"" or data.startswith(b"HTTP/1.1 431 ")


def test_a_head_that_grows_past_the_limit_is_cut(sized_port: int) -> None:
    with socket.create_connection(("127.0.0.1", sized_port)) as sock:
        send(sock, request(size=100_000)[:-4])  # a 100 KB header line that never ends
        assert refused(answer(sock))  # well before the 600 s head deadline
    with socket.create_connection(("127.0.0.1", sized_port)) as sock:
        send(sock, request())
        assert answer(sock).startswith(b"HTTP/1.1 200 ")


def test_a_complete_head_over_the_limit_is_refused(sized_port: int) -> None:
    with socket.create_connection(("127.0.0.1", sized_port)) as sock:
        send(sock, request(size=100_000))
        assert refused(answer(sock))
    with socket.create_connection(("127.0.0.1", sized_port)) as sock:
        many = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 1000) for i in range(100))
        send(sock, request().replace(b"Host: t\r\n", b"Host: t\r\n" + many))
        assert refused(answer(sock))


def test_heads_under_the_limit_and_large_bodies_are_served(sized_port: int) -> None:
    with socket.create_connection(("127.0.0.1", sized_port)) as sock:
        send(sock, request(size=10_000))
        assert answer(sock).startswith(b"HTTP/1.1 200 ")
        # The same connection, kept alive: its next head is measured on its own.
        send(sock, request(size=60_000))
        assert answer(sock).startswith(b"HTTP/1.1 200 ")
        send(sock, request(size=100_000))
        assert refused(answer(sock))
    with socket.create_connection(("127.0.0.1", sized_port)) as sock:
        # Head and a 300 KB body in one go: the body does not count.
        send(sock, request(method=b"POST", body=b'{"name": "%s"}' % (b"x" * 300_000)))
        data = answer(sock)
        assert data.startswith(b"HTTP/1.1 404 "), data[:100]  # no task of that name


def test_a_kept_alive_connection_cannot_grow_an_endless_head(sized_port: int) -> None:
    with socket.create_connection(("127.0.0.1", sized_port)) as sock:
        send(sock, request())
        assert answer(sock).startswith(b"HTTP/1.1 200 ")
        send(sock, request(size=100_000)[:-4])
        for _ in range(4):  # more than one read of the server's (256 KiB), never finished
            send(sock, b"a" * 100_000)
        assert refused(answer(sock))


def start_serve(*options: str) -> tuple[subprocess.Popen[bytes], socket.socket, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_TASKS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sse_tasks", "serve", "--port", str(port), *options],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            return proc, socket.create_connection(("127.0.0.1", port)), port
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                proc.wait(10)
                raise AssertionError("server did not start") from None
            time.sleep(0.05)


def test_serve_uses_the_deadline() -> None:
    proc, sock, _ = start_serve("--header-timeout", "0.5")
    try:
        with sock:
            sock.sendall(b"GET / HTTP/1.1\r\n")
            assert closed_by_server(sock, within=10)
    finally:
        proc.kill()
        proc.wait(10)


def test_serve_uses_the_size_limit() -> None:
    proc, sock, port = start_serve("--max-header-size", "2048", "--header-timeout", "600")
    try:
        with sock:
            send(sock, request(size=4000)[:-4])
            assert refused(answer(sock))
        with socket.create_connection(("127.0.0.1", port)) as small:
            send(small, request(size=1000))
            assert answer(small).startswith(b"HTTP/1.1 200 ")
    finally:
        proc.kill()
        proc.wait(10)
