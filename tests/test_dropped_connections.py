"""Clients that leave mid-request: nothing above DEBUG in the log, the server goes on."""

from __future__ import annotations

import logging
import socket

import anyio
import httpx
import pytest
from _support import LiveServer

from sse_tasks import TaskHub

pytestmark = pytest.mark.anyio


def _drop_mid_body(url: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"name": "sle'
        )
        # An RST rather than a FIN: the server sees the connection lost mid-body.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


async def test_a_client_leaving_mid_body_logs_nothing_above_debug(
    hub: TaskHub, server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    drops = 20
    with caplog.at_level(logging.DEBUG):
        for _ in range(drops):
            await anyio.to_thread.run_sync(_drop_mid_body, server.url)
        with anyio.fail_after(20):
            while hub.stats.rejected["client_disconnected"] < drops:
                await anyio.sleep(0.02)
        async with httpx.AsyncClient(base_url=server.url) as http:
            answer = await http.post("/tasks", json={"name": "sleep", "params": {"seconds": 0}})
            assert answer.status_code == 202
    loud = [r for r in caplog.records if r.levelno > logging.DEBUG and "task" not in r.getMessage()]
    assert loud == [], [r.getMessage() for r in loud]
    assert any("disconnected before its request body" in r.getMessage() for r in caplog.records)
