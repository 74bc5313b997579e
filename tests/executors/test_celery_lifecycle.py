"""Every task of a hooked Celery app, sent from anywhere, shows its whole lifecycle on the hub,
on each pool (the lifecycle from ``POST /tasks`` is in ``tests/engines/test_engine_contract.py``)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest
from _support import collect, sse_events, task_events

pytestmark = pytest.mark.anyio

TERMINAL = {"task.succeeded", "task.failed", "task.cancelled"}


def _ends(event: Any) -> bool:
    return event.event in TERMINAL


async def follow(url: str, task_id: str) -> list[Any]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        response, events = await collect(http, f"/tasks/{task_id}/events", until=_ends)
        assert response.status_code == 200
    return task_events(events)


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
async def test_delay_from_any_code_streams_queued_running_progress_succeeded(
    pool: str, tasks_app: ModuleType, shared_celery_worker: Any, celery_hub: Any, live_server: Any
) -> None:
    shared_celery_worker(pool)
    hub = celery_hub()
    server = live_server(hub)
    events: list[Any] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        # The global stream, open before the send, sees every change from the first.
        async with http.stream("GET", "/events") as response:
            assert response.status_code == 200
            result = tasks_app.steps.delay(n=3, interval=0.15)  # plain Celery, no hub involved
            with anyio.fail_after(60):
                async for event in sse_events(response):
                    if event.event and event.event.startswith("task.") and event.json()["id"] == result.id:
                        events.append(event)
                        if _ends(event):
                            break
    types = [e.event for e in events]
    assert types[0] == "task.queued"
    assert types[-1] == "task.succeeded"
    assert "task.running" in types
    final = events[-1].json()
    assert final["id"] == result.id  # the sse_tasks id is the Celery id
    assert final["name"] == "steps"
    assert final["result"] == {"n": 3}
    assert final["progress"] == 1.0
    assert final["started_at"] and final["finished_at"]
    progress = [e.json()["progress"] for e in events if e.event == "task.progress"]
    assert progress == sorted(progress) and progress  # reported, in order
    async with httpx.AsyncClient(base_url=server.url) as http:
        stored = (await http.get(f"/tasks/{result.id}")).json()
    assert stored["state"] == "succeeded"
