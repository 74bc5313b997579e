"""Clients that leave mid-request: nothing above DEBUG in the log, the server goes on."""

from __future__ import annotations

import logging
import socket

import anyio
import httpx
import pytest
from _support import LiveServer, submit, wait_for

from sse_tasks import TaskHub

pytestmark = pytest.mark.anyio


def _drop_mid_body(url: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"name": "sle'
        )
        # Closed with a FIN, so the server reads the head and the partial body before the
        # end of the connection (an RST could discard them unread).


async def test_a_client_leaving_mid_body_logs_nothing_above_debug(
    hub: TaskHub, server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    drops = 20
    with caplog.at_level(logging.DEBUG):
        for _ in range(drops):
            await anyio.to_thread.run_sync(_drop_mid_body, server.url)
        await wait_for(lambda: hub.stats.rejected["client_disconnected"] >= drops, timeout=20)
        async with httpx.AsyncClient(base_url=server.url) as http:
            await submit(http, "sleep", seconds=0)
    loud = [r for r in caplog.records if r.levelno > logging.DEBUG and "task" not in r.getMessage()]
    assert loud == [], [r.getMessage() for r in loud]
    assert any("disconnected before its request body" in r.getMessage() for r in caplog.records)
