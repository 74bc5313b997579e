"""A dispatcher that forwards the whole path to ``hub.app`` without adding its prefix to
``root_path`` gets 404 for every hub URL; the hub says why in its log, at most once a
minute."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from _support import LiveServer

from sse_tasks import TaskHub
from sse_tasks.web.app import PREFIX_WARNING_EVERY


def test_an_unstripped_prefix_is_logged(
    live_server: Callable[..., LiveServer], caplog: pytest.LogCaptureFixture
) -> None:
    """A dispatcher that forwards ``/jobs/tasks`` to ``hub.app`` without a root_path."""
    hub = TaskHub("memory://", shutdown_grace=1.0)
    inner = hub.app

    async def dispatcher(scope: Any, receive: Any, send: Any) -> None:
        await inner(scope, receive, send)  # the mistake: the whole path, root_path unchanged

    with caplog.at_level(logging.WARNING, logger="sse_tasks"):
        server = live_server(hub, dispatcher)  # hub.app runs its own lifespan here
        # A client's junk first: it is logged, and does not silence the real mistake for good.
        assert httpx.get(f"{server.url}/tasks/%2F/events").status_code == 404
        for _ in range(2):
            assert httpx.get(f"{server.url}/jobs/tasks/abc/events").status_code == 404
        assert httpx.get(f"{server.url}/nothing-here").status_code == 404
        inner.prefix_warned_at -= PREFIX_WARNING_EVERY  # as if a minute had passed
        for _ in range(2):
            assert httpx.get(f"{server.url}/jobs/tasks/abc/events").status_code == 404
    warnings = [r.getMessage() for r in caplog.records if "root_path" in r.getMessage()]
    assert len(warnings) == 2, warnings  # at most once a minute
    assert "'/jobs'" in warnings[1] and "sse_tasks.django.asgi" in warnings[1]
