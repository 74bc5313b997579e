"""The request-head deadline that ``sse-tasks serve`` runs uvicorn with (slowloris)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from _support import free_port, serve_in_thread

from sse_tasks import TaskHub
from sse_tasks.cli.protocol import ENV_VAR, HeaderTimeoutProtocol


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
def port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setenv(ENV_VAR, "0.5")
    hub = TaskHub("memory://")  # the protocol is the same whatever the broker
    with serve_in_thread(hub.app, hub, http=HeaderTimeoutProtocol) as server:
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


def test_serve_uses_the_deadline() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_TASKS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sse_tasks", "serve", "--port", str(port), "--header-timeout", "0.5"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.05)
        with sock:
            sock.sendall(b"GET / HTTP/1.1\r\n")
            assert closed_by_server(sock, within=10)
    finally:
        proc.kill()
        proc.wait(10)
